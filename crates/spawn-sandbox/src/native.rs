//! The `native` runtime, host side: creates the namespaces, cgroup and channels, starts the
//! sandbox init, then supervises the run (seccomp notifications, timeout, signals) until
//! it ends, and cleans up.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use spawn_policy::{NetPolicy, RunSpec};

use crate::cgroups::{self, Cgroup, Layout, Limits};
use crate::error::SandboxError;
use crate::idmap;
use crate::init::{self, ChildConfig, ChildFds};
use crate::landlock::Rules;
use crate::rootfs::{self, AGENT_ID};
use crate::scratch::Scratch;
use crate::seccomp;
use crate::stdio::Plumbing;
use crate::sys;

/// Defaults for limits the spec leaves open. Never "unlimited".
pub mod defaults {
    /// Memory: 512 MiB.
    pub const MEMORY_BYTES: u64 = 512 << 20;
    /// Tasks: enough for node or a JVM's threads, far from a fork bomb.
    pub const PIDS: u64 = 256;
    /// One CPU.
    pub const CPU_MILLIS: u64 = 1000;
    /// Scratch space (`/tmp` + `/workspace`): 1 GiB.
    pub const DISK_BYTES: u64 = 1 << 30;
    /// Wall clock: 10 minutes.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
    /// Open files per process.
    pub const NOFILE: u64 = 4096;
}

/// After a SIGINT/SIGTERM to spawn, how long the agent gets to exit before SIGKILL.
pub const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// Host uids/gids of sandbox users are taken from this otherwise unused range
/// (0x70000000–0x707fffff: above systemd's container range, below 2^31): uid 0 inside maps
/// to `BASE + 2·pid(spawn)`, the agent's uid 1000 to the next id. Host root is never mapped.
pub const HOST_ID_BASE: u32 = 0x7000_0000;
/// PIDs are folded into this many slots (pid_max is at most 2^22).
const HOST_ID_SLOTS: u32 = 1 << 22;

/// Why spawn ended a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The wall-clock timeout expired.
    Timeout,
    /// The kernel's OOM killer hit the memory limit.
    OutOfMemory,
    /// spawn received this signal and passed it on.
    Cancelled(i32),
    /// The caller stopped the run ([`Stop`]): a limit of its own was reached (the model
    /// gateway's budget).
    Limit,
}

impl KillReason {
    /// Stable name for `--json` and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::Timeout => "timeout",
            KillReason::OutOfMemory => "oom",
            KillReason::Cancelled(_) => "cancelled",
            KillReason::Limit => "limit",
        }
    }
}

/// Why the command could not start (exit 126/127).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// No such program in the sandbox (127).
    NotFound,
    /// It exists but cannot be executed (126), with the errno.
    NotExecutable(i32),
}

/// The result of a run whose command was started (or found missing).
#[derive(Debug)]
pub struct Report {
    /// spawn's exit code for the run (SPEC §4).
    pub exit_code: i32,
    /// The signal that ended the command, if any.
    pub signal: Option<i32>,
    /// Start to end.
    pub duration: Duration,
    /// Peak memory of the whole sandbox.
    pub peak_memory_bytes: Option<u64>,
    /// Syscalls denied by seccomp, all kinds.
    pub blocked_syscalls: u64,
    /// Denied syscalls by name.
    pub blocked_by_name: BTreeMap<String, u64>,
    /// Why spawn ended it, if it did.
    pub kill_reason: Option<KillReason>,
    /// Set when the command could not be executed.
    pub exec_failure: Option<ExecFailure>,
    /// OOM kills inside the sandbox (a child may be killed while the command survives).
    pub oom_kills: u64,
    /// Forks refused because the run reached its PID limit.
    pub pids_limit_hits: u64,
    /// How much of the Landlock ruleset the kernel enforced (`None` if the command never
    /// got that far).
    pub landlock: Option<crate::landlock::Enforcement>,
    /// The host uid the agent ran as.
    pub host_uid: u32,
    /// Why part of the agent's output could not be written to spawn's stdout or stderr
    /// (see [`crate::stdio`]), if it could not.
    pub output_error: Option<String>,
    /// What the runtime still removes after the report is made (see [`Cleanup`]).
    pub cleanup: Cleanup,
}

/// What is left of a run once its report is made (an OCI runtime's state, the run's groups
/// and its bundle), removed on a thread of its own so that the caller records the run's
/// end meanwhile. Dropping it waits for that work: nothing of the run outlives it.
#[derive(Debug, Default)]
pub struct Cleanup(Option<std::thread::JoinHandle<()>>);

impl Cleanup {
    /// Starts `work` on a thread of its own; should no thread start, it is done here.
    pub(crate) fn start(work: impl FnOnce() + Send + 'static) -> Cleanup {
        /// Does its work when dropped unless a thread took it: a thread that cannot start
        /// drops its closure, and with it this.
        struct Work<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for Work<F> {
            fn drop(&mut self) {
                if let Some(work) = self.0.take() {
                    work();
                }
            }
        }
        let mut work = Work(Some(work));
        Cleanup(
            std::thread::Builder::new()
                .name("spawn-cleanup".into())
                .spawn(move || {
                    if let Some(work) = work.0.take() {
                        work();
                    }
                })
                .ok(),
        )
    }

    /// Waits until the run's remains are removed.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.join();
    }
}

