//! The run's scratch filesystem: everything the agent may write that is not a granted host
//! mount (`/tmp`, `/workspace`, `/dev/shm`) lives on one ext4 filesystem of exactly the
//! disk quota's size, so writing past the quota fails with `ENOSPC` inside, on every
//! runtime, and the data is charged to the host's disk, not to the run's memory.
//!
//! Per run: a sparse image file in a root-only directory on the host's disk
//! ([`DIR`], never tmpfs), holding a copy of the data of a template formatted once per
//! quota size by `mkfs.ext4` (no journal, no reserved blocks, lazy inode tables; a few
//! hundred KiB to copy, where formatting costs several milliseconds), bound to a free loop
//! device with autoclear and direct I/O (the agent's data is not cached twice), unlinked at
//! once, and mounted as a *detached* mount (`fsmount`): it is in no mount namespace of the
//! host. Direct I/O from the start makes the mount read the metadata just copied from the
//! disk (about a millisecond more); a caller that can spare a thread instead mounts through
//! the page cache and switches to direct I/O afterwards ([`DirectIo`]; switching waits for
//! the copy to reach the disk, about ten milliseconds), off the run's critical path. The runtime attaches it where the
//! sandbox sees it (native: inside the sandbox's own mount namespace; runc and runsc: in
//! the runtime's private mount namespace, from where the bundle binds its directories).
//!
//! It is mounted without write barriers (`nobarrier`): nothing of it survives a crash, so
//! the cache flushes that would order its writes for one buy nothing, and cost a flush of
//! the host's disk at every sync (its unmount makes several). Its last reference is held
//! by the run's guard where it can be, so that the unmount (writing out what is dirty,
//! detaching the loop device, freeing the image) happens after spawn has returned.
//!
//! Nothing outlives the run, even if spawn is SIGKILLed: the image has no name once the
//! loop device holds it, the mount exists only while a process or namespace of the run
//! references it, and the loop device detaches itself when the filesystem is unmounted,
//! which frees the image's blocks. A spawn killed between creating the image and unlinking
//! it (a few milliseconds) leaves the file, which the next run removes.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::error::SandboxError;
use crate::rootfs::ScratchDir;
use crate::sys;

/// Where the images are created: root's only, on the host's disk.
pub const DIR: &str = "/var/lib/spawn/scratch";
/// Its parent, created (root only) if missing.
const PARENT: &str = "/var/lib/spawn";

const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// One run's scratch filesystem: a detached mount of it.
#[derive(Debug)]
pub struct Scratch {
    mount: OwnedFd,
    direct_io: DirectIo,
}

/// The switch of a scratch filesystem's loop device to direct I/O, still to be made.
#[derive(Debug)]
pub(crate) struct DirectIo {
    /// The device, when it is not in direct I/O yet.
    dev: Option<OwnedFd>,
}

impl DirectIo {
    /// Switches the device to direct I/O: the kernel first writes what the page cache
    /// holds of the image (the template's copy) to the disk, which takes milliseconds.
    /// Should it fail, the agent's data is cached twice, nothing worse: it is not an
    /// error of the run.
    pub(crate) fn switch(self) {
        if let Some(dev) = &self.dev {
            let _ = sys::loop_set_direct_io(dev.as_fd());
        }
    }
}

