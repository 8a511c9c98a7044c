//! spawn's secrets at rest: envelope encryption with a data key per namespace.
//!
//! Each value is sealed with AES-256-GCM under its namespace's data key, bound to its
//! namespace, name, version and data key version ([`crypto::value_aad`]); each data key is
//! sealed ("wrapped") under a master key that the database never holds
//! ([`master::LocalMasterKeys`]), bound to its namespace and version. The database
//! (`spawn-store`) holds only sealed bytes. See the crate's README.
#![forbid(unsafe_code)]

pub mod crypto;
mod error;
pub mod helper;
pub mod master;
pub mod vault;
/// The redaction of values in what runs write: `spawn-redact`.
pub use spawn_redact as redact;

use secrecy::SecretBox;
use spawn_store::{SealedSecret, SecretEntry, Store, StoreError, WrappedKey};

pub use error::SecretsError;

use crate::crypto::{data_key_aad, value_aad, Key};
use crate::master::MasterKeys;

/// The largest value taken (environment variables and files alike).
pub const MAX_VALUE: usize = 64 * 1024;
/// The longest name.
pub const MAX_NAME: usize = 128;

/// A secret's value as opened: wiped when dropped, never printed.
pub type Value = SecretBox<[u8]>;

/// A version of a secret, opened.
#[derive(Debug)]
pub struct Opened {
    pub version: i64,
    pub value: Value,
}

/// What a master key's rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRotated {
    /// The new master key's name.
    pub master: String,
    /// Data keys rewrapped under it.
    pub rewrapped: usize,
    /// Master keys dropped.
    pub retired: usize,
}

/// How long a data key seals before it is due for rotation, unless configured otherwise.
pub const DEFAULT_ROTATION_DAYS: u32 = 90;

/// A namespace's current data key, due for rotation ([`Secrets::data_keys_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueKey {
    pub namespace: String,
    pub version: i64,
    /// When it was made (milliseconds since the epoch).
    pub created_ms: i64,
}

/// The secrets of every namespace in `store`, under the master keys `master`.
#[derive(Debug)]
pub struct Secrets {
    store: Store,
    master: Box<dyn MasterKeys>,
}

/// Checks a secret name: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME`] bytes.
pub fn check_name(name: &str) -> Result<(), SecretsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SecretsError::InvalidName(
            name.chars().take(MAX_NAME).collect(),
        ))
    }
}

fn check_namespace(namespace: &str) -> Result<(), SecretsError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 253
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SecretsError::InvalidNamespace(
            namespace.chars().take(253).collect(),
        ))
    }
}

impl Secrets {
    pub fn new(store: Store, master: impl MasterKeys + 'static) -> Secrets {
        Secrets::with_master(store, Box::new(master))
    }

    /// The secrets of `store` under the provider `master` (see [`master::from_env`]).
    pub fn with_master(store: Store, master: Box<dyn MasterKeys>) -> Secrets {
        Secrets { store, master }
    }