/// Hooks for the caller (audit, progress). Called on spawn's thread.
pub trait Observer {
    /// The sandbox is being built and nothing of the command has run yet; it cannot start
    /// until this returns. An error aborts the run (e.g. the audit log cannot record it).
    /// Called while the sandbox builds its namespaces, so work here costs no start time.
    fn created(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The sandbox exists and the command is about to start.
    fn started(&mut self, _host_pid: i32, _host_uid: u32) {}
    /// A syscall was denied; `first` for the first of its kind in this run.
    fn denied(&mut self, _syscall: &str, _first: bool) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// Per-run settings that are not policy.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run's id (`tr_…`), used to name its cgroup.
    pub run_id: String,
    /// The run's network, for every policy but `none` (required for them, unused for
    /// `none`): the sandbox joins the network namespace made for it, whose only way out is
    /// the egress proxy (`restricted`, `egress-only`) or the host's routing with the host
    /// itself walled off (`full`).
    pub network: Option<std::sync::Arc<dyn Network>>,
    /// Granted secrets for the agent's environment (and nothing else's: see
    /// `secret_env`).
    pub secret_env: std::sync::Arc<Vec<crate::SecretEnv>>,
    /// The granted secrets' values and forms, replaced by `[REDACTED:NAME]` in the agent's
    /// output on its way to spawn's descriptors (`None`: no secret granted).
    pub redactor: Option<std::sync::Arc<spawn_redact::Redactor>>,
    /// A way for the caller to stop the run from another thread (`None`: none).
    pub stop: Option<std::sync::Arc<Stop>>,
    /// The agent's stdin is `/dev/null`, not spawn's (the built-in loop's tool runner).
    pub no_stdin: bool,
}

/// Stops a run from another thread, as a signal to spawn would (the agent gets SIGTERM,
/// then SIGKILL after [`CANCEL_GRACE`]), with [`KillReason::Limit`]: the run reached a
/// limit its caller enforces (the model gateway's budget). The supervisor polls its pipe.
#[derive(Debug)]
pub struct Stop {
    rx: OwnedFd,
    tx: OwnedFd,
    reason: std::sync::Mutex<Option<String>>,
}

impl Stop {
    pub fn new() -> Result<Stop, SandboxError> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| SandboxError::setup("make the run's stop pipe", e))?;
        Ok(Stop {
            rx,
            tx,
            reason: std::sync::Mutex::new(None),
        })
    }

    /// Stops the run, saying why (the first reason given is kept); whether this call was
    /// the one that stopped it.
    pub fn stop(&self, reason: &str) -> bool {
        let mut r = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.is_some() {
            return false;
        }
        *r = Some(reason.to_owned());
        // Full pipe: it is readable already, which is all the supervisor looks at.
        let _ = nix::unistd::write(&self.tx, b"s");
        true
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

impl RunOptions {
    /// Options for a run without a network of its own.
    pub fn new(run_id: impl Into<String>) -> RunOptions {
        RunOptions {
            run_id: run_id.into(),
            network: None,
            secret_env: std::sync::Arc::default(),
            redactor: None,
            stop: None,
            no_stdin: false,
        }
    }
}

/// A run's way out, made by the caller (the sandbox crate knows neither the proxy nor
/// the routing): what the sandbox is told, and closing its namespace in.
pub trait Network: std::fmt::Debug + Send + Sync {
    /// The DNS server the sandbox uses (its `/etc/resolv.conf`).
    fn nameserver(&self) -> std::net::Ipv4Addr;
    /// The proxy for `HTTP_PROXY` / `HTTPS_PROXY`, when the way out is one.
    fn proxy(&self) -> Option<std::net::SocketAddr>;
    /// The run's network namespace, already connected to its way out and nothing else, for
    /// the sandbox to join (`/proc/PID/ns/net` of a process that holds it for the run). It
    /// belongs to the host's user namespace: nothing in the sandbox can change it.
    fn namespace(&self) -> std::path::PathBuf;
    /// The run's model gateway on the host end, when it has one: the sandbox joins the
    /// run's namespace for it even under `net: none` (whose namespace then reaches that
    /// port and nothing else), and it is never sent through the proxy.
    fn gateway(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// A run's limits with the defaults filled in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    pub(crate) memory: u64,
    pub(crate) pids: u64,
    pub(crate) disk: u64,
    pub(crate) cpu: u64,
    pub(crate) timeout: Duration,
}

impl RunLimits {
    pub(crate) fn of(spec: &RunSpec) -> RunLimits {
        RunLimits {
            memory: spec
                .resources
                .memory_bytes
                .unwrap_or(defaults::MEMORY_BYTES),
            pids: spec.resources.pids.unwrap_or(defaults::PIDS),
            disk: spec.resources.disk_bytes.unwrap_or(defaults::DISK_BYTES),
            cpu: spec.resources.cpu_millis.unwrap_or(defaults::CPU_MILLIS),
            timeout: spec.timeout.unwrap_or(defaults::TIMEOUT),
        }
    }
}

/// What a run's network policy means for every runtime: the run's network (required for
/// every policy but `none`, unused for it), where the sandbox's DNS queries go, and the
/// agent's environment with the proxy variables (unless the run sets them).
pub(crate) struct NetView<'a> {
    pub(crate) network: Option<&'a dyn Network>,
    pub(crate) dns: rootfs::Dns,
    pub(crate) env: Vec<(String, String)>,
}

impl<'a> NetView<'a> {
    pub(crate) fn of(spec: &RunSpec, opts: &'a RunOptions) -> Result<NetView<'a>, SandboxError> {
        // Fail secure: a policy that grants a network gets the run's own namespace or no
        // run at all, never the host's namespace.
        let networked = spec.net.policy != NetPolicy::None;
        let network = opts
            .network
            .as_deref()
            .filter(|n| networked || n.gateway().is_some());
        if networked && network.is_none() {
            return Err(SandboxError::Unsupported(format!(
                "net policy {} needs the run's own network, which this caller did not set up",
                spec.net.policy.as_str()
            )));
        }
        let dns = match network {
            Some(n) if networked => rootfs::Dns::Server(n.nameserver()),
            _ => rootfs::Dns::None,
        };
        let mut env = agent_env(spec);
        if let Some(proxy) = network.and_then(|n| n.proxy()) {
            let gateway = network.and_then(|n| n.gateway());
            for (k, v) in proxy_env(proxy, gateway) {
                if !env.iter().any(|(name, _)| *name == k) {
                    env.push((k, v));
                }
            }
        }
        Ok(NetView { network, dns, env })
    }
}

/// `HTTP_PROXY` and friends for a proxy at `proxy`, in both spellings programs read.
/// The model gateway (`gateway`) is reached directly: the proxy would refuse its private
/// address.
fn proxy_env(
    proxy: std::net::SocketAddr,
    gateway: Option<std::net::SocketAddr>,
) -> Vec<(String, String)> {
    let url = format!("http://{proxy}");
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push((name.to_owned(), url.clone()));
    }
    let mut direct = "localhost,127.0.0.1,::1".to_owned();
    if let Some(g) = gateway {
        direct = format!("{direct},{}", g.ip());
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_owned(), direct.clone()));
    }
    env
}

