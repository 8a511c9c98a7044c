//! The same sandbox policy as an OCI runtime bundle's `config.json`, for runtimes driven
//! through OCI (`runsc` for gVisor, `crun`/`runc` for containers).
//!
//! Nothing here is a second copy of the rules: namespaces, id maps, mounts, limits,
//! masked paths and the seccomp profile are all derived from the same values the native
//! runtime applies ([`rootfs::Plan`], [`seccomp::policy`], the cgroup [`Limits`]). The
//! result is typed as `oci_spec::runtime::Spec`, so it conforms to the OCI runtime spec.
//!
//! What the bundle's root directory must contain beforehand (the plan's directories, files
//! and symlinks: the synthesized `/etc`, mount points) is written by the runtime driver;
//! this module only describes the configuration.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::bpf::{Action, Cond, Filter, Op};
use crate::cgroups::Limits;
use crate::error::SandboxError;
use crate::init::InitArgs;
use crate::rootfs::{
    self, BindSource, HostBinds, Plan, Step, AGENT_ID, PROC_MASKED, PROC_READONLY,
};
use crate::seccomp;

/// Everything the configuration is derived from.
#[derive(Debug)]
pub struct OciInput<'a> {
    /// The command and its arguments.
    pub argv: &'a [String],
    /// The agent's environment (see `native::agent_env`).
    pub env: &'a [(String, String)],
    /// Working directory inside the sandbox.
    pub cwd: &'a Path,
    /// The sandbox's hostname.
    pub hostname: &'a str,
    /// The root filesystem plan.
    pub plan: &'a Plan,
    /// Host id of uid/gid 0 inside (never 0 on the host).
    pub root_id: u32,
    /// Host id of the agent's uid/gid 1000.
    pub agent_id: u32,
    /// cgroup limits.
    pub limits: Limits,
    /// Open files per process.
    pub nofile: u64,
    /// `linux.cgroupsPath`: where the runtime creates the run's cgroup.
    pub cgroups_path: Option<String>,
    /// spawn's init (`spawn-init`): bound read-only at [`INIT_PATH`] (or copied there, see
    /// [`Kernel::init_in_root`]) and run as the
    /// container's PID 1 (`spawn-init FLAGS -- COMMAND`, see [`InitArgs`]), so the command is
    /// not PID 1 itself.
    /// That init installs spawn's own seccomp filter in the command (exactly the native
    /// one, with its listener handed to spawn over fd 3), so the OCI profile is left out.
    pub init: Option<&'a Path>,
    /// Whose kernel the agent runs on.
    pub kernel: Kernel,
    /// The descriptor, in the init, of the pipe holding granted secrets (`secret_env`).
    pub secrets_fd: Option<std::os::fd::RawFd>,
    /// The network namespace to join (a run with a network policy), instead of a new
    /// empty one. gVisor ignores it: runsc is started inside it instead. Never the host's.
    pub netns: Option<&'a Path>,
    /// The agent's stdin is the run's own pty (an interactive run): spawn's init makes it
    /// the command's controlling terminal.
    pub terminal: bool,
    /// Writable host grants prepared by the driver (idmapped, see `idmap`) and attached
    /// at a staging path the runtime can bind from: `(sandbox path, staging path)`. The
    /// bind to that sandbox path takes its source from here instead of the host path.
    pub staged: &'a [(PathBuf, PathBuf)],
    /// Where the run's scratch filesystem (see `scratch`) is attached in the runtime's
    /// mount namespace: `/tmp`, `/workspace`, `/dev/shm` and volumes without a quota of
    /// their own are binds of its directories.
    pub scratch: &'a Path,
}

