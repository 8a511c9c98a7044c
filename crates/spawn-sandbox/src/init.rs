//! Code that runs inside the sandbox: the minimal init (PID 1 of the new PID namespace)
//! and the agent process it forks.
//!
//! Everything here runs in a process created by `clone3`/`fork` (or, for the OCI init's
//! command, [`sys::vfork`]) from a single-threaded parent, and leaves only through `execve`
//! or [`sys::exit_now`]. Failures are reported to
//! spawn over the report socket as one message, never printed.
//!
//! Report protocol (SOCK_SEQPACKET, one message each):
//! - `L` + the seccomp listener fd (SCM_RIGHTS): the agent installed its filter;
//! - `E<stage>\0<errno>`: set-up failed at `stage`;
//! - `K<F|P|N>`: Landlock is fully, partly or not enforced (sent just before exec);
//! - `X<errno>`: every `execve` candidate failed; errno of the most telling one.
//!
//! The socket end is close-on-exec, so spawn sees EOF once the agent's program runs.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use crate::error::SandboxError;
use crate::landlock::{self, Rules};
use crate::rootfs::{self, Plan, AGENT_ID};
use crate::seccomp::Compiled;
use crate::sys;

/// Everything the init and agent need, prepared by the parent before `clone3` so the
/// children do as little work (and allocation) as possible.
#[derive(Debug)]
pub(crate) struct ChildConfig {
    pub(crate) plan: Plan,
    pub(crate) hostname: String,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    /// Candidate paths for argv[0] (PATH search done against the sandbox's view).
    pub(crate) search_path: Vec<Vec<u8>>,
    pub(crate) workdir: CString,
    pub(crate) seccomp: Compiled,
    pub(crate) landlock: Rules,
    pub(crate) rlimits: Vec<(nix::sys::resource::Resource, u64)>,
    /// Signals spawn ignores (inherited as ignored): reset before exec.
    pub(crate) ignored_signals: u64,
    /// Detached idmapped trees for granted mounts, by plan step index.
    pub(crate) trees: Vec<Option<OwnedFd>>,
    /// The sandbox was born in the run's network namespace (made and connected by spawn,
    /// loopback up); otherwise the init makes one with loopback only. Never the host's.
    pub(crate) netns_joined: bool,
    /// The agent's stdin is the run's own pty (an interactive run): the agent's session
    /// takes it as controlling terminal.
    pub(crate) controlling_tty: bool,
    /// Secrets granted as files: written by the init on the run's secrets tmpfs once the
    /// root is built, before the agent is released.
    pub(crate) secret_files: Vec<crate::secret_env::SecretFile>,
}

/// The child ends of the channels to spawn.
#[derive(Debug)]
pub(crate) struct ChildFds {
    /// Go-ahead socket: `g` once the id maps are written, then `c` with the run's cgroup
    /// membership files (SCM_RIGHTS).
    pub(crate) go: OwnedFd,
    /// Report socket (see module docs).
    pub(crate) report: OwnedFd,
    /// Write end: init writes the agent's raw wait status (4 bytes, native endian).
    pub(crate) status: OwnedFd,
}

fn report_error(report: &OwnedFd, stage: &str, err: &std::io::Error) {
    let mut msg = Vec::with_capacity(stage.len() + 16);
    msg.push(b'E');
    msg.extend_from_slice(stage.as_bytes());
    msg.push(0);
    msg.extend_from_slice(err.raw_os_error().unwrap_or(0).to_string().as_bytes());
    let _ = nix::unistd::write(report, &msg);
}

fn fail(report: &OwnedFd, e: SandboxError) -> ! {
    let (stage, err) = match e {
        SandboxError::Setup { stage, source } => (stage, source),
        other => (other.to_string(), std::io::Error::from_raw_os_error(0)),
    };
    report_error(report, &stage, &err);
    sys::exit_now(125)
}

