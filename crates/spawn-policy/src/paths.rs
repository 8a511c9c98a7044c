//! Paths: targets inside the sandbox (checked lexically) and host mount sources (checked on
//! the host, where no component may be a symlink: one an agent wrote in a writable mount
//! could point anywhere).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use crate::error::PolicyError;
use crate::manifest::MAX_PATH_BYTES;
use crate::names::{plain, plain_path, quote};

/// Sandbox paths that no mount may cover: the runtime provides restricted versions of them
/// (SPEC §5), and a mount there would replace that restriction.
const RESERVED_TARGETS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Host paths that can never be a mount source, nor anything under them: kernel interfaces
/// and the boot partition (kernel images, initramfs, sometimes keys).
const FORBIDDEN_SOURCE_TREES: [&str; 5] = ["/proc", "/sys", "/dev", "/boot", "/root"];

/// Host files that hold secrets (password hashes and their backups).
const FORBIDDEN_SOURCE_FILES: [&str; 4] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// Checks an absolute path inside the sandbox and returns it normalized: one trailing slash
/// is dropped; `.`, `..` and empty components are refused rather than resolved, so what the
/// user reads is what gets mounted.
pub(crate) fn sandbox_path(s: &str) -> Result<PathBuf, String> {
    if s.len() > MAX_PATH_BYTES {
        return Err(format!("a path is at most {MAX_PATH_BYTES} bytes"));
    }
    if s.contains('\0') {
        return Err(format!("{} contains a NUL byte", quote(s)));
    }
    if !s.starts_with('/') {
        return Err(format!("{} is not an absolute path", quote(s)));
    }
    if s == "/" {
        return Ok(PathBuf::from(s));
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    // `trimmed` starts with '/'; every component after it must be a plain name.
    for component in trimmed[1..].split('/') {
        let problem = match component {
            "" => "an empty component (//)",
            "." => "a '.' component",
            ".." => "a '..' component",
            _ => continue,
        };
        return Err(format!(
            "{} has {problem}; write the path plainly",
            quote(s)
        ));
    }
    Ok(PathBuf::from(trimmed))
}

/// Checks a mount target: a [`sandbox_path`] that is not `/` and not at or under a reserved
/// directory.
pub(crate) fn mount_target(s: &str) -> Result<PathBuf, String> {
    let path = sandbox_path(s)?;
    if path == Path::new("/") {
        return Err("cannot mount over / (the sandbox's root)".to_owned());
    }
    if let Some(reserved) = RESERVED_TARGETS
        .iter()
        .find(|reserved| path.starts_with(reserved))
    {
        return Err(format!(
            "{} is at or under {reserved}, which the sandbox provides itself",
            quote(s)
        ));
    }
    Ok(path)
}

/// Where relative sources may point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confine {
    /// A manifest's relative source must stay inside the manifest's directory, also after
    /// symlinks are resolved: a checked-out repository cannot reach `~/.ssh` through `..`
    /// or through a symlink it ships.
    ToBase,
    /// A `--mount` source was typed by the user; relative means relative to the current
    /// directory, nothing more.
    No,
}

