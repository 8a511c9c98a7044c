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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::SandboxError;
use crate::sys;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A user namespace whose only mappings are `inside_uid → outside_uid` and the same for
/// gids, held by an fd (the process that created it is gone).
fn userns_fd(inside_uid: u32, inside_gid: u32, outside: u32) -> Result<OwnedFd, SandboxError> {
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
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{inside_uid} {outside} 1\n"),
        )
        .map_err(|e| SandboxError::setup("write idmap uid_map", e))?;
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{inside_gid} {outside} 1\n"),
        )
        .map_err(|e| SandboxError::setup("write idmap gid_map", e))?;
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| SandboxError::setup("open idmap user namespace", e))
    })();
    drop(tx);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// A detached, idmapped copy of the mount tree at `source`: its owner appears as
/// `agent_host_id`. Read-only unless `writable`; always nosuid and nodev.
pub(crate) fn idmapped_tree(
    source: &Path,
    agent_host_id: u32,
    writable: bool,
) -> Result<OwnedFd, SandboxError> {
    let stage = || format!("idmapped mount of {}", source.display());
    let meta = std::fs::metadata(source).map_err(|e| SandboxError::setup(stage(), e))?;
    let userns = userns_fd(meta.uid(), meta.gid(), agent_host_id)?;
    let path = CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| {
        SandboxError::setup(
            stage(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let tree = sys::open_tree_clone(&path, true).map_err(|e| SandboxError::setup(stage(), e))?;
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