/// Signals init forwards to the agent's process group.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Entry point of the clone3 child: becomes the sandbox init. Never returns.
pub(crate) fn init_main(cfg: &ChildConfig, fds: ChildFds) -> ! {
    let ChildFds { go, report, status } = fds;
    // Die with spawn. If spawn died before this line, the go socket reads EOF below.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        fail(&report, SandboxError::setup("set parent-death signal", e));
    }
    let mut byte = [0u8; 1];
    match nix::unistd::read(&go, &mut byte) {
        Ok(1) => {}
        _ => sys::exit_now(125),
    }
    if let Err(e) = setup_namespaces(cfg) {
        fail(&report, e);
    }
    // Changing credentials cleared the parent-death signal: set it again, then make sure
    // spawn did not die in between (its end of the go socket would have hung up).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        fail(&report, SandboxError::setup("set parent-death signal", e));
    }
    let mut pfd = [nix::poll::PollFd::new(
        go.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    if matches!(nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0) {
        sys::exit_now(125);
    }
    if let Err(e) = join_cgroup(&go) {
        fail(&report, e);
    }
    drop(go);

    // Block the signals init handles synchronously before the agent exists.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        fail(&report, SandboxError::setup("block signals", e));
    }

    // The agent is forked now, so that its own confinement (seccomp, limits) runs while
    // init builds the root; it waits for `ready` before it looks at the filesystem.
    // pivot_root moves its root and working directory along with init's.
    let (ready_rx, ready_tx) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail(&report, SandboxError::setup("ready pipe", e)),
    };
    let agent = match sys::fork() {
        Ok(None) => {
            drop(ready_tx);
            agent_main(cfg, &report, ready_rx)
        }
        Ok(Some(pid)) => Pid::from_raw(pid),
        Err(e) => fail(&report, SandboxError::setup("fork agent", e)),
    };
    drop(ready_rx);
    // On failure the agent reads EOF and exits; init's exit ends the namespace anyway.
    if let Err(e) = rootfs::apply(&cfg.plan, &cfg.trees) {
        fail(&report, e);
    }
    if !cfg.secret_files.is_empty() {
        let dir = std::path::Path::new(rootfs::SECRETS_DIR);
        if let Err(e) = crate::secret_env::write_files(dir, &cfg.secret_files) {
            fail(
                &report,
                SandboxError::setup("write the secrets granted as files", e),
            );
        }
    }
    if let Err(e) = nix::unistd::write(&ready_tx, b"r") {
        fail(&report, SandboxError::setup("release the agent", e));
    }
    drop(ready_tx);
    drop(report);

    let wait_status = supervise(agent, &set);
    let _ = std::fs::File::from(status).write_all(&wait_status.to_ne_bytes());
    sys::exit_now(0)
}

/// Becomes the namespaces' root and sets up the network and UTS namespaces.
fn setup_namespaces(cfg: &ChildConfig) -> Result<(), SandboxError> {
    // The clone child still carries spawn's host credentials, which are unmapped here;
    // become the namespace's root (host id BASE+2·pid) before touching any file.
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| SandboxError::setup("become namespace root (gid)", e))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| SandboxError::setup("become namespace root (uid)", e))?;
    nix::unistd::setgroups(&[])
        .map_err(|e| SandboxError::setup("clear supplementary groups", e))?;
    if !cfg.netns_joined {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| SandboxError::setup("network namespace", e))?;
    }
    nix::unistd::sethostname(&cfg.hostname).map_err(|e| SandboxError::setup("set hostname", e))?;
    if cfg.netns_joined {
        // The run's (whose loopback spawn brought up): not the sandbox's to configure.
        return Ok(());
    }
    sys::loopback_up().map_err(|e| SandboxError::setup("bring up loopback", e))
}

