//! The `container` runtime: the sandbox policy as an OCI bundle run by `runc`.
//!
//! Docker-class isolation for development: namespaces and seccomp on the host kernel, like
//! `native`, but through a standard OCI runtime. The bundle (with the agent's environment)
//! lives in a private directory on tmpfs (`/dev/shm/spawn`) and is removed when the run
//! ends; containers and bundles of a spawn that died are reaped by the next run.
//!
//! The container's PID 1 is spawn's own executable (bound read-only) running
//! [`crate::oci_init`], so the command gets the same minimal init as in `native`.
//!
//! The command gets exactly the native seccomp filter, installed by spawn's init inside
//! the container, whose listener reaches spawn over a socket runc passes in as fd 3:
//! blocked calls are answered, counted and audited as in `native`.
//!
//! Host mounts are attached, idmapped where writable, in the runtime's own mount namespace
//! before it starts (see `sys::launch::Step::AttachMounts`). runc itself starts before the
//! run's root and configuration are made: its configuration is fed through a FIFO once
//! they are, and once the run's start is on record (see `config_feed`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use spawn_policy::{MountSource, RunSpec};

use crate::cgroups::{Cgroup, Layout, Limits};
use crate::error::SandboxError;
use crate::native::{
    self, defaults, Cleanup, ExecFailure, KillReason, Observer, Report, RunOptions, CANCEL_GRACE,
};
use crate::stdio::Plumbing;
use crate::sys::launch::{Launched, Step};
use crate::{config_feed, gvisor_monitor, oci, rootfs, sys};

/// Where bundles and runc's state live: tmpfs, so nothing of a run reaches the disk.
pub const BASE: &str = "/dev/shm/spawn";

/// Which OCI runtime drives the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// `runc`: the `container` runtime.
    Runc,
    /// `runsc`: the `gvisor` runtime, on this gVisor platform.
    Runsc {
        /// `systrap`, `ptrace` or `kvm`.
        platform: String,
    },
}

/// The oldest runsc spawn runs on: Debian trixie's (2024-07-29). Older ones are refused,
/// never run: Debian 12's (2022-12-19) fails coreutils' `ls` and `stat` (it rejects
/// `AT_NO_AUTOMOUNT`) and has no systrap platform.
pub const MIN_RUNSC_RELEASE: u32 = 20240729;
/// runsc releases before this one fail `lgetxattr` on symlinks (gVisor issue 11049).
const RUNSC_XATTR_FIX: u32 = 20241021;

/// What spawn knows of the installed runsc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GvisorProfile {
    /// The platform runs use: `kvm`, `systrap` or `ptrace`.
    pub platform: String,
    /// The release date (`YYYYMMDD`) from `runsc --version`, if it names one.
    pub release: Option<u32>,
}

impl GvisorProfile {
    /// `Err` with the reason and the fix when this runsc is too old to run on.
    pub fn check(&self) -> Result<(), SandboxError> {
        let Some(release) = self.release else {
            return Err(unavailable(
                &Engine::Runsc {
                    platform: self.platform.clone(),
                },
                "runsc --version names no release date, so spawn cannot tell whether it is \
                 new enough",
                "install runsc 2024-07-29 or newer (Debian trixie's package: make deps)",
            ));
        };
        if release < MIN_RUNSC_RELEASE {
            return Err(unavailable(
                &Engine::Runsc {
                    platform: self.platform.clone(),
                },
                format!(
                    "runsc {} is too old: releases before {} break coreutils (ls, stat) \
                     inside the sandbox and lack the systrap platform",
                    show_date(release),
                    show_date(MIN_RUNSC_RELEASE)
                ),
                "install runsc 2024-07-29 or newer: `make deps` installs Debian trixie's \
                 package (or see https://gvisor.dev/docs/user_guide/install/)",
            ));
        }
        Ok(())
    }

    /// Whether runs need the `lgetxattr` compatibility filter.
    pub fn xattr_compat(&self) -> bool {
        self.release.is_some_and(|r| r < RUNSC_XATTR_FIX)
    }
}

fn show_date(d: u32) -> String {
    format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100)
}

/// The release date in `runsc --version`'s first line: Debian's `0.0~20240729.0`,
/// upstream's `release-20240729.0`. The first run of exactly eight digits that is a
/// plausible date.
pub fn runsc_release(version: &str) -> Option<u32> {
    let line = version.lines().next()?;
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 8)
        .filter_map(|run| run.parse::<u32>().ok())
        .find(|d| (20180101..=29991231).contains(d) && (1..=12).contains(&(d / 100 % 100)))
}

impl Engine {
    /// spawn's name for the runtime.
    pub fn runtime(&self) -> &'static str {
        match self {
            Engine::Runc => "container",
            Engine::Runsc { .. } => "gvisor",
        }
    }

    fn binary(&self) -> &'static str {
        match self {
            Engine::Runc => "runc",
            Engine::Runsc { .. } => "runsc",
        }
    }

    fn command(&self, bin: &Path, state: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("--root").arg(state);
        if let Engine::Runsc { platform } = self {
            // --ignore-cgroups: runsc runs inside the group spawn starts it in (see
            // `run_engine`) instead of making one per hierarchy (or one at `/<id>` when
            // the bundle names none).
            // --directfs=false: the Sentry (the kernel the agent talks to) runs as the
            // host's `nobody` with no capabilities and reaches files only through the
            // gofer; with directfs it would run as host root in an identity-mapped user
            // namespace, holding file capabilities, to open files itself.
            // --overlay2=none: no overlay of the sandbox's own (in memory or in a file of
            // the root) over any mount; what the agent writes goes to the scratch
            // filesystem's binds (and its quota) or nowhere (the root is read-only).
            c.arg(format!("--platform={platform}"))
                .arg("--directfs=false")
                .arg("--overlay2=none")
                .arg("--network=none")
                .arg("--ignore-cgroups");
        }
        c
    }
}

fn unavailable(engine: &Engine, reason: impl Into<String>, fix: &str) -> SandboxError {
    SandboxError::RuntimeUnavailable {
        runtime: engine.runtime().into(),
        reason: reason.into(),
        fix: Some(fix.into()),
    }
}

/// The engine's binary, found on `PATH`.
pub fn find_binary(engine: &Engine) -> Result<PathBuf, SandboxError> {
    let name = engine.binary();
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            unavailable(
                engine,
                format!("{name} is not installed"),
                &format!("install it: apt-get install {name}"),
            )
        })
}

/// The `runc` binary, found on `PATH`.
pub fn find_runtime() -> Result<PathBuf, SandboxError> {
    find_binary(&Engine::Runc)
}

