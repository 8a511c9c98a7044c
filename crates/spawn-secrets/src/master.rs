//! Master keys: what wraps the namespaces' data keys, kept apart from the database.
//!
//! The local provider keeps its keys in one owner-only file (by default
//! `$SPAWN_HOME/keys/secrets-master.key`), one key a line, the first the one that wraps:
//!
//! ```text
//! spawn-master-v1 <16 hex digits: the key's id> <base64 of 32 bytes>
//! ```
//!
//! The others only unwrap: a rotation puts a new key first, rewraps every data key under
//! it, and then drops the others ([`LocalMasterKeys::rotate`], [`LocalMasterKeys::retire`]).
//! A process that meets a data key wrapped by a key it does not hold reads the file again,
//! so that a rotation made by another process needs no restart.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::crypto::Key;
use crate::error::SecretsError;

const MAGIC: &str = "spawn-master-v1";
/// The prefix of the local provider's key names in the database (`local:<id>`).
pub const LOCAL: &str = "local:";

/// A provider of master keys: what wraps the namespaces' data keys, outside the database.
/// Each wrapped data key is stored with the name of the key that wrapped it.
pub trait MasterKeys: Send + Sync + std::fmt::Debug {
    /// The name of the key that wraps now.
    fn current(&self) -> String;
    /// `data_key` wrapped, bound to `aad`: (the wrapping key's name, the wrapped bytes).
    fn wrap(&self, data_key: &Key, aad: &[u8]) -> Result<(String, Vec<u8>), SecretsError>;
    /// The data key `wrapped` by the key named `master`, bound to `aad`.
    fn unwrap(&self, master: &str, wrapped: &[u8], aad: &[u8]) -> Result<Key, SecretsError>;
    /// A new key wraps from now on; its name.
    fn rotate(&self) -> Result<String, SecretsError>;
    /// Drops the keys that only unwrap (once no data key needs them); how many.
    fn retire(&self) -> Result<usize, SecretsError>;
}

impl MasterKeys for LocalMasterKeys {
    fn current(&self) -> String {
        LocalMasterKeys::current(self)
    }
    fn wrap(&self, data_key: &Key, aad: &[u8]) -> Result<(String, Vec<u8>), SecretsError> {
        LocalMasterKeys::wrap(self, data_key, aad)
    }
    fn unwrap(&self, master: &str, wrapped: &[u8], aad: &[u8]) -> Result<Key, SecretsError> {
        LocalMasterKeys::unwrap(self, master, wrapped, aad)
    }
    fn rotate(&self) -> Result<String, SecretsError> {
        LocalMasterKeys::rotate(self)
    }
    fn retire(&self) -> Result<usize, SecretsError> {
        LocalMasterKeys::retire(self)
    }
}

/// The provider the environment names: `SPAWN_SECRETS_MASTER=transit://MOUNT/KEY` for
/// HashiCorp Vault's Transit engine (Vault's connection from `VAULT_*`, see
/// [`crate::vault`]), else the local key file at `local` (made if missing).
pub fn from_env(local: &Path) -> Result<Box<dyn MasterKeys>, SecretsError> {
    match std::env::var("SPAWN_SECRETS_MASTER") {
        Ok(v) if !v.is_empty() && v != "local" => {
            let rest = v.strip_prefix("transit://").ok_or_else(|| {
                SecretsError::Vault(format!(
                    "SPAWN_SECRETS_MASTER={v:?}: use local, or transit://MOUNT/KEY"
                ))
            })?;
            let (mount, key) = rest.rsplit_once('/').ok_or_else(|| {
                SecretsError::Vault(format!(
                    "SPAWN_SECRETS_MASTER={v:?}: use transit://MOUNT/KEY"
                ))
            })?;
            let config = crate::vault::VaultConfig::from_env()?.ok_or_else(|| {
                SecretsError::Vault(
                    "SPAWN_SECRETS_MASTER names Vault's Transit engine, and VAULT_ADDR is not set"
                        .into(),
                )
            })?;
            Ok(Box::new(crate::vault::TransitMasterKeys::connect(
                &config, mount, key,
            )?))
        }
        _ => Ok(Box::new(LocalMasterKeys::load_or_create(local)?)),
    }
}

/// The local provider's keys, read from their file.
#[derive(Debug)]
pub struct LocalMasterKeys {
    path: PathBuf,
    /// (id, key), the first the one that wraps.
    keys: Mutex<Vec<(String, Key)>>,
}