/// Receives the run's cgroup membership files from spawn, moves itself in (cheap for the
/// process itself; see `Cgroup::join_files`) and enters a new cgroup namespace there.
fn join_cgroup(go: &OwnedFd) -> Result<(), SandboxError> {
    let mut buf = [0u8; 8];
    let (len, files) = sys::recv_fds(go.as_fd(), &mut buf)
        .map_err(|e| SandboxError::setup("receive the run's cgroup", e))?;
    if len != 1 || files.is_empty() {
        return Err(SandboxError::setup(
            "receive the run's cgroup",
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
    }
    for f in files {
        std::fs::File::from(f)
            .write_all(b"0")
            .map_err(|e| SandboxError::setup("join the run's cgroup", e))?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| SandboxError::setup("cgroup namespace", e))
}

/// Reaps every child, forwards signals to the agent's process group, and returns the
/// agent's raw wait status once it has exited.
fn supervise(agent: Pid, set: &SigSet) -> i32 {
    loop {
        let sig = match set.wait() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            // The agent leads its own session and process group.
            let _ = kill(Pid::from_raw(-agent.as_raw()), sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == agent => return (code & 0xff) << 8,
                Ok(WaitStatus::Signaled(pid, sig, core)) if pid == agent => {
                    return sig as i32 | if core { 0x80 } else { 0 };
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// The agent: drops every privilege, confines itself and execs the command.
fn agent_main(cfg: &ChildConfig, report: &OwnedFd, ready: OwnedFd) -> ! {
    if let Err(e) = confine_process(cfg, report) {
        fail(report, e);
    }
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(&ready, &mut byte), Ok(1)) {
        // init failed to build the root and reported why.
        sys::exit_now(125);
    }
    drop(ready);
    match enter_root(cfg) {
        // Tell spawn how much of Landlock the kernel enforced (for the run's report).
        Ok(enforced) => {
            let _ = nix::unistd::write(report, &[b'K', enforced.code()]);
        }
        Err(e) => fail(report, e),
    }
    // PATH search inside the sandbox, like execvp: remember the most telling error.
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    let mut denied: Option<std::io::Error> = None;
    for candidate in &cfg.search_path {
        let Ok(path) = CString::new(candidate.clone()) else {
            continue;
        };
        let e = sys::execve(&path, &cfg.argv, &cfg.envp);
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => denied = Some(e),
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => last = e,
        }
        if last.raw_os_error() != Some(libc::ENOENT) {
            break;
        }
    }
    let err = denied.unwrap_or(last);
    let msg = format!("X{}", err.raw_os_error().unwrap_or(0));
    let _ = nix::unistd::write(report, msg.as_bytes());
    sys::exit_now(if err.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    })
}

/// Everything that does not depend on the new root: session, limits, capability bounding
/// set, signals, `no_new_privs`, and seccomp (whose listener goes to spawn).
fn confine_process(cfg: &ChildConfig, report: &OwnedFd) -> Result<(), SandboxError> {
    nix::unistd::setsid().map_err(|e| SandboxError::setup("new session", e))?;
    if cfg.controlling_tty {
        sys::take_controlling_terminal()
            .map_err(|e| SandboxError::setup("take the run's terminal", e))?;
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SandboxError::setup("set parent-death signal", e))?;
    for (resource, value) in &cfg.rlimits {
        // Only ever lower a limit: raising a hard limit is not possible (nor wanted) here.
        let (_, hard) = nix::sys::resource::getrlimit(*resource)
            .map_err(|e| SandboxError::setup("read rlimit", e))?;
        let v = (*value).min(hard);
        nix::sys::resource::setrlimit(*resource, v, v)
            .map_err(|e| SandboxError::setup("set rlimit", e))?;
    }
    sys::drop_bounding_and_ambient()
        .map_err(|e| SandboxError::setup("drop capability bounding set", e))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::prctl::set_no_new_privs().map_err(|e| SandboxError::setup("set no_new_privs", e))?;
    sys::reset_signals(cfg.ignored_signals);
    let listener = sys::seccomp_install(&cfg.seccomp.main, true)
        .map_err(|e| SandboxError::setup("install seccomp filter", e))?
        .ok_or_else(|| {
            SandboxError::setup(
                "install seccomp filter",
                std::io::Error::other("no listener"),
            )
        })?;
    sys::send_fds(report.as_fd(), b"L", &[listener.as_raw_fd()])
        .map_err(|e| SandboxError::setup("hand over seccomp listener", e))?;
    // The agent must never keep its own listener: it could answer its own notifications.
    drop(listener);
    Ok(())
}

/// Under gVisor, the command's side of the init: uid/gid 1000, no supplementary groups
/// (the bounding set came empty from the init; changing every uid away from 0 clears the
/// rest).
fn drop_to_agent() -> Result<(), SandboxError> {
    sys::set_ids_single_threaded(AGENT_ID).map_err(|(what, e)| SandboxError::setup(what, e))?;
    sys::capset_clear().map_err(|e| SandboxError::setup("clear capabilities", e))
}

/// Once the root is built: Landlock, then the agent's own uid/gid (which clears every
/// capability), then the working directory.
fn enter_root(cfg: &ChildConfig) -> Result<landlock::Enforcement, SandboxError> {
    let enforced = landlock::restrict(&cfg.landlock)?;
    let gid = Gid::from_raw(AGENT_ID);
    let uid = Uid::from_raw(AGENT_ID);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| SandboxError::setup("set gid 1000", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| SandboxError::setup("set uid 1000", e))?;
    sys::capset_clear().map_err(|e| SandboxError::setup("clear capabilities", e))?;
    // The credential change cleared the parent-death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SandboxError::setup("set parent-death signal", e))?;
    nix::unistd::chdir(cfg.workdir.as_c_str()).map_err(|e| {
        SandboxError::setup(
            format!("enter working directory {}", cfg.workdir.to_string_lossy()),
            e,
        )
    })?;
    Ok(enforced)
}

/// What the init of an OCI sandbox is told on its command line (`spawn-init
/// FLAGS -- COMMAND`). [`InitArgs::to_args`] writes it for the bundle and
/// [`InitArgs::parse`] reads it back inside, so the two cannot drift apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitArgs {
    /// `--report-fd N`: the socket to spawn; the command's seccomp listener is sent over
    /// it (runc). Without it (gVisor) blocked calls fail `EPERM` directly.
    pub report_fd: Option<std::os::fd::RawFd>,
    /// `--stdio-fd N`: descriptors N, N+1 and N+2 become the command's stdin, stdout and
    /// stderr (runc relays the container's own stdio through pipes of its own, stream by
    /// stream, which would lose the order between stdout and stderr).
    pub stdio_fd: Option<std::os::fd::RawFd>,
    /// `--read PATH` / `--write PATH`: the Landlock rules (runc; gVisor's kernel has none).
    pub landlock: Rules,
    /// `--gvisor-root`: the init starts as root of gVisor's kernel (never the host's): it
    /// removes the devices gVisor adds to `/dev` beyond SPEC §5's, starts the command as
    /// uid/gid 1000 with no capabilities, and drops its own.
    pub gvisor_root: bool,
    /// `--xattr-compat`: also install [`crate::seccomp::gvisor_xattr_compat`].
    pub xattr_compat: bool,
    /// `--tty`: the command's stdin is the run's own pty (an interactive run): its
    /// session takes it as controlling terminal.
    pub tty: bool,
    /// `--secrets-fd N`: a pipe holding granted secrets (`secret_env`), read and closed
    /// before the command starts; they are added to the command's environment only.
    pub secrets_fd: Option<std::os::fd::RawFd>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Why `spawn-init`'s command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitUsage;

impl std::fmt::Display for InitUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "usage: spawn-init [--report-fd N] [--stdio-fd N] [--read PATH]... \
             [--write PATH]... [--gvisor-root] [--xattr-compat] [--tty] [--secrets-fd N] -- COMMAND...",
        )
    }
}