impl Scratch {
    /// Makes a scratch filesystem of `size` bytes for the run `name` (`PID-RUNID`: the
    /// image's name, so that the images of dead spawns can be told apart). Its top-level
    /// directories `dirs` belong to `root_id` (the sandbox's root, as the host sees it) or
    /// `agent_id` (the agent).
    ///
    /// `direct_io_later`: mount through the page cache and leave the switch to direct I/O
    /// to the caller ([`Scratch::into_parts`]).
    pub fn create(
        name: &str,
        size: u64,
        dirs: &[ScratchDir],
        root_id: u32,
        agent_id: u32,
        direct_io_later: bool,
    ) -> Result<Scratch, SandboxError> {
        let dir = Path::new(DIR);
        prepare_dir()?;
        sweep_stale(dir);
        let image = dir.join(format!("{name}.img"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&image)
            .map_err(|e| SandboxError::setup(format!("create {}", image.display()), e))?;
        let attached = (|| {
            file.set_len(size)
                .map_err(|e| SandboxError::setup("size the scratch image", e))?;
            let template = template(dir, size)?;
            copy_data(&template, &file)
                .map_err(|e| SandboxError::setup("copy the scratch filesystem's template", e))?;
            let (dev, n) = sys::loop_attach(file.as_fd(), 4096, !direct_io_later)
                .or_else(|_| sys::loop_attach(file.as_fd(), 4096, false))
                .map_err(|e| SandboxError::setup("attach the scratch image to a loop device", e))?;
            Ok::<_, SandboxError>((dev, n))
        })();
        // The loop device holds the image from here on; without a name it cannot outlive it.
        let _ = std::fs::remove_file(&image);
        let (dev, n) = attached?;
        drop(file);
        let source = CString::new(format!("/dev/loop{n}"))
            .map_err(|e| SandboxError::setup("loop device path", io::Error::other(e)))?;
        let mount = sys::fsmount(
            c"ext4",
            &source,
            &[c"noinit_itable", c"nobarrier"],
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
        .map_err(|e| SandboxError::setup("mount the scratch filesystem", e))?;
        // The mounted filesystem holds the device now (and `DirectIo` until it switched
        // it, if it has to); autoclear detaches it after every holder let go.
        for dir in dirs {
            let owner = if dir.agent { agent_id } else { root_id };
            let sub = dir.name.as_str();
            let mode = Mode::from_bits_truncate(dir.mode);
            nix::sys::stat::mkdirat(mount.as_fd(), sub, mode)
                .and_then(|()| {
                    nix::unistd::fchownat(
                        mount.as_fd(),
                        sub,
                        Some(Uid::from_raw(owner)),
                        Some(Gid::from_raw(owner)),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                })
                .and_then(|()| {
                    nix::sys::stat::fchmodat(
                        mount.as_fd(),
                        sub,
                        mode,
                        nix::sys::stat::FchmodatFlags::FollowSymlink,
                    )
                })
                .map_err(|e| {
                    SandboxError::setup(format!("create the scratch directory {sub}"), e)
                })?;
        }
        Ok(Scratch {
            mount,
            direct_io: DirectIo {
                dev: direct_io_later.then_some(dev),
            },
        })
    }

    /// The detached mount (for `move_mount`), its device switched to direct I/O if that
    /// was left for later.
    pub(crate) fn into_mount(self) -> OwnedFd {
        self.direct_io.switch();
        self.mount
    }

    /// The detached mount and the switch to direct I/O, for the caller to make when it
    /// costs the run nothing.
    pub(crate) fn into_parts(self) -> (OwnedFd, DirectIo) {
        (self.mount, self.direct_io)
    }
}

/// Creates [`DIR`] (and its parent) root-only, or checks that they are real directories of
/// root's, on a filesystem that is not tmpfs (an image on tmpfs would be charged to memory).
fn prepare_dir() -> Result<(), SandboxError> {
    for (path, mode) in [(PARENT, 0o711), (DIR, 0o700)] {
        crate::container::ensure_dir(Path::new(path), mode)?;
    }
    let on_tmpfs = nix::sys::statfs::statfs(DIR)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if on_tmpfs {
        return Err(SandboxError::Unsupported(format!(
            "{DIR} is on tmpfs: the scratch images must be on a disk, or the disk quota \
             would be charged to memory; mount a disk there"
        )));
    }
    Ok(())
}

/// The version of [`format`]'s options, in the templates' names: a change makes new ones.
const FORMAT: u32 = 1;
/// Most templates kept (one per quota size in use); the oldest go first.
const MAX_TEMPLATES: usize = 8;

/// The formatted, empty filesystem of `size` bytes every run of that quota starts from
/// (`template-SIZE.img`, root's, 0600): `mkfs.ext4` costs several milliseconds, copying
/// the few hundred KiB it wrote a fraction of one. Made on first use.
fn template(dir: &Path, size: u64) -> Result<std::fs::File, SandboxError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = dir.join(format!("template-{FORMAT}-{size}.img"));
    let open = || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let m = f.metadata().ok()?;
        (m.is_file() && m.uid() == 0 && m.mode() & 0o077 == 0 && m.len() == size).then_some(f)
    };
    if let Some(f) = open() {
        return Ok(f);
    }
    // Formatted under a name of this process's (removed by a later run if it dies), then
    // renamed into place: a template is complete or absent.
    let tmp = dir.join(format!(
        "{}-template-{FORMAT}-{size}.img",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|f| f.set_len(size))
        .map_err(|e| SandboxError::setup(format!("create {}", tmp.display()), e))
        .and_then(|()| format(&tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, &path)
                .map_err(|e| SandboxError::setup(format!("create {}", path.display()), e))
        });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    prune_templates(dir);
    open().ok_or_else(|| {
        SandboxError::setup(
            format!("open {}", path.display()),
            io::Error::from(io::ErrorKind::NotFound),
        )
    })
}

/// Keeps the [`MAX_TEMPLATES`] newest templates.
fn prune_templates(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut templates: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("template-"))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    templates.sort();
    let excess = templates.len().saturating_sub(MAX_TEMPLATES);
    for (_, path) in templates.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

/// Copies the data of `from` into `to` (as long already), leaving its holes holes.
fn copy_data(from: &std::fs::File, to: &std::fs::File) -> io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let len = i64::try_from(from.metadata()?.len()).map_err(io::Error::other)?;
    let mut at = 0i64;
    while at < len {
        let start = match lseek(from, at, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(from, start, Whence::SeekHole)?;
        // std's copy between files is copy_file_range (reflinks where the host can).
        let (mut src, mut dst) = (from, to);
        let pos = u64::try_from(start).map_err(io::Error::other)?;
        io::Seek::seek(&mut src, io::SeekFrom::Start(pos))?;
        io::Seek::seek(&mut dst, io::SeekFrom::Start(pos))?;
        let want = u64::try_from(end - start).map_err(io::Error::other)?;
        if io::copy(&mut io::Read::take(&mut src, want), &mut dst)? != want {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        at = end;
    }
    Ok(())
}

/// Formats the image: ext4 without a journal (nothing of it survives the run, so there
/// is nothing to recover), with no blocks reserved for root (the quota is all the
/// agent's) nor for growing it, 4 KiB blocks and inode tables left to read as the zeros
/// they are.
fn format(image: &Path) -> Result<(), SandboxError> {
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-m",
            "0",
            "-b",
            "4096",
            "-O",
            "^resize_inode",
            "-E",
            "lazy_itable_init=1,nodiscard",
        ])
        .arg(image)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            SandboxError::setup(
                "format the scratch filesystem (mkfs.ext4, from e2fsprogs, must be installed)",
                e,
            )
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(SandboxError::setup(
            "format the scratch filesystem",
            io::Error::other(format!("mkfs.ext4 failed ({}): {}", out.status, why.trim())),
        ));
    }
    Ok(())
}

/// Removes images left by spawns that died before unlinking them (`PID-…img`).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = name
            .strip_suffix(".img")
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok());
        if pid.is_some_and(|p| p > 0 && !crate::cgroups::process_alive(p)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