impl LocalMasterKeys {
    /// The keys in the file at `path`, made (owner-only, in an owner-only directory) with
    /// one new key if it does not exist. A file that others may read, or that is not a
    /// key file, is refused.
    pub fn load_or_create(path: &Path) -> Result<LocalMasterKeys, SecretsError> {
        if !path.exists() {
            let key = Key::generate()?;
            let id = new_id()?;
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io(path, "create the directory of"))?;
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(line(&id, &key).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io(path, "write"))?;
                }
                // Made by another process meanwhile: read it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(path, "create")(e)),
            }
        }
        let keys = read(path)?;
        Ok(LocalMasterKeys {
            path: path.to_owned(),
            keys: Mutex::new(keys),
        })
    }

    /// The name of the key that wraps (`local:<id>`).
    pub fn current(&self) -> String {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.first()
            .map(|(id, _)| format!("{LOCAL}{id}"))
            .unwrap_or_default()
    }

    /// `data_key` wrapped by the current key, bound to `aad`; with the current key's name.
    pub fn wrap(&self, data_key: &Key, aad: &[u8]) -> Result<(String, Vec<u8>), SecretsError> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (id, key) = keys.first().ok_or_else(|| SecretsError::MasterKey {
            path: self.path.clone(),
            reason: "it holds no key".into(),
        })?;
        Ok((format!("{LOCAL}{id}"), key.seal(aad, data_key.expose())?))
    }

    /// The data key `wrapped` by the key named `master`, bound to `aad`. A key this process
    /// does not hold is looked for in the file again (another process rotated).
    pub fn unwrap(&self, master: &str, wrapped: &[u8], aad: &[u8]) -> Result<Key, SecretsError> {
        let id = master
            .strip_prefix(LOCAL)
            .ok_or_else(|| SecretsError::WrongMasterKey {
                master: master.to_owned(),
            })?;
        for attempt in 0..2 {
            let mut keys = self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if attempt == 1 {
                *keys = read(&self.path)?;
            }
            if let Some((_, key)) = keys.iter().find(|(k, _)| k == id) {
                let opened = key
                    .open(aad, wrapped)
                    .ok_or(SecretsError::WrappedKeyTampered)?;
                return Key::from_bytes(&opened).ok_or(SecretsError::WrappedKeyTampered);
            }
        }
        Err(SecretsError::WrongMasterKey {
            master: master.to_owned(),
        })
    }

    /// Puts a new key first (the keys before it only unwrap from now on); its name.
    pub fn rotate(&self) -> Result<String, SecretsError> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *keys = read(&self.path)?;
        let id = new_id()?;
        keys.insert(0, (id.clone(), Key::generate()?));
        write(&self.path, &keys)?;
        Ok(format!("{LOCAL}{id}"))
    }

    /// Drops every key but the current one (once no data key is wrapped by them).
    pub fn retire(&self) -> Result<usize, SecretsError> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *keys = read(&self.path)?;
        let dropped = keys.len().saturating_sub(1);
        keys.truncate(1);
        write(&self.path, &keys)?;
        Ok(dropped)
    }
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SecretsError {
    let what = format!("{what} {}", path.display());
    move |source| SecretsError::Io { what, source }
}

fn new_id() -> Result<String, SecretsError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn line(id: &str, key: &Key) -> Zeroizing<String> {
    Zeroizing::new(format!("{MAGIC} {id} {}\n", B64.encode(key.expose())))
}

/// The keys in the file at `path`, refusing a file others may read or one that is not a
/// key file (the reason never quotes a line: it holds a key).
fn read(path: &Path) -> Result<Vec<(String, Key)>, SecretsError> {
    let bad = |reason: String| SecretsError::MasterKey {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::symlink_metadata(path).map_err(io(path, "read"))?;
    if !meta.file_type().is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "others may read it (mode {mode:o}): chmod 600 it"
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path, "read"))?);
    let mut keys = Vec::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.split(' ');
        let (Some(MAGIC), Some(id), Some(k), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("line {} is not a master key line", n + 1)));
        };
        if id.len() != 16
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad(format!("line {} has no valid key id", n + 1)));
        }
        let bytes = Zeroizing::new(
            B64.decode(k)
                .map_err(|_| bad(format!("line {}'s key is not base64", n + 1)))?,
        );
        let key = Key::from_bytes(&bytes)
            .ok_or_else(|| bad(format!("line {}'s key is not 32 bytes", n + 1)))?;
        if keys.iter().any(|(i, _)| i == id) {
            return Err(bad(format!("line {} repeats a key id", n + 1)));
        }
        keys.push((id.to_owned(), key));
    }
    if keys.is_empty() {
        return Err(bad("it holds no key".into()));
    }
    Ok(keys)
}

