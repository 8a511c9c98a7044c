//! The sandbox's root filesystem: planned as data on the host, applied by the sandbox init.
//!
//! The new root is a small tmpfs (made read-only once built) holding:
//! read-only binds of the host's `/usr`, `/bin`, `/sbin`, `/lib*` (symlinks where the host
//! has merged-usr links); a synthesized `/etc` with only what programs need (the agent user,
//! hosts, resolv.conf, nsswitch) plus read-only binds of harmless host files (loader cache,
//! alternatives, CA certificates); a fresh `/proc` with `hidepid` and its dangerous files
//! masked; a minimal `/dev`; and the run's scratch filesystem (see `scratch`: ext4 on the
//! host's disk, exactly the disk quota's size) whose directories are `/tmp`, `/workspace`,
//! `/dev/shm` and the named volumes without a quota of their own, so one quota covers
//! everything the agent writes outside granted host mounts. `/sys`, `/home`, `/root` and
//! the rest of the host do not exist.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use spawn_policy::layout::{ETC_BINDS, SYSTEM_DIRS};
use spawn_policy::{MountSource, RunSpec};

use crate::error::SandboxError;
use crate::sys;

/// uid/gid of the agent inside the sandbox.
pub const AGENT_ID: u32 = 1000;

/// Where the new root is assembled inside the sandbox's private mount namespace. Host
/// paths that must still be reachable (bind sources) are opened before this is covered.
const STAGING: &str = "/tmp";

/// Size of the root tmpfs: it only holds directories, symlinks and a few small `/etc` files.
const ROOT_TMPFS_SIZE: u64 = 1 << 20;
/// Where the scratch filesystem is mounted while the root is built (and where the OCI
/// runtimes' binds of its directories come from, relative to its staging path). Its
/// directories are then bound where the agent sees them, the last over `/tmp` itself.
pub const SCRATCH_AT: &str = "/tmp";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// `/proc` entries hidden behind `/dev/null`.
pub(crate) const PROC_MASKED: &[&str] = &["kcore", "keys", "timer_list", "sched_debug", "kallsyms"];
/// `/proc` entries made read-only.
pub(crate) const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Where a bind mount's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSource {
    /// A host path, opened (`O_PATH`) before the staging area is covered.
    Host(PathBuf),
    /// A path inside the new root, already mounted by an earlier step.
    Inside(PathBuf),
    /// A host path granted by `fs.mounts`: mounted idmapped (its owner appears as the
    /// agent) from a tree the host side prepares; see `idmap`.
    Granted(PathBuf),
}

/// One step of building the root. Paths are sandbox paths (absolute, as the agent sees
/// them after `pivot_root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a directory (and its parents).
    Dir {
        path: PathBuf,
        mode: u32,
        owner: Option<u32>,
    },
    /// Create a symlink.
    Symlink { link: PathBuf, target: PathBuf },
    /// Create a file with contents.
    File {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Mount a tmpfs.
    Tmpfs {
        path: PathBuf,
        size: u64,
        mode: u32,
        owner: u32,
        noexec: bool,
    },
    /// Bind-mount (recursively), optionally read-only; always nosuid and nodev.
    Bind {
        source: BindSource,
        path: PathBuf,
        readonly: bool,
        is_dir: bool,
    },
    /// Mount a fresh procfs with hidepid and mask its dangerous entries.
    Proc { path: PathBuf },
    /// Attach the run's scratch filesystem (a detached mount prepared on the host, see
    /// `scratch`) of `size` bytes; its directories are [`Plan::scratch`].
    Scratch { path: PathBuf, size: u64 },
}

/// A top-level directory of the scratch filesystem, made on the host before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchDir {
    /// Its name (a single component).
    pub name: String,
    /// Its mode.
    pub mode: u32,
    /// Owned by the agent (else by the sandbox's root).
    pub agent: bool,
}

/// The full plan. Built on the host from a [`RunSpec`]; unit-testable without privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Paths the agent may write under (for Landlock).
    pub writable: Vec<PathBuf>,
    /// Paths the agent may read and execute under (for Landlock).
    pub readable: Vec<PathBuf>,
    /// Mount points made writable again after the whole tree is made read-only.
    pub rw_mounts: Vec<PathBuf>,
    /// Mount points where nothing may be executed (`/dev/shm`).
    pub noexec_mounts: Vec<PathBuf>,
    /// The scratch filesystem's directories.
    pub scratch: Vec<ScratchDir>,
}

/// Where the sandbox's DNS queries go (its `/etc/resolv.conf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dns {
    /// Nowhere: `net: none`.
    None,
    /// The run's DNS server on the host end of its link.
    Server(std::net::Ipv4Addr),
}