impl InitArgs {
    /// The flags and command, as the bundle's `process.args` after the init's path.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(fd) = self.report_fd {
            args.extend(["--report-fd".to_owned(), fd.to_string()]);
        }
        if let Some(fd) = self.stdio_fd {
            args.extend(["--stdio-fd".to_owned(), fd.to_string()]);
        }
        if let Some(fd) = self.secrets_fd {
            args.extend(["--secrets-fd".to_owned(), fd.to_string()]);
        }
        for (flag, paths) in [
            ("--read", &self.landlock.read),
            ("--write", &self.landlock.write),
        ] {
            for p in paths {
                args.push(flag.to_owned());
                args.push(p.to_string_lossy().into_owned());
            }
        }
        if self.gvisor_root {
            args.push("--gvisor-root".to_owned());
        }
        if self.xattr_compat {
            args.push("--xattr-compat".to_owned());
        }
        if self.tty {
            args.push("--tty".to_owned());
        }
        args.push("--".to_owned());
        args.extend(self.command.iter().cloned());
        args
    }

    /// Reads what [`InitArgs::to_args`] wrote. Anything else is refused.
    pub fn parse(args: &[&str]) -> Result<InitArgs, InitUsage> {
        let mut out = InitArgs::default();
        // Plain decimal only (no sign, no spaces), above the standard descriptors.
        let fd = |s: &str| match s.parse::<i32>() {
            Ok(fd) if fd > 2 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(fd),
            _ => Err(InitUsage),
        };
        let mut rest = args;
        loop {
            match rest {
                ["--report-fd", n, tail @ ..] if out.report_fd.is_none() => {
                    out.report_fd = Some(fd(n)?);
                    rest = tail;
                }
                ["--stdio-fd", n, tail @ ..] if out.stdio_fd.is_none() => {
                    out.stdio_fd = Some(fd(n)?);
                    rest = tail;
                }
                ["--secrets-fd", n, tail @ ..] if out.secrets_fd.is_none() => {
                    out.secrets_fd = Some(fd(n)?);
                    rest = tail;
                }
                [flag @ ("--read" | "--write"), path, tail @ ..] if path.starts_with('/') => {
                    let list = if *flag == "--read" {
                        &mut out.landlock.read
                    } else {
                        &mut out.landlock.write
                    };
                    list.push(std::path::PathBuf::from(path));
                    rest = tail;
                }
                ["--gvisor-root", tail @ ..] if !out.gvisor_root => {
                    out.gvisor_root = true;
                    rest = tail;
                }
                ["--xattr-compat", tail @ ..] if !out.xattr_compat => {
                    out.xattr_compat = true;
                    rest = tail;
                }
                ["--tty", tail @ ..] if !out.tty => {
                    out.tty = true;
                    rest = tail;
                }
                ["--", command @ ..] if !command.is_empty() => {
                    out.command = command.iter().map(|s| (*s).to_owned()).collect();
                    break;
                }
                _ => return Err(InitUsage),
            }
        }
        // The descriptors must not overlap (the stdio triple starts after the report).
        if let (Some(r), Some(s)) = (out.report_fd, out.stdio_fd) {
            if (s..s + 3).contains(&r) {
                return Err(InitUsage);
            }
        }
        Ok(out)
    }
}