/// Writes `keys` to `path` durably: aside, then renamed over it, owner-only.
fn write(path: &Path, keys: &[(String, Key)]) -> Result<(), SecretsError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut text = Zeroizing::new(String::new());
    for (id, key) in keys {
        text.push_str(&line(id, key));
    }
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, "write")(e)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_key_file_is_made_owner_only_and_wraps_and_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets-master.key");
        let m = LocalMasterKeys::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let dk = Key::generate().unwrap();
        let (name, wrapped) = m.wrap(&dk, b"aad").unwrap();
        assert_eq!(name, m.current());
        let back = m.unwrap(&name, &wrapped, b"aad").unwrap();
        assert_eq!(back.expose(), dk.expose());
        assert!(matches!(
            m.unwrap(&name, &wrapped, b"other"),
            Err(SecretsError::WrappedKeyTampered)
        ));
        // The same file loaded again: the same key.
        let again = LocalMasterKeys::load_or_create(&path).unwrap();
        assert_eq!(again.current(), name);
        // Another file's key does not unwrap it.
        let other = LocalMasterKeys::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            other.unwrap(&name, &wrapped, b"aad"),
            Err(SecretsError::WrongMasterKey { .. })
        ));
        // The key never appears in a message.
        let text = std::fs::read_to_string(&path).unwrap();
        let b64 = text.split(' ').nth(2).unwrap().trim();
        assert!(!format!("{m:?}").contains(b64));
    }

    /// A rotation made by one process is seen by another that still holds the old keys.
    #[test]
    fn a_rotation_is_seen_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.key");
        let a = LocalMasterKeys::load_or_create(&path).unwrap();
        let b = LocalMasterKeys::load_or_create(&path).unwrap();
        let dk = Key::generate().unwrap();
        let old = a.wrap(&dk, b"x").unwrap();
        let new_name = a.rotate().unwrap();
        assert_ne!(new_name, old.0);
        let new = a.wrap(&dk, b"x").unwrap();
        assert_eq!(new.0, new_name);
        // b reads the file again for a key it does not hold.
        assert_eq!(
            b.unwrap(&new.0, &new.1, b"x").unwrap().expose(),
            dk.expose()
        );
        assert_eq!(
            b.unwrap(&old.0, &old.1, b"x").unwrap().expose(),
            dk.expose()
        );
        assert_eq!(a.retire().unwrap(), 1);
        let c = LocalMasterKeys::load_or_create(&path).unwrap();
        assert!(matches!(
            c.unwrap(&old.0, &old.1, b"x"),
            Err(SecretsError::WrongMasterKey { .. })
        ));
        assert_eq!(
            c.unwrap(&new.0, &new.1, b"x").unwrap().expose(),
            dk.expose()
        );
    }

    /// Hostile key files: each refused with a reason that never quotes the line.
    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("{MAGIC} 0123456789abcdef {}\n", B64.encode([9u8; 32]));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no key"),
            ("# only a comment\n".into(), "no key"),
            (
                good.replace(MAGIC, "spawn-master-v2"),
                "not a master key line",
            ),
            (good.replace(' ', "  "), "not a master key line"),
            (
                good.trim_end().to_owned() + " extra\n",
                "not a master key line",
            ),
            (
                good.replace("0123456789abcdef", "0123456789ABCDEF"),
                "no valid key id",
            ),
            (good.replace("0123456789abcdef", "0123"), "no valid key id"),
            (
                good.replace("0123456789abcdef", "0123456789abcdeg"),
                "no valid key id",
            ),
            (
                format!("{MAGIC} 0123456789abcdef {}\n", B64.encode([9u8; 31])),
                "not 32 bytes",
            ),
            (
                format!("{MAGIC} 0123456789abcdef {}\n", B64.encode([9u8; 33])),
                "not 32 bytes",
            ),
            (format!("{MAGIC} 0123456789abcdef %%%%\n"), "not base64"),
            (format!("{good}{good}"), "repeats"),
        ];
        for (i, (text, says)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("k{i}"));
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = LocalMasterKeys::load_or_create(&path)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains(&B64.encode([9u8; 32])), "{err}");
        }
        // Readable by others: refused.
        let path = dir.path().join("open");
        std::fs::write(&path, &good).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = LocalMasterKeys::load_or_create(&path)
                .unwrap_err()
                .to_string();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        }
        // A symlink or a directory: refused.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(LocalMasterKeys::load_or_create(&link)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        assert!(LocalMasterKeys::load_or_create(&d)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}
