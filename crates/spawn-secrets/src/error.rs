//! The crate's error type. No message ever holds a secret's value or a key.

use std::path::PathBuf;

/// Why a secrets operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A secret name that is not `[A-Za-z_][A-Za-z0-9_]*` (at most 128 bytes): names become
    /// environment variables and file names in the sandbox.
    #[error("{0:?} is not a valid secret name: use letters, digits and _ (not first a digit), at most 128")]
    InvalidName(String),
    #[error("{0:?} is not a valid namespace")]
    InvalidNamespace(String),
    #[error("a secret's value must be 1 to {max} bytes, not {len}")]
    InvalidValue { len: usize, max: usize },
    #[error("secret {name} not found in namespace {namespace}")]
    NotFound { namespace: String, name: String },
    /// A sealed value that does not open: changed, moved from another name, version or
    /// namespace, or sealed under another data key.
    #[error("secret {name} (version {version}) in namespace {namespace} does not open: its ciphertext was changed, or moved from another secret, version or namespace")]
    Tampered {
        namespace: String,
        name: String,
        version: i64,
    },
    /// The data key a value names is not in the database.
    #[error("secret {name} in namespace {namespace} is sealed under data key {key_version}, which the database does not hold")]
    MissingDataKey {
        namespace: String,
        name: String,
        key_version: i64,
    },
    /// A wrapped data key that does not unwrap under the master key that claims it.
    #[error("a data key does not unwrap under its master key: the wrapped key was changed or moved, or the master key file is another one")]
    WrappedKeyTampered,
    /// A data key wrapped by a master key this provider does not hold.
    #[error("a data key is wrapped by master key {master}, which this master key file does not hold (another file, or a key retired too early)")]
    WrongMasterKey { master: String },
    /// The master key file cannot be used.
    #[error("the master key file {path} cannot be used: {reason}")]
    MasterKey { path: PathBuf, reason: String },
    #[error("could not {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the system's randomness failed: {0}")]
    Random(String),
    #[error("a value could not be sealed")]
    Seal,
    /// HashiCorp Vault could not be used (never with a token or a value in the reason).
    #[error("vault: {0}")]
    Vault(String),
    /// The helper process that resolves a run's secrets did not answer as it should.
    #[error("the secrets' resolver: {0}")]
    Helper(String),
    #[error(transparent)]
    Store(#[from] spawn_store::StoreError),
}