/// Whose kernel the agent runs on, which changes what the bundle asks of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The host's (runc): a user namespace with the id maps, the seccomp profile, and
    /// spawn's init handing the filter's listener over fd 3.
    Host,
    /// gVisor's (runsc): no user namespace (the agent's ids live in gVisor's kernel), no
    /// OCI seccomp profile (runsc only applies one with `--oci-seccomp`), spawn's init
    /// without the listener hand-over (it installs the native filter in deny-only form:
    /// the same calls fail `EPERM`, uncounted), and RLIMIT_NPROC held to the agent's own
    /// PID limit (`limits.pids` also covers gVisor's threads).
    Gvisor {
        /// The agent's PID limit.
        agent_pids: u64,
        /// This runsc needs [`crate::seccomp::gvisor_xattr_compat`].
        xattr_compat: bool,
    },
}

impl Kernel {
    /// How the bundle's root gets the read-only host paths (`/usr`, the files under
    /// `/etc`, …): gVisor serves every bind through a gofer mount of its own, so there
    /// they are part of the root (copies, and trees the driver attaches, see
    /// [`HostBinds::InRoot`]).
    pub fn host_binds(self) -> HostBinds {
        match self {
            Kernel::Host => HostBinds::Mounted,
            Kernel::Gvisor { .. } => HostBinds::InRoot,
        }
    }

    /// Whether spawn's init is a copy in the bundle's (read-only) root at [`INIT_PATH`]
    /// rather than bound there: under gVisor, a bind is a gofer mount of its own, which
    /// costs the sandbox's start ~2–3 ms (its mount request and two channels of shared
    /// memory), where copying the static init (~0.7 MB) into the root on tmpfs costs
    /// spawn a fraction of a millisecond, beside the runtime's own start. The same answer
    /// as [`Kernel::host_binds`], for the same reason.
    pub fn init_in_root(self) -> bool {
        self.host_binds() == HostBinds::InRoot
    }
}

/// Where spawn's init is bound inside an OCI sandbox.
pub const INIT_PATH: &str = "/.spawn-init";

fn mount_of(step: &Step, scratch: &Path) -> Option<Value> {
    match step {
        // OCI runtimes create the standard device nodes (null, zero, full, random, urandom,
        // tty) in /dev themselves; binding them here as well would collide.
        Step::Bind {
            source: BindSource::Host(src),
            ..
        } if src.starts_with("/dev") => None,
        Step::Bind {
            source: BindSource::Host(src) | BindSource::Granted(src),
            path,
            readonly,
            ..
        } => {
            let mut options = vec!["rbind", if *readonly { "ro" } else { "rw" }, "nosuid"];
            // Device nodes must keep working; everything else is nodev.
            if !path.starts_with("/dev") {
                options.push("nodev");
            }
            Some(json!({
                "destination": path, "type": "bind", "source": src, "options": options,
            }))
        }
        // A directory of the scratch filesystem, from where the runtime has it attached.
        Step::Bind {
            source: BindSource::Inside(from),
            path,
            readonly,
            ..
        } => {
            let rel = from.strip_prefix(rootfs::SCRATCH_AT).ok()?;
            let mut options = vec![
                "rbind",
                if *readonly { "ro" } else { "rw" },
                "nosuid",
                "nodev",
            ];
            if path == Path::new("/dev/shm") {
                options.push("noexec");
            }
            Some(json!({
                "destination": path, "type": "bind", "source": scratch.join(rel),
                "options": options,
            }))
        }
        // Attached by the driver in the runtime's mount namespace, not in the sandbox.
        Step::Scratch { .. } => None,
        Step::Tmpfs {
            path,
            size,
            mode,
            owner,
            noexec,
        } => {
            let mut options = vec![
                "nosuid".to_owned(),
                "nodev".to_owned(),
                format!("mode={mode:o}"),
                format!("size={size}"),
                format!("uid={owner}"),
                format!("gid={owner}"),
            ];
            if *noexec {
                options.push("noexec".to_owned());
            }
            Some(json!({
                "destination": path, "type": "tmpfs", "source": "tmpfs", "options": options,
            }))
        }
        Step::Proc { path } => Some(json!({
            "destination": path, "type": "proc", "source": "proc",
            "options": ["nosuid", "nodev", "noexec"],
        })),
        Step::Dir { .. } | Step::Symlink { .. } | Step::File { .. } => None,
    }
}