fn etc_files(hostname: &str, dns: Dns) -> Vec<(&'static str, String)> {
    let resolv = match dns {
        Dns::Server(ns) => format!(
            "# spawn: the run's DNS, on the host end of its link\nnameserver {ns}\n\
             options timeout:2 attempts:2\n"
        ),
        Dns::None => {
            "# spawn: this sandbox has no DNS (net: none)\noptions timeout:1 attempts:1\n".into()
        }
    };
    vec![
        (
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
                 agent:x:{AGENT_ID}:{AGENT_ID}:spawn agent:/workspace:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "/etc/group",
            format!("root:x:0:\nagent:x:{AGENT_ID}:\nnogroup:x:65534:\n"),
        ),
        (
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n"),
        ),
        ("/etc/hostname", format!("{hostname}\n")),
        ("/etc/resolv.conf", resolv),
        (
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\n"
                .into(),
        ),
    ]
}

/// Builds the plan for a run. `disk` is the scratch filesystem's size (the disk quota);
/// `dns` is where the sandbox's DNS queries go.
pub fn plan(spec: &RunSpec, disk: u64, hostname: &str, dns: Dns) -> Plan {
    let mut steps = Vec::new();
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut rw_mounts = Vec::new();
    let dir = |p: &str, mode| Step::Dir {
        path: p.into(),
        mode,
        owner: None,
    };

    for sys_dir in SYSTEM_DIRS {
        let host = Path::new(sys_dir);
        match fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(host) {
                    steps.push(Step::Symlink {
                        link: host.into(),
                        target,
                    });
                }
            }
            Ok(m) if m.is_dir() => {
                steps.push(dir(sys_dir, 0o755));
                steps.push(Step::Bind {
                    source: BindSource::Host(host.into()),
                    path: host.into(),
                    readonly: true,
                    is_dir: true,
                });
                readable.push(host.into());
            }
            _ => {}
        }
    }

    steps.push(dir("/etc", 0o755));
    for (path, contents) in etc_files(hostname, dns) {
        steps.push(Step::File {
            path: path.into(),
            contents,
            mode: 0o644,
        });
    }
    for etc in ETC_BINDS {
        let host = Path::new(etc);
        match fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(host) {
                    push_parent(&mut steps, host);
                    steps.push(Step::Symlink {
                        link: host.into(),
                        target,
                    });
                }
            }
            Ok(m) => {
                push_parent(&mut steps, host);
                steps.push(Step::Bind {
                    source: BindSource::Host(host.into()),
                    path: host.into(),
                    readonly: true,
                    is_dir: m.is_dir(),
                });
            }
            Err(_) => {}
        }
    }
    readable.push("/etc".into());

    // /dev: a tiny tmpfs with the allowed device nodes bound from the host.
    steps.push(Step::Tmpfs {
        path: "/dev".into(),
        size: 64 << 10,
        mode: 0o755,
        owner: 0,
        noexec: true,
    });
    // These nodes exist on every Linux host; binding a missing one fails the run loudly.
    // Device nodes stay usable on a read-only mount (writes go to the device).
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        steps.push(Step::Bind {
            source: BindSource::Host(host.clone()),
            path: host,
            readonly: true,
            is_dir: false,
        });
    }
    // Landlock: devices and /dev/shm; DAC keeps the agent from creating files in /dev.
    writable.push("/dev".into());
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            link: Path::new("/dev").join(name),
            target: target.into(),
        });
    }
    rw_mounts.push("/proc".into());

    steps.push(Step::Proc {
        path: "/proc".into(),
    });
    readable.push("/proc".into());

    // Scratch: one filesystem, sized by the disk quota, for /tmp, /workspace, /dev/shm
    // and the named volumes without a quota of their own, bound from its directories.
    let mut scratch = vec![
        ScratchDir {
            name: "tmp".into(),
            mode: 0o1777,
            agent: false,
        },
        ScratchDir {
            name: "shm".into(),
            mode: 0o1777,
            agent: false,
        },
    ];
    let named_workspace = spec
        .mounts
        .iter()
        .any(|m| m.target == Path::new("/workspace"));
    steps.push(Step::Scratch {
        path: SCRATCH_AT.into(),
        size: disk,
    });
    let mut from_scratch = |name: &str, mode: u32, readonly: bool, path: &Path| {
        scratch.push(ScratchDir {
            name: name.into(),
            mode,
            agent: true,
        });
        Step::Bind {
            source: BindSource::Inside(Path::new(SCRATCH_AT).join(name)),
            path: path.into(),
            readonly,
            is_dir: true,
        }
    };
    let mut volumes = Vec::new();
    if !named_workspace {
        volumes.push(from_scratch(
            "workspace",
            0o755,
            false,
            Path::new("/workspace"),
        ));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        if let MountSource::Tmpfs {
            quota_bytes: None, ..
        } = &m.source
        {
            let mode = if m.writable { 0o755 } else { 0o555 };
            volumes.push(from_scratch(
                &format!("volume{i}"),
                mode,
                !m.writable,
                &m.target,
            ));
        }
    }
    for step in volumes {
        if let Step::Bind { path, .. } = &step {
            steps.push(Step::Dir {
                path: path.clone(),
                mode: 0o755,
                owner: None,
            });
        }
        steps.push(step);
    }
    steps.push(Step::Bind {
        source: BindSource::Inside(Path::new(SCRATCH_AT).join("shm")),
        path: "/dev/shm".into(),
        readonly: false,
        is_dir: true,
    });
    // Last: covers the scratch filesystem's own root.
    steps.push(Step::Bind {
        source: BindSource::Inside(Path::new(SCRATCH_AT).join("tmp")),
        path: "/tmp".into(),
        readonly: false,
        is_dir: true,
    });
    writable.push("/tmp".into());
    writable.push("/workspace".into());
    rw_mounts.push("/tmp".into());
    rw_mounts.push("/dev/shm".into());
    if !named_workspace {
        rw_mounts.push("/workspace".into());
    }

    for m in &spec.mounts {
        match &m.source {
            MountSource::Host(src) => {
                let is_dir = src.is_dir();
                if is_dir {
                    steps.push(Step::Dir {
                        path: m.target.clone(),
                        mode: 0o755,
                        owner: None,
                    });
                } else {
                    if let Some(parent) = m.target.parent() {
                        steps.push(Step::Dir {
                            path: parent.into(),
                            mode: 0o755,
                            owner: None,
                        });
                    }
                    steps.push(Step::File {
                        path: m.target.clone(),
                        contents: String::new(),
                        mode: 0o644,
                    });
                }
                steps.push(Step::Bind {
                    source: BindSource::Granted(src.clone()),
                    path: m.target.clone(),
                    readonly: !m.writable,
                    is_dir,
                });
            }
            // Without a quota of its own: a directory of the scratch filesystem (above).
            MountSource::Tmpfs {
                quota_bytes: None, ..
            } => {}
            MountSource::Tmpfs {
                quota_bytes: Some(quota),
                ..
            } => {
                steps.push(Step::Dir {
                    path: m.target.clone(),
                    mode: 0o755,
                    owner: None,
                });
                steps.push(Step::Tmpfs {
                    path: m.target.clone(),
                    size: *quota,
                    mode: if m.writable { 0o755 } else { 0o555 },
                    owner: AGENT_ID,
                    noexec: false,
                });
            }
        }
        if m.writable {
            writable.push(m.target.clone());
            rw_mounts.push(m.target.clone());
        } else {
            readable.push(m.target.clone());
        }
    }
    // Secrets granted as files: a tmpfs of their own (last: nothing covers it), owned by
    // the agent, written by the init before the command starts (see `secret_env`).
    let files = spec
        .secrets
        .iter()
        .filter(|g| g.delivery == spawn_policy::SecretDelivery::File)
        .count() as u64;
    if files > 0 {
        steps.push(Step::Dir {
            path: SECRETS_DIR.into(),
            mode: 0o755,
            owner: None,
        });
        steps.push(Step::Tmpfs {
            path: SECRETS_DIR.into(),
            size: files * crate::secret_env::MAX_FILE + (16 << 10),
            mode: 0o700,
            owner: AGENT_ID,
            noexec: true,
        });
        readable.push(SECRETS_DIR.into());
        rw_mounts.push(SECRETS_DIR.into());
    }
    Plan {
        steps,
        writable,
        readable,
        rw_mounts,
        noexec_mounts: vec!["/dev/shm".into()],
        scratch,
    }
}

