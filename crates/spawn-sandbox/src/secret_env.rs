//! Granted secrets on their way into the agent's environment, and nowhere else.
//!
//! The native runtime puts them straight into the agent's `execve` environment (built in
//! spawn's memory, wiped once the sandbox has started). The OCI runtimes never see them:
//! neither the bundle's `config.json` nor runc's or runsc's arguments or environment hold
//! them. spawn writes them into a pipe whose read end the runtime hands to spawn-init as a
//! descriptor (`--secrets-fd N`; runc `--preserve-fds`, runsc `--pass-fd`); the init reads
//! them, closes it, and gives them to the command's `execve` only (its own environment
//! never holds them).
//!
//! The pipe carries `NAME=VALUE` entries, each ended by a NUL byte ([`encode`],
//! [`decode`]): a name is a variable name, a value holds no NUL (an environment cannot).

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::OwnedFd;

use zeroize::{Zeroize as _, Zeroizing};

use crate::error::SandboxError;

/// The most the init reads from the pipe (a run's secrets are at most 256 × 64 KiB, a
/// file's in base64).
pub(crate) const MAX_PAYLOAD: usize = 24 << 20;

/// The largest secret file (a store's largest value).
pub(crate) const MAX_FILE: u64 = 64 << 10;

/// A secret for the agent: an environment variable, or a file under
/// [`crate::rootfs::SECRETS_DIR`]; wiped when dropped, never printed.
pub struct SecretEnv {
    name: String,
    value: Zeroizing<Vec<u8>>,
    file: bool,
}

/// What the pipe carries: the environment's entries, and the files.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) env: Vec<CString>,
    pub(crate) files: Vec<SecretFile>,
}

/// A secret file's name and contents: wiped when dropped.
pub(crate) struct SecretFile {
    pub(crate) name: String,
    pub(crate) value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({})", self.name)
    }
}

/// Writes `files` into `dir` (the run's secrets tmpfs, made for them): each new (never
/// over anything, never through a link), mode 0400, owned by the agent; then the
/// directory is made read-only for its owner too.
pub(crate) fn write_files(dir: &std::path::Path, files: &[SecretFile]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let agent = Some(nix::unistd::Uid::from_raw(crate::rootfs::AGENT_ID));
    let agent_gid = Some(nix::unistd::Gid::from_raw(crate::rootfs::AGENT_ID));
    let root = nix::unistd::geteuid().is_root();
    for f in files {
        if !is_name(f.name.as_bytes()) {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(&f.name))?;
        file.write_all(&f.value)?;
        if root {
            nix::unistd::fchown(&file, agent, agent_gid)?;
        }
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o500))?;
    if root {
        nix::unistd::chown(dir, agent, agent_gid)?;
    }
    Ok(())
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretEnv({}=..)", self.name)
    }
}

impl SecretEnv {
    /// The variable `name` holding `value`; refused (with a reason that never holds the
    /// value) when the name is not a variable name or the value holds a NUL byte.
    pub fn new(name: &str, value: Zeroizing<Vec<u8>>) -> Result<SecretEnv, SandboxError> {
        if !is_name(name.as_bytes()) {
            return Err(SandboxError::Unsupported(format!(
                "{name:?} cannot be an environment variable's name"
            )));
        }
        if value.contains(&0) {
            return Err(SandboxError::Unsupported(format!(
                "secret {name} holds a NUL byte, which an environment variable cannot"
            )));
        }
        Ok(SecretEnv {
            name: name.to_owned(),
            value,
            file: false,
        })
    }