    /// The store the secrets are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sets `name` in `namespace` to `value` (a new version); returns the version.
    pub async fn set(
        &self,
        namespace: &str,
        name: &str,
        value: &[u8],
        by: &str,
    ) -> Result<i64, SecretsError> {
        check_namespace(namespace)?;
        check_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE {
            return Err(SecretsError::InvalidValue {
                len: value.len(),
                max: MAX_VALUE,
            });
        }
        let (key_version, key) = self.current_data_key(namespace).await?;
        // Two writers of one name: the second to insert a version tries the next.
        for _ in 0..8 {
            let version = self
                .store
                .secret_latest(namespace, name)
                .await?
                .map_or(1, |s| s.version + 1);
            let sealed = key.seal(&value_aad(namespace, name, version, key_version), value)?;
            let row = SealedSecret {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                version,
                key_version,
                sealed,
                created_ms: spawn_store::now_ms(),
                created_by: by.to_owned(),
            };
            match self.store.insert_secret(&row).await {
                Ok(()) => return Ok(version),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict {
            kind: "secret",
            name: name.to_owned(),
            expected: 0,
            current: 0,
        }
        .into())
    }

    /// The latest version of `name` in `namespace`, opened.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Opened, SecretsError> {
        check_namespace(namespace)?;
        check_name(name)?;
        let row = self
            .store
            .secret_latest(namespace, name)
            .await?
            .ok_or_else(|| SecretsError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        self.open(&row).await
    }

    /// A sealed version, opened with its data key.
    async fn open(&self, row: &SealedSecret) -> Result<Opened, SecretsError> {
        let wrapped = self
            .store
            .secret_key(&row.namespace, row.key_version)
            .await?
            .ok_or_else(|| SecretsError::MissingDataKey {
                namespace: row.namespace.clone(),
                name: row.name.clone(),
                key_version: row.key_version,
            })?;
        let key = self.unwrap(&wrapped)?;
        let plain = key
            .open(
                &value_aad(&row.namespace, &row.name, row.version, row.key_version),
                &row.sealed,
            )
            .ok_or_else(|| SecretsError::Tampered {
                namespace: row.namespace.clone(),
                name: row.name.clone(),
                version: row.version,
            })?;
        Ok(Opened {
            version: row.version,
            value: SecretBox::from(plain.to_vec().into_boxed_slice()),
        })
    }

    /// The namespace's secrets: names, versions and dates, never values.
    pub async fn list(&self, namespace: &str) -> Result<Vec<SecretEntry>, SecretsError> {
        check_namespace(namespace)?;
        Ok(self.store.secret_list(namespace).await?)
    }

    /// Deletes every version of `name`; how many there were (`NotFound` for none).
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<u64, SecretsError> {
        check_namespace(namespace)?;
        check_name(name)?;
        match self.store.delete_secret(namespace, name).await? {
            0 => Err(SecretsError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            n => Ok(n),
        }
    }

    /// Rotates the master key online: a new key wraps from now on, every data key is
    /// rewrapped under it (values are not touched), then the old keys are dropped. A
    /// rotation stopped midway is finished by the next: keys already rewrapped are skipped,
    /// the old keys are kept until none is wrapped by them.
    pub async fn rotate_master(&self) -> Result<MasterRotated, SecretsError> {
        let master = self.master.rotate()?;
        let mut rewrapped = 0;
        for k in self.store.secret_keys_all().await? {
            if k.master == master {
                continue;
            }
            let aad = data_key_aad(&k.namespace, k.version);
            let key = self.master.unwrap(&k.master, &k.wrapped, &aad)?;
            let (name, wrapped) = self.master.wrap(&key, &aad)?;
            if self
                .store
                .rewrap_secret_key(&k.namespace, k.version, &k.master, &wrapped, &name)
                .await?
            {
                rewrapped += 1;
            }
        }
        // Retire the old keys only when no data key is wrapped by them any more (another
        // process may have made one meanwhile: the next rotation takes it).
        let current = self.master.current();
        let retired = if self
            .store
            .secret_keys_all()
            .await?
            .iter()
            .all(|k| k.master == current)
        {
            self.master.retire()?
        } else {
            0
        };
        Ok(MasterRotated {
            master,
            rewrapped,
            retired,
        })
    }

    /// Rotates the namespace's data key: a new one seals from now on, and every value sealed
    /// under an older one is resealed under it (same name, version and value), then the
    /// older keys no value needs are deleted; returns (new key version, values resealed).
    pub async fn rotate_data_key(&self, namespace: &str) -> Result<(i64, u64), SecretsError> {
        check_namespace(namespace)?;
        let latest = self.store.secret_key_latest(namespace).await?;
        let version = latest.map_or(1, |k| k.version + 1);
        let (version, key) = match self.new_data_key(namespace, version).await? {
            Some(k) => (version, k),
            // Another process rotated at the same moment: reseal under its key.
            None => self.current_data_key(namespace).await?,
        };
        let mut resealed = 0;
        for row in self.store.secrets_sealed_before(namespace, version).await? {
            let opened = self.open(&row).await?;
            let sealed = key.seal(
                &value_aad(namespace, &row.name, row.version, version),
                secrecy::ExposeSecret::expose_secret(&opened.value),
            )?;
            let new = SealedSecret {
                key_version: version,
                sealed,
                ..row.clone()
            };
            if self.store.reseal_secret(&new, row.key_version).await? {
                resealed += 1;
            }
        }
        self.store
            .delete_unused_secret_keys(namespace, version)
            .await?;
        Ok((version, resealed))
    }

    /// The namespaces whose current data key was made `max_age` or longer before `now_ms`
    /// (milliseconds since the epoch), oldest first.
    pub async fn data_keys_due(
        &self,
        now_ms: i64,
        max_age: std::time::Duration,
    ) -> Result<Vec<DueKey>, SecretsError> {
        let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let mut current: std::collections::BTreeMap<String, DueKey> = Default::default();
        for k in self.store.secret_keys_all().await? {
            let newer = current
                .get(&k.namespace)
                .is_none_or(|c| c.version < k.version);
            if newer {
                current.insert(
                    k.namespace.clone(),
                    DueKey {
                        namespace: k.namespace,
                        version: k.version,
                        created_ms: k.created_ms,
                    },
                );
            }
        }
        let mut due: Vec<DueKey> = current
            .into_values()
            .filter(|k| k.created_ms.saturating_add(age) <= now_ms)
            .collect();
        due.sort_by_key(|k| k.created_ms);
        Ok(due)
    }

    /// Crypto-shredding: the namespace's data keys and sealed values deleted; (keys,
    /// values).
    pub async fn shred(&self, namespace: &str) -> Result<(u64, u64), SecretsError> {
        check_namespace(namespace)?;
        Ok(self.store.shred_secrets(namespace).await?)
    }

    fn unwrap(&self, k: &WrappedKey) -> Result<Key, SecretsError> {
        self.master.unwrap(
            &k.master,
            &k.wrapped,
            &data_key_aad(&k.namespace, k.version),
        )
    }

    /// The namespace's current data key, made if it has none.
    async fn current_data_key(&self, namespace: &str) -> Result<(i64, Key), SecretsError> {
        for _ in 0..8 {
            if let Some(k) = self.store.secret_key_latest(namespace).await? {
                return Ok((k.version, self.unwrap(&k)?));
            }
            if let Some(key) = self.new_data_key(namespace, 1).await? {
                return Ok((1, key));
            }
        }
        Err(StoreError::Conflict {
            kind: "data key",
            name: namespace.to_owned(),
            expected: 0,
            current: 0,
        }
        .into())
    }

    /// A new data key `version` for the namespace, recorded; `None` if another writer
    /// recorded that version first.
    async fn new_data_key(
        &self,
        namespace: &str,
        version: i64,
    ) -> Result<Option<Key>, SecretsError> {
        let key = Key::generate()?;
        let (master, wrapped) = self.master.wrap(&key, &data_key_aad(namespace, version))?;
        match self
            .store
            .insert_secret_key(namespace, version, &wrapped, &master)
            .await
        {
            Ok(_) => Ok(Some(key)),
            Err(StoreError::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