/// Where secrets granted as files are (`NAME` each, readable by the agent only).
pub const SECRETS_DIR: &str = "/run/secrets";

/// Adds a directory step for a parent below `/etc` (which exists already), once.
fn push_parent(steps: &mut Vec<Step>, path: &Path) {
    let Some(parent) = path.parent() else { return };
    if parent == Path::new("/etc") {
        return;
    }
    let exists = steps
        .iter()
        .any(|s| matches!(s, Step::Dir { path, .. } if path == parent));
    if !exists {
        steps.push(Step::Dir {
            path: parent.into(),
            mode: 0o755,
            owner: None,
        });
    }
}

/// Applies a plan in the calling process, which must be the sandbox init (root in its own
/// user and mount namespaces). On success the process's root is the new root.
///
/// `trees` holds, per step index, the detached idmapped tree prepared for a
/// [`BindSource::Granted`] step; a granted step without one is bound plainly (read-only
/// mounts on filesystems without idmap support).
pub fn apply(plan: &Plan, trees: &[Option<OwnedFd>]) -> Result<(), SandboxError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::setup("make mounts private", e))?;

    // Open every host bind source before the staging area covers anything.
    let mut sources: Vec<Option<OwnedFd>> = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        sources.push(match step {
            Step::Bind {
                source: BindSource::Host(src),
                ..
            } => Some(
                open(src, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| SandboxError::setup(format!("open {}", src.display()), e))?,
            ),
            // A granted source is canonical: open it without following any symlink, so a
            // path swapped for a symlink since it was checked is refused, not followed.
            Step::Bind {
                source: BindSource::Granted(src),
                ..
            } => Some(
                sys::open_path_nofollow(&cstr(src)?)
                    .map_err(|e| SandboxError::setup(format!("open {}", src.display()), e))?,
            ),
            _ => None,
        });
    }

    let root = Path::new(STAGING);
    mount_tmpfs(root, ROOT_TMPFS_SIZE, 0o755, 0, false)?;
    // Modes in the plan are exact.
    nix::sys::stat::umask(Mode::empty());

    for (i, (step, source)) in plan.steps.iter().zip(&sources).enumerate() {
        let tree = trees.get(i).and_then(Option::as_ref);
        apply_step(root, step, source.as_ref(), tree)?;
    }

    std::env::set_current_dir(root).map_err(|e| SandboxError::setup("enter new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| SandboxError::setup("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SandboxError::setup("detach old root", e))?;
    std::env::set_current_dir("/").map_err(|e| SandboxError::setup("chdir /", e))?;
    // Everything read-only and nosuid in one pass, then the writable mounts opened again.
    sys::mount_setattr(
        libc::AT_FDCWD,
        c"/",
        libc::AT_RECURSIVE as libc::c_uint,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        0,
        None,
    )
    .map_err(|e| SandboxError::setup("make / read-only", e))?;
    for path in &plan.rw_mounts {
        sys::mount_setattr(libc::AT_FDCWD, &cstr(path)?, 0, 0, MOUNT_ATTR_RDONLY, None)
            .map_err(|e| SandboxError::setup(format!("make {} writable", path.display()), e))?;
    }
    for path in &plan.noexec_mounts {
        sys::mount_setattr(libc::AT_FDCWD, &cstr(path)?, 0, MOUNT_ATTR_NOEXEC, 0, None)
            .map_err(|e| SandboxError::setup(format!("make {} noexec", path.display()), e))?;
    }
    Ok(())
}

