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

/// The most the init reads from the pipe (a run's secrets are at most 256 × 64 KiB).
pub(crate) const MAX_PAYLOAD: usize = 17 << 20;

/// A secret for the agent's environment: wiped when dropped, never printed.
pub struct SecretEnv {
    name: String,
    value: Zeroizing<Vec<u8>>,
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
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

/// The pipe's bytes for `secrets`.
pub(crate) fn encode(secrets: &[SecretEnv]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for s in secrets {
        out.extend_from_slice(s.name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(&s.value);
        out.push(0);
    }
    out
}

/// The entries of the pipe's bytes, or `None` for anything [`encode`] does not write.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<CString>> {
    let mut out = Vec::new();
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return bytes.is_empty().then_some(out);
    };
    for entry in body.split(|b| *b == 0) {
        let eq = entry.iter().position(|b| *b == b'=')?;
        if !is_name(&entry[..eq]) {
            wipe(&mut out);
            return None;
        }
        // No NUL inside: split on them.
        match CString::new(entry.to_vec()) {
            Ok(c) => out.push(c),
            Err(_) => {
                wipe(&mut out);
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
        let back = decode(&bytes).unwrap();
        assert_eq!(back[0].as_bytes(), b"A=v=1 \xff\n");
        assert_eq!(back[1].as_bytes(), b"_B2=");
        assert_eq!(decode(b"").unwrap().len(), 0);
        for bad in [
            &b"A=1"[..],
            b"=1\0",
            b"1A=x\0",
            b"A B=x\0",
            b"A\0",
            b"A=1\0\0",
            b"\0",
            b"A-B=x\0",
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
