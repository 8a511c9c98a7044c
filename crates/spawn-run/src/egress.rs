//! A run's network for `restricted` and `egress-only`: the veth link (`spawn_egress::
//! topology`) and its registration with the host's egress proxy, a process of its own
//! binary (`spawn-egress --shared`, next to `spawn`) that serves every run of this network
//! namespace, runs as nobody, and is started here when none is running. spawn binds the
//! run's sockets and opens its audit log itself and hands them over with the run's rules;
//! closing the registration (the run ends, or spawn dies) drops the run.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use spawn_audit::{Limits, Principal};
use spawn_egress::topology::{ports, Link};
use spawn_egress::ServiceConfig;
use spawn_policy::net::NetRules;

use crate::egress_config::{ChildConfig, GrantedValue};
use crate::error::{NetContext as _, RunError};

type Result<T> = std::result::Result<T, RunError>;

/// How long the proxy may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The run's link and its proxy; dropping it stops the proxy and removes the link.
#[derive(Debug)]
pub(crate) struct EgressNetwork {
    /// The run's namespace, veth pair and host-side filter.
    link: Link,
    /// The run's registration with the proxy: closing it drops the run.
    registration: Mutex<Option<UnixStream>>,
    /// The run has a model gateway on the link's host end.
    gateway: bool,
}

impl EgressNetwork {
    /// Makes the link and starts the proxy for it.
    pub(crate) fn start(
        rules: &NetRules,
        run_id: &str,
        audit_dir: PathBuf,
        principal: Principal,
        audit_limits: Limits,
        redact: Vec<GrantedValue>,
        gateway: bool,
    ) -> Result<EgressNetwork> {
        let link = Link::create(link_seed(run_id), gateway).net("make the run's network link")?;
        let nameserver = match std::env::var("SPAWN_EGRESS_NAMESERVER") {
            Ok(ns) => Some(
                ns.parse::<SocketAddr>()
                    .net(&format!("SPAWN_EGRESS_NAMESERVER={ns:?} is not ip:port"))?,
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
            audit_limits,
            redact,
        };
        let sockets =
            spawn_egress::RunSockets::bind(link.host).net("bind the run's proxy sockets")?;
        let log = spawn_audit::AuditLog::open(&config.audit_dir).map_err(|e| {
            RunError::Audit(format!(
                "open the audit log under {}: {e}",
                config.audit_dir.display()
            ))
        })?;
        // Wiped when sent (it may hold the run's secrets).
        let message = zeroize::Zeroizing::new(
            serde_json::to_vec(&config).net("encode the run's registration with the proxy")?,
        );
        drop(config);
        let fds = [
            log.file().as_raw_fd(),
            sockets.explicit.as_raw_fd(),
            sockets.http.as_raw_fd(),
            sockets.tls.as_raw_fd(),
            sockets.dns.as_raw_fd(),
        ];
        // A proxy that is just exiting (idle) drops the registration: start another.
        let mut last = None;
        for _ in 0..3 {
            match register(&message, &fds) {
                Ok(conn) => {
                    return Ok(EgressNetwork {
                        link,
                        registration: Mutex::new(Some(conn)),
                        gateway,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RunError::Network("no egress proxy".into())))
    }
}

/// Where the search for a free link block starts: spread over spawn processes and runs.
pub(crate) fn link_seed(run_id: &str) -> u32 {
    std::process::id().wrapping_mul(2_654_435_761)
        ^ run_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
}

/// The control socket of this network namespace's proxy.
fn control_path() -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/self/ns/net").net("read this network namespace")?;
    Ok(PathBuf::from(format!(
        "{CONTROL_DIR}/egress-{}.sock",
        ns.ino()
    )))
}

/// Where the control sockets live (spawn's private runtime directory on tmpfs).
const CONTROL_DIR: &str = spawn_sandbox::container::BASE;

/// Registers the run with the proxy (starting one if there is none) and waits for
/// `ready`; the returned connection is the registration.
fn register(message: &[u8], fds: &[std::os::fd::RawFd]) -> Result<UnixStream> {
    let path = control_path()?;
    // The run's audit log and sockets go to whatever answers there: only a directory that
    // nobody but spawn's own user can have made will do.
    spawn_sandbox::container::ensure_dir(Path::new(CONTROL_DIR), 0o711)?;
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(_) => {
            start_proxy(&path)?;
            let mut conn = None;
            for _ in 0..250 {
                if let Ok(c) = UnixStream::connect(&path) {
                    conn = Some(c);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            conn.net(&format!("the egress proxy did not open {}", path.display()))?
        }
    };
    spawn_sandbox::send_fds(conn.as_fd(), message, fds).net("register with the egress proxy")?;
    // Wait for "ready" without a thread (spawn must stay single-threaded).
    let mut pfd = [nix::poll::PollFd::new(
        conn.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = u16::try_from(READY_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
    let readable = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(timeout));
    let mut answer = Vec::new();
    if matches!(readable, Ok(n) if n > 0) {
        // One line: `ready`, or `error: WHY` (the proxy then closes the connection).
        answer = read_line(&conn, 4096);
    }
    if answer == b"ready\n" {
        return Ok(conn);
    }
    match std::str::from_utf8(&answer)
        .ok()
        .and_then(|a| a.strip_prefix("error: "))
    {
        Some(why) => Err(RunError::Network(format!(
            "the egress proxy did not take the run: {}",
            why.trim_end()
        ))),
        None => Err(RunError::Network(format!(
            "the egress proxy did not take the run (see {CONTROL_DIR}/egress.log)"
        ))),
    }
}

/// Starts the proxy for this namespace, detached (it outlives this spawn), logging to
/// `egress.log`. A stale control socket (its proxy is gone) is removed first.
fn start_proxy(path: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    if path.exists() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let exe = std::env::current_exe().net("find spawn's own executable")?;
    let proxy = exe.with_file_name("spawn-egress");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(format!("{CONTROL_DIR}/egress.log"))
        .net("open the egress proxy's log")?;
    Command::new(&proxy)
        .arg("--shared")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .net(&format!(
            "start the egress proxy {} (it is installed next to spawn)",
            proxy.display()
        ))?;
    Ok(())
}

impl spawn_sandbox::Network for EgressNetwork {
    fn nameserver(&self) -> Ipv4Addr {
        self.link.host
    }

    fn proxy(&self) -> Option<SocketAddr> {
        Some(SocketAddr::from((self.link.host, ports::PROXY)))
    }

    fn namespace(&self) -> PathBuf {
        self.link.namespace()
    }

    fn gateway(&self) -> Option<SocketAddr> {
        self.gateway
            .then(|| SocketAddr::from((self.link.host, ports::GATEWAY)))
    }
}

impl crate::RunNetwork for EgressNetwork {
    fn sandbox_address(&self) -> Option<std::net::IpAddr> {
        Some(self.link.sandbox.into())
    }
}

impl Drop for EgressNetwork {
    fn drop(&mut self) {
        // Closing the registration drops the run; the proxy then writes its summary and
        // closes its side, which is waited for (briefly) so the run's audit is complete.
        if let Some(mut conn) = self.registration.lock().ok().and_then(|mut c| c.take()) {
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        }
    }
}

/// Reads up to and including the first newline, at most `max` bytes (fewer at the end).
fn read_line(mut from: impl Read, max: usize) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < max && !line.ends_with(b"\n") {
        match from.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    line
}