/// How long the KVM probe may take to start a sandbox and run `true` in it.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What spawn uses of the installed runsc: its release (from `runsc --version`) and the
/// platform. The platform is `SPAWN_GVISOR_PLATFORM` if set; else `kvm` when it really
/// starts a sandbox within [`KVM_PROBE_TIMEOUT`] (on hosts whose `/dev/kvm` is not backed
/// by hardware virtualization it hangs); else [`DEFAULT_PLATFORM`] when this runsc has it
/// (chosen by measurement, see the README); else `ptrace`. The answer is kept on spawn's
/// private tmpfs, keyed by the runsc binary's identity, so the probes run once per boot
/// and again after an upgrade.
pub fn gvisor_profile(runsc: &Path) -> GvisorProfile {
    let key = std::fs::metadata(runsc).ok().map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        format!(
            "{}\n{}\n{}\n{}.{}\n",
            runsc.display(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        )
    });
    let base = Path::new(BASE);
    // One file per runsc path, so that runs of different binaries do not evict each
    // other's answer (FNV-1a of the path; the key inside says which binary it is).
    let hash = runsc
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    let cache = base.join(format!("runsc-profile-{hash:016x}"));
    // Only a directory spawn's user owns is trusted, for reading the answer as well.
    let private = ensure_dir(base, 0o711).is_ok() && on_tmpfs(base);
    let overridden = std::env::var("SPAWN_GVISOR_PLATFORM")
        .ok()
        .filter(|p| !p.is_empty());
    let cached = match (&key, private) {
        (Some(key), true) => std::fs::read_to_string(&cache)
            .ok()
            .and_then(|text| cached_profile(&text, key)),
        _ => None,
    };
    // The platform is only probed when nobody chose it: the KVM probe can take seconds.
    let probed = cached
        .as_ref()
        .map(|p| p.platform.clone())
        .filter(|p| p != "-");
    if let (Some(profile), Some(p)) = (&cached, overridden.as_ref().or(probed.as_ref())) {
        return GvisorProfile {
            platform: p.clone(),
            release: profile.release,
        };
    }
    let release = match &cached {
        Some(profile) => profile.release,
        None => version(runsc).as_deref().and_then(runsc_release),
    };
    let platform = match &overridden {
        Some(_) => "-",
        None if private && probe_kvm(runsc, base) => "kvm",
        None => {
            let flags = Command::new(runsc).arg("flags").output().map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            });
            match flags {
                Ok(text) if text.contains(DEFAULT_PLATFORM) => DEFAULT_PLATFORM,
                _ => "ptrace",
            }
        }
    };
    if let (Some(key), true) = (key, private) {
        let tmp = cache.with_extension(std::process::id().to_string());
        let line = format!("{key}{platform}\n{}\n", release.unwrap_or(0));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if written.is_err() || std::fs::rename(&tmp, &cache).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    GvisorProfile {
        platform: overridden.unwrap_or_else(|| platform.to_owned()),
        release,
    }
}

/// The platform spawn prefers where KVM does not work: `systrap` or `ptrace`, chosen from
/// measurements on the build machines (`make bench`; see the README's Performance
/// section): with runsc 2024-07-29 on these 2-CPU VMs, ptrace started `true` 10% faster,
/// `python3 -c pass` 9% faster and walked a file tree 6% faster than systrap.
pub const DEFAULT_PLATFORM: &str = "ptrace";

/// The profile recorded in the cache `text` for the runsc identified by `key`.
fn cached_profile(text: &str, key: &str) -> Option<GvisorProfile> {
    let rest = text.strip_prefix(key)?.strip_suffix('\n')?;
    let (platform, release) = rest.split_once('\n')?;
    // `-`: the release only (the platform was chosen by SPAWN_GVISOR_PLATFORM).
    if !["kvm", "systrap", "ptrace", "-"].contains(&platform) {
        return None;
    }
    let release: u32 = release.parse().ok()?;
    Some(GvisorProfile {
        platform: platform.to_owned(),
        release: (release != 0).then_some(release),
    })
}

/// Whether runsc's KVM platform starts a sandbox and runs `/bin/true` (host root, read
/// only, no network) within [`KVM_PROBE_TIMEOUT`]. Everything the probe made is removed.
fn probe_kvm(runsc: &Path, base: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let dir = base.join(format!("kvm-probe-{}", std::process::id()));
    let state = dir.join("state");
    let id = format!("spawn{}-kvmprobe", std::process::id());
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/true"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
            "noNewPrivileges": true,
        },
        "root": { "path": "/", "readonly": true },
        "linux": { "namespaces": [ { "type": "pid" }, { "type": "mount" }, { "type": "network" } ] },
    });
    let made = std::fs::create_dir_all(&state)
        .and_then(|()| std::fs::write(dir.join("config.json"), config.to_string()));
    let started = made.is_ok() && {
        let mut cmd = Command::new(runsc);
        cmd.arg("--root")
            .arg(&state)
            // Without --ignore-cgroups runsc makes a group at /<id> in every hierarchy,
            // which the timeout's kill leaves behind.
            .args(["--platform=kvm", "--network=none", "--ignore-cgroups"])
            .args(["run", "--bundle"])
            .arg(&dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_with_timeout(cmd, KVM_PROBE_TIMEOUT).is_some_and(|s| s.success())
    };
    let mut delete = Command::new(runsc);
    delete
        .arg("--root")
        .arg(&state)
        .args(["--ignore-cgroups", "delete", "--force", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = run_with_timeout(delete, KVM_PROBE_TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    started
}

/// Runs `cmd` in a process group of its own; kills the group and returns `None` when it
/// has not ended within `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::CommandExt as _;
    let mut child = cmd.process_group(0).spawn().ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let group = i32::try_from(child.id()).map(|p| nix::unistd::Pid::from_raw(-p));
                if let Ok(group) = group {
                    let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The init the OCI runtimes run as PID 1: `spawn-init`, next to spawn's own executable.
/// `make build` links it statically: under gVisor, loading a dynamically linked init (the
/// loader, libc) through the gofer costs more than everything else spawn adds.
pub fn init_binary(engine: &Engine) -> Result<PathBuf, SandboxError> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| SandboxError::setup("find spawn's own executable", e))?;
    let init = exe.with_file_name("spawn-init");
    if init.is_file() {
        Ok(init)
    } else {
        Err(unavailable(
            engine,
            format!("{} is missing", init.display()),
            "install spawn-init next to spawn (`make build` builds both)",
        ))
    }
}

/// `BINARY --version`'s first line, for `spawn doctor`.
pub fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Creates `path` with `mode`, or takes it over when it exists, but only when it is a real
/// directory owned by spawn's own user: `/dev/shm` is writable by everyone, and a directory
/// someone else planted there (or a symlink) would let them swap the bundle a root-run
/// runtime reads.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), SandboxError> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SandboxError::setup(format!("create {}", path.display()), e)),
    }
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| SandboxError::setup(format!("inspect {}", path.display()), e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(SandboxError::Unsupported(format!(
            "{} is not a directory owned by uid {me} (it is {} owned by uid {}): \
             someone else may control it; remove it and run again",
            path.display(),
            if meta.file_type().is_symlink() {
                "a symlink"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "a file"
            },
            meta.uid()
        )));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::setup(format!("chmod {}", path.display()), e))
}

fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Deletes containers and bundles of spawn processes that no longer exist.
fn reap_stale(engine: &Engine, bin: &Path, state: &Path, bundles: &Path) {
    let dead = |name: &str| {
        name.split_once('-')
            .and_then(|(pid, _)| pid.strip_prefix("spawn").unwrap_or(pid).parse::<i32>().ok())
            .is_some_and(|pid| pid > 0 && !crate::cgroups::process_alive(pid))
    };
    // runsc leaves a lock file without state when it was killed while creating the
    // container, and its control socket when it was killed running; runc and runsc both
    // leave a state file cut short when killed while writing it. Neither can delete what
    // it has no state for, or state it cannot load, so every later run would ask it
    // again (one runtime start each, ~14 ms of CPU for runsc): such files of dead spawns
    // go first, without asking. Their processes are in the run's groups, which
    // `cgroups::reap_stale` kills.
    match engine {
        Engine::Runsc { .. } => {
            for name in orphan_runsc_files(state, dead) {
                let _ = std::fs::remove_file(state.join(name));
            }
        }
        Engine::Runc => {
            for id in unloadable_runc_states(state, dead) {
                let _ = std::fs::remove_dir_all(state.join(id));
            }
        }
    }
    // Those of spawn processes that are gone are deleted by id: reading the state
    // directory is cheap, unlike asking the runtime (`list`, one more process start).
    let stale: Vec<String> = state_ids(state)
        .unwrap_or_default()
        .into_iter()
        .filter(|id| id.starts_with("spawn") && dead(id))
        .collect();
    for id in &stale {
        let _ = engine
            .command(bin, state)
            .args(["delete", "--force", id])
            .output();
    }
    if let Ok(entries) = std::fs::read_dir(bundles) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(dead) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// How long the guard of a run whose spawn died waits before killing: the runtime spawn
/// started (killed with spawn) may still be making the run's groups.
const GUARD_GRACE: Duration = Duration::from_millis(100);

/// Extra room a gVisor sandbox needs for itself (the Sentry's threads and memory), on top
/// of what the agent is allowed: the cgroup holds the whole sandbox, not only the agent.
const GVISOR_PIDS_OVERHEAD: u64 = 512;
/// The host uid runsc runs the Sentry as (`nobody`).
const GVISOR_SENTRY_UID: u32 = 65534;
const GVISOR_MEMORY_OVERHEAD: u64 = 256 << 20;
/// One more CPU for gVisor's own start: runsc, its gofer and the Sentry (Go programs, on
/// several threads) count against the run's CPU limit, and at the default of one CPU a
/// sandbox that only boots was throttled by the kernel (cpu.stat: 1–2 periods, 0.6–31 ms
/// for `sleep 1`, 72 ms for `python3 -c pass`, on 2026-12-06). The run's group has it for
/// [`GVISOR_BOOT_WINDOW`] after runsc's start, then the agent's limit alone.
const GVISOR_BOOT_CPU_MILLIS: u64 = 1000;
/// How long a gVisor run's group has [`GVISOR_BOOT_CPU_MILLIS`] more: a sandbox's boot to
/// the agent's exec took 100–250 ms on our hosts.
const GVISOR_BOOT_WINDOW: Duration = Duration::from_millis(500);

/// The init's descriptor of the granted secrets' pipe under runc: after the report
/// socket (3) and the agent's streams (4–6).
const RUNC_SECRETS_FD: std::os::fd::RawFd = 7;
/// Under runsc, which passes it on by `--pass-fd` (the init has no other given
/// descriptor there).
const GVISOR_SECRETS_FD: std::os::fd::RawFd = 3;

/// Runs `spec` in a container (`runc`). Blocks until the run ends.
pub fn run(
    spec: &RunSpec,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Report, SandboxError> {
    run_engine(&Engine::Runc, spec, opts, observer, false)
}

/// Runs `spec` in gVisor (`runsc`): the agent talks to gVisor's kernel, not the host's.
pub fn run_gvisor(
    spec: &RunSpec,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Report, SandboxError> {
    let probe = Engine::Runsc {
        platform: String::new(),
    };
    let runsc = find_binary(&probe)?;
    let profile = gvisor_profile(&runsc);
    profile.check()?;
    let engine = Engine::Runsc {
        platform: profile.platform.clone(),
    };
    run_engine(&engine, spec, opts, observer, profile.xattr_compat())
}

fn run_engine(
    engine: &Engine,
    spec: &RunSpec,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    xattr_compat: bool,
) -> Result<Report, SandboxError> {
    let gvisor = matches!(engine, Engine::Runsc { .. });
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err(unavailable(engine, "it needs root", "run spawn as root"));
    }
    let runc = find_binary(engine)?;
    let layout = Layout::detect()?;
    // runc moves the container's init into its groups about 10 ms after it starts, a move
    // that waits cold for an RCU grace period (see `prime_migrations`): the wait starts
    // now, while spawn sets up and runc starts. (runsc is started in spawn's own group.)
    if !gvisor {
        drop(crate::cgroups::prime_migrations(&layout));
    }

    let native::NetView { network, dns, env } = native::NetView::of(spec, opts)?;
    // The run's namespace, already connected to its way out and nothing else.
    let netns = network.map(|n| n.namespace());
    let base = Path::new(BASE);
    ensure_dir(base, 0o711)?;
    if !on_tmpfs(base) {
        return Err(unavailable(
            engine,
            format!("{BASE} is not on tmpfs, and bundles must never reach the disk"),
            "mount a tmpfs at /dev/shm",
        ));
    }
    let state = base.join(engine.binary());
    let bundles = base.join("bundles");
    ensure_dir(&state, 0o700)?;
    ensure_dir(&bundles, 0o711)?;

    let native::RunLimits {
        memory,
        pids,
        disk,
        cpu,
        timeout,
    } = native::RunLimits::of(spec);
    // gVisor runs the agent in its own kernel: no host user namespace, ids as they are.
    let (root_id, agent_id) = if gvisor {
        (0, rootfs::AGENT_ID)
    } else {
        native::host_ids()
    };
    let name = format!("{}-{}", std::process::id(), opts.run_id);
    let id = format!("spawn{name}");
    let limits = if gvisor {
        Limits {
            memory_bytes: memory + GVISOR_MEMORY_OVERHEAD,
            pids: pids + GVISOR_PIDS_OVERHEAD,
            cpu_millis: Some(cpu + GVISOR_BOOT_CPU_MILLIS),
        }
    } else {
        Limits {
            memory_bytes: memory,
            pids,
            cpu_millis: Some(cpu),
        }
    };

    let bundle = Bundle::new(bundles.join(&name))?;
    let plan = rootfs::plan(spec, disk, &spec.name, dns);
    // The run's scratch filesystem takes milliseconds (the template's copy, a loop
    // device, the mount): it is made on a thread of its own while the root is populated
    // and the configuration written. Should set-up fail before it is joined, the thread
    // ends by itself and its filesystem with it (nothing of it has a name).
    let scratch_job = plan
        .steps
        .iter()
        .find_map(|s| match s {
            rootfs::Step::Scratch { size, .. } => Some(*size),
            _ => None,
        })
        .map(|size| {
            let (name, dirs) = (name.clone(), plan.scratch.clone());
            // The mount comes back as soon as it exists; the thread then switches its device
            // to direct I/O while the runtime starts.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("spawn-scratch".into())
                .spawn(move || {
                    match crate::scratch::Scratch::create(
                        &name, size, &dirs, root_id, agent_id, true,
                    ) {
                        Ok(scratch) => {
                            let (mount, direct_io) = scratch.into_parts();
                            let _ = tx.send(Ok(mount));
                            direct_io.switch();
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })
                .map(|_| rx)
                .map_err(|e| SandboxError::setup("start the scratch filesystem's thread", e))
        })
        .transpose()?;
    let root = bundle.path.join("rootfs");
    ensure_dir(&root, 0o755)?;
    let kernel = if gvisor {
        oci::Kernel::Gvisor {
            agent_pids: pids,
            xattr_compat,
        }
    } else {
        oci::Kernel::Host
    };
    // Writable host grants are idmapped as in native (the agent writes as the directory's
    // owner) and attached under the bundle in the runtime's own mount namespace (see
    // `sys::launch::Step::AttachMounts`), where its bind finds them.
    let mut staged = Vec::new();
    let mut trees = Vec::new();
    // Read-only grants are attached the same way (without the idmap): the runtime binds
    // from the staged tree, opened without following symlinks, never from the host path.
    let mut writable_grants = false;
    for step in &plan.steps {
        if let rootfs::Step::Bind {
            source: rootfs::BindSource::Granted(src),
            path,
            readonly,
            is_dir,
        } = step
        {
            let at = bundle.path.join(format!("grant{}", staged.len()));
            if *is_dir {
                ensure_dir(&at, 0o711)?;
            } else {
                std::fs::File::create(&at)
                    .map_err(|e| SandboxError::setup("create a staging mount point", e))?;
            }
            let tree = if *readonly {
                crate::idmap::readonly_tree(src)?
            } else {
                writable_grants = true;
                // gVisor's gofer creates files as root before handing them to the agent.
                let creator = gvisor.then(|| (native::host_ids().0, 0));
                crate::idmap::idmapped_tree(src, agent_id, true, creator)?
            };
            let c_at = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
                .map_err(|e| SandboxError::setup("staging path", std::io::Error::other(e)))?;
            trees.push((tree, c_at));
            staged.push((path.clone(), at));
        }
    }
    // Under gVisor the host's read-only directories (/usr, /etc/ssl/certs, …) are part of
    // the root, not gofer mounts of their own (see `rootfs::HostBinds::InRoot`): each is
    // attached read-only on its mount point in the root, in the runtime's own mount
    // namespace, where the gofer's recursive bind of the root takes it along.
    if kernel.host_binds() == rootfs::HostBinds::InRoot {
        for (src, path) in rootfs::attached_dirs(&plan) {
            let tree = crate::idmap::readonly_tree(src)?;
            let at = root.join(path.strip_prefix("/").unwrap_or(path));
            trees.push((tree, rootfs::cstr(&at)?));
        }
    }
    // The run's scratch filesystem, attached beside the grants; the bundle binds its
    // directories as /tmp, /workspace and /dev/shm.
    let scratch_at = bundle.path.join("scratch");
    ensure_dir(&scratch_at, 0o711)?;
    let scratch_c = std::ffi::CString::new(scratch_at.as_os_str().as_encoded_bytes())
        .map_err(|e| SandboxError::setup("staging path", std::io::Error::other(e)))?;
    let workdir = spec
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/workspace"));
    // spawn's init (`spawn-init`, installed next to spawn) runs as the container's PID 1;
    // its mount point must exist in the (read-only) root beforehand.
    let exe = init_binary(engine)?;
    // spawn's init in the container sends the command's seccomp listener over this socket
    // (fd 3 inside); spawn answers and counts blocked calls as in native.
    let (report, report_child) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SandboxError::setup("socketpair", e))?;
    let plumbing = Plumbing::for_process(opts.redactor.clone(), !opts.no_stdin)?;
    // Granted secrets go to the init through a pipe, never the bundle (see `secret_env`).
    let secrets_pipe = if opts.secret_env.is_empty() {
        None
    } else {
        Some(crate::secret_env::pipe_for(&opts.secret_env)?)
    };
    let terminal = plumbing.agent.terminal;
    let config_path = bundle.path.join("config.json");
    // The root the configuration describes, the configuration, and whether the command
    // can start in that root. runc is started before this (below): its own start, until
    // it reads the configuration, takes milliseconds in which spawn makes the root.
    let prepare = || -> Result<(Vec<u8>, Option<ExecFailure>), SandboxError> {
        rootfs::populate(&plan, &root, agent_id, kernel.host_binds())?;
        // The OCI runtimes mount /tmp as a tmpfs of its own (`oci::mounts`), and runc gives
        // its root the mode of the mount point: the agent's /tmp is 1777 like everywhere.
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| SandboxError::setup("chmod the /tmp mount point", e))?;
        // spawn's init runs as the container's PID 1: a copy in the (read-only) root, or
        // its mount point there beforehand (see `Kernel::init_in_root`).
        let init_at = root.join(oci::INIT_PATH.trim_start_matches('/'));
        if kernel.init_in_root() {
            rootfs::copy_program(&exe, &init_at)
                .map_err(|e| SandboxError::setup("copy spawn-init into the root", e))?;
        } else {
            std::fs::File::create(&init_at)
                .map_err(|e| SandboxError::setup("create the init's mount point", e))?;
        }
        let config = oci::runtime_spec(&oci::OciInput {
            argv: &spec.command,
            env: &env,
            cwd: &workdir,
            hostname: &spec.name,
            plan: &plan,
            root_id,
            agent_id,
            limits,
            nofile: defaults::NOFILE,
            // runsc is started inside spawn's group instead (below): told about a group, it
            // also makes and joins one in every other hierarchy, which costs milliseconds.
            cgroups_path: (!gvisor).then(|| format!("/spawn/{name}")),
            init: Some(&exe),
            kernel,
            secrets_fd: secrets_pipe.as_ref().map(|_| {
                if gvisor {
                    GVISOR_SECRETS_FD
                } else {
                    RUNC_SECRETS_FD
                }
            }),
            netns: netns.as_deref(),
            terminal,
            staged: &staged,
            scratch: &scratch_at,
        })?;
        let json = serde_json::to_vec(&config)
            .map_err(|e| SandboxError::Unsupported(format!("OCI configuration: {e}")))?;
        // runc reports a missing program as its own failure (exit 1); it is said as in
        // native instead.
        Ok((json, exec_check(spec, &root, &env)))
    };
    // runc reads its configuration from a FIFO, fed once runc has started (see
    // `config_feed`); runsc reads the file more than once, so gVisor's root and
    // configuration are made before runsc starts.
    if gvisor {
        let (json, failure) = prepare()?;
        if let Some(failure) = failure {
            drop(bundle);
            return Ok(not_started(failure, started, agent_id));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config_path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &json))
            .map_err(|e| SandboxError::setup("write config.json", e))?;
    } else {
        config_feed::make_fifo(&config_path)?;
    }
    // runsc would remove a group of its own when the container ends, before its
    // statistics could be read: so for gVisor spawn creates and configures the group
    // itself, as in native, and starts runsc in it (runsc, its gofer and the sandbox with
    // the Sentry all count against the limits).
    let own_cgroup = if gvisor {
        Some(Cgroup::create(&layout, &name, &limits)?)
    } else {
        None
    };
    // Should spawn die (SIGKILL) once it is started, the run dies with it: the guard kills
    // whatever is left in the run's groups (runc's container, or runsc with its gofer and
    // Sentry) and removes the groups, the bundle and the runtime's state for this run.
    // runsc's starts before runsc; runc's right after runc is forked (runc makes nothing
    // before it has read its configuration, which comes later, and dies with spawn), so
    // that runc's start is not behind it.
    let start_guard = || {
        let groups: Vec<PathBuf> = match &own_cgroup {
            Some(group) => group.dirs().to_vec(),
            None => crate::cgroups::every_hierarchy(&format!("spawn/{name}")),
        };
        let mut remove = vec![bundle.path.clone()];
        if gvisor {
            for ext in ["state", "lock"] {
                remove.push(state.join(format!("{id}_sandbox:{id}.{ext}")));
            }
            remove.push(state.join(format!("runsc-{id}.sock")));
        } else {
            remove.push(state.join(&id));
        }
        native::Guard::start(&groups, &[], GUARD_GRACE, &remove)
    };
    let mut guard = if gvisor { Some(start_guard()?) } else { None };
    // gVisor's kernel has no seccomp listener: the calls spawn's filter denies are read
    // from the Sentry's debug log instead (see `gvisor_monitor`), through a FIFO in the
    // bundle (the log also holds the run's configuration: it never reaches a file).
    let mut denials = if gvisor {
        Some(gvisor_monitor::DenialLog::create(&bundle.path)?)
    } else {
        None
    };
    // The scratch filesystem, made meanwhile, is the last thing the runtime needs (runc is
    // started without it: the feed attaches it).
    let mut scratch_job = scratch_job;
    if let Some(job) = scratch_job.take_if(|_| gvisor) {
        let mount = job.recv().map_err(|_| {
            SandboxError::setup(
                "make the scratch filesystem",
                std::io::Error::other("its thread ended without it"),
            )
        })??;
        // Held by the guard too, so that its teardown is not part of runsc's exit.
        if let Some(guard) = &guard {
            let _ = guard.hold(&mount);
        }
        trees.push((mount, scratch_c.clone()));
    }
    // runc's run starts on record once its root is made (below).
    if gvisor {
        observer.created().map_err(SandboxError::Refused)?;
    }

    // Cancelling signals arrive on a signalfd; the mask is restored at the end.
    let cancel = native::cancel_signals();
    let old_mask = cancel
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(|e| SandboxError::setup("block signals", e))?;
    let result = (|| {
        let sigfd = SignalFd::new(&cancel).map_err(|e| SandboxError::setup("signalfd", e))?;
        // --keep: the container (and its cgroup) stay after it exits, so its statistics can
        // be read; `runc delete` below removes them.
        let mut cmd = engine.command(&runc, &state);
        // What the runtime's process does before it executes (see `sys::launch`), and the
        // descriptors it gets from 3 on.
        let mut steps = Vec::new();
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        // runc always gets a mount namespace of its own: the feed attaches the scratch
        // filesystem there.
        if !trees.is_empty() || !gvisor {
            steps.push(Step::AttachMounts(std::mem::take(&mut trees)));
        }
        if let Some(group) = &own_cgroup {
            steps.push(Step::JoinCgroup(group.join_files()?));
            if let Some(ns) = &netns {
                // gVisor's own network stack (netstack) takes the run's interface over: the
                // agent's sockets never reach the host kernel, and the frames netstack
                // writes meet the filter at the link's host end. runsc scrapes the
                // interface from inside the namespace; its check that this is not the
                // host's namespace looks for /proc/sys/net/core/rmem_default, which
                // Linux 6.x shows in every namespace, so runsc gets a private mount of
                // an empty directory there (see `Step::MaskNetCore`).
                let fd = std::fs::File::open(ns)
                    .map(OwnedFd::from)
                    .map_err(|e| SandboxError::setup("open the run's network namespace", e))?;
                steps.push(Step::EnterNetns(fd));
                steps.push(Step::MaskNetCore);
                cmd.arg("--network=sandbox");
            }
            if let Some(log) = &denials {
                cmd.args(gvisor_monitor::runsc_flags(log.path())?);
            }
            // Read-only mounts (the host's /usr, spawn's /etc files, the init) cannot change
            // under the agent in a way it needs to see at once: gVisor may cache them as its
            // own (a walk of /usr/lib/python3 took 15% less). Writable host mounts stay
            // shared, so that what the host or another run writes there is seen.
            if !writable_grants {
                cmd.arg("--file-access-mounts=exclusive");
            }
            // runsc's gofer and Sentry start with descriptor tables of 1024 slots instead of
            // 64, each saving the grace period it waited for when it outgrew its table.
            steps.extend(Step::size_fd_table().map_err(|e| {
                SandboxError::setup("open /dev/null for runsc's descriptor table", e)
            })?);
            cmd.arg("run");
            if let Some(pipe) = &secrets_pipe {
                // The secrets' pipe is runsc's fd 3, given to the init as its fd 3.
                fds.push(pipe.as_fd());
                cmd.arg(format!("--pass-fd=3:{GVISOR_SECRETS_FD}"));
            }
            cmd.arg("--bundle");
        } else {
            // runc would relay the container's stdout and stderr through pipes of its own,
            // one copy each, losing their order: the init gets the agent's streams as fds
            // 4–6 (`--stdio-fd 4`) beside the report socket (fd 3), and runc's own stdio
            // carries only runc's messages.
            let agent = &plumbing.agent;
            fds.extend([
                report_child.as_fd(),
                agent.stdin.as_fd(),
                agent.stdout.as_fd(),
                agent.stderr.as_fd(),
            ]);
            // The secrets' pipe, when there are any, is fd 7 (`RUNC_SECRETS_FD`).
            fds.extend(secrets_pipe.as_ref().map(|p| p.as_fd()));
            let preserved = fds.len().to_string();
            cmd.args(["run", "--keep", "--preserve-fds", &preserved, "--bundle"]);
        }
        // The agent's streams are spawn's pipes (see `stdio`), never spawn's own
        // descriptors: runsc would write a regular file at an offset of its own and
        // change the owner of what it is given.
        let agent = &plumbing.agent;
        cmd.arg(&bundle.path).arg(&id);
        let null = if gvisor {
            None
        } else {
            Some(
                std::fs::File::open("/dev/null")
                    .map_err(|e| SandboxError::setup("open /dev/null", e))?,
            )
        };
        let stdin = match &null {
            Some(null) => null.as_fd(),
            None => agent.stdin.as_fd(),
        };
        // runc or runsc itself dies with spawn (the guard takes care of what it started).
        let mut child = sys::launch::launch(
            &cmd,
            [stdin, agent.stdout.as_fd(), agent.stderr.as_fd()],
            &fds,
            &steps,
        )
        .map_err(|e| SandboxError::setup(format!("start {}", engine.binary()), e))?;
        let launched = Instant::now();
        // The runtime holds the agent's ends now; the relay's end of each pipe sees the
        // run's end.
        drop((cmd, steps, fds, null));
        drop(report_child);
        let mut feed = None;
        if !gvisor {
            match start_guard() {
                Ok(started) => guard = Some(started),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
            let attach = scratch_job.take().map(|mount| config_feed::Attach {
                mount,
                at: scratch_c.clone(),
            });
            let (config_tx, config_rx) = std::sync::mpsc::channel();
            match config_feed::ConfigFeed::start(
                i32::try_from(child.id()).unwrap_or(0),
                &config_path,
                config_rx,
                attach,
            ) {
                Ok(f) => feed = Some(f),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
            // While runc starts: the root, the configuration, and the run's start on
            // record before the configuration (and with it the command) reaches runc.
            let ready = prepare().and_then(|(json, failure)| match failure {
                Some(failure) => Ok(Err(failure)),
                None => observer
                    .created()
                    .map_err(SandboxError::Refused)
                    .map(|()| Ok(json)),
            });
            let stopped = match ready {
                Ok(Ok(json)) => {
                    // Only a feed that has ended (runc gone) drops what is sent.
                    let _ = config_tx.send(json);
                    None
                }
                Ok(Err(failure)) => Some(Ok(Err(failure))),
                Err(e) => Some(Err(e)),
            };
            if let Some(stopped) = stopped {
                // The feed sees the configuration will not come, and ends.
                drop(config_tx);
                let _ = child.kill();
                let _ = child.wait();
                if let Some(feed) = feed.take() {
                    let _ = feed.finish();
                }
                return stopped;
            }
        }
        // What spawns that were killed left (containers, bundles, the groups their runtime
        // did not get to tear down) is reaped while the runtime starts: none of it is this
        // run's (each name holds its spawn's pid).
        reap_stale(engine, &runc, &state, &bundles);
        crate::cgroups::reap_stale(&layout);
        // gVisor does not see the size of the run's terminal change: its SIGWINCH goes in
        // through runsc, to every process of the run (gVisor drops it on its way through
        // the init, whose disposition for it is the default, ignore).
        let on_resize: Option<Box<dyn Fn() + Send>> = if gvisor && plumbing.agent.terminal {
            let mut kill = engine.command(&runc, &state);
            kill.args(["kill", "--all", &id, "WINCH"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let kill = std::sync::Mutex::new(kill);
            Some(Box::new(move || {
                if let Ok(mut cmd) = kill.lock() {
                    let _ = cmd.status();
                }
            }))
        } else {
            None
        };
        let relay = plumbing.start_with(on_resize);
        let relay = match relay {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        observer.started(i32::try_from(child.id()).unwrap_or(0), agent_id);
        let supervised = supervise(
            Runc {
                engine,
                runc: &runc,
                state: &state,
                id: &id,
            },
            &mut child,
            &sigfd,
            &report,
            denials.as_mut(),
            observer,
            Ends {
                deadline: started + timeout,
                stop: opts.stop.as_deref(),
                boot_cpu: own_cgroup.as_ref().map(|group| BootCpu {
                    at: launched + GVISOR_BOOT_WINDOW,
                    group,
                    cpu_millis: cpu,
                }),
            },
        );
        let relayed = relay.finish();
        // A configuration that did not reach runc is the run's failure, whatever runc
        // said of it.
        let scratch = match feed {
            Some(feed) => feed.finish()?,
            None => None,
        };
        supervised.map(|s| Ok((s, relayed.output_error, scratch)))
    })();
    let _ = old_mask.thread_set_mask();
    // The scratch filesystem outlived runc (see `ConfigFeed::finish`): the guard takes it
    // (see `Guard::hold`; should that fail, it ends here).
    if let (Ok(Ok((_, _, Some(scratch)))), Some(guard)) = (&result, &guard) {
        let _ = guard.hold(scratch);
    }
    let stats = Cgroup::existing(&layout, &name).stats();
    // What is left (the runtime's state, the run's groups, the bundle) is removed while
    // the caller records the run's end; its report waits for that (see `Cleanup`).
    let cleanup = {
        let (engine, state) = (engine.clone(), state.clone());
        Cleanup::start(move || {
            // runsc removes a container whose `run` ended by itself; only one it did not
            // finish with (spawn cancelled or killed it) still has state, and each runsc
            // call costs tens of milliseconds.
            // runc: `run --keep` left the stopped container's state and cgroups for the
            // statistics above; spawn removes them itself when nothing is left running (one
            // `runc delete` costs about as much again as spawn's whole overhead), else asks
            // runc to.
            let removed = !gvisor && remove_stopped(&state, &id, &name);
            // A runc stopped before it made the container has no state to delete (the
            // guard removes any group it made).
            let has_state = if gvisor {
                runsc_has_state(&state, &id)
            } else {
                state.join(&id).exists()
            };
            if !removed && has_state {
                let _ = engine
                    .command(&runc, &state)
                    .args(["delete", "--force", &id])
                    .output();
            }
            drop(own_cgroup);
            // The bundle goes after the runtime's state.
            drop(bundle);
            if let Some(guard) = guard {
                guard.finish();
            }
        })
    };
    let (
        Supervised {
            status,
            kill_reason,
            blocked,
            landlock,
        },
        output_error,
        _,
    ) = match result? {
        Ok(ran) => ran,
        Err(failure) => {
            return Ok(Report {
                cleanup,
                ..not_started(failure, started, agent_id)
            })
        }
    };
    let code = status.code();
    let signal = status
        .signal()
        .or_else(|| code.filter(|c| *c > 128).map(|c| c - 128));
    let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(libc::SIGKILL));
    let (exit_code, kill_reason) = native::settle(exit_code, signal, kill_reason, stats.oom_kills);
    Ok(Report {
        exit_code,
        signal,
        duration: started.elapsed(),
        peak_memory_bytes: stats.peak_memory_bytes,
        blocked_syscalls: blocked.values().sum(),
        blocked_by_name: blocked,
        kill_reason,
        exec_failure: None,
        oom_kills: stats.oom_kills,
        pids_limit_hits: stats.pids_limit_hits,
        landlock,
        // runsc runs the Sentry (the agent's kernel) as the host's `nobody`, in a user
        // namespace of its own; the agent's own ids exist only inside gVisor.
        host_uid: if gvisor { GVISOR_SENTRY_UID } else { agent_id },
        output_error,
        cleanup,
    })
}

/// The report of a run whose command could not be started in its root (`failure`): said as
/// native says it, where the runtime would report a failure of its own.
fn not_started(failure: ExecFailure, started: Instant, agent_id: u32) -> Report {
    Report {
        exit_code: match failure {
            ExecFailure::NotFound => 127,
            ExecFailure::NotExecutable(_) => 126,
        },
        signal: None,
        duration: started.elapsed(),
        peak_memory_bytes: None,
        blocked_syscalls: 0,
        blocked_by_name: Default::default(),
        kill_reason: None,
        exec_failure: Some(failure),
        oom_kills: 0,
        pids_limit_hits: 0,
        landlock: None,
        host_uid: agent_id,
        output_error: None,
        cleanup: Cleanup::default(),
    }
}

/// The containers the runtime keeps state for, from its state directory (runc: a
/// directory per id; runsc: `ID_sandbox:ID.state` and `.lock` files), without starting it.
/// `None` when the directory cannot be read.
fn state_ids(state: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(state).ok()?;
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            Some(
                name.split_once("_sandbox:")
                    .map_or(name.as_str(), |(id, _)| id)
                    .to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    Some(ids)
}

/// Removes runc container `id`, stopped by now (its `run --keep` returned), the way
/// `runc delete` would: its cgroups (from its `state.json`; each must be a `spawn/<name>`
/// group, nothing else is touched), then its state directory. `false`, with whatever is
/// left still in place for `runc delete --force`, when anything is not as expected: a
/// process still in a group (`EBUSY`), a state file that does not parse, a foreign path.
fn remove_stopped(state: &Path, id: &str, name: &str) -> bool {
    let dir = state.join(id);
    let Some(state) = std::fs::read(dir.join("state.json"))
        .ok()
        .filter(|b| b.len() < (1 << 20))
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return false;
    };
    let Some(groups) = state["cgroup_paths"].as_object() else {
        return false;
    };
    let paths: Vec<&Path> = groups
        .values()
        .filter_map(|v| v.as_str())
        .map(Path::new)
        .collect();
    let ours = |p: &Path| {
        p.is_absolute()
            && p.ends_with(Path::new("spawn").join(name))
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    if paths.len() != groups.len() || !paths.iter().all(|p| ours(p)) {
        return false;
    }
    for path in paths {
        match std::fs::remove_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return false,
        }
    }
    std::fs::remove_dir_all(&dir).is_ok()
}

/// The files runsc left in its state directory for containers of spawns that are gone
/// (`dead` says which ids) and that it no longer holds state for: lock files without a
/// state file beside them, and control sockets (`runsc-ID.sock`).
fn orphan_runsc_files(state: &Path, dead: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    let has_state = |id: &str| {
        let prefix = format!("{id}_sandbox:");
        names
            .iter()
            .any(|n| n.starts_with(&prefix) && n.ends_with(".state") && state_loads(&state.join(n)))
    };
    names
        .iter()
        .filter(|n| {
            let id = match n
                .strip_prefix("runsc-")
                .and_then(|r| r.strip_suffix(".sock"))
            {
                Some(id) => id,
                None if n.ends_with(".lock") || n.ends_with(".state") => {
                    n.split_once("_sandbox:").map_or("", |(id, _)| id)
                }
                None => return false,
            };
            id.starts_with("spawn") && dead(id) && !has_state(id)
        })
        .cloned()
        .collect()
}

/// The runc containers of dead spawns whose `state.json` runc cannot load (cut short,
/// or not there while other files are): `runc delete` fails on them.
fn unloadable_runc_states(state: &Path, dead: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|id| id.starts_with("spawn") && dead(id))
        .filter(|id| {
            let dir = state.join(id);
            // An empty directory is one runc deletes itself.
            std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some())
                && !state_loads(&dir.join("state.json"))
        })
        .collect()
}

/// Whether a runtime's state file holds a whole JSON document (what runc and runsc must
/// read to act on a container); a runtime killed while writing it leaves it cut short.
fn state_loads(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .filter(|b| b.len() < (1 << 24))
        .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok())
}

/// Whether runsc still holds state for container `id` (assumed when unreadable).
fn runsc_has_state(state: &Path, id: &str) -> bool {
    state_ids(state).is_none_or(|ids| ids.iter().any(|i| i == id))
}

/// Where a path inside the sandbox is on the host: in the granted mount that holds it, in
/// the host's read-only system trees, or else in the bundle's root directory (the
/// synthesized `/etc`; the scratch tmpfs is empty when the run starts).
fn host_path(spec: &RunSpec, root: &Path, inside: &Path) -> PathBuf {
    for m in spec.mounts.iter().rev() {
        if let (MountSource::Host(src), Ok(rest)) = (&m.source, inside.strip_prefix(&m.target)) {
            return src.join(rest);
        }
    }
    if ["/usr", "/bin", "/sbin", "/lib", "/lib64"]
        .iter()
        .any(|p| inside.starts_with(p))
    {
        return inside.to_path_buf();
    }
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

/// The command's program as the sandbox would find it (like execvp over the sandbox's
/// PATH): `None` when it exists and is executable.
fn exec_check(spec: &RunSpec, root: &Path, env: &[(String, String)]) -> Option<ExecFailure> {
    use std::os::unix::fs::PermissionsExt as _;
    let argv0 = spec.command.first()?;
    let candidates: Vec<PathBuf> = if argv0.contains('/') {
        vec![spec
            .workdir
            .clone()
            .unwrap_or_else(|| "/workspace".into())
            .join(argv0)]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("/usr/bin:/bin", |(_, v)| v);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(argv0))
            .collect()
    };
    let mut denied = false;
    for c in candidates {
        match std::fs::metadata(host_path(spec, root, &c)) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return None,
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    Some(if denied {
        ExecFailure::NotExecutable(libc::EACCES)
    } else {
        ExecFailure::NotFound
    })
}

struct Runc<'a> {
    engine: &'a Engine,
    runc: &'a Path,
    state: &'a Path,
    id: &'a str,
}

/// What supervising the run found.
struct Supervised {
    status: std::process::ExitStatus,
    kill_reason: Option<KillReason>,
    blocked: std::collections::BTreeMap<String, u64>,
    landlock: Option<crate::landlock::Enforcement>,
}

/// Receives what spawn's init sends from inside the container: `L`, the Landlock status
/// byte, and the seccomp listener.
fn receive_listener(conn: &OwnedFd) -> (Option<OwnedFd>, Option<crate::landlock::Enforcement>) {
    let (fd, body) = receive_fd(conn);
    let landlock = match body.as_slice() {
        [b'L', code, ..] => crate::landlock::Enforcement::from_code(*code),
        _ => None,
    };
    (fd, landlock)
}

/// One message with (at most the first of) the descriptors it carries.
fn receive_fd(conn: &OwnedFd) -> (Option<OwnedFd>, Vec<u8>) {
    let mut buf = vec![0u8; 64 << 10];
    match sys::recv_fds(conn.as_fd(), &mut buf) {
        Ok((len, fds)) => {
            buf.truncate(len);
            (fds.into_iter().next(), buf)
        }
        Err(_) => (None, Vec::new()),
    }
}

/// What ends a run besides its command: its deadline, and the caller's stop; and the end
/// of a gVisor sandbox's boot allowance.
struct Ends<'a> {
    deadline: Instant,
    stop: Option<&'a native::Stop>,
    boot_cpu: Option<BootCpu<'a>>,
}

/// When the run's group goes from the boot's CPU allowance to the agent's limit.
struct BootCpu<'a> {
    at: Instant,
    group: &'a Cgroup,
    cpu_millis: u64,
}