/// How the read-only host binds (the system directories, the files and directories under
/// `/etc`) reach an OCI bundle's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBinds {
    /// As bind mounts of the runtime, like every other host path (cheap for runtimes on
    /// the host kernel).
    Mounted,
    /// Part of the bundle's (read-only) root itself: for gVisor, where every bind is a
    /// separate gofer mount (a mount request and channels of shared memory, milliseconds
    /// of every start). The small `/etc` entries ([`is_etc_bind`]) are copied into the
    /// root by [`populate`]; the host directories ([`is_attached_dir`], listed by
    /// [`attached_dirs`]) are attached by the driver as read-only, nosuid, nodev trees on
    /// their mount points in the root, in the runtime's own mount namespace, where the
    /// gofer's recursive bind of the root takes them along. The agent sees the same
    /// read-only content either way.
    InRoot,
}

/// Whether `step` is one of the small read-only host files bound under `/etc` (loader
/// cache, protocols, …) or one of the small directories of them ([`ETC_SMALL_DIRS`]) that
/// [`HostBinds::InRoot`] turns into copies. Other directories are attached instead:
/// `/etc/ssl/certs` and `/etc/alternatives` hold hundreds of entries, and copying them
/// costs more than the mount it saves.
pub fn is_etc_bind(step: &Step) -> bool {
    matches!(step, Step::Bind { source: BindSource::Host(_), path, readonly: true, is_dir }
        if path.starts_with("/etc")
            && (!is_dir || ETC_SMALL_DIRS.iter().any(|d| path == Path::new(d))))
}

/// Whether `step` is a read-only bind of a host directory (a system directory such as
/// `/usr`, or a large one under `/etc`) that [`HostBinds::InRoot`] attaches into the root
/// rather than leaving to the runtime. Never a granted path (the user's mounts stay the
/// runtime's binds, with their own flags and wherever they lie) nor anything under `/dev`.
pub fn is_attached_dir(step: &Step) -> bool {
    matches!(step, Step::Bind { source: BindSource::Host(_), path, readonly: true, is_dir: true }
        if !path.starts_with("/dev"))
        && !is_etc_bind(step)
}

/// The host directories [`HostBinds::InRoot`] attaches into the root: `(host source,
/// path inside)`, in the plan's order (a directory's parents' mount points come first).
pub fn attached_dirs(plan: &Plan) -> impl Iterator<Item = (&Path, &Path)> {
    plan.steps.iter().filter_map(|step| match step {
        Step::Bind {
            source: BindSource::Host(src),
            path,
            ..
        } if is_attached_dir(step) => Some((src.as_path(), path.as_path())),
        _ => None,
    })
}

/// `/etc` directories that [`HostBinds::InRoot`] copies (their files and symlinks, one
/// level): the loader's configuration, a few files of a few lines.
pub const ETC_SMALL_DIRS: &[&str] = &["/etc/ld.so.conf.d"];

/// Most entries a copied [`ETC_SMALL_DIRS`] directory may have; more is an error, not a
/// slow start.
const ETC_DIR_MAX_ENTRIES: usize = 256;

/// Copies the host directory `src` into the existing directory `dst`, one level: each
/// regular file as by [`copy_file`], each symlink as a symlink to the same target (read in
/// the sandbox's view, as the bind would have been). Anything else in it (a directory, a
/// device, a FIFO), or more than [`ETC_DIR_MAX_ENTRIES`] entries, is refused.
fn copy_small_dir(src: &Path, dst: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(src)? {
        entries.push(entry?);
        if entries.len() > ETC_DIR_MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "more than {ETC_DIR_MAX_ENTRIES} entries"
            )));
        }
    }
    for entry in entries {
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            copy_file(&from, &to)?;
        } else {
            return Err(io::Error::other(format!(
                "{} is not a regular file or a symlink",
                from.display()
            )));
        }
    }
    Ok(())
}