/// Checks that this host can run native sandboxes at all (for `run` and `doctor`).
pub fn check_available() -> Result<Layout, SandboxError> {
    check_root()?;
    check_kernel()
}

fn unavailable(reason: &str, fix: &str) -> SandboxError {
    SandboxError::RuntimeUnavailable {
        runtime: "native".into(),
        reason: reason.into(),
        fix: Some(fix.into()),
    }
}

fn check_root() -> Result<(), SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(unavailable(
            "it needs root to map the sandbox users to unused host ids",
            "run spawn as root",
        ));
    }
    Ok(())
}

/// Kernel features and the cgroup layout (read while the sandbox is being set up).
fn check_kernel() -> Result<Layout, SandboxError> {
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        return Err(unavailable(
            "the kernel lacks seccomp user notification",
            "use Linux 5.0 or newer with CONFIG_SECCOMP_FILTER",
        ));
    }
    Layout::detect()
}

pub(crate) fn host_ids() -> (u32, u32) {
    let slot = std::process::id() % HOST_ID_SLOTS;
    let root = HOST_ID_BASE + 2 * slot;
    (root, root + 1)
}

fn cstring(s: &str, what: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Unsupported(format!("{what} contains a NUL byte")))
}

/// The environment of the agent: a minimal base plus the spec's entries.
pub fn agent_env(spec: &RunSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
        ),
        ("HOME".into(), "/workspace".into()),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "TERM".into(),
            std::env::var("TERM")
                .ok()
                .filter(|t| {
                    t.len() < 64 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .unwrap_or_else(|| "xterm".into()),
        ),
    ];
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

fn search_path(argv0: &str, env: &[(String, String)]) -> Vec<Vec<u8>> {
    if argv0.contains('/') {
        return vec![argv0.as_bytes().to_vec()];
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{argv0}").into_bytes())
        .collect()
}

fn child_config(
    spec: &RunSpec,
    limits: RunLimits,
    (root_host_id, agent_host_id): (u32, u32),
    net: NetView<'_>,
    name: &str,
) -> Result<ChildConfig, SandboxError> {
    let (disk, memory, pids) = (limits.disk, limits.memory, limits.pids);
    let hostname = spec.name.clone();
    let plan = rootfs::plan(spec, disk, &hostname, net.dns);
    let env = net.env;
    let network = net.network;
    let argv0 = spec
        .command
        .first()
        .ok_or_else(|| SandboxError::Unsupported("empty command".into()))?;
    let argv = spec
        .command
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let workdir = spec
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/workspace"));
    let workdir = cstring(&workdir.to_string_lossy(), "the working directory")?;
    let landlock = Rules {
        read: plan.readable.clone(),
        write: plan.writable.clone(),
    };
    // Writable grants are idmapped (the agent writes as the directory's owner); read-only
    // grants are plain binds, so the agent reads only what the host lets everyone read —
    // an idmapped read-only /etc would hand it /etc/shadow.
    // The scratch filesystem is attached inside from the detached mount made here.
    let mut trees = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        trees.push(match step {
            rootfs::Step::Bind {
                source: rootfs::BindSource::Granted(src),
                readonly: false,
                ..
            } => Some(idmap::idmapped_tree(src, agent_host_id, true, None)?),
            rootfs::Step::Scratch { size, .. } => Some(
                Scratch::create(
                    name,
                    *size,
                    &plan.scratch,
                    root_host_id,
                    agent_host_id,
                    false,
                )?
                .into_mount(),
            ),
            _ => None,
        });
    }
    use nix::sys::resource::Resource;
    Ok(ChildConfig {
        search_path: search_path(argv0, &env),
        netns_joined: network.is_some(),
        controlling_tty: false,
        secret_files: Vec::new(),
        plan,
        hostname,
        argv,
        envp,
        workdir,
        seccomp: seccomp::compile()?,
        landlock,
        rlimits: vec![
            (Resource::RLIMIT_CORE, 0),
            // No real-time or raised scheduling priority: it would get around the CPU limit.
            (Resource::RLIMIT_RTPRIO, 0),
            (Resource::RLIMIT_NICE, 0),
            (Resource::RLIMIT_NOFILE, defaults::NOFILE),
            (Resource::RLIMIT_NPROC, pids),
            (Resource::RLIMIT_MEMLOCK, memory.min(64 << 20)),
        ],
        trees,
        ignored_signals: sys::ignored_signals(),
    })
}