/// The mounts of the plan; `scratch` is where the scratch filesystem is attached.
/// `binds` says whether the read-only host binds are the runtime's mounts or part of the
/// root (see [`HostBinds`]).
fn mounts(plan: &Plan, binds: HostBinds, scratch: &Path) -> Vec<Value> {
    plan.steps
        .iter()
        .filter(|s| {
            binds == HostBinds::Mounted || !(rootfs::is_etc_bind(s) || rootfs::is_attached_dir(s))
        })
        .filter_map(|s| mount_of(s, scratch))
        .collect()
}

/// Points the binds of staged grants at their staging paths.
fn staged(mut mounts: Vec<Value>, staged: &[(PathBuf, PathBuf)]) -> Vec<Value> {
    for m in &mut mounts {
        let dest = m["destination"].as_str().map(Path::new);
        if let Some((_, from)) = staged.iter().find(|(to, _)| Some(to.as_path()) == dest) {
            m["source"] = json!(from);
        }
    }
    mounts
}

fn op_json(c: &Cond) -> Value {
    let (op, value, value_two) = match c.op {
        Op::Eq => ("SCMP_CMP_EQ", c.value, None),
        Op::Ne => ("SCMP_CMP_NE", c.value, None),
        Op::MaskedEq(mask) => ("SCMP_CMP_MASKED_EQ", mask, Some(c.value)),
    };
    let mut arg = json!({ "index": c.arg, "value": value, "op": op });
    if let Some(v2) = value_two {
        arg["valueTwo"] = json!(v2);
    }
    arg
}

/// The seccomp policy as an OCI profile (libseccomp semantics: entries for the same name
/// are alternatives, the args of one entry all must hold). Blocked calls fail with EPERM.
///
/// Caveat: libseccomp compares whole 64-bit arguments and one comparison per argument per
/// rule, so conditions like "ioctl request is neither TIOCSTI nor TIOCLINUX" lose
/// precision here; runtimes that can run spawn's init use spawn's own filter instead.
pub fn seccomp_profile(filter: &Filter) -> Value {
    let mut syscalls = Vec::new();
    for (nr, entry) in &filter.entries {
        let name = seccomp::syscall_name(i64::from(*nr));
        let (action, errno) = match entry.action {
            Action::Allow => ("SCMP_ACT_ALLOW", None),
            Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
            Action::Notify => ("SCMP_ACT_ERRNO", u16::try_from(libc::EPERM).ok()),
        };
        let alternatives: Vec<Vec<Value>> = if entry.any_of.is_empty() {
            vec![vec![]]
        } else {
            entry
                .any_of
                .iter()
                .map(|alt| alt.iter().map(op_json).collect())
                .collect()
        };
        for args in alternatives {
            let mut s = json!({ "names": [name], "action": action });
            if let Some(e) = errno {
                s["errnoRet"] = json!(e);
            }
            if !args.is_empty() {
                s["args"] = json!(args);
            }
            syscalls.push(s);
        }
    }
    let arch = if cfg!(target_arch = "x86_64") {
        "SCMP_ARCH_X86_64"
    } else {
        "SCMP_ARCH_AARCH64"
    };
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": [arch],
        "syscalls": syscalls,
    })
}

