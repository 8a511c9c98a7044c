//! The `bwrap` baseline: Debian's bubblewrap with isolation comparable to
//! `spawn run --runtime native`, including spawn's own seccomp policy.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::case::{require, Case};

/// Top-level directories of a merged-usr layout, mirrored from the host when they exist.
const ROOT_DIRS: &[&str] = &["/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin"];

/// Path of `bwrap`, or an error saying how to install it.
pub fn find() -> Result<PathBuf> {
    require("bwrap", "bubblewrap")
}

/// Writes spawn's main seccomp filter as raw `struct sock_filter`s for `bwrap --seccomp`.
/// bwrap has no notification listener, so every `RET USER_NOTIF` becomes `RET ERRNO|EPERM`,
/// which is what spawn's listener answers.
pub fn write_seccomp(path: &Path) -> Result<()> {
    let compiled = spawn_sandbox::seccomp::compile().context("compile spawn's seccomp policy")?;
    let program = compiled.deny_only();
    if program == compiled.main {
        bail!("spawn's seccomp filter has no USER_NOTIF return to turn into EPERM");
    }
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in &program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.extend_from_slice(&[insn.jt, insn.jf]);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// `bwrap … COMMAND`: all namespaces, uid/gid 1000, read-only /usr and the host's merged-usr
/// links, fresh /proc, /dev and /tmp, no capabilities, and the filter at `seccomp`.
pub fn case(name: &str, bwrap: &Path, seccomp: &Path, command: &[&str]) -> Result<Case> {
    let mut case = Case::new(name, bwrap)
        .args(["--unshare-all", "--unshare-user"])
        .args(["--uid", "1000", "--gid", "1000"])
        .args(["--ro-bind", "/usr", "/usr"]);
    for dir in ROOT_DIRS {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(dir).with_context(|| format!("read link {dir}"))?;
            case = case.args(["--symlink".as_ref(), target.as_os_str(), dir.as_ref()]);
        } else if meta.is_dir() {
            case = case.args(["--ro-bind", dir, dir]);
        }
    }
    Ok(case
        .args([
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/",
        ])
        .args(["--die-with-parent", "--new-session", "--cap-drop", "ALL"])
        .args(["--seccomp"])
        .fd_of(seccomp)
        .args(["--"])
        .args(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    /// `SECCOMP_RET_ERRNO | EPERM`: what spawn's listener answers for a denied call.
    const SECCOMP_RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;

    #[test]
    fn seccomp_file_has_no_notification_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter.bpf");
        write_seccomp(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() % 8, 0);
        let rets: Vec<u32> = bytes
            .chunks_exact(8)
            .filter(|c| u16::from_ne_bytes([c[0], c[1]]) == BPF_RET_K)
            .map(|c| u32::from_ne_bytes([c[4], c[5], c[6], c[7]]))
            .collect();
        assert!(rets.contains(&SECCOMP_RET_EPERM));
        assert!(!rets.contains(&SECCOMP_RET_USER_NOTIF));
    }

    /// The baseline must really pay for namespaces and seccomp: `true` runs, a call the
    /// policy denies (unshare) fails with EPERM, and the uid is 1000. Needs bwrap.
    #[test]
    fn bwrap_case_enforces_the_policy() {
        let bwrap = find().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let filter = dir.path().join("filter.bpf");
        write_seccomp(&filter).unwrap();
        case("ok", &bwrap, &filter, &["true"])
            .unwrap()
            .run_once()
            .unwrap();
        case(
            "uid",
            &bwrap,
            &filter,
            &["sh", "-c", "test $(id -u) = 1000"],
        )
        .unwrap()
        .run_once()
        .unwrap();
        let err = case("denied", &bwrap, &filter, &["unshare", "--user", "true"])
            .unwrap()
            .run_once()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("Operation not permitted"),
            "{err:#}"
        );
    }
}