/// What `/dev` may hold (SPEC §5: null, zero, full, random, urandom and a tty; the
/// standard symlinks, `shm`, and the pty multiplexer a terminal needs). Under gVisor the
/// init removes anything else (gVisor adds `fuse` and `net/tun`).
const DEV_ALLOWED: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr", "shm",
    "pts", "ptmx",
];

/// Removes every entry of `/dev` outside [`DEV_ALLOWED`] (one level of directories deep,
/// which is all gVisor makes).
fn prune_dev() -> std::io::Result<()> {
    for entry in std::fs::read_dir("/dev")? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| DEV_ALLOWED.contains(&n)) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            for inner in std::fs::read_dir(&path)? {
                std::fs::remove_file(inner?.path())?;
            }
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The capabilities spawn's OCI configuration gives spawn-init under gVisor (its bounding,
/// effective and permitted sets; see `oci::runtime_spec`): what becoming the agent needs,
/// by name and number. The init drops exactly these from its bounding set.
pub(crate) const GVISOR_INIT_CAPS: [(&str, u32); 3] =
    [("CAP_SETUID", 7), ("CAP_SETGID", 6), ("CAP_SETPCAP", 8)];

/// [`GVISOR_INIT_CAPS`] as a mask (bit N for capability N).
fn gvisor_init_bounding() -> u64 {
    GVISOR_INIT_CAPS
        .iter()
        .fold(0, |mask, (_, cap)| mask | (1u64 << cap))
}