/// The bundle configuration for one run.
pub fn runtime_spec(input: &OciInput<'_>) -> Result<Spec, SandboxError> {
    let env: Vec<String> = input.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let none: Vec<String> = Vec::new();
    let idmap = json!([
        { "containerID": 0, "hostID": input.root_id, "size": 1 },
        { "containerID": AGENT_ID, "hostID": input.agent_id, "size": 1 },
    ]);
    let mut resources = json!({
        "memory": { "limit": input.limits.memory_bytes, "swap": input.limits.memory_bytes },
        "pids": { "limit": input.limits.pids },
    });
    if let Some(cpu) = input.limits.cpu_millis {
        resources["cpu"] = json!({ "quota": cpu * 100, "period": 100_000 });
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": AGENT_ID, "gid": AGENT_ID, "additionalGids": [] },
            "args": input.argv,
            "env": env,
            "cwd": input.cwd,
            "capabilities": {
                "bounding": none, "effective": none, "inheritable": none,
                "permitted": none, "ambient": none,
            },
            "noNewPrivileges": true,
            "rlimits": [
                { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 },
                { "type": "RLIMIT_NOFILE", "hard": input.nofile, "soft": input.nofile },
                { "type": "RLIMIT_NPROC", "hard": input.limits.pids, "soft": input.limits.pids },
                { "type": "RLIMIT_RTPRIO", "hard": 0, "soft": 0 },
                { "type": "RLIMIT_NICE", "hard": 0, "soft": 0 },
            ],
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": input.hostname,
        "mounts": staged(
            mounts(input.plan, input.kernel.host_binds(), input.scratch),
            input.staged,
        ),
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "mount" }, { "type": "ipc" }, { "type": "uts" },
                { "type": "network" }, { "type": "cgroup" }, { "type": "user" },
            ],
            "uidMappings": idmap,
            "gidMappings": idmap,
            "resources": resources,
            "maskedPaths": PROC_MASKED.iter().map(|p| format!("/proc/{p}")).collect::<Vec<_>>(),
            "readonlyPaths": PROC_READONLY.iter().map(|p| format!("/proc/{p}")).collect::<Vec<_>>(),
        },
    });
    let mut config = config;
    // Without spawn's init, the host kernel takes the policy as an OCI profile. With it
    // the init installs spawn's own filter (the same decisions, and a listener that
    // counts what it blocks), and gVisor's kernel takes none: the profile, which costs a
    // millisecond to build, is only built where the runtime is to apply it.
    if matches!(input.kernel, Kernel::Host) && input.init.is_none() {
        config["linux"]["seccomp"] = seccomp_profile(&seccomp::policy());
    }
    if let Some(ns) = input.netns {
        if let Some(list) = config["linux"]["namespaces"].as_array_mut() {
            for n in list.iter_mut().filter(|n| n["type"] == "network") {
                n["path"] = json!(ns);
            }
        }
    }
    if let Kernel::Gvisor { agent_pids, .. } = input.kernel {
        if let Some(linux) = config["linux"].as_object_mut() {
            linux.remove("uidMappings");
            linux.remove("gidMappings");
            if let Some(ns) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
                ns.retain(|n| n["type"] != "user");
            }
        }
        // The agent's uid may have all of the run's tasks but the init's (which runs as
        // gVisor's root).
        let agent_nproc = agent_pids.saturating_sub(1).max(1);
        if let Some(rl) = config["process"]["rlimits"].as_array_mut() {
            for r in rl.iter_mut().filter(|r| r["type"] == "RLIMIT_NPROC") {
                r["hard"] = json!(agent_nproc);
                r["soft"] = json!(agent_nproc);
            }
        }
    }
    if let Some(path) = &input.cgroups_path {
        config["linux"]["cgroupsPath"] = json!(path);
    }
    if let Some(init) = input.init {
        let mut flags = InitArgs {
            command: input.argv.to_vec(),
            tty: input.terminal,
            secrets_fd: input.secrets_fd,
            ..InitArgs::default()
        };
        match input.kernel {
            Kernel::Host => {
                // runc passes the report socket and the agent's streams as fds 3 to 6
                // (`--preserve-fds 4`), and the native Landlock rules, from the same plan.
                // (gVisor's kernel has no Landlock; there the Sentry is the wall.)
                flags.report_fd = Some(3);
                flags.stdio_fd = Some(4);
                flags.landlock = crate::landlock::Rules {
                    read: input.plan.readable.clone(),
                    write: input.plan.writable.clone(),
                };
            }
            Kernel::Gvisor { xattr_compat, .. } => {
                // gVisor serves the stdio it is given as terminals only when the process
                // has one: the run's own pty, which runsc is started with.
                config["process"]["terminal"] = json!(input.terminal);
                // The init starts as root of gVisor's kernel to remove the devices gVisor
                // adds, then starts the command as 1000 with nothing (see `InitArgs`).
                flags.gvisor_root = true;
                flags.xattr_compat = xattr_compat;
                let caps: Vec<&str> = crate::init::GVISOR_INIT_CAPS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                config["process"]["user"] = json!({ "uid": 0, "gid": 0, "additionalGids": [] });
                config["process"]["capabilities"] = json!({
                    "bounding": caps, "effective": caps, "permitted": caps,
                    "inheritable": none, "ambient": none,
                });
            }
        }
        let mut args = vec![INIT_PATH.to_owned()];
        args.extend(flags.to_args());
        config["process"]["args"] = json!(args);
        // Bound, unless it is a copy in the root (see `Kernel::init_in_root`).
        if let (false, Some(mounts)) =
            (input.kernel.init_in_root(), config["mounts"].as_array_mut())
        {
            mounts.push(json!({
                "destination": INIT_PATH, "type": "bind", "source": init,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }));
        }
    }
    serde_json::from_value(config)
        .map_err(|e| SandboxError::Unsupported(format!("OCI configuration: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs;
    use spawn_policy::{MountSource, MountSpec, RunSpec, RuntimeKind};

    fn input_spec(dir: &Path) -> (RunSpec, Plan) {
        let spec = RunSpec {
            name: "t".into(),
            mounts: vec![MountSpec {
                source: MountSource::Host(dir.into()),
                target: "/data".into(),
                writable: false,
            }],
            ..RunSpec::bare(RuntimeKind::Container, vec!["python3".into(), "-V".into()])
        };
        let plan = rootfs::plan(&spec, 1 << 30, "t", rootfs::Dns::None);
        (spec, plan)
    }

    fn config() -> Value {
        config_for(Kernel::Host, None)
    }

    const GVISOR: Kernel = Kernel::Gvisor {
        agent_pids: 7,
        xattr_compat: false,
    };

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    fn config_for(kernel: Kernel, init: Option<&Path>) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let (spec, plan) = input_spec(dir.path());
        let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let input = OciInput {
            argv: &spec.command,
            env: &env,
            cwd: Path::new("/workspace"),
            hostname: "t",
            plan: &plan,
            root_id: 0x7000_0010,
            agent_id: 0x7000_0011,
            limits: Limits {
                memory_bytes: 256 << 20,
                pids: 64,
                cpu_millis: Some(500),
            },
            nofile: 4096,
            cgroups_path: Some("/spawn/1-tr_x".into()),
            init,
            kernel,
            secrets_fd: None,
            netns: None,
            terminal: false,
            staged: &[],
            scratch: Path::new("/bundle/scratch"),
        };
        serde_json::to_value(runtime_spec(&input).unwrap()).unwrap()
    }

    /// gVisor gets the host's small `/etc` files (and `/etc/ld.so.conf.d`) as copies in the
    /// root (each bind is a gofer mount there); other directories stay binds; the host
    /// kernel gets binds of all.
    #[test]
    fn gvisor_bundle_copies_small_etc_entries_and_attaches_etc_directories() {
        let binds = |c: &Value| -> Vec<String> {
            c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["type"] == "bind")
                .filter_map(|m| m["destination"].as_str())
                .filter(|d| d.starts_with("/etc"))
                .map(str::to_owned)
                .collect()
        };
        let host = binds(&config());
        let gvisor = binds(&config_for(GVISOR, None));
        let dir = tempfile::tempdir().unwrap();
        let (_, plan) = input_spec(dir.path());
        for step in &plan.steps {
            if let Step::Bind {
                source: BindSource::Host(_),
                path,
                is_dir,
                ..
            } = step
            {
                let Some(p) = path.to_str().filter(|p| p.starts_with("/etc")) else {
                    continue;
                };
                assert!(host.iter().any(|h| h == p), "{p} is not bound for runc");
                let small_dir = rootfs::ETC_SMALL_DIRS.contains(&p);
                let attached = *is_dir && !small_dir;
                assert_eq!(rootfs::is_attached_dir(step), attached, "{p} attached");
                assert_eq!(rootfs::is_etc_bind(step), !attached, "{p} copied");
            }
        }
        // Under gVisor none of them is a bind of the runtime's (a gofer mount each).
        assert_eq!(gvisor, Vec::<String>::new());
        // The plan has files to copy on any Debian-like host (the loader cache).
        assert!(plan.steps.iter().any(rootfs::is_etc_bind));
    }

    #[test]
    fn gvisor_bundle_has_no_user_namespace_profile_or_listener_hand_over() {
        let init = Path::new("/usr/bin/spawn");
        let host = config_for(Kernel::Host, Some(init));
        let host_args = strings(&host["process"]["args"]);
        let host_args: Vec<&str> = host_args.iter().map(String::as_str).collect();
        let host_args = InitArgs::parse(&host_args[1..]).unwrap();
        assert_eq!(
            (host_args.report_fd, host_args.stdio_fd),
            (Some(3), Some(4))
        );
        assert!(!host_args.gvisor_root && !host_args.landlock.read.is_empty());
        assert_eq!(host["process"]["user"]["uid"], AGENT_ID);
        assert_eq!(host["process"]["capabilities"]["bounding"], json!([]));
        // spawn's init installs the filter itself: runc is given no profile to compile.
        assert!(host["linux"].get("seccomp").is_none());
        let c = config_for(GVISOR, Some(init));
        let linux = &c["linux"];
        assert!(linux.get("uidMappings").is_none() && linux.get("gidMappings").is_none());
        assert!(linux.get("seccomp").is_none());
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "mount", "ipc", "uts", "network", "cgroup"]);
        let args: Vec<&str> = c["process"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, [INIT_PATH, "--gvisor-root", "--", "python3", "-V"]);
        // The init is bound for runc; under gVisor it is a copy in the root instead.
        let init_mounts = |c: &Value| {
            c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["destination"] == INIT_PATH)
                .count()
        };
        assert_eq!((init_mounts(&host), init_mounts(&c)), (1, 0));
        assert!(!Kernel::Host.init_in_root() && GVISOR.init_in_root());
        // The init starts as root of gVisor's kernel with only what dropping to the agent
        // needs; the command never has any of it (see `InitArgs::gvisor_root`).
        assert_eq!(c["process"]["user"]["uid"], 0);
        let mut bounding = strings(&c["process"]["capabilities"]["bounding"]);
        bounding.sort();
        assert_eq!(bounding, ["CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID"]);
        assert_eq!(c["process"]["capabilities"]["ambient"], json!([]));
        let compat = config_for(
            Kernel::Gvisor {
                agent_pids: 7,
                xattr_compat: true,
            },
            Some(init),
        );
        assert!(strings(&compat["process"]["args"]).contains(&"--xattr-compat".to_owned()));
        let nproc = c["process"]["rlimits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "RLIMIT_NPROC")
            .unwrap()
            .clone();
        // The agent's 7 tasks, less the init's (gVisor's root, not the agent's uid).
        assert_eq!(
            (nproc["soft"].as_u64(), nproc["hard"].as_u64()),
            (Some(6), Some(6))
        );
        // The cgroup keeps the limit that covers gVisor's own threads.
        assert_eq!(linux["resources"]["pids"]["limit"], 64);
    }

    #[test]
    fn the_agent_has_no_privilege() {
        let c = config();
        assert_eq!(c["process"]["user"]["uid"], 1000);
        assert_eq!(c["process"]["user"]["gid"], 1000);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            assert_eq!(c["process"]["capabilities"][set], json!([]), "{set}");
        }
        // Host root is never mapped.
        for map in ["uidMappings", "gidMappings"] {
            for m in c["linux"][map].as_array().unwrap() {
                assert_ne!(m["hostID"], 0, "{map}: {m}");
            }
        }
    }

    #[test]
    fn every_namespace_and_limit() {
        let c = config();
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "mount", "ipc", "uts", "network", "cgroup", "user"] {
            assert!(ns.contains(&want), "{want} missing from {ns:?}");
        }
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 256 << 20);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["linux"]["cgroupsPath"], "/spawn/1-tr_x");
    }

    #[test]
    fn mounts_follow_the_plan() {
        let c = config();
        let mounts = c["mounts"].as_array().unwrap();
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
        let usr = find("/usr").expect("/usr");
        assert!(usr["options"].as_array().unwrap().contains(&json!("ro")));
        let data = find("/data").expect("/data");
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(data["options"]
            .as_array()
            .unwrap()
            .contains(&json!("nodev")));
        for d in ["/proc", "/dev", "/tmp", "/workspace", "/dev/shm"] {
            assert!(find(d).is_some(), "{d} missing");
        }
        assert!(mounts.iter().all(|m| m["destination"] != "/sys"));
        assert!(mounts.iter().all(|m| m["source"] != "/etc/shadow"));
    }

    /// Under gVisor every read-only host path of the plan is part of the root (attached
    /// or copied by the driver), never a bind of the runtime's (a gofer mount each); the
    /// user's grants, the scratch directories and the kernel filesystems stay mounts. On
    /// the host kernel they are all binds.
    #[test]
    fn gvisor_gets_host_paths_in_the_root_and_the_rest_as_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let (_, plan) = input_spec(dir.path());
        let host_binds: Vec<&Path> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind {
                    source: BindSource::Host(_),
                    path,
                    ..
                } if !path.starts_with("/dev") => Some(path.as_path()),
                _ => None,
            })
            .collect();
        assert!(
            host_binds.contains(&Path::new("/usr")) && host_binds.len() > 3,
            "{host_binds:?}"
        );
        let destinations = |c: &Value| -> Vec<String> {
            c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["destination"].as_str().unwrap().to_owned())
                .collect()
        };
        let (host, gvisor) = (
            destinations(&config_for(Kernel::Host, None)),
            destinations(&config_for(GVISOR, None)),
        );
        for path in &host_binds {
            let path = path.to_str().unwrap().to_owned();
            assert!(
                host.contains(&path),
                "{path} is not a bind on the host kernel"
            );
            assert!(
                !gvisor.contains(&path),
                "{path} is a gofer mount under gVisor"
            );
        }
        let mut rest: Vec<&String> = gvisor.iter().collect();
        rest.sort();
        assert_eq!(
            rest,
            ["/data", "/dev", "/dev/shm", "/proc", "/tmp", "/workspace"],
            "gVisor's mounts"
        );
        // What is attached is exactly the host directories that are not copied.
        let attached: Vec<(&Path, &Path)> = rootfs::attached_dirs(&plan).collect();
        for (src, path) in &attached {
            assert_eq!(src, path, "a system path comes from the same host path");
            assert!(src.is_dir() && !path.starts_with("/dev"), "{src:?}");
        }
        let attached_paths: Vec<&Path> = attached.iter().map(|(_, p)| *p).collect();
        for path in &host_binds {
            let copied = plan.steps.iter().any(|s| {
                rootfs::is_etc_bind(s) && matches!(s, Step::Bind { path: p, .. } if p == path)
            });
            assert_ne!(
                attached_paths.contains(path),
                copied,
                "{path:?} must be either attached or copied"
            );
        }
    }

    #[test]
    fn seccomp_profile_denies_by_default_and_mirrors_the_policy() {
        let c = config();
        let sc = &c["linux"]["seccomp"];
        assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(sc["defaultErrnoRet"], libc::EPERM);
        let names: Vec<&str> = sc["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap())
            })
            .collect();
        for allowed in ["read", "write", "execve", "clone", "socket"] {
            assert!(names.contains(&allowed), "{allowed}");
        }
        for denied in [
            "mount",
            "ptrace",
            "unshare",
            "bpf",
            "kexec_load",
            "init_module",
        ] {
            assert!(!names.contains(&denied), "{denied} must not be listed");
        }
        // clone is allowed only without namespace flags.
        let clone = sc["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["valueTwo"], 0);
    }
}