/// A process outside the sandbox that ends the run if spawn dies without doing it
/// (SIGKILL): it waits for EOF on a socket whose only other end is spawn's, then kills what
/// is left in the run's cgroups, removes them, and removes `remove` (the OCI runtimes'
/// bundle and state), `grace` after waking (a runtime may still be creating its groups).
/// What it holds (`hold` at its start, [`Guard::hold`] later) is let go when it exits, or
/// when the `rm` it becomes has removed `remove`.
pub(crate) struct Guard {
    tx: Option<OwnedFd>,
    pid: Pid,
}

impl Guard {
    pub(crate) fn start(
        dirs: &[PathBuf],
        hold: &[&OwnedFd],
        grace: Duration,
        remove: &[PathBuf],
    ) -> Result<Guard, SandboxError> {
        let (tx, rx) = seqpacket_pair()?;
        let path = |p: PathBuf| {
            CString::new(p.into_os_string().into_encoded_bytes()).map_err(|_| {
                SandboxError::setup(
                    "guard plan",
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                )
            })
        };
        let mut keep: Vec<usize> = std::iter::once(rx.as_raw_fd())
            .chain(hold.iter().map(|f| f.as_raw_fd()))
            .filter_map(|fd| usize::try_from(fd).ok())
            .collect();
        keep.sort_unstable();
        keep.dedup();
        let plan = sys::GuardPlan {
            rx: rx.as_raw_fd(),
            keep,
            dirs: dirs
                .iter()
                .map(|d| path(d.clone()))
                .collect::<Result<_, _>>()?,
            procs: dirs
                .iter()
                .map(|d| path(d.join("cgroup.procs")))
                .collect::<Result<_, _>>()?,
            grace,
            remove: remove
                .iter()
                .map(|p| path(p.clone()))
                .collect::<Result<_, _>>()?,
        };
        let pid =
            sys::start_guard(plan).map_err(|e| SandboxError::setup("start cleanup guard", e))?;
        // The guard has its own copy of the read end.
        drop(rx);
        Ok(Guard {
            tx: Some(tx),
            pid: Pid::from_raw(pid),
        })
    }

    /// Gives the guard `fd` to hold until it exits, after spawn has returned: the last
    /// reference to something whose end costs time (a run's scratch filesystem: writing it
    /// out, detaching its loop device, freeing its image) then ends it outside the run.
    /// Nothing of it is reachable by then. On an error the caller still has `fd`.
    pub(crate) fn hold(&self, fd: &OwnedFd) -> std::io::Result<()> {
        let tx = self.tx.as_ref().ok_or(std::io::ErrorKind::BrokenPipe)?;
        sys::send_fds(tx.as_fd(), b"h", &[fd.as_raw_fd()])
    }

    /// Lets the guard go: it wakes on EOF, finds nothing left to remove and exits. It is
    /// reaped if it already has; otherwise by whoever reaps spawn's orphans (spawn's own
    /// exit, for the CLI), so the run does not wait for it.
    pub(crate) fn finish(mut self) {
        self.tx = None;
        let _ = waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

struct Channels {
    go: OwnedFd,
    report: OwnedFd,
    status_rx: OwnedFd,
    child: ChildFds,
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SandboxError::setup("socketpair", e))
}

fn channels() -> Result<Channels, SandboxError> {
    let (status_rx, status_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::setup("pipe", e))?;
    let (go, go_child) = seqpacket_pair()?;
    let (report, report_child) = seqpacket_pair()?;
    Ok(Channels {
        go,
        report,
        status_rx,
        child: ChildFds {
            go: go_child,
            report: report_child,
            status: status_tx,
        },
    })
}

/// Hands the init its cgroup membership files: the second go-ahead.
fn send_cgroup(go: &OwnedFd, files: &[OwnedFd]) -> std::io::Result<()> {
    let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    sys::send_fds(go.as_fd(), b"c", &fds)
}

/// The signals that cancel a run (delivered to spawn on a signalfd while a run is on).
pub(crate) fn cancel_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Answers one pending call blocked by the seccomp filter with `EPERM`, counts it by name
/// and reports it (the first of each kind is audited). Returns whether there was one.
pub(crate) fn answer_blocked_call(
    listener: std::os::fd::BorrowedFd<'_>,
    blocked: &mut BTreeMap<String, u64>,
    observer: &mut dyn Observer,
) -> bool {
    let Ok(n) = sys::seccomp_notif_recv(listener) else {
        return false;
    };
    let _ = sys::seccomp_notif_deny(listener, n.id, libc::EPERM);
    let name = seccomp::syscall_name(i64::from(n.syscall));
    let count = blocked.entry(name.clone()).or_insert(0);
    *count += 1;
    observer.denied(&name, *count == 1);
    true
}

/// What the report socket said.
#[derive(Debug, Default)]
struct Reported {
    listener: Option<OwnedFd>,
    setup_error: Option<(String, i32)>,
    exec_errno: Option<i32>,
    landlock: Option<crate::landlock::Enforcement>,
    closed: bool,
}

fn read_report(sock: &OwnedFd, into: &mut Reported) {
    let mut buf = [0u8; 4096];
    let Ok((len, owned)) = sys::recv_fds(sock.as_fd(), &mut buf) else {
        into.closed = true;
        return;
    };
    if len == 0 {
        into.closed = true;
        return;
    }
    let msg = &buf[..len];
    match msg[0] {
        b'L' => into.listener = owned.into_iter().next(),
        b'E' => {
            let body = &msg[1..];
            let (stage, errno) = match body.iter().position(|b| *b == 0) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &b""[..]),
            };
            let errno = std::str::from_utf8(errno)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            into.setup_error = Some((String::from_utf8_lossy(stage).into_owned(), errno));
        }
        b'K' => {
            into.landlock = msg
                .get(1)
                .and_then(|c| crate::landlock::Enforcement::from_code(*c));
        }
        b'X' => {
            into.exec_errno = std::str::from_utf8(&msg[1..])
                .ok()
                .and_then(|s| s.parse().ok());
        }
        _ => {}
    }
}