/// The init an OCI runtime runs as the container's PID 1 (`spawn-init FLAGS --
/// CMD`, see [`InitArgs`]): starts the command in a session of its own, forwards signals
/// to it, reaps orphans and returns the command's status as an exit code (128+N when a
/// signal ended it). Without it, the command would be PID 1 and ignore every signal it has
/// no handler for. The command's side runs in a child sharing the init's memory until it
/// executes ([`sys::vfork`]: under gVisor a fork's copy of the address space cost ~5 ms of
/// every run), and the init ends with [`sys::exit_now`] once the command has, freeing
/// nothing; it returns only when it cannot start the command (125).
///
/// With `report_fd`, the command first gets exactly the native runtime's seccomp filter,
/// and the filter's notification listener is sent to spawn over that socket (as in
/// `native`), so blocked calls are answered and counted the same way. Without it (gVisor,
/// whose kernel has no user notifications) the command gets the same filter with blocked
/// calls failing `EPERM` directly (see [`crate::seccomp::Compiled::deny_only`]).
///
/// With Landlock rules, the command is also confined by the native runtime's Landlock
/// rules (applied first; a failure ends the run with 125), and how much of them the kernel
/// enforced travels with the listener (`L` + [`landlock::Enforcement::code`]).
pub fn oci_init(args: &InitArgs) -> i32 {
    let Some(program) = args.command.first() else {
        return 125;
    };
    let Ok(argv) = args
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return 125;
    };
    let Ok(prog) = CString::new(program.as_bytes()) else {
        return 125;
    };
    // Only descriptors that are open are taken over (owning one that is not would be
    // undefined behaviour, not an error).
    let given = args
        .report_fd
        .into_iter()
        .chain(args.stdio_fd.into_iter().flat_map(|n| n..n + 3));
    for fd in given {
        if !sys::fd_is_open(fd) {
            return init_failed(
                &format!("use descriptor {fd}"),
                "it is not open (spawn-init is started by spawn's runtimes)",
            );
        }
    }
    // The granted secrets, read and their pipe closed now: the command's environment is
    // the init's with them added (the init's own never holds them); the files are written
    // by the command's side as the agent, before it confines itself (below).
    let mut secret_files = Vec::new();
    let mut envp = match args.secrets_fd {
        None => None,
        Some(fd) if !sys::fd_is_open(fd) => {
            return init_failed(&format!("use descriptor {fd}"), "it is not open");
        }
        Some(fd) => match read_secret_env(sys::own_fd(fd)) {
            Ok((env, files)) => {
                secret_files = files;
                Some(env)
            }
            Err(e) => return init_failed("read the granted secrets", e),
        },
    };
    let report = args.report_fd.map(sys::own_fd);
    let stdio: Option<[OwnedFd; 3]> = args
        .stdio_fd
        .map(|n| [sys::own_fd(n), sys::own_fd(n + 1), sys::own_fd(n + 2)]);
    let compiled = match crate::seccomp::compile() {
        Ok(c) => c,
        Err(e) => return init_failed("load the seccomp filter", e),
    };
    let program = match report {
        Some(_) => compiled.main,
        None => compiled.deny_only(),
    };
    let program = if args.xattr_compat {
        match crate::seccomp::with_gvisor_xattr_compat(&program) {
            Ok(p) => p,
            Err(e) => return init_failed("build the xattr filter", e),
        }
    } else {
        program
    };
    // Under gVisor the init starts as root of gVisor's kernel: the bounding set is
    // emptied before the command starts, once, so that the command inherits it empty (the
    // effective capabilities the command's side needs to become the agent are not in it).
    // That set is exactly what spawn's configuration gave the init ([`GVISOR_INIT_CAPS`]),
    // and gVisor starts the init with every signal at its default: nothing to read from
    // `/proc/self/status` (whose open alone took ~1.4 ms of gVisor's kernel).
    if args.gvisor_root {
        if let Err(e) = prune_dev() {
            return init_failed("remove the devices SPEC §5 does not list from /dev", e);
        }
        if let Err(e) = sys::drop_bounding(gvisor_init_bounding()) {
            return init_failed("drop the capability bounding set", e);
        }
    }
    let landlock = (!args.landlock.read.is_empty() || !args.landlock.write.is_empty())
        .then_some(&args.landlock);
    // Read before the command starts: only what the init ignores needs resetting there.
    let ignored = if args.gvisor_root {
        sys::IGNORED_BY_SPAWN_INIT
    } else {
        sys::ignored_signals()
    };
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        return init_failed("block signals", e);
    }
    // The command's side, run by a child that shares the init's memory until it executes
    // (see `sys::vfork`): it borrows what the init prepared, and what it closes or changes
    // of descriptors, ids, capabilities and filters is its own.
    let mut command = || -> i32 {
        sys::reset_signals(ignored);
        if let Some(given) = &stdio {
            let [stdin, stdout, stderr] = given;
            let placed = nix::unistd::dup2_stdin(stdin)
                .and_then(|()| nix::unistd::dup2_stdout(stdout))
                .and_then(|()| nix::unistd::dup2_stderr(stderr));
            if let Err(e) = placed {
                return init_failed("give the command its stdio", e);
            }
            // The originals stay the init's (it closes them itself).
            for fd in given {
                let _ = nix::unistd::close(fd.as_raw_fd());
            }
        }
        if args.tty && args.gvisor_root {
            // gVisor's terminals cannot become a new session's controlling terminal
            // (TIOCSCTTY fails): the command leads a process group of its own in the
            // init's session instead, which the init puts in the foreground (below).
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
        } else {
            let _ = nix::unistd::setsid();
            if args.tty {
                if let Err(e) = sys::take_controlling_terminal() {
                    return init_failed("take the run's terminal", e);
                }
            }
        }
        if args.gvisor_root {
            if let Err(e) = drop_to_agent() {
                return init_failed("become the agent", e);
            }
        }
        if !secret_files.is_empty() {
            let dir = std::path::Path::new(rootfs::SECRETS_DIR);
            if let Err(e) = crate::secret_env::write_files(dir, &secret_files) {
                return init_failed("write the secrets granted as files", e);
            }
            secret_files.clear();
        }
        let enforced = match landlock.map(landlock::restrict) {
            None => None,
            Some(Ok(enforced)) => Some(enforced.code()),
            Some(Err(e)) => return init_failed("apply Landlock", e),
        };
        if let Some(report) = &report {
            let listener = match sys::seccomp_install(&program, true) {
                Ok(Some(l)) => l,
                Ok(None) => return init_failed("install seccomp", "no listener"),
                Err(e) => return init_failed("install seccomp", e),
            };
            let msg = [b'L', enforced.unwrap_or(b'-')];
            let sent = sys::send_fds(report.as_fd(), &msg, &[listener.as_raw_fd()]);
            if let Err(e) = sent {
                return init_failed("hand over the seccomp listener", e);
            }
            // Neither the listener nor the report socket may reach the command.
            drop(listener);
            let _ = nix::unistd::close(report.as_raw_fd());
        } else if let Err(e) = sys::seccomp_install(&program, false) {
            return init_failed("install seccomp", e);
        }
        let err = match &envp {
            Some(env) => nix::unistd::execvpe(&prog, &argv, env).err(),
            None => nix::unistd::execvp(&prog, &argv).err(),
        };
        match err {
            Some(nix::errno::Errno::ENOENT) => 127,
            _ => 126,
        }
    };
    let child = match sys::vfork(&mut command) {
        Ok(pid) => Pid::from_raw(pid),
        Err(e) => return init_failed("start the command", e),
    };
    if args.tty && args.gvisor_root {
        // The command's group gets the terminal's keys (^C, ^Z) and may read it. The
        // command made its group itself before executing (this `setpgid` then fails with
        // EACCES, harmlessly: it is for a command that had not).
        let _ = nix::unistd::setpgid(child, child);
        if let Err(e) = nix::unistd::tcsetpgrp(std::io::stdin(), child) {
            return init_failed("give the command the run's terminal", e);
        }
    }
    // Only the command holds its streams and the secrets; the init keeps no capability it
    // does not need to reap and forward signals.
    drop(stdio);
    if let Some(env) = &mut envp {
        crate::secret_env::wipe(env);
    }
    drop(secret_files);
    if args.gvisor_root {
        if let Err(e) = sys::capset_clear() {
            return init_failed("drop the init's capabilities", e);
        }
    }
    drop(report);
    let status = supervise(child, &set);
    // The init's end: at once, without freeing what the process is about to lose anyway
    // (under gVisor every unmapping is a trip through the Sentry).
    sys::exit_now(if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    })
}