/// Resolves a host mount source to an absolute path without following any symlink (a
/// component that is one is refused, with what it points to), and refuses host-system and
/// host-secret paths, spawn's own files (`protected`: its state, its runtimes' state, its
/// binaries, and anything that holds them), devices, sockets and FIFOs.
///
/// A relative source is joined to `base` (canonicalized first: it is the directory the user
/// named, not something inside a mount), and `..` is then resolved textually, which is
/// exact once no component is a symlink.
pub(crate) fn host_source(
    field: &str,
    raw: &str,
    base: &Path,
    confine: Confine,
    protected: &[PathBuf],
) -> Result<PathBuf, PolicyError> {
    let invalid = |message: String| PolicyError::invalid(field, message);
    if raw.is_empty() {
        return Err(invalid("a mount source cannot be empty".to_owned()));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(invalid(format!("a path is at most {MAX_PATH_BYTES} bytes")));
    }
    if raw.contains('\0') {
        return Err(invalid(format!("{} contains a NUL byte", quote(raw))));
    }
    let given = Path::new(raw);
    let relative = !given.is_absolute();
    if relative && confine == Confine::ToBase && escapes(given) {
        return Err(invalid(format!(
            "mount source {} escapes the manifest's directory",
            quote(raw)
        )));
    }
    let joined = if relative {
        let canonical_base =
            std::fs::canonicalize(base).map_err(|source| PolicyError::MountIo {
                field: field.to_owned(),
                path: base.to_owned(),
                source,
            })?;
        canonical_base.join(given)
    } else {
        given.to_owned()
    };
    let path = lexical_clean(&joined);
    // Every component, from the root down, must exist and not be a symlink.
    let mut walked = PathBuf::from("/");
    for component in path.components().skip(1) {
        walked.push(component);
        match std::fs::symlink_metadata(&walked) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&walked)
                    .map(|t| plain_path(&t))
                    .unwrap_or_else(|_| "?".to_owned());
                return Err(invalid(format!(
                    "mount source {} goes through a symlink ({} -> {target}); spawn follows \
                     no symlink in a mount source, since one an agent wrote could point \
                     anywhere: give the path it stands for",
                    quote(raw),
                    plain_path(&walked)
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(format!(
                    "mount source {} does not exist ({} is missing)",
                    plain(raw),
                    plain_path(&walked)
                )));
            }
            Err(source) => {
                return Err(PolicyError::MountIo {
                    field: field.to_owned(),
                    path: walked,
                    source,
                })
            }
        }
    }
    check_host_path(raw, &path).map_err(&invalid)?;
    if let Some(own) = protected
        .iter()
        .find(|p| path.starts_with(p) || p.starts_with(&path))
    {
        return Err(invalid(format!(
            "mount source {} ({}) {} {}, which is spawn's own (its state, a runtime's state \
             or its binaries) and is never mounted into a sandbox",
            quote(raw),
            plain_path(&path),
            if path.starts_with(own) {
                "is at or under"
            } else {
                "holds"
            },
            plain_path(own)
        )));
    }
    let metadata = std::fs::metadata(&path).map_err(|source| PolicyError::MountIo {
        field: field.to_owned(),
        path: path.clone(),
        source,
    })?;
    let file_type = metadata.file_type();
    let special = if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Some("a device")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else {
        None
    };
    if let Some(what) = special {
        return Err(invalid(format!(
            "mount source {} is {what} ({}); only directories and regular files can be mounted",
            quote(raw),
            plain_path(&path)
        )));
    }
    Ok(path)
}

/// Refuses the host's root, kernel interfaces, `/boot` and known secret files.
fn check_host_path(raw: &str, canonical: &Path) -> Result<(), String> {
    if canonical == Path::new("/") {
        return Err(format!(
            "mount source {} resolves to /, the host's root",
            quote(raw)
        ));
    }
    if let Some(tree) = FORBIDDEN_SOURCE_TREES
        .iter()
        .find(|tree| canonical.starts_with(tree))
    {
        return Err(format!(
            "mount source {} resolves to {}, at or under {tree}, which is never mounted \
             into a sandbox",
            quote(raw),
            plain_path(canonical)
        ));
    }
    if FORBIDDEN_SOURCE_FILES
        .iter()
        .any(|file| canonical == Path::new(file))
    {
        return Err(format!(
            "mount source {} resolves to {}, which holds host secrets",
            quote(raw),
            plain_path(canonical)
        ));
    }
    Ok(())
}

/// True when a relative path climbs above its starting directory (`../x`, `a/../../x`).
pub(crate) fn escapes(relative: &Path) -> bool {
    let mut depth: usize = 0;
    for component in relative.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    false
}

