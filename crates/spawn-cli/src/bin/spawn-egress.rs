//! `spawn-egress --shared SOCKET`: the egress proxy of every run in this network namespace
//! (one per host), started by the first `spawn run` that needs it and gone once no run has
//! used it for a while.
//!
//! A run registers over the control socket (root only): one message with its
//! configuration (JSON) and, as descriptors, its audit log and the sockets spawn bound on
//! its link's host end. The proxy answers `ready`, serves the run's sockets under its
//! rules, writes its `agent.net.connect` events through the run's audit limits
//! (`spawn_audit::Limiter`: repeats aggregated per window, a budget), and drops the run (with a `summary`
//! event) when spawn closes the connection. The proxy runs as `nobody` once the control
//! socket is bound: it opens no file and binds nothing itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use spawn_audit::{AuditLog, Event, EventType, Limiter, Outcome, Principal, Resource};
use spawn_egress::{Attempt, Closed, Observer, Proxy, Resolver, RunSockets};
use spawn_redact::Redactor;
use zeroize::Zeroize as _;

use spawn_run::egress_config::ChildConfig;

/// Without a run for this long, the proxy exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // Runs' secrets pass through this process (to be redacted from their events): no
    // other process of its user may read its memory, and it leaves no core file.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let args: Vec<String> = std::env::args().collect();
    let result = match args.as_slice() {
        [_, flag, path] if flag == "--shared" => shared(Path::new(path)),
        _ => Err(anyhow::anyhow!(
            "usage: spawn-egress --shared SOCKET (started by spawn run)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawn-egress: {e:#}");
            ExitCode::from(125)
        }
    }
}

/// Writes one run's events to its audit log, through the run's limits.
struct AuditObserver {
    writer: Mutex<Writer>,
    principal: Principal,
    trace_id: String,
    /// The run's totals: attempts allowed and refused, bytes out and in.
    totals: Mutex<[u64; 4]>,
}

/// The run's log and its limiter, under one lock (events leave in the order decided).
struct Writer {
    log: AuditLog,
    limiter: Limiter,
    /// What the limiter lets through, written as one batch.
    out: Vec<Event>,
    /// The run's granted secrets, redacted from every event written.
    redactor: Option<Redactor>,
}

impl Writer {
    /// Writes what the limiter let through; whether it was (nothing to write is written).
    fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        if let Some(r) = &self.redactor {
            self.out = std::mem::take(&mut self.out)
                .into_iter()
                .map(|e| e.redacted(r))
                .collect();
        }
        let written = match self.log.append(&self.out) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("spawn-egress: cannot write the audit log: {e}");
                false
            }
        };
        self.out.clear();
        written
    }
}

impl AuditObserver {
    /// Puts `event` through the limits and writes what they let through; whether it is on
    /// record (written, or counted to be summarized).
    fn write(&self, event: Event) -> bool {
        let event = Event {
            trace_id: Some(self.trace_id.clone()),
            ..event
        };
        let Ok(mut w) = self.writer.lock() else {
            return false;
        };
        let w = &mut *w;
        w.limiter.admit(event, &mut w.out);
        w.flush()
    }