/// The command's environment: the init's own, with the granted secrets read from `pipe`
/// (to its end, at most [`crate::secret_env::MAX_PAYLOAD`] bytes) in place of any variable
/// of the same name.
fn read_secret_env(
    pipe: OwnedFd,
) -> Result<(Vec<CString>, Vec<crate::secret_env::SecretFile>), String> {
    use std::io::Read as _;
    let mut payload = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::from(pipe)
        .take(crate::secret_env::MAX_PAYLOAD as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(|e| e.to_string())?;
    if payload.len() > crate::secret_env::MAX_PAYLOAD {
        return Err("more than the largest payload".into());
    }
    let crate::secret_env::Decoded {
        env: secrets,
        files,
    } = crate::secret_env::decode(&payload).ok_or("a malformed payload")?;
    let names: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| {
            let b = s.as_bytes();
            b.iter().position(|c| *c == b'=').map(|i| b[..=i].to_vec())
        })
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            use std::os::unix::ffi::OsStrExt as _;
            let mut e = k.as_bytes().to_vec();
            e.push(b'=');
            if names.contains(&e) {
                return None;
            }
            e.extend_from_slice(v.as_bytes());
            CString::new(e).ok()
        })
        .collect();
    env.extend(secrets);
    Ok((env, files))
}