/// Largest `/etc` file copied for [`HostBinds::InRoot`] (loader caches of hosts with very
/// many libraries reach a few MiB); a larger one is an error, not a slow start.
const ETC_COPY_MAX_BYTES: u64 = 16 << 20;

/// Copies one host file (mode kept, set-id and sticky bits dropped); anything but a
/// regular file of at most [`ETC_COPY_MAX_BYTES`] is refused.
fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    copy_regular(src, dst, ETC_COPY_MAX_BYTES, |mode| mode & 0o777).map(drop)
}

/// Largest program [`copy_program`] copies (spawn-init is ~0.7 MB as `make build` links
/// it, ~10 MB as a debug build).
const PROGRAM_COPY_MAX_BYTES: u64 = 64 << 20;

/// Copies the program `src` (a regular file of at most [`PROGRAM_COPY_MAX_BYTES`]) to the
/// new file `dst`, read-only and executable for everyone (0555), owned by spawn, whole.
pub fn copy_program(src: &Path, dst: &Path) -> io::Result<()> {
    let (copied, len) = copy_regular(src, dst, PROGRAM_COPY_MAX_BYTES, |_| 0o555)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "{} changed while it was copied",
            src.display()
        )));
    }
    Ok(())
}

/// Copies the regular file `src` of at most `max` bytes to the new file `dst`, whose mode
/// is `mode` of the source's; anything else is refused before `dst` is made. Returns the
/// bytes copied and the source's length when it was opened.
fn copy_regular(
    src: &Path,
    dst: &Path,
    max: u64,
    mode: impl Fn(u32) -> u32,
) -> io::Result<(u64, u64)> {
    let mut from = fs::File::open(src)?;
    let meta = from.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            src.display()
        )));
    }
    if meta.len() > max {
        return Err(io::Error::other(format!(
            "{} is larger than {} MiB",
            src.display(),
            max >> 20
        )));
    }
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode(meta.permissions().mode()))
        .open(dst)?;
    let copied = io::copy(&mut io::Read::take(&mut from, max), &mut to)?;
    Ok((copied, meta.len()))
}

/// Writes the plan's directories, files, symlinks and mount points into `dir` on the host:
/// the root directory of an OCI bundle, whose runtime then performs the mounts. Ownership
/// inside the sandbox is expressed with host ids: `agent_host_id` for the agent's.
pub fn populate(
    plan: &Plan,
    dir: &Path,
    agent_host_id: u32,
    binds: HostBinds,
) -> Result<(), SandboxError> {
    for step in &plan.steps {
        match step {
            Step::Bind {
                source: BindSource::Host(src),
                path,
                is_dir,
                ..
            } if binds == HostBinds::InRoot && is_etc_bind(step) => {
                let at = inside(dir, path);
                let copied = if *is_dir {
                    mkdir(&at, 0o755).and_then(|()| copy_small_dir(src, &at))
                } else {
                    copy_file(src, &at)
                };
                copied.map_err(|e| {
                    SandboxError::setup(format!("copy {} into the root", src.display()), e)
                })?;
            }
            Step::Dir { path, mode, owner } => {
                let host = inside(dir, path);
                mkdir(&host, *mode)
                    .and_then(|()| {
                        fs::set_permissions(&host, std::fs::Permissions::from_mode(*mode))
                    })
                    .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
                if owner.is_some() {
                    std::os::unix::fs::chown(&host, Some(agent_host_id), Some(agent_host_id))
                        .map_err(|e| SandboxError::setup(format!("chown {}", path.display()), e))?;
                }
            }
            Step::Symlink { .. } | Step::File { .. } => apply_step(dir, step, None, None)?,
            Step::Bind { path, is_dir, .. } => {
                let host = inside(dir, path);
                if *is_dir {
                    mkdir(&host, 0o755)
                } else {
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .mode(0o644)
                        .open(&host)
                        .map(drop)
                }
                .map_err(|e| {
                    SandboxError::setup(format!("create mount point {}", path.display()), e)
                })?;
            }
            Step::Tmpfs { path, .. } | Step::Proc { path } | Step::Scratch { path, .. } => {
                mkdir(&inside(dir, path), 0o755)
                    .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
            }
        }
    }
    Ok(())
}

/// `mkdir`, creating missing parents; an existing directory is fine.
fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                mkdir(parent, 0o755)?;
            }
            fs::DirBuilder::new().mode(mode).create(path)
        }
        Err(e) => Err(e),
    }
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

pub(crate) fn cstr(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        SandboxError::setup(
            format!("path {}", path.display()),
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })
}

fn mount_tmpfs(
    path: &Path,
    size: u64,
    mode: u32,
    owner: u32,
    noexec: bool,
) -> Result<(), SandboxError> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    let data = format!("size={size},mode={mode:o},uid={owner},gid={owner}");
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| SandboxError::setup(format!("mount tmpfs on {}", path.display()), e))
}