/// Runs `spec` in a native sandbox. Blocks until the run ends. `Err` means the command never
/// started (exit 125); everything else, including a missing command, is a [`Report`].
///
/// The calling process must be single-threaded (the sandbox is created with fork
/// semantics); this is checked.
pub fn run(
    spec: &RunSpec,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Report, SandboxError> {
    let started = Instant::now();
    check_root()?;
    if sys::thread_count().map_err(|e| SandboxError::setup("count threads", e))? != 1 {
        return Err(SandboxError::Unsupported(
            "the native runtime must be started from a single-threaded process".into(),
        ));
    }
    let run_limits = RunLimits::of(spec);
    let RunLimits {
        memory,
        pids,
        cpu,
        timeout,
        ..
    } = run_limits;
    let (root_id, agent_id) = host_ids();
    let net = NetView::of(spec, opts)?;
    let network = net.network;
    let name = format!("{}-{}", std::process::id(), opts.run_id);
    let mut cfg = child_config(spec, run_limits, (root_id, agent_id), net, &name)?;
    // Granted secrets: into the agent's execve environment only, in place of any variable
    // of the same name; wiped from spawn's memory once the sandbox has started (below).
    for s in opts.secret_env.iter() {
        if s.is_file() {
            cfg.secret_files.push(s.as_file());
            continue;
        }
        let prefix = format!("{}=", s.name());
        cfg.envp
            .retain(|e| !e.as_bytes().starts_with(prefix.as_bytes()));
        cfg.envp.push(s.entry()?);
    }

    let limits = Limits {
        memory_bytes: memory,
        pids,
        cpu_millis: Some(cpu),
    };
    let mut cgroup: Option<Cgroup> = None;
    let mut guard: Option<Guard> = None;
    let plumbing = Plumbing::for_process(opts.redactor.clone(), !opts.no_stdin)?;
    cfg.controlling_tty = plumbing.agent.terminal;

    // Signals that cancel the run arrive on a signalfd; the mask is restored at the end.
    let cancel_set = cancel_signals();
    let old_mask = cancel_set
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(|e| SandboxError::setup("block signals", e))?;
    let result = (|| {
        let sigfd = SignalFd::new(&cancel_set).map_err(|e| SandboxError::setup("signalfd", e))?;
        let ch = channels()?;
        // Without a network, the network namespace is created by the init itself, so that
        // its (slow) set-up overlaps with the cgroup set-up below. With one, the sandbox is
        // born in the run's namespace, made and connected beforehand and owned by the host's
        // user namespace (so not even the sandbox's root can change it): spawn enters it
        // for the clone and leaves it at once.
        let ns = (libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS) as u64;
        let joined = network
            .map(|n| {
                std::fs::File::open(n.namespace())
                    .map(OwnedFd::from)
                    .map_err(|e| SandboxError::setup("open the run's network namespace", e))
            })
            .transpose()?;
        let forked = match &joined {
            Some(netns) => sys::clone3_fork_in_netns(ns, netns.as_fd()),
            None => sys::clone3_fork(ns),
        };
        let (pid, pidfd) = match forked.map_err(|e| SandboxError::setup("create namespaces", e))? {
            sys::Forked::Child => {
                let agent = &plumbing.agent;
                let given = nix::unistd::dup2_stdin(&agent.stdin)
                    .and_then(|()| nix::unistd::dup2_stdout(&agent.stdout))
                    .and_then(|()| nix::unistd::dup2_stderr(&agent.stderr));
                if given.is_err() {
                    sys::exit_now(125);
                }
                let mut keep = vec![
                    ch.child.go.as_raw_fd(),
                    ch.child.report.as_raw_fd(),
                    ch.child.status.as_raw_fd(),
                ];
                keep.extend(cfg.trees.iter().flatten().map(|t| t.as_raw_fd()));
                sys::close_all_except(&keep);
                init::init_main(&cfg, ch.child)
            }
            sys::Forked::Parent { pid, pidfd } => (pid, pidfd),
        };
        let Channels {
            go,
            report,
            status_rx,
            child,
        } = ch;
        drop(child);
        // The child has its copy of the environment: spawn's is wiped (secrets among it).
        crate::secret_env::wipe(&mut cfg.envp);
        cfg.secret_files.clear();
        let sandbox = Pid::from_raw(pid);
        let abort = |e: SandboxError| {
            let _ = kill(sandbox, Signal::SIGKILL);
            let _ = waitpid(sandbox, None);
            e
        };
        let map = format!("0 {root_id} 1\n{AGENT_ID} {agent_id} 1\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)
            .map_err(|e| abort(SandboxError::setup("write uid_map", e)))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)
            .map_err(|e| abort(SandboxError::setup("write gid_map", e)))?;
        // Opened before the init is let go: a command that ends at once takes the init and
        // its namespaces with it.
        let mnt_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map(OwnedFd::from)
            .map_err(|e| abort(SandboxError::setup("open the sandbox's mount namespace", e)))?;
        nix::unistd::write(&go, b"g")
            .map_err(|e| abort(SandboxError::setup("start sandbox", e)))?;
        // While the init builds its namespaces and root (~1 ms), check the kernel, create
        // the cgroup, let the caller record the start, and hand the cgroup over.
        let layout = check_kernel().map_err(&abort)?;
        let cg = Cgroup::create(&layout, &name, &limits).map_err(&abort)?;
        let join = cg.join_files();
        let cg = &*cgroup.insert(cg);
        let join = join.map_err(&abort)?;
        observer
            .created()
            .map_err(|e| abort(SandboxError::Refused(e)))?;
        // If the init already failed, sending fails too; its report says why.
        let _ = send_cgroup(&go, &join);
        drop(join);
        // The guard starts while the sandbox sets itself up, off the critical path.
        // Should spawn be killed before it exists, the next run reaps the cgroups.
        // The guard also holds the sandbox's mount namespace: tearing down its ~30 mounts
        // then happens in the guard once spawn has returned, not in the init's exit that
        // spawn waits for. Nothing of it is reachable by then: no process is left in it.
        guard = Some(Guard::start(cg.dirs(), &[&mnt_ns], Duration::ZERO, &[]).map_err(&abort)?);
        drop(mnt_ns);
        cgroups::reap_stale(&layout);
        let relay = plumbing.start().map_err(&abort)?;
        observer.started(pid, agent_id);
        let report = supervise(
            SupervisedRun {
                sandbox,
                pidfd,
                report,
                status_rx,
                sigfd,
                deadline: started + timeout,
                agent_uid: agent_id,
                started,
                cgroup: cg,
                stop: opts.stop.as_deref(),
            },
            observer,
        );
        let relayed = relay.finish();
        report.map(|r| Report {
            output_error: relayed.output_error,
            ..r
        })
    })();
    let _ = old_mask.thread_set_mask();
    let removed = cgroup.map_or(Ok(()), Cgroup::remove);
    if let Some(g) = guard {
        g.finish();
    }
    let report = result?;
    // The command ran: its result stands. A group that could not be removed yet is left to
    // the guard (which retries) and to the next run's reaping.
    drop(removed);
    Ok(report)
}

struct SupervisedRun<'a> {
    sandbox: Pid,
    pidfd: OwnedFd,
    report: OwnedFd,
    status_rx: OwnedFd,
    sigfd: SignalFd,
    deadline: Instant,
    agent_uid: u32,
    started: Instant,
    cgroup: &'a Cgroup,
    stop: Option<&'a Stop>,
}