/// Says on stderr (which reaches the user through spawn) why the init could not start the
/// command, and returns spawn's exit code for that (125).
fn init_failed(what: &str, err: impl std::fmt::Display) -> i32 {
    eprintln!("spawn-init: cannot {what}: {err}");
    125
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init under gVisor drops what the configuration gave it, by the numbers of
    /// `linux/capability.h` (a wrong number would leave a capability in the bounding set,
    /// which the e2e suite's `CapBnd` check of the agent would also catch).
    #[test]
    fn the_gvisor_init_drops_the_capabilities_its_configuration_gives() {
        let mut names: Vec<&str> = GVISOR_INIT_CAPS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        assert_eq!(names, ["CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID"]);
        for (name, number) in GVISOR_INIT_CAPS {
            let want = match name {
                "CAP_SETGID" => 6,
                "CAP_SETUID" => 7,
                "CAP_SETPCAP" => 8,
                _ => unreachable!(),
            };
            assert_eq!(number, want, "{name}");
        }
        assert_eq!(gvisor_init_bounding(), 0b1_1100_0000);
    }

    #[test]
    fn init_args_read_back_what_they_write() {
        let cases = [
            InitArgs {
                command: vec!["true".into()],
                ..InitArgs::default()
            },
            InitArgs {
                report_fd: Some(3),
                stdio_fd: Some(4),
                landlock: Rules {
                    read: vec!["/usr".into(), "/etc".into()],
                    write: vec!["/tmp".into()],
                },
                command: vec!["sh".into(), "-c".into(), "echo -- --gvisor-root".into()],
                ..InitArgs::default()
            },
            InitArgs {
                gvisor_root: true,
                xattr_compat: true,
                tty: true,
                secrets_fd: Some(3),
                command: vec!["--".into(), "--report-fd".into()],
                ..InitArgs::default()
            },
            InitArgs {
                report_fd: Some(3),
                stdio_fd: Some(4),
                secrets_fd: Some(7),
                command: vec!["--secrets-fd".into(), "9".into()],
                ..InitArgs::default()
            },
        ];
        for args in cases {
            let written = args.to_args();
            let words: Vec<&str> = written.iter().map(String::as_str).collect();
            assert_eq!(InitArgs::parse(&words), Ok(args.clone()), "{written:?}");
        }
        // Descriptors that are not plain decimals above 2, and the flag twice: refused.
        for bad in [
            &["--secrets-fd", "2", "--", "true"][..],
            &["--secrets-fd", "-7", "--", "true"],
            &["--secrets-fd", "+7", "--", "true"],
            &["--secrets-fd", " 7", "--", "true"],
            &["--secrets-fd", "0x7", "--", "true"],
            &["--secrets-fd", "99999999999", "--", "true"],
            &["--secrets-fd", "", "--", "true"],
            &["--secrets-fd", "7", "--secrets-fd", "8", "--", "true"],
            &["--secrets-fd"],
        ] {
            assert_eq!(InitArgs::parse(bad), Err(InitUsage), "{bad:?}");
        }
    }
}