    /// The file `name` under [`crate::rootfs::SECRETS_DIR`] holding `value` (any bytes, at
    /// most 64 KiB); refused when the name is not a variable name (no path, no dot).
    pub fn file(name: &str, value: Zeroizing<Vec<u8>>) -> Result<SecretEnv, SandboxError> {
        if !is_name(name.as_bytes()) {
            return Err(SandboxError::Unsupported(format!(
                "{name:?} cannot be a secret file's name"
            )));
        }
        if value.len() as u64 > MAX_FILE {
            return Err(SandboxError::Unsupported(format!(
                "secret {name} is larger than {MAX_FILE} bytes"
            )));
        }
        Ok(SecretEnv {
            name: name.to_owned(),
            value,
            file: true,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a file (else an environment variable).
    pub fn is_file(&self) -> bool {
        self.file
    }

    /// The file's name and contents, for the native init.
    pub(crate) fn as_file(&self) -> SecretFile {
        SecretFile {
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }

    /// `NAME=VALUE` for an `execve` environment.
    pub(crate) fn entry(&self) -> Result<CString, SandboxError> {
        let mut bytes = Vec::with_capacity(self.name.len() + 1 + self.value.len() + 1);
        bytes.extend_from_slice(self.name.as_bytes());
        bytes.push(b'=');
        bytes.extend_from_slice(&self.value);
        CString::new(bytes).map_err(|e| {
            let mut b = e.into_vec();
            b.zeroize();
            SandboxError::Unsupported("a secret holds a NUL byte".into())
        })
    }
}

fn is_name(n: &[u8]) -> bool {
    !n.is_empty()
        && !n[0].is_ascii_digit()
        && n.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Wipes `NAME=VALUE` entries given to an `execve`.
pub(crate) fn wipe(entries: &mut Vec<CString>) {
    for e in entries.drain(..) {
        let mut b = e.into_bytes_with_nul();
        b.zeroize();
    }
}

/// The pipe's bytes for `secrets`: `NAME=VALUE` for a variable, `@NAME=BASE64` for a file
/// (whose bytes may hold NUL), each ended by a NUL byte.
pub(crate) fn encode(secrets: &[SecretEnv]) -> Zeroizing<Vec<u8>> {
    use base64::Engine as _;
    let mut out = Zeroizing::new(Vec::new());
    for s in secrets {
        if s.file {
            out.push(b'@');
        }
        out.extend_from_slice(s.name.as_bytes());
        out.push(b'=');
        if s.file {
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*s.value));
            out.extend_from_slice(encoded.as_bytes());
        } else {
            out.extend_from_slice(&s.value);
        }
        out.push(0);
    }
    out
}

/// The entries of the pipe's bytes, or `None` for anything [`encode`] does not write.
pub(crate) fn decode(bytes: &[u8]) -> Option<Decoded> {
    use base64::Engine as _;
    let mut out = Decoded::default();
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return bytes.is_empty().then_some(out);
    };
    for entry in body.split(|b| *b == 0) {
        let (file, entry) = match entry.strip_prefix(b"@") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            wipe(&mut out.env);
            return None;
        };
        if !is_name(&entry[..eq]) {
            wipe(&mut out.env);
            return None;
        }
        if file {
            let value = base64::engine::general_purpose::STANDARD.decode(&entry[eq + 1..]);
            match value {
                Ok(v) if v.len() as u64 <= MAX_FILE => out.files.push(SecretFile {
                    name: String::from_utf8_lossy(&entry[..eq]).into_owned(),
                    value: Zeroizing::new(v),
                }),
                _ => {
                    wipe(&mut out.env);
                    return None;
                }
            }
            continue;
        }
        // No NUL inside: split on them.
        match CString::new(entry.to_vec()) {
            Ok(c) => out.env.push(c),
            Err(_) => {
                wipe(&mut out.env);
                return None;
            }
        }
    }
    Some(out)
}

/// A pipe holding `secrets` for spawn-init: its read end, to hand to the runtime; a thread
/// writes them and closes the write end (a run that ends before the init read them breaks
/// the pipe, which ends the thread).
pub(crate) fn pipe_for(secrets: &[SecretEnv]) -> Result<OwnedFd, SandboxError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::setup("make the secrets' pipe", e))?;
    let payload = encode(secrets);
    std::thread::Builder::new()
        .name("secrets".into())
        .spawn(move || {
            let mut w = std::fs::File::from(write);
            let _ = w.write_all(&payload);
            drop(payload);
        })
        .map_err(|e| SandboxError::setup("start the secrets' writer", e))?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn z(b: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(b.to_vec())
    }

    #[test]
    fn entries_round_trip_and_hostile_ones_are_refused() {
        let s = vec![
            SecretEnv::new("A", z(b"v=1 \xff\n")).unwrap(),
            SecretEnv::new("_B2", z(b"")).unwrap(),
        ];
        assert_eq!(format!("{:?}", s[0]), "SecretEnv(A=..)");
        let bytes = encode(&s);
        let back = decode(&bytes).unwrap().env;
        assert_eq!(back[0].as_bytes(), b"A=v=1 \xff\n");
        assert_eq!(back[1].as_bytes(), b"_B2=");
        assert_eq!(decode(b"").unwrap().env.len(), 0);
        // Files: any bytes, NUL included; a file's name is a variable's name too.
        let f = vec![
            SecretEnv::file("KEY_PEM", z(b"-----BEGIN\0\xff\n")).unwrap(),
            SecretEnv::new("E", z(b"e")).unwrap(),
        ];
        let back = decode(&encode(&f)).unwrap();
        assert_eq!(back.files.len(), 1);
        assert_eq!(back.files[0].name, "KEY_PEM");
        assert_eq!(&*back.files[0].value, b"-----BEGIN\0\xff\n");
        assert_eq!(back.env[0].as_bytes(), b"E=e");
        for name in ["../x", "a/b", ".hidden", "", "1A"] {
            assert!(SecretEnv::file(name, z(b"x")).is_err(), "{name:?}");
        }
        assert!(SecretEnv::file("BIG", z(&vec![0u8; (64 << 10) + 1])).is_err());
        for bad in [
            &b"A=1"[..],
            b"=1\0",
            b"1A=x\0",
            b"A B=x\0",
            b"A\0",
            b"A=1\0\0",
            b"\0",
            b"A-B=x\0",
            b"@A=!!\0",
            b"@../A=eA==\0",
            b"@A\0",
            b"@=eA==\0",
        ] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
        for name in ["", "1A", "A-B", "A=B", "A B", "\u{e9}"] {
            assert!(SecretEnv::new(name, z(b"x")).is_err(), "{name:?}");
        }
        let e = SecretEnv::new("T", z(b"qq\0zz")).unwrap_err().to_string();
        assert!(e.contains("NUL") && !e.contains("qq"), "{e}");
    }
}