/// Waits for runc: answers and counts blocked syscalls, passes signals on and enforces the
/// deadline.
fn supervise(
    runc: Runc<'_>,
    child: &mut Launched,
    sigfd: &SignalFd,
    report: &OwnedFd,
    mut denials: Option<&mut gvisor_monitor::DenialLog>,
    observer: &mut dyn Observer,
    ends: Ends<'_>,
) -> Result<Supervised, SandboxError> {
    let Ends {
        deadline,
        stop,
        mut boot_cpu,
    } = ends;
    // A run whose CPU limit could not be set back is stopped, and ends as an error.
    let mut failure = None;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let pidfd: OwnedFd = sys::pidfd_open(pid).map_err(|e| SandboxError::setup("pidfd", e))?;
    let mut kill_reason = None;
    let mut kill_at: Option<Instant> = None;
    let mut listener: Option<OwnedFd> = None;
    let mut landlock = None;
    // Polled until the init has handed over the listener and closed its end.
    let mut report_open = true;
    let mut blocked = std::collections::BTreeMap::new();
    let kill = |sig: &str| {
        let _ = runc
            .engine
            .command(runc.runc, runc.state)
            .args(["kill", runc.id, sig])
            .output();
    };
    // The Sentry's log is read on a timer, not when it becomes readable: it writes a line
    // at a time (hundreds as it starts, two per gofer call after), and waking spawn for
    // each cost a run ~9 ms of the machine's two cores. Nothing is lost meanwhile: the
    // Sentry waits while the FIFO is full, and the rest is drained once runsc has exited.
    let mut read_log_at = denials
        .is_some()
        .then(|| Instant::now() + gvisor_monitor::READ_PERIOD);
    loop {
        let now = Instant::now();
        let next = kill_at.map_or(deadline, |k| k.min(deadline));
        if now >= next {
            if now >= deadline && kill_reason.is_none() {
                kill_reason = Some(KillReason::Timeout);
            }
            kill("KILL");
            kill_at = Some(now + Duration::from_secs(3600));
        }
        if let Some(boot) = boot_cpu.take_if(|b| now >= b.at) {
            if let Err(e) = boot.group.set_cpu(boot.cpu_millis) {
                if kill_at.is_none() {
                    kill("KILL");
                    kill_at = Some(now + Duration::from_secs(3600));
                }
                failure = Some(e);
            }
        }
        if let (Some(log), Some(at)) = (denials.as_deref_mut(), &mut read_log_at) {
            if now >= *at {
                let more = log.read_available(denied_to(&mut blocked, observer));
                // More than the budget waiting is read on the next round of the loop.
                *at = if matches!(more, Ok(true)) {
                    now
                } else {
                    now + gvisor_monitor::READ_PERIOD
                };
            }
        }
        let wait = read_log_at
            .map_or(next, |at| next.min(at))
            .min(boot_cpu.as_ref().map_or(next, |b| b.at))
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, 60_000);
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        let report_idx = report_open.then(|| {
            fds.push(PollFd::new(report.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let listener_idx = listener.as_ref().map(|l| {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        // The caller's stop, until it has been acted on.
        let stop_idx = stop.filter(|_| kill_at.is_none()).map(|s| {
            fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(
            &mut fds,
            PollTimeout::from(u16::try_from(wait).unwrap_or(u16::MAX)),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SandboxError::setup("poll", e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        let (exited, signalled) = (!ready(0).is_empty(), ready(1).contains(PollFlags::POLLIN));
        let connecting = report_idx.map(ready).unwrap_or(PollFlags::empty());
        let notified = listener_idx.map(ready).unwrap_or(PollFlags::empty());
        let stopped = stop_idx.is_some_and(|i| ready(i).contains(PollFlags::POLLIN));
        drop(fds);
        if stopped && kill_at.is_none() {
            kill_reason.get_or_insert(KillReason::Limit);
            kill("TERM");
            kill_at = Some(Instant::now() + CANCEL_GRACE);
        }
        // The init sends one message (the listener) and closes its end; either way the
        // socket is done with, and polling it on would spin (EOF stays readable).
        if connecting.contains(PollFlags::POLLIN) {
            let (received, enforced) = receive_listener(report);
            listener = received.or(listener);
            landlock = enforced.or(landlock);
            report_open = false;
        } else if connecting.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            report_open = false;
        }
        if notified.contains(PollFlags::POLLIN) {
            if let Some(l) = &listener {
                native::answer_blocked_call(l.as_fd(), &mut blocked, observer);
            }
        } else if notified.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            listener = None;
        }
        if signalled {
            if let Ok(Some(info)) = sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if kill_at.is_none() {
                    kill_reason.get_or_insert(KillReason::Cancelled(signo));
                    kill(&signo.to_string());
                    kill_at = Some(Instant::now() + CANCEL_GRACE);
                } else {
                    kill("KILL");
                }
            }
        }
        if exited {
            let status = child
                .wait()
                .map_err(|e| SandboxError::setup("wait for runc", e))?;
            // The Sentry is gone: what it logged is all in the FIFO.
            if let Some(log) = denials.as_deref_mut() {
                let _ = log.drain(denied_to(&mut blocked, observer));
            }
            if let Some(e) = failure {
                return Err(e);
            }
            return Ok(Supervised {
                status,
                kill_reason,
                blocked,
                landlock,
            });
        }
    }
}

/// Counts each denial the Sentry logged in `blocked` and tells `observer` of it.
fn denied_to<'a>(
    blocked: &'a mut std::collections::BTreeMap<String, u64>,
    observer: &'a mut dyn Observer,
) -> impl FnMut(gvisor_monitor::Denial) + 'a {
    move |d| {
        if let Some((name, first)) = gvisor_monitor::record(&d, blocked) {
            observer.denied(&name, first);
        }
    }
}

/// A bundle directory, removed (with everything in it) when dropped.
struct Bundle {
    path: PathBuf,
}

impl Bundle {
    fn new(path: PathBuf) -> Result<Bundle, SandboxError> {
        std::fs::create_dir(&path)
            .map_err(|e| SandboxError::setup(format!("create {}", path.display()), e))?;
        let b = Bundle { path };
        // The container's mapped root must reach rootfs/; config.json stays 0600.
        std::fs::set_permissions(&b.path, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| SandboxError::setup("chmod bundle", e))?;
        Ok(b)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_cache_answers_only_for_the_same_binary_and_known_platforms() {
        let key = "/usr/bin/runsc\n42\n1000\n5.6\n";
        let profile = |platform: &str, release| GvisorProfile {
            platform: platform.into(),
            release,
        };
        assert_eq!(
            cached_profile(&format!("{key}ptrace\n20240729\n"), key),
            Some(profile("ptrace", Some(20240729)))
        );
        assert_eq!(
            cached_profile(&format!("{key}kvm\n0\n"), key),
            Some(profile("kvm", None))
        );
        assert_eq!(
            cached_profile(&format!("{key}-\n20240729\n"), key),
            Some(profile("-", Some(20240729)))
        );
        // Another binary (upgraded: other inode, size or time) is asked again.
        assert_eq!(
            cached_profile("/usr/bin/runsc\n43\n1000\n5.6\nptrace\n20240729\n", key),
            None
        );
        // A damaged or hostile cache is ignored, never passed on as a flag.
        for bad in [
            "",
            "--debug\n1\n",
            "ptrace\n",
            "ptrace",
            "ptrace\nkvm\n",
            "PTRACE\n20240729\n",
            "ptrace\n-1\n",
            "ptrace\n2024x\n",
            "ptrace\n20240729\nmore\n",
        ] {
            assert_eq!(cached_profile(&format!("{key}{bad}"), key), None, "{bad:?}");
        }
        assert_eq!(cached_profile("ptrace\n20240729\n", key), None);
    }

    #[test]
    fn runsc_release_is_read_from_every_spelling_of_the_version() {
        for (text, release) in [
            (
                "runsc version 0.0~20240729.0\nspec: 1.2.0\n",
                Some(20240729),
            ),
            (
                "runsc version 0.0~20221219.0\nspec: 1.0.2-dev",
                Some(20221219),
            ),
            (
                "runsc version release-20251215.0\nspec: 1.1.0-rc.1",
                Some(20251215),
            ),
            ("runsc version 20240729.0-4+b7", Some(20240729)),
            ("runsc version 0.0~git20240729.abcdef", Some(20240729)),
            // No date, or numbers that are not one.
            ("runsc version custom-build", None),
            ("runsc version 123456789", None),
            ("runsc version 20241399.0", None),
            ("runsc version 1.2.3\nrelease-20240729.0", None),
            ("", None),
        ] {
            assert_eq!(runsc_release(text), release, "{text:?}");
        }
    }

    #[test]
    fn too_old_or_undated_runsc_is_refused_with_the_fix() {
        let profile = |release| GvisorProfile {
            platform: "systrap".into(),
            release,
        };
        assert!(profile(Some(MIN_RUNSC_RELEASE)).check().is_ok());
        assert!(profile(Some(20250101)).check().is_ok());
        for (release, says) in [
            (Some(20221219), "runsc 2022-12-19 is too old"),
            (Some(20240728), "runsc 2024-07-28 is too old"),
            (None, "names no release date"),
        ] {
            let err = profile(release).check().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert!(text.contains("2024-07-29 or newer"), "{text}");
            assert!(matches!(err, SandboxError::RuntimeUnavailable { .. }));
        }
        assert!(profile(Some(20240729)).xattr_compat());
        assert!(!profile(Some(20241021)).xattr_compat());
        assert!(!profile(None).xattr_compat());
    }

    #[test]
    fn only_files_of_dead_spawns_without_state_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "spawn42-tr_a_sandbox:spawn42-tr_a.lock",
            "runsc-spawn42-tr_a.sock",
            "spawn42-tr_b_sandbox:spawn42-tr_b.lock",
            "spawn42-tr_b_sandbox:spawn42-tr_b.state",
            "runsc-spawn42-tr_b.sock",
            "spawn7-tr_c_sandbox:spawn7-tr_c.lock",
            "runsc-spawn7-tr_c.sock",
            "runsc-other.sock",
            "unrelated.lock",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::write(
            dir.path().join("spawn42-tr_b_sandbox:spawn42-tr_b.state"),
            r#"{"id":"spawn42-tr_b"}"#,
        )
        .unwrap();
        // spawn 42 is gone, spawn 7 is alive.
        let dead = |id: &str| id.starts_with("spawn42-");
        let mut found = orphan_runsc_files(dir.path(), dead);
        found.sort();
        assert_eq!(
            found,
            [
                "runsc-spawn42-tr_a.sock",
                "spawn42-tr_a_sandbox:spawn42-tr_a.lock"
            ]
        );
    }

    /// Every way a runtime killed while writing its state leaves it: runsc and runc
    /// cannot load such a state, so spawn removes the dead spawn's files itself.
    #[test]
    fn state_that_no_runtime_can_load_is_an_orphan_of_a_dead_spawn() {
        let whole = r#"{"id":"spawn42-tr_b","spec":{"process":{"args":["true"]}}}"#;
        for (cut, expect_orphan) in [
            ("", true),
            ("{", true),
            (&whole[..whole.len() / 2], true),
            (&whole[..whole.len() - 1], true),
            ("\0\0\0\0", true),
            ("{} trailing", true),
            (whole, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let names = [
                "spawn42-tr_b_sandbox:spawn42-tr_b.lock",
                "spawn42-tr_b_sandbox:spawn42-tr_b.state",
                "runsc-spawn42-tr_b.sock",
            ];
            for name in names {
                std::fs::write(dir.path().join(name), "").unwrap();
            }
            std::fs::write(dir.path().join(names[1]), cut).unwrap();
            // The same bytes as a runc container's state.
            let runc = dir.path().join("runc");
            for id in ["spawn42-tr_b", "spawn7-tr_c"] {
                std::fs::create_dir_all(runc.join(id)).unwrap();
                std::fs::write(runc.join(id).join("state.json"), cut).unwrap();
            }
            std::fs::create_dir_all(runc.join("spawn42-tr_empty")).unwrap();
            std::fs::create_dir_all(runc.join("spawn42-tr_nostate")).unwrap();
            std::fs::write(runc.join("spawn42-tr_nostate/exec.fifo"), "").unwrap();

            let dead = |id: &str| id.starts_with("spawn42-");
            let mut found = orphan_runsc_files(dir.path(), dead);
            found.sort();
            let mut runc_found = unloadable_runc_states(&runc, dead);
            runc_found.sort();
            if expect_orphan {
                let mut all = names.map(String::from).to_vec();
                all.sort();
                assert_eq!(found, all, "{cut:?}");
                assert_eq!(
                    runc_found,
                    ["spawn42-tr_b", "spawn42-tr_nostate"],
                    "{cut:?}"
                );
            } else {
                assert!(found.is_empty(), "{found:?}");
                assert_eq!(runc_found, ["spawn42-tr_nostate"]);
            }
        }
    }

    #[test]
    fn ensure_dir_refuses_what_spawn_does_not_own() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        ensure_dir(&mine, 0o700).unwrap();
        ensure_dir(&mine, 0o711).unwrap();
        let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o711);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        let err = ensure_dir(&link, 0o700).unwrap_err().to_string();
        assert!(err.contains("a symlink"), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(ensure_dir(&file, 0o700).is_err());

        assert!(
            nix::unistd::geteuid().is_root(),
            "this test plants a directory owned by another user: run it as root (make test)"
        );
        let planted = dir.path().join("planted");
        std::fs::create_dir(&planted).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let err = ensure_dir(&planted, 0o711).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        // Its mode was not touched either.
        let mode = std::fs::metadata(&planted).unwrap().permissions().mode();
        assert_ne!(mode & 0o7777, 0o711);
    }

    #[test]
    fn run_with_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "sleep 30 & echo $! > {}; sleep 30",
            pidfile.display()
        ));
        let started = Instant::now();
        assert!(run_with_timeout(cmd, Duration::from_millis(300)).is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !crate::cgroups::process_alive(pid)
        });
        assert!(gone, "the background child {pid} survived");
        let mut ok = Command::new("/bin/true");
        ok.stdout(Stdio::null());
        assert!(run_with_timeout(ok, Duration::from_secs(10)).is_some_and(|s| s.success()));
    }
}