fn supervise(run: SupervisedRun<'_>, observer: &mut dyn Observer) -> Result<Report, SandboxError> {
    let mut reported = Reported::default();
    let mut blocked: BTreeMap<String, u64> = BTreeMap::new();
    let mut blocked_total = 0u64;
    let mut kill_reason = None;
    let mut kill_at: Option<Instant> = None;
    let mut exited = false;
    while !exited {
        let now = Instant::now();
        let next = match kill_at {
            Some(k) => k.min(run.deadline),
            None => run.deadline,
        };
        if now >= next {
            if now >= run.deadline && kill_reason.is_none() {
                kill_reason = Some(KillReason::Timeout);
            }
            let _ = kill(run.sandbox, Signal::SIGKILL);
            kill_at = Some(now + Duration::from_secs(3600));
        }
        let wait_ms = next.saturating_duration_since(now).as_millis().min(60_000) as u16;
        let wait_ms = wait_ms.max(1);
        let mut fds = vec![
            PollFd::new(run.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(run.sigfd.as_fd(), PollFlags::POLLIN),
        ];
        if !reported.closed {
            fds.push(PollFd::new(run.report.as_fd(), PollFlags::POLLIN));
        }
        let listener = reported.listener.as_ref().map(|l| l.as_fd());
        if let Some(l) = listener {
            fds.push(PollFd::new(l, PollFlags::POLLIN));
        }
        // The caller's stop, until it has been acted on.
        let stop_idx = run.stop.filter(|_| kill_at.is_none()).map(|s| {
            fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SandboxError::setup("poll", e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let pid_ready = !ready(0).is_empty();
        let sig_ready = ready(1).contains(PollFlags::POLLIN);
        let report_idx = if reported.closed { None } else { Some(2) };
        let report_ready = report_idx.map(|i| !ready(i).is_empty()).unwrap_or(false);
        let listener_idx = listener.map(|_| if reported.closed { 2 } else { 3 });
        let listener_flags = listener_idx.map(ready).unwrap_or(PollFlags::empty());
        let stopped = stop_idx.is_some_and(|i| ready(i).contains(PollFlags::POLLIN));
        drop(fds);
        if stopped && kill_at.is_none() {
            let _ = kill(run.sandbox, Signal::SIGTERM);
            kill_reason.get_or_insert(KillReason::Limit);
            kill_at = Some(Instant::now() + CANCEL_GRACE);
        }

        if listener_flags.contains(PollFlags::POLLIN) {
            if let Some(l) = reported.listener.as_ref() {
                if answer_blocked_call(l.as_fd(), &mut blocked, observer) {
                    blocked_total += 1;
                }
            }
        } else if listener_flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            reported.listener = None;
        }
        if report_ready {
            read_report(&run.report, &mut reported);
        }
        if sig_ready {
            if let Ok(Some(info)) = run.sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if kill_at.is_none() {
                    if let Ok(sig) = Signal::try_from(signo) {
                        let _ = kill(run.sandbox, sig);
                    }
                    kill_reason.get_or_insert(KillReason::Cancelled(signo));
                    kill_at = Some(Instant::now() + CANCEL_GRACE);
                } else {
                    let _ = kill(run.sandbox, Signal::SIGKILL);
                }
            }
        }
        if pid_ready {
            exited = true;
        }
    }
    // Drain what the report socket still holds (an exec error written just before exit).
    while !reported.closed {
        read_report(&run.report, &mut reported);
    }
    let init_status =
        waitpid(run.sandbox, None).map_err(|e| SandboxError::setup("wait for sandbox", e))?;
    let duration = run.started.elapsed();
    if let Some((stage, errno)) = reported.setup_error.take() {
        return Err(SandboxError::Setup {
            stage,
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    let mut raw = [0u8; 4];
    let agent_status = match std::fs::File::from(run.status_rx).read(&mut raw) {
        Ok(4) => Some(i32::from_ne_bytes(raw)),
        _ => None,
    };
    let stats = run.cgroup.stats();
    let (mut exit_code, signal) = match agent_status {
        Some(st) if libc::WIFEXITED(st) => (libc::WEXITSTATUS(st), None),
        Some(st) if libc::WIFSIGNALED(st) => (128 + libc::WTERMSIG(st), Some(libc::WTERMSIG(st))),
        _ => match init_status {
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            WaitStatus::Exited(_, code) => (code, None),
            _ => (128 + libc::SIGKILL, Some(libc::SIGKILL)),
        },
    };
    let exec_failure = reported.exec_errno.map(|e| {
        if e == libc::ENOENT {
            ExecFailure::NotFound
        } else {
            ExecFailure::NotExecutable(e)
        }
    });
    if let Some(f) = exec_failure {
        exit_code = match f {
            ExecFailure::NotFound => 127,
            ExecFailure::NotExecutable(_) => 126,
        };
    }
    let (exit_code, kill_reason) = settle(exit_code, signal, kill_reason, stats.oom_kills);
    Ok(Report {
        exit_code,
        signal,
        duration,
        peak_memory_bytes: stats.peak_memory_bytes,
        blocked_syscalls: blocked_total,
        blocked_by_name: blocked,
        kill_reason,
        exec_failure,
        oom_kills: stats.oom_kills,
        pids_limit_hits: stats.pids_limit_hits,
        landlock: reported.landlock,
        host_uid: run.agent_uid,
        output_error: None,
        cleanup: Cleanup::default(),
    })
}

/// The final exit code and kill reason of a run that ended with `exit_code` (and `signal`,
/// if one killed it): a SIGKILL in a group that saw an OOM kill is the memory limit's
/// doing, and a timeout always exits 124 (SPEC §4). Shared by every runtime.
pub(crate) fn settle(
    exit_code: i32,
    signal: Option<i32>,
    kill_reason: Option<KillReason>,
    oom_kills: u64,
) -> (i32, Option<KillReason>) {
    let kill_reason = match kill_reason {
        None if oom_kills > 0 && signal == Some(libc::SIGKILL) => Some(KillReason::OutOfMemory),
        other => other,
    };
    let exit_code = if kill_reason == Some(KillReason::Timeout) {
        124
    } else {
        exit_code
    };
    (exit_code, kill_reason)
}

/// Only used by tests and `doctor`: whether a path is inside a planned writable tree.
pub fn is_under(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_dropped_only_once_its_cleanup_is_done() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let done = Arc::new(AtomicUsize::new(0));
        let work = |done: &Arc<AtomicUsize>| {
            let done = Arc::clone(done);
            move || {
                std::thread::sleep(Duration::from_millis(50));
                done.fetch_add(1, Ordering::SeqCst);
            }
        };
        // Dropped (as a report is): waited for.
        let cleanup = Cleanup::start(work(&done));
        assert_eq!(done.load(Ordering::SeqCst), 0, "it runs beside the caller");
        drop(cleanup);
        assert_eq!(done.load(Ordering::SeqCst), 1);
        // Waited for explicitly.
        Cleanup::start(work(&done)).wait();
        assert_eq!(done.load(Ordering::SeqCst), 2);
        // Nothing to wait for.
        drop(Cleanup::default());
    }

    /// Whether `fd` (a pipe's read end) reads EOF within `within`.
    fn eof_within(fd: &OwnedFd, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let left = until.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
                return false;
            }
            let mut b = [0u8; 1];
            if nix::unistd::read(fd, &mut b) == Ok(0) {
                return true;
            }
        }
    }

    /// What the guard is given to hold outlives spawn's own copy, and is let go once the
    /// guard is: a pipe's write end handed over, then closed by spawn, ends only then.
    #[test]
    fn the_guard_holds_what_it_is_given_until_it_is_let_go() {
        for given in 1..=3 {
            let guard = Guard::start(&[], &[], Duration::ZERO, &[]).unwrap();
            let mut readers = Vec::new();
            for _ in 0..given {
                let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
                guard.hold(&writer).unwrap();
                drop(writer);
                readers.push(reader);
            }
            for r in &readers {
                assert!(!eof_within(r, Duration::from_millis(100)), "let go early");
            }
            let pid = guard.pid;
            guard.finish();
            for r in &readers {
                assert!(eof_within(r, Duration::from_secs(5)), "still held");
            }
            let _ = waitpid(pid, None);
        }
    }

    /// The guard of a spawn that died removes what it was told to before it lets go of
    /// what it holds (whose end may take seconds on a busy disk): the removal is never
    /// held up by it.
    #[test]
    fn a_guard_that_removes_lets_go_of_what_it_holds_only_after() {
        for files in [0, 1, 200] {
            let dir = tempfile::tempdir().unwrap();
            let left = dir.path().join("state");
            std::fs::create_dir(&left).unwrap();
            for i in 0..files {
                std::fs::write(left.join(format!("f{i}")), b"x").unwrap();
            }
            let guard =
                Guard::start(&[], &[], Duration::ZERO, std::slice::from_ref(&left)).unwrap();
            let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
            guard.hold(&writer).unwrap();
            drop(writer);
            let pid = guard.pid;
            // As if spawn died: the guard wakes with the state still there.
            guard.finish();
            assert!(eof_within(&reader, Duration::from_secs(10)), "still held");
            assert!(
                !left.exists(),
                "{files} files: let go of what it held before the removal was done"
            );
            let _ = waitpid(pid, None);
        }
    }

    #[test]
    fn settle_names_oom_and_timeout_the_same_for_every_runtime() {
        let kill = Some(libc::SIGKILL);
        // A SIGKILL in a group that saw an OOM kill is the memory limit.
        assert_eq!(
            settle(137, kill, None, 1),
            (137, Some(KillReason::OutOfMemory))
        );
        // Without an OOM kill, or by another signal, it is not.
        assert_eq!(settle(137, kill, None, 0), (137, None));
        assert_eq!(settle(143, Some(libc::SIGTERM), None, 1), (143, None));
        // spawn's own reason wins; a timeout always exits 124.
        assert_eq!(
            settle(137, kill, Some(KillReason::Timeout), 1),
            (124, Some(KillReason::Timeout))
        );
        assert_eq!(settle(0, None, None, 0), (0, None));
    }

    /// A network that is only a namespace path and a host end.
    #[derive(Debug)]
    struct Routed;
    impl Network for Routed {
        fn nameserver(&self) -> std::net::Ipv4Addr {
            std::net::Ipv4Addr::new(10, 201, 0, 1)
        }
        fn proxy(&self) -> Option<std::net::SocketAddr> {
            None
        }
        fn namespace(&self) -> std::path::PathBuf {
            "/proc/1/ns/net".into()
        }
    }

    #[test]
    fn a_policy_that_grants_a_network_never_runs_without_its_own_namespace() {
        for policy in [
            NetPolicy::Restricted,
            NetPolicy::EgressOnly,
            NetPolicy::Full,
        ] {
            let mut spec = RunSpec::bare(spawn_policy::RuntimeKind::Native, vec!["true".into()]);
            spec.net.policy = policy;
            // The caller made no network: an error, not the host's namespace.
            assert!(
                matches!(
                    NetView::of(&spec, &RunOptions::new("t")),
                    Err(SandboxError::Unsupported(_))
                ),
                "{policy:?}"
            );
            let opts = RunOptions {
                network: Some(std::sync::Arc::new(Routed)),
                ..RunOptions::new("t")
            };
            let view = NetView::of(&spec, &opts).expect("a view");
            assert!(view.network.is_some(), "{policy:?}");
            assert_eq!(
                view.dns,
                rootfs::Dns::Server(std::net::Ipv4Addr::new(10, 201, 0, 1))
            );
            // A network without a proxy (full) sets no proxy variables.
            assert!(
                !view.env.iter().any(|(k, _)| k == "HTTP_PROXY"),
                "{policy:?}"
            );
        }
        // none: loopback only, whatever the caller passed.
        let spec = RunSpec::bare(spawn_policy::RuntimeKind::Native, vec!["true".into()]);
        let opts = RunOptions {
            network: Some(std::sync::Arc::new(Routed)),
            ..RunOptions::new("t")
        };
        let view = NetView::of(&spec, &opts).expect("a view");
        assert!(view.network.is_none() && view.dns == rootfs::Dns::None);
    }
}
