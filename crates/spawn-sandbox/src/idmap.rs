//! Idmapped mounts for host directories granted with `fs.mounts`.
//!
//! A plain bind would show the agent (an unused host uid) files it does not own, so a
//! `rw` mount of a root-owned 0755 directory could not be written. Instead the mount is
//! created idmapped: the source's owner is shown as the agent, files the agent creates land
//! on the host owned by the source's owner, and every other id stays unmapped (shown as
//! `nobody`, not writable). The tree is prepared here, on the host, as a detached mount
//! (`open_tree` + `mount_setattr`) and moved into the sandbox's root by its init.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::SandboxError;
use crate::sys;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A user namespace whose only mappings are `uids` and `gids` (`(inside, outside)`
/// pairs, one id each), held by an fd (the process that created it is gone).
fn userns_fd(uids: &[(u32, u32)], gids: &[(u32, u32)]) -> Result<OwnedFd, SandboxError> {
    let map = |pairs: &[(u32, u32)]| -> String {
        pairs
            .iter()
            .map(|(inside, outside)| format!("{inside} {outside} 1\n"))
            .collect()
    };
    let (rx, tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::setup("idmap pipe", e))?;
    let (pid, _pidfd) = match sys::clone3_fork(libc::CLONE_NEWUSER as u64)
        .map_err(|e| SandboxError::setup("idmap user namespace", e))?
    {
        sys::Forked::Child => {
            drop(tx);
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(rx).read(&mut b);
            sys::exit_now(0)
        }
        sys::Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(rx);
    let result = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), map(uids))
            .map_err(|e| SandboxError::setup("write idmap uid_map", e))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map(gids))
            .map_err(|e| SandboxError::setup("write idmap gid_map", e))?;
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| SandboxError::setup("open idmap user namespace", e))
    })();
    drop(tx);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// Host trees that may never be granted writable: the agent would write there as their
/// owner (root), i.e. rewrite the host's system, or plant root-owned files in a directory
/// every host user shares.
const SYSTEM_TREES: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/var",
    "/run", "/proc", "/sys", "/dev", "/root", "/opt", "/srv", "/snap",
];
/// Shared parents that may not be granted writable themselves (their subdirectories may).
const SHARED_ROOTS: &[&str] = &["/", "/tmp", "/home", "/mnt", "/media"];

/// Refuses a writable grant of a host system tree or a shared, world-writable directory.
/// `real` is the path of the already opened source (from `/proc/self/fd`), not the path
/// the user gave.
fn refuse_writable(real: &Path, meta: &std::fs::Metadata) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let shared = meta.permissions().mode() & 0o1002 == 0o1002; // sticky and world-writable
    if SHARED_ROOTS.iter().any(|r| real == Path::new(r))
        || SYSTEM_TREES.iter().any(|t| real.starts_with(t))
        || shared
    {
        return Err(SandboxError::Unsupported(format!(
            "{} is part of the host system or shared by every user and cannot be mounted \
             read-write; mount a directory of its own, or mount it read-only",
            real.display()
        )));
    }
    Ok(())
}

/// A detached, idmapped copy of the mount tree at `source`: its owner appears as
/// `agent_host_id`. Read-only unless `writable`; always nosuid and nodev.
///
/// `creator`, when given, is `(unused host id, id)`: a process writing through the mount
/// as `id` (other than the agent) may create files too; they land on the host as the
/// unused id, and are shown as `id`. gVisor's gofer needs it: it creates each file as
/// root, then hands it to the agent's uid (so to the directory's owner, through the map).
///
/// `source` must be canonical (the policy layer resolves it): it is opened once without
/// following any symlink, and the owner, the system-tree check and the mount all use that
/// one descriptor, so swapping the path for a symlink between the checks and the mount
/// (to get e.g. `/etc` mounted writable) fails instead.
pub(crate) fn idmapped_tree(
    source: &Path,
    agent_host_id: u32,
    writable: bool,
    creator: Option<(u32, u32)>,
) -> Result<OwnedFd, SandboxError> {
    let stage = || format!("idmapped mount of {}", source.display());
    let path = CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| {
        SandboxError::setup(
            stage(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let fd = sys::open_path_nofollow(&path).map_err(|e| SandboxError::setup(stage(), e))?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let meta = std::fs::metadata(&proc_path).map_err(|e| SandboxError::setup(stage(), e))?;
    let real = std::fs::read_link(&proc_path).map_err(|e| SandboxError::setup(stage(), e))?;
    if writable {
        refuse_writable(&real, &meta)?;
    }
    let mut uids = vec![(meta.uid(), agent_host_id)];
    let mut gids = vec![(meta.gid(), agent_host_id)];
    if let Some((unused, id)) = creator.filter(|(_, id)| *id != agent_host_id) {
        uids.push((unused, id));
        gids.push((unused, id));
    }
    let userns = userns_fd(&uids, &gids)?;
    let tree = sys::open_tree_clone_fd(fd.as_fd()).map_err(|e| SandboxError::setup(stage(), e))?;
    let mut set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if !writable {
        set |= MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(
        tree.as_raw_fd(),
        c"",
        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        set,
        0,
        Some(userns.as_raw_fd()),
    )
    .map_err(|e| SandboxError::setup(stage(), e))?;
    Ok(tree)
}

/// A detached read-only copy of the mount tree at `source` (a file or directory), opened
/// without following any symlink (`openat2` with `RESOLVE_NO_SYMLINKS`) and not idmapped:
/// the agent reads what the host lets everyone read. Attached where a runtime binds from, so
/// that the runtime never resolves the host path itself (a component swapped for a symlink
/// between the policy's check and the runtime's mount would be followed).
pub(crate) fn readonly_tree(source: &Path) -> Result<OwnedFd, SandboxError> {
    let stage = || format!("read-only mount of {}", source.display());
    let path = CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| {
        SandboxError::setup(
            stage(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let fd = sys::open_path_nofollow(&path).map_err(|e| SandboxError::setup(stage(), e))?;
    let tree = sys::open_tree_clone_fd(fd.as_fd()).map_err(|e| SandboxError::setup(stage(), e))?;
    sys::mount_setattr(
        tree.as_raw_fd(),
        c"",
        (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        0,
        None,
    )
    .map_err(|e| SandboxError::setup(stage(), e))?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(mode: u32) -> (tempfile::TempDir, std::fs::Metadata) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        (d, m)
    }

    #[test]
    fn system_and_shared_trees_are_never_writable() {
        let (_d, plain) = meta_of(0o755);
        for p in [
            "/",
            "/etc",
            "/etc/ssh",
            "/usr/local",
            "/var/lib/x",
            "/root/x",
            "/tmp",
            "/home",
        ] {
            assert!(refuse_writable(Path::new(p), &plain).is_err(), "{p}");
        }
        for p in ["/tmp/project", "/home/alice/out", "/srvx", "/work/data"] {
            assert!(refuse_writable(Path::new(p), &plain).is_ok(), "{p}");
        }
        let (_s, sticky_world) = meta_of(0o1777);
        assert!(refuse_writable(Path::new("/work/scratch"), &sticky_world).is_err());
    }
}
