//! A run's network for `restricted` and `egress-only`: the veth link (`spawn_egress::
//! topology`) and the egress proxy serving it, run as a child process of its own binary
//! (`spawn-egress`, next to `spawn`), so that spawn itself stays single-threaded (the
//! native runtime forks) and small (it starts on every run). The proxy writes the run's
//! `agent.net.connect` events to the audit log itself and stops when spawn closes its
//! stdin (or dies).

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use spawn_audit::Principal;
use spawn_egress::topology::{ports, Link};
use spawn_egress::ServiceConfig;
use spawn_policy::net::NetRules;

use crate::egress_config::ChildConfig;

/// How long the proxy may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The run's link and its proxy; dropping it stops the proxy and removes the link.
#[derive(Debug)]
pub(crate) struct EgressNetwork {
    link: Link,
    child: Mutex<Option<(Child, ChildStdin)>>,
    /// For OCI runtimes: a process holding the run's namespace (`unshare --net cat`, which
    /// ends when its stdin closes: with this value, or with spawn).
    holder: Mutex<Option<(Child, ChildStdin)>>,
}

/// Stops a child that ends on EOF: closes its stdin, waits up to 2 s, then kills it.
fn stop(mut child: Child, stdin: ChildStdin) {
    drop(stdin);
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl EgressNetwork {
    /// Makes the link and starts the proxy for it.
    pub(crate) fn start(
        rules: &NetRules,
        run_id: &str,
        audit_dir: PathBuf,
        principal: Principal,
    ) -> Result<EgressNetwork> {
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ run_id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let link = Link::create(seed).context("make the run's network link")?;
        let nameserver = match std::env::var("SPAWN_EGRESS_NAMESERVER") {
            Ok(ns) => Some(
                ns.parse::<SocketAddr>()
                    .with_context(|| format!("SPAWN_EGRESS_NAMESERVER={ns:?} is not ip:port"))?,
            ),
            Err(_) => None,
        };
        let config = ChildConfig {
            service: ServiceConfig {
                run_id: run_id.to_owned(),
                host: link.host,
                sandbox: link.sandbox,
                rules: rules.clone(),
                nameserver,
            },
            audit_dir,
            principal,
            trace_id: run_id.to_owned(),
        };
        let exe = std::env::current_exe().context("find spawn's own executable")?;
        let proxy = exe.with_file_name("spawn-egress");
        let mut child = Command::new(&proxy)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "start the egress proxy {} (it is installed next to spawn)",
                    proxy.display()
                )
            })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the egress proxy has no stdin/stdout");
        };
        let line = serde_json::to_string(&config)? + "\n";
        let sent = stdin.write_all(line.as_bytes());
        // Wait for "ready" without a thread (spawn must stay single-threaded).
        let mut fds = [nix::poll::PollFd::new(
            stdout.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = u16::try_from(READY_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
        let readable = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(timeout));
        let mut answer = String::new();
        if sent.is_ok() && matches!(readable, Ok(n) if n > 0) {
            let _ = std::io::BufReader::new(stdout).read_line(&mut answer);
        }
        if answer.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the egress proxy did not start (see its message above)");
        }
        Ok(EgressNetwork {
            link,
            child: Mutex::new(Some((child, stdin))),
            holder: Mutex::new(None),
        })
    }
}

impl spawn_sandbox::Network for EgressNetwork {
    fn nameserver(&self) -> Ipv4Addr {
        self.link.host
    }

    fn proxy(&self) -> SocketAddr {
        SocketAddr::from((self.link.host, ports::PROXY))
    }

    fn attach(&self, pid: i32) -> std::result::Result<(), String> {
        self.link.attach(pid).map_err(|e| e.to_string())
    }

    fn namespace(&self) -> std::result::Result<PathBuf, String> {
        use std::os::unix::fs::MetadataExt as _;
        let mut holder = self.holder.lock().map_err(|_| "holder lock".to_owned())?;
        if let Some((child, _)) = holder.as_ref() {
            return Ok(PathBuf::from(format!("/proc/{}/ns/net", child.id())));
        }
        let mut child = Command::new("unshare")
            .args(["--net", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the namespace holder (unshare, util-linux): {e}"))?;
        let stdin = child.stdin.take().ok_or("the holder has no stdin")?;
        let pid = child.id();
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        // The namespace is the holder's once unshare has run: its inode differs from ours.
        let ours = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
        let mut ready = false;
        for _ in 0..500 {
            if std::fs::metadata(&path).is_ok_and(|m| Some(m.ino()) != ours) {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ready {
            stop(child, stdin);
            return Err("the namespace holder did not make a network namespace".into());
        }
        let pid = i32::try_from(pid).map_err(|e| e.to_string())?;
        if let Err(e) = self.link.attach(pid) {
            stop(child, stdin);
            return Err(e.to_string());
        }
        *holder = Some((child, stdin));
        Ok(path)
    }
}

impl Drop for EgressNetwork {
    fn drop(&mut self) {
        // EOF on its stdin stops the proxy; it has written its events by then.
        for slot in [&self.child, &self.holder] {
            if let Some((child, stdin)) = slot.lock().ok().and_then(|mut c| c.take()) {
                stop(child, stdin);
            }
        }
    }
}