    /// Summaries of a window that ended while no event came.
    fn tick(&self) {
        if let Ok(mut w) = self.writer.lock() {
            let w = &mut *w;
            w.limiter.tick(&mut w.out);
            w.flush();
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

    fn count(&self, index: usize, by: u64) {
        if let Ok(mut t) = self.totals.lock() {
            t[index] += by;
        }
    }

    /// When the run ends: the summaries of every event held back, then one
    /// `agent.net.connect` event with the run's totals (`summary`), whatever the limits.
    fn summary(&self) {
        let [allowed, denied, out, inn] = self.totals.lock().map(|t| *t).unwrap_or_default();
        let event = Event {
            trace_id: Some(self.trace_id.clone()),
            ..self
                .event("*", 0, "summary", Outcome::Success)
                .with_detail("connectionsAllowed", allowed)
                .with_detail("connectionsDenied", denied)
                .with_detail("bytesOut", out)
                .with_detail("bytesIn", inn)
        };
        let Ok(mut w) = self.writer.lock() else {
            return;
        };
        let w = &mut *w;
        w.limiter.finish(&mut w.out);
        let stats = w.limiter.stats();
        let event = event
            .with_detail("auditEventsWritten", stats.verbatim)
            .with_detail("auditEventsSummarized", stats.held);
        w.limiter.admit_always(event, &mut w.out);
        w.flush();
    }
}

impl Observer for AuditObserver {
    fn attempt(&self, e: &Attempt) -> bool {
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
        self.write(event)
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

/// The proxy process: shared state of every run.
struct Shared {
    runtime: tokio::runtime::Handle,
    /// One proxy per name-server setting (runs asking for the same one share it).
    proxies: Mutex<HashMap<Option<SocketAddr>, Proxy>>,
    active: AtomicUsize,
    last_active: Mutex<Instant>,
}

impl Shared {
    fn proxy(&self, nameserver: Option<SocketAddr>) -> Result<Proxy> {
        let mut proxies = self
            .proxies
            .lock()
            .map_err(|_| anyhow::anyhow!("proxy table poisoned"))?;
        if let Some(p) = proxies.get(&nameserver) {
            return Ok(p.clone());
        }
        let resolver = match nameserver {
            Some(ns) => Resolver::with_nameserver(ns),
            None => Resolver::system().context("read the host's resolvers")?,
        };
        let proxy = Proxy::new(resolver);
        proxies.insert(nameserver, proxy.clone());
        Ok(proxy)
    }

    /// One run: register, serve, and when its spawn closes the connection, drop it.
    fn run(&self, mut conn: UnixStream) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let (len, fds) = spawn_sandbox::recv_fds(conn.as_fd(), &mut buf)
            .context("receive a run's registration")?;
        let config: Result<ChildConfig, _> = serde_json::from_slice(&buf[..len]);
        // The registration may hold the run's secrets.
        buf.zeroize();
        let mut config = config.context("parse a run's registration")?;
        let redact = std::mem::take(&mut config.redact);
        let redactor = if redact.is_empty() {
            None
        } else {
            Some(
                Redactor::new(redact.iter().map(|g| (g.name.as_str(), g.value.as_slice())))
                    .context("prepare the run's redaction")?,
            )
        };
        drop(redact);
        let [audit, explicit, http, tls, dns]: [OwnedFd; 5] = fds
            .try_into()
            .map_err(|_| anyhow::anyhow!("a registration carries 5 descriptors"))?;
        let sockets = RunSockets {
            explicit: File::from(explicit).into_tcp_listener(),
            http: File::from(http).into_tcp_listener(),
            tls: File::from(tls).into_tcp_listener(),
            dns: std::net::UdpSocket::from(dns),
        };
        if let Err(e) = config.audit_limits.validate() {
            // spawn checks them first; a registration that gets here anyway is refused
            // with the reason, never served without limits.
            let line = e.to_string().replace('\n', " ");
            let _ = conn.write_all(format!("error: {line}\n").as_bytes());
            return Err(e).context("a run's audit limits");
        }
        let tick = Duration::from_millis(config.audit_limits.window_ms);
        let observer = Arc::new(AuditObserver {
            writer: Mutex::new(Writer {
                log: AuditLog::from_file(
                    File::from(audit),
                    config.audit_dir.join(spawn_audit::LOG_FILE_NAME),
                ),
                limiter: Limiter::new(config.audit_limits),
                out: Vec::new(),
                redactor,
            }),
            principal: config.principal,
            trace_id: config.trace_id,
            totals: Mutex::new([0; 4]),
        });
        let proxy = self.proxy(config.service.nameserver)?;
        let registration = match proxy.register(
            config.service.sandbox.into(),
            &config.service.run_id,
            config.service.rules,
            observer.clone(),
        ) {
            Ok(r) => r,
            Err(e) => {
                // spawn shows the reason (one line) and fails the run.
                let line = e.to_string().replace('\n', " ");
                let _ = conn.write_all(format!("error: {line}\n").as_bytes());
                return Err(e.into());
            }
        };
        let tasks = {
            let _guard = self.runtime.enter();
            sockets.serve(&proxy)?
        };
        conn.write_all(b"ready\n")?;
        // Until spawn is done with the run (EOF), or gone; each window, the summaries of
        // the one that ended.
        conn.set_read_timeout(Some(tick))?;
        let mut rest = [0u8; 64];
        loop {
            match conn.read(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    observer.tick()
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        for t in tasks {
            t.abort();
        }
        drop(registration);
        observer.summary();
        Ok(())
    }
}

/// A descriptor that is a socket, as the std type for it.
trait IntoListener {
    fn into_tcp_listener(self) -> std::net::TcpListener;
}

impl IntoListener for File {
    fn into_tcp_listener(self) -> std::net::TcpListener {
        std::net::TcpListener::from(OwnedFd::from(self))
    }
}

fn shared(path: &Path) -> Result<()> {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        // Another proxy got there first: it serves this namespace.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("bind {}", path.display())),
    };
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    raise_nofile().context("raise the descriptor limit")?;
    drop_privileges().context("drop privileges")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the proxy's runtime")?;
    let shared = Arc::new(Shared {
        runtime: runtime.handle().clone(),
        proxies: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        last_active: Mutex::new(Instant::now()),
    });
    // Exit once idle; the socket file goes first, so new runs start a new proxy.
    let watch = shared.clone();
    let socket_path = PathBuf::from(path);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let idle = watch
            .last_active
            .lock()
            .map(|t| t.elapsed() >= IDLE_EXIT)
            .unwrap_or(true);
        if watch.active.load(Ordering::SeqCst) == 0 && idle {
            let _ = std::fs::remove_file(&socket_path);
            // A run that connected in between has its registration refused by EOF.
            std::process::exit(0);
        }
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            continue;
        };
        let s = shared.clone();
        s.active.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            if let Err(e) = s.run(conn) {
                eprintln!("spawn-egress: {e:#}");
            }
            if let Ok(mut t) = s.last_active.lock() {
                *t = Instant::now();
            }
            s.active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    bail!("the control socket stopped accepting")
}

/// Raises the descriptor limit (soft and hard) to the most the host allows a process
/// (`fs.nr_open`, or the hard limit where that cannot be raised), while still root: every run's reserved capacity comes out of it
/// (`spawn_egress::capacity`).
fn raise_nofile() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .context("read /proc/sys/fs/nr_open")?
        .trim()
        .parse::<u64>()
        .context("parse /proc/sys/fs/nr_open")?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let limit = most.max(soft).max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, limit, limit).is_err() {
        // Without CAP_SYS_RESOURCE (root in a container, say) the hard limit is the most.
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
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