fn apply_step(
    root: &Path,
    step: &Step,
    source: Option<&OwnedFd>,
    tree: Option<&OwnedFd>,
) -> Result<(), SandboxError> {
    match step {
        Step::Dir { path, mode, owner } => {
            let host = inside(root, path);
            // The umask is 0 while the root is built (see `apply`), so the mode is exact.
            mkdir(&host, *mode)
                .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
            if let Some(id) = owner {
                std::os::unix::fs::chown(&host, Some(*id), Some(*id))
                    .map_err(|e| SandboxError::setup(format!("chown {}", path.display()), e))?;
            }
        }
        Step::Symlink { link, target } => {
            // Parents are earlier steps of the plan.
            let host = inside(root, link);
            symlink(target, &host)
                .map_err(|e| SandboxError::setup(format!("symlink {}", link.display()), e))?;
        }
        Step::File {
            path,
            contents,
            mode,
        } => {
            let host = inside(root, path);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(&host)
                .and_then(|mut f| io::Write::write_all(&mut f, contents.as_bytes()))
                .map_err(|e| SandboxError::setup(format!("write {}", path.display()), e))?;
        }
        Step::Tmpfs {
            path,
            size,
            mode,
            owner,
            noexec,
        } => {
            let host = inside(root, path);
            mkdir(&host, 0o755)
                .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
            mount_tmpfs(&host, *size, *mode, *owner, *noexec)?;
        }
        Step::Bind {
            source: src,
            path,
            readonly,
            is_dir,
        } => {
            let host = inside(root, path);
            if *is_dir {
                mkdir(&host, 0o755)
            } else {
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&host)
                {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    other => other.map(drop),
                }
            }
            .map_err(|e| {
                SandboxError::setup(format!("create mount point {}", path.display()), e)
            })?;
            if let (BindSource::Granted(_), Some(tree)) = (src, tree) {
                use std::os::fd::AsFd;
                return sys::move_mount(tree.as_fd(), &cstr(&host)?)
                    .map_err(|e| SandboxError::setup(format!("mount {}", path.display()), e));
            }
            let from = match (src, source) {
                (BindSource::Host(_) | BindSource::Granted(_), Some(fd)) => {
                    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                }
                (BindSource::Inside(p), _) => inside(root, p),
                (BindSource::Host(p) | BindSource::Granted(p), None) => {
                    return Err(SandboxError::setup(
                        format!("bind {}", p.display()),
                        io::Error::from(io::ErrorKind::NotFound),
                    ))
                }
            };
            mount(
                Some(&from),
                &host,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| SandboxError::setup(format!("bind {}", path.display()), e))?;
            // Read-only and nosuid come for every mount from the final pass in `apply`;
            // a granted host tree is also nodev (its content is not ours).
            if let BindSource::Granted(_) = src {
                let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
                if *readonly {
                    attrs |= MOUNT_ATTR_RDONLY;
                }
                sys::mount_setattr(
                    libc::AT_FDCWD,
                    &cstr(&host)?,
                    libc::AT_RECURSIVE as libc::c_uint,
                    attrs,
                    0,
                    None,
                )
                .map_err(|e| {
                    SandboxError::setup(format!("restrict mount {}", path.display()), e)
                })?;
            }
        }
        Step::Scratch { path, .. } => {
            let host = inside(root, path);
            mkdir(&host, 0o755)
                .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
            let Some(mount) = tree else {
                return Err(SandboxError::setup(
                    "attach the scratch filesystem",
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            };
            use std::os::fd::AsFd;
            sys::move_mount(mount.as_fd(), &cstr(&host)?).map_err(|e| {
                SandboxError::setup(
                    format!("attach the scratch filesystem at {}", path.display()),
                    e,
                )
            })?;
        }
        Step::Proc { path } => {
            let host = inside(root, path);
            fs::create_dir_all(&host)
                .map_err(|e| SandboxError::setup(format!("mkdir {}", path.display()), e))?;
            mount(
                Some("proc"),
                &host,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("hidepid=2"),
            )
            .map_err(|e| SandboxError::setup("mount /proc", e))?;
            let null = inside(root, Path::new("/dev/null"));
            // Entries this kernel does not have (ENOENT) need no masking.
            for masked in PROC_MASKED {
                let target = host.join(masked);
                match mount(
                    Some(&null),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ) {
                    Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                    Err(e) => return Err(SandboxError::setup(format!("mask /proc/{masked}"), e)),
                }
            }
            // Read-only from the final pass in `apply`, which /proc itself leaves.
            for ro in PROC_READONLY {
                let target = host.join(ro);
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                match mount(Some(&target), &target, None::<&str>, flags, None::<&str>) {
                    Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                    Err(e) => return Err(SandboxError::setup(format!("bind /proc/{ro}"), e)),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawn_policy::{MountSpec, RuntimeKind};

    fn spec(mounts: Vec<MountSpec>) -> RunSpec {
        RunSpec {
            name: "t".into(),
            mounts,
            ..RunSpec::bare(RuntimeKind::Native, vec!["true".into()])
        }
    }

    #[test]
    fn populate_copies_etc_files_only_when_asked() {
        let p = plan(&spec(vec![]), 1 << 20, "t", Dns::None);
        let uid = nix::unistd::geteuid().as_raw();
        let host = fs::read("/etc/ld.so.cache").unwrap();
        for (etc, want) in [
            (HostBinds::InRoot, host.clone()),
            (HostBinds::Mounted, vec![]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            populate(&p, dir.path(), uid, etc).unwrap();
            let got = fs::read(dir.path().join("etc/ld.so.cache")).unwrap();
            assert_eq!(got, want, "{etc:?}: the loader cache in the root");
            // Directories stay mount points either way, but for the small ones copied.
            let certs = dir.path().join("etc/ssl/certs");
            assert!(certs.is_dir() && fs::read_dir(&certs).unwrap().next().is_none());
            let conf = dir.path().join("etc/ld.so.conf.d");
            let names = |d: &Path| -> Vec<std::ffi::OsString> {
                let mut n: Vec<_> = fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                n.sort();
                n
            };
            let want_names = match etc {
                HostBinds::InRoot => names(Path::new("/etc/ld.so.conf.d")),
                HostBinds::Mounted => vec![],
            };
            assert_eq!(names(&conf), want_names, "{etc:?}: /etc/ld.so.conf.d");
            for name in want_names {
                let host = Path::new("/etc/ld.so.conf.d").join(&name);
                if host.is_symlink() {
                    assert_eq!(
                        fs::read_link(conf.join(&name)).unwrap(),
                        fs::read_link(&host).unwrap()
                    );
                } else {
                    assert_eq!(
                        fs::read(conf.join(&name)).unwrap(),
                        fs::read(&host).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn small_etc_directories_copy_files_and_symlinks_and_refuse_the_rest() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a.conf"), "/usr/lib/a\n").unwrap();
        std::os::unix::fs::symlink("/etc/alternatives/b.conf", src.path().join("b.conf")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        copy_small_dir(src.path(), dst.path()).unwrap();
        assert_eq!(
            fs::read(dst.path().join("a.conf")).unwrap(),
            b"/usr/lib/a\n"
        );
        assert_eq!(
            fs::read_link(dst.path().join("b.conf")).unwrap(),
            Path::new("/etc/alternatives/b.conf")
        );
        // A directory, a FIFO, or too many entries: refused.
        for make in [
            |p: &Path| fs::create_dir(p.join("sub")).unwrap(),
            |p: &Path| nix::unistd::mkfifo(&p.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap(),
            |p: &Path| {
                for i in 0..=ETC_DIR_MAX_ENTRIES {
                    fs::write(p.join(format!("f{i}")), "").unwrap();
                }
            },
        ] {
            let src = tempfile::tempdir().unwrap();
            make(src.path());
            let dst = tempfile::tempdir().unwrap();
            assert!(copy_small_dir(src.path(), dst.path()).is_err());
        }
    }

    #[test]
    fn etc_copies_refuse_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("x");
        assert!(copy_file(Path::new("/etc/ssl/certs"), &dst).is_err());
        assert!(copy_file(Path::new("/dev/zero"), &dst).is_err());
        let big = dir.path().join("big");
        fs::File::create(&big)
            .unwrap()
            .set_len(ETC_COPY_MAX_BYTES + 1)
            .unwrap();
        let err = copy_file(&big, &dst).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        fs::write(&big, "ok").unwrap();
        copy_file(&big, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), b"ok");
    }

    #[test]
    fn a_program_copy_is_whole_read_only_and_refuses_what_is_not_a_regular_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("prog");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &body).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o4777)).unwrap();
        let dst = dir.path().join("copy");
        copy_program(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), body);
        // Read and execute for all, never writable, never set-id, whatever the source's mode.
        assert_eq!(
            fs::metadata(&dst).unwrap().permissions().mode() & 0o7777,
            0o555
        );
        // Never over an existing file (the root is spawn's, made fresh per run).
        assert_eq!(
            copy_program(&src, &dst).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        for bad in [
            Path::new("/etc"),
            Path::new("/dev/zero"),
            Path::new("/nonexistent"),
        ] {
            let to = dir.path().join("bad");
            assert!(copy_program(bad, &to).is_err(), "{}", bad.display());
            assert!(!to.exists() || fs::metadata(&to).unwrap().len() == 0);
        }
        let big = dir.path().join("big");
        fs::File::create(&big)
            .unwrap()
            .set_len(PROGRAM_COPY_MAX_BYTES + 1)
            .unwrap();
        assert!(copy_program(&big, &dir.path().join("big-copy")).is_err());
    }

    #[test]
    fn plan_exposes_only_the_intended_host_paths() {
        let p = plan(&spec(vec![]), 1 << 20, "t", Dns::None);
        let host_sources: Vec<&Path> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind {
                    source: BindSource::Host(h) | BindSource::Granted(h),
                    ..
                } => Some(h.as_path()),
                _ => None,
            })
            .collect();
        for src in &host_sources {
            let ok = SYSTEM_DIRS
                .iter()
                .chain(ETC_BINDS)
                .any(|a| src == &Path::new(a))
                || src.starts_with("/dev");
            assert!(ok, "unexpected host source {}", src.display());
        }
        for forbidden in ["/etc/shadow", "/root", "/home", "/sys", "/etc/ssl/private"] {
            assert!(
                !host_sources.iter().any(|s| s.starts_with(forbidden)),
                "{forbidden} exposed"
            );
        }
        // System binds are read-only.
        for s in &p.steps {
            if let Step::Bind {
                source: BindSource::Host(h),
                readonly,
                ..
            } = s
            {
                if !h.starts_with("/dev") {
                    assert!(readonly, "{} must be read-only", h.display());
                }
            }
        }
    }

    #[test]
    fn passwd_has_the_agent_and_no_shadow() {
        let p = plan(&spec(vec![]), 1 << 20, "host", Dns::None);
        let passwd = p.steps.iter().find_map(|s| match s {
            Step::File { path, contents, .. } if path == Path::new("/etc/passwd") => {
                Some(contents.clone())
            }
            _ => None,
        });
        assert!(passwd.unwrap().contains("agent:x:1000:1000:"));
        assert!(!p
            .steps
            .iter()
            .any(|s| matches!(s, Step::File { path, .. } if path == Path::new("/etc/shadow"))));
    }

    #[test]
    fn named_workspace_volume_replaces_the_scratch_workspace() {
        let m = MountSpec {
            source: MountSource::Tmpfs {
                name: "workspace".into(),
                quota_bytes: Some(5 << 20),
            },
            target: "/workspace".into(),
            writable: true,
        };
        let p = plan(&spec(vec![m]), 1 << 20, "t", Dns::None);
        assert!(p
            .steps
            .iter()
            .any(|s| matches!(s, Step::Tmpfs { path, size, owner, .. }
            if path == Path::new("/workspace") && *size == 5 << 20 && *owner == AGENT_ID)));
        assert!(!p.steps.iter().any(
            |s| matches!(s, Step::Bind { source: BindSource::Inside(i), .. }
            if i == Path::new("/tmp/workspace"))
        ));
    }

    /// One scratch filesystem of the disk quota's size backs every writable place that is
    /// not a granted host mount: no tmpfs of the plan can hold more than a few KiB, except
    /// a named volume with a quota of its own.
    #[test]
    fn everything_writable_is_on_the_one_scratch_filesystem() {
        let volume = |name: &str, target: &str, quota_bytes| MountSpec {
            source: MountSource::Tmpfs {
                name: name.into(),
                quota_bytes,
            },
            target: target.into(),
            writable: true,
        };
        let p = plan(
            &spec(vec![
                volume("cache", "/cache", None),
                volume("big", "/big", Some(5 << 20)),
            ]),
            32 << 20,
            "t",
            Dns::None,
        );
        let scratch: Vec<&Step> = p
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Scratch { .. }))
            .collect();
        assert_eq!(
            scratch,
            [&Step::Scratch {
                path: SCRATCH_AT.into(),
                size: 32 << 20
            }]
        );
        let from_scratch = |target: &str| {
            p.steps.iter().find_map(|s| match s {
                Step::Bind {
                    source: BindSource::Inside(from),
                    path,
                    ..
                } if path == Path::new(target) => from.strip_prefix(SCRATCH_AT).ok(),
                _ => None,
            })
        };
        for (target, dir) in [
            ("/tmp", "tmp"),
            ("/workspace", "workspace"),
            ("/dev/shm", "shm"),
            ("/cache", "volume0"),
        ] {
            assert_eq!(from_scratch(target), Some(Path::new(dir)), "{target}");
            assert!(p.scratch.iter().any(|d| d.name == dir), "{dir}");
        }
        // The bind over /tmp comes after every other bind from the scratch filesystem: it
        // covers the filesystem's own root, where their sources are.
        let inside_binds: Vec<&Path> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind {
                    source: BindSource::Inside(_),
                    path,
                    ..
                } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(inside_binds.last(), Some(&Path::new("/tmp")));
        for s in &p.steps {
            if let Step::Tmpfs { path, size, .. } = s {
                assert!(
                    *size <= 64 << 10 || (path == Path::new("/big") && *size == 5 << 20),
                    "{} is a tmpfs of {size} bytes",
                    path.display()
                );
            }
        }
        assert!(p.noexec_mounts.contains(&PathBuf::from("/dev/shm")));
        let owners: Vec<(&str, bool)> = p
            .scratch
            .iter()
            .map(|d| (d.name.as_str(), d.agent))
            .collect();
        assert_eq!(
            owners,
            [
                ("tmp", false),
                ("shm", false),
                ("workspace", true),
                ("volume0", true)
            ]
        );
    }

    #[test]
    fn host_mounts_follow_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let m = MountSpec {
            source: MountSource::Host(dir.path().into()),
            target: "/data".into(),
            writable: false,
        };
        let p = plan(&spec(vec![m]), 1 << 20, "t", Dns::None);
        assert!(p.steps.iter().any(
            |s| matches!(s, Step::Bind { path, readonly: true, .. } if path == Path::new("/data"))
        ));
        assert!(p.readable.contains(&PathBuf::from("/data")));
        assert!(!p.writable.contains(&PathBuf::from("/data")));
    }
}