/// Removes `.` and resolves `..` textually, for messages only (never for access checks).
fn lexical_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn sandbox_paths() {
        assert_eq!(sandbox_path("/data"), Ok(PathBuf::from("/data")));
        assert_eq!(sandbox_path("/data/"), Ok(PathBuf::from("/data")));
        assert_eq!(sandbox_path("/"), Ok(PathBuf::from("/")));
        assert_eq!(sandbox_path("/a/b.c/..d"), Ok(PathBuf::from("/a/b.c/..d")));
        for (bad, why) in [
            ("data", "is not an absolute path"),
            ("", "is not an absolute path"),
            ("./data", "is not an absolute path"),
            ("/workspace/../proc", "a '..' component"),
            ("/a/./b", "a '.' component"),
            ("/a//b", "an empty component"),
            ("/a//", "an empty component"),
            ("//", "an empty component"),
            ("/a\0b", "NUL"),
        ] {
            let err = sandbox_path(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(sandbox_path(&format!("/{}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn mount_targets() {
        assert_eq!(mount_target("/workspace"), Ok(PathBuf::from("/workspace")));
        assert_eq!(mount_target("/process"), Ok(PathBuf::from("/process")));
        assert_eq!(mount_target("/devices"), Ok(PathBuf::from("/devices")));
        for (bad, why) in [
            ("/", "cannot mount over /"),
            ("/proc", "under /proc"),
            ("/proc/self", "under /proc"),
            ("/sys/", "under /sys"),
            ("/dev/shm", "under /dev"),
            ("/workspace/../proc", "'..'"),
        ] {
            let err = mount_target(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn escape_detection() {
        assert!(!escapes(Path::new("data")));
        assert!(!escapes(Path::new("./data/../other")));
        assert!(escapes(Path::new("..")));
        assert!(escapes(Path::new("../../etc")));
        assert!(escapes(Path::new("data/../../x")));
        assert!(escapes(Path::new("./../x")));
    }

    #[test]
    fn host_sources() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("data")).unwrap();

        let got = host_source("f", "./data", &base, Confine::ToBase, &[]).unwrap();
        assert_eq!(got, base.join("data"));
        let got = host_source("f", "data/", &base, Confine::ToBase, &[]).unwrap();
        assert_eq!(got, base.join("data"));

        let err = host_source("f", "./missing", &base, Confine::ToBase, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "f: mount source ./missing does not exist ({} is missing)",
                base.join("missing").display()
            )
        );

        let err = host_source("f", "../../etc", &base, Confine::ToBase, &[]).unwrap_err();
        assert!(err.to_string().contains("escapes the manifest's directory"));

        // The same text typed on the command line is the user's own choice.
        let inner = base.join("data");
        let got = host_source("f", "..", &inner, Confine::No, &[]).unwrap();
        assert_eq!(got, base);

        std::os::unix::fs::symlink("/etc", base.join("link")).unwrap();
        let err = host_source("f", "link", &base, Confine::ToBase, &[]).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");

        std::os::unix::fs::symlink("/proc/self", base.join("proc")).unwrap();
        let err = host_source("f", "proc", &base, Confine::No, &[]).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");

        for bad in ["/", "/proc", "/sys/kernel", "/dev/null", "/boot", "/root"] {
            if Path::new(bad).exists() {
                let err = host_source("f", bad, &base, Confine::ToBase, &[]).unwrap_err();
                assert!(
                    err.to_string().contains("never mounted")
                        || err.to_string().contains("host's root"),
                    "{bad}: {err}"
                );
            }
        }
        if Path::new("/etc/shadow").exists() {
            let err = host_source("f", "/etc/shadow", &base, Confine::ToBase, &[]).unwrap_err();
            assert!(err.to_string().contains("holds host secrets"), "{err}");
        }
        let err = host_source("f", "", &base, Confine::ToBase, &[]).unwrap_err();
        assert!(err.to_string().contains("cannot be empty"));
        let err = host_source("f", "a\0b", &base, Confine::ToBase, &[]).unwrap_err();
        assert!(err.to_string().contains("NUL"));
    }

    /// The Kubernetes `subPath` class (CVE-2017-1002101): a symlink an agent planted in a
    /// writable mount, given later as (part of) a mount source, is never followed, wherever
    /// in the path it is and whatever it points to.
    #[test]
    fn no_symlink_is_followed_anywhere_in_a_source() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let host = base.join("host-secret-dir");
        std::fs::create_dir_all(host.join("sub")).unwrap();
        std::fs::write(host.join("file"), "x").unwrap();
        let ws = base.join("ws");
        std::fs::create_dir_all(ws.join("dir/real")).unwrap();
        // What an agent could plant in its writable mount `ws`.
        symlink(&host, ws.join("dir/x")).unwrap();
        symlink(host.join("file"), ws.join("dir/f")).unwrap();
        symlink("/nonexistent", ws.join("dir/dangling")).unwrap();
        symlink(ws.join("dir/x"), ws.join("dir/chain")).unwrap();
        symlink("real", ws.join("dir/rel")).unwrap();
        symlink(&ws, base.join("wslink")).unwrap();
        let abs = |p: &str| base.join(p).to_string_lossy().into_owned();
        let wsdir = ws.join("dir");
        let cases: Vec<(String, &Path, Confine, &str)> = vec![
            ("ws/dir/x".into(), &base, Confine::No, "dir/x"),
            ("./ws/dir/x".into(), &base, Confine::ToBase, "dir/x"),
            ("ws/dir/x/".into(), &base, Confine::No, "dir/x"),
            ("ws/dir/x/sub".into(), &base, Confine::No, "dir/x"),
            ("ws/dir/f".into(), &base, Confine::No, "dir/f"),
            ("ws/dir/dangling".into(), &base, Confine::No, "dir/dangling"),
            ("ws/dir/chain".into(), &base, Confine::No, "dir/chain"),
            ("ws/dir/rel".into(), &base, Confine::No, "dir/rel"),
            ("wslink/dir/real".into(), &base, Confine::No, "wslink"),
            ("ws/dir/x/..".into(), &base, Confine::No, ""),
            (abs("ws/dir/x"), &base, Confine::No, "dir/x"),
            (abs("wslink/dir"), &base, Confine::ToBase, "wslink"),
            ("x".into(), &wsdir, Confine::ToBase, "dir/x"),
            ("x/sub".into(), &wsdir, Confine::No, "dir/x"),
        ];
        for (raw, at, confine, link) in cases {
            match host_source("f", &raw, at, confine, &[]) {
                // `x/..` is textually `dir`, no symlink left to follow: fine.
                Ok(path) if link.is_empty() => assert_eq!(path, ws.join("dir"), "{raw}"),
                Ok(path) => panic!("{raw} was followed to {}", path.display()),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("through a symlink"), "{raw}: {e}");
                    assert!(e.contains(link), "{raw}: {e}");
                }
            }
        }
        // The real paths themselves are fine.
        assert_eq!(
            host_source("f", "ws/dir/real", &base, Confine::No, &[]).unwrap(),
            ws.join("dir/real")
        );
    }

    /// spawn's own files are never a mount source: not them, not under them, not a
    /// directory holding them; a path that only shares a textual prefix is fine.
    #[test]
    fn spawns_own_files_are_never_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for p in ["home/audit", "home-other", "state/runsc", "bin"] {
            std::fs::create_dir_all(base.join(p)).unwrap();
        }
        std::fs::write(base.join("bin/spawn"), "").unwrap();
        let protected = vec![
            base.join("home"),
            base.join("state"),
            base.join("bin/spawn"),
        ];
        for (raw, refused) in [
            ("home", true),
            ("home/audit", true),
            ("state/runsc", true),
            ("bin/spawn", true),
            ("bin", true),
            (".", true),
            ("home-other", false),
        ] {
            let got = host_source("f", raw, &base, Confine::No, &protected);
            match (got, refused) {
                (Err(e), true) => assert!(e.to_string().contains("spawn's own"), "{raw}: {e}"),
                (Ok(_), false) => {}
                (got, _) => panic!("{raw}: {got:?}"),
            }
        }
    }

    #[test]
    fn sockets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err =
            host_source("f", sock.to_str().unwrap(), dir.path(), Confine::No, &[]).unwrap_err();
        assert!(err.to_string().contains("is a socket"), "{err}");
    }
}
