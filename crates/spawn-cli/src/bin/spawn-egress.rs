//! `spawn-egress`: the egress proxy of one run, started by `spawn run` for policies
//! `restricted` and `egress-only` (see `spawn_egress::run_service`). Reads its
//! configuration as one JSON line on stdin, prints `ready` once it listens, writes the
//! run's `agent.net.connect` events to the audit log, and serves until stdin ends.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use spawn_audit::{AuditLog, Event, EventType, Outcome, Principal, Resource};
use spawn_egress::{Attempt, Closed, Observer};

#[path = "../egress_config.rs"]
mod egress_config;

use egress_config::ChildConfig;

fn main() -> ExitCode {
    match child_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawn-egress: {e:#}");
            ExitCode::from(125)
        }
    }
}

/// Writes the proxy's events to the run's audit log.
struct AuditObserver {
    log: Mutex<AuditLog>,
    principal: Principal,
    trace_id: String,
    /// The run's totals: attempts allowed and refused, bytes out and in.
    totals: Mutex<[u64; 4]>,
}

impl AuditObserver {
    /// One `agent.net.connect` event with the run's totals (`summary`), when it ends.
    fn summary(&self) {
        let [allowed, denied, out, inn] = self.totals.lock().map(|t| *t).unwrap_or_default();
        let event = self
            .event("*", 0, "summary", Outcome::Success)
            .with_detail("connectionsAllowed", allowed)
            .with_detail("connectionsDenied", denied)
            .with_detail("bytesOut", out)
            .with_detail("bytesIn", inn);
        self.write(event);
    }

    fn count(&self, index: usize, by: u64) {
        if let Ok(mut t) = self.totals.lock() {
            t[index] += by;
        }
    }
}

impl AuditObserver {
    fn write(&self, event: Event) {
        let event = Event {
            trace_id: Some(self.trace_id.clone()),
            ..event
        };
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        if let Err(e) = log.append(&[event]) {
            eprintln!("spawn-egress: cannot write the audit log: {e}");
        }
    }

    fn event(&self, host: &str, port: u16, action: &str, outcome: Outcome) -> Event {
        Event::new(
            EventType::AgentNetConnect,
            self.principal.clone(),
            Resource {
                kind: "host".into(),
                name: format!("{host}:{port}"),
            },
            action,
            outcome,
        )
    }
}

impl Observer for AuditObserver {
    fn attempt(&self, e: &Attempt) {
        self.count(usize::from(e.verdict.is_err()), 1);
        let outcome = match &e.verdict {
            Ok(()) => Outcome::Success,
            Err(d) if matches!(d.code, "resolve" | "connect") => Outcome::Error,
            Err(_) => Outcome::Denied,
        };
        let mut event = self
            .event(&e.host, e.port, "connect", outcome)
            .with_detail("host", e.host.clone())
            .with_detail("port", e.port)
            .with_detail("via", e.via.as_str())
            .with_detail("address", e.addr.map(|a| a.ip().to_string()))
            .with_detail("decision", if e.verdict.is_ok() { "allow" } else { "deny" });
        if let Err(d) = &e.verdict {
            event = event
                .with_detail("reason", d.code)
                .with_detail("detail", d.detail.clone());
        }
        self.write(event);
    }

    fn closed(&self, e: &Closed) {
        self.count(2, e.bytes_out);
        self.count(3, e.bytes_in);
        let event = self
            .event(&e.host, e.port, "close", Outcome::Success)
            .with_detail("host", e.host.clone())
            .with_detail("port", e.port)
            .with_detail("address", e.addr.ip().to_string())
            .with_detail("bytesOut", e.bytes_out)
            .with_detail("bytesIn", e.bytes_in);
        self.write(event);
    }
}

/// Reads the configuration, serves, and returns when spawn is done with the run.
fn child_main() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read the configuration")?;
    let config: ChildConfig = serde_json::from_str(&line).context("parse the configuration")?;
    // Opened now: once serving, the proxy runs as nobody and could not open it.
    let log = AuditLog::open(&config.audit_dir)
        .with_context(|| format!("open the audit log under {}", config.audit_dir.display()))?;
    let observer = Arc::new(AuditObserver {
        log: Mutex::new(log),
        principal: config.principal,
        trace_id: config.trace_id,
        totals: Mutex::new([0; 4]),
    });
    let totals = observer.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the proxy's runtime")?;
    let served = runtime.block_on(async move {
        let stop = async {
            // EOF (or an error) on stdin: spawn is done with the run, or gone.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
        };
        spawn_egress::run_service(
            config.service,
            observer,
            || {
                // Every socket is bound and the log is open: what parses the sandbox's
                // requests keeps no privilege (glibc applies this to every thread).
                if let Err(e) = drop_privileges() {
                    eprintln!("spawn-egress: cannot drop privileges: {e}");
                    std::process::exit(125);
                }
                println!("ready");
                let _ = std::io::stdout().flush();
            },
            stop,
        )
        .await
        .context("egress proxy")
    });
    totals.summary();
    served
}

/// Becomes `nobody` (uid and gid 65534, no supplementary groups), which also clears every
/// capability, and makes sure it cannot come back.
fn drop_privileges() -> nix::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(65534), Gid::from_raw(65534));
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    nix::sys::prctl::set_no_new_privs()?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(nix::errno::Errno::EPERM);
    }
    Ok(())
}
