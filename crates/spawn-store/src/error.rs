use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The configuration names no usable database.
    #[error("{what} is not valid: {reason}")]
    Config { what: String, reason: String },
    /// The database could not be reached or answered with an error.
    #[error("the database failed to {what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("the database's schema could not be migrated: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("could not {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// No such object.
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// An object of that name exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The object changed since the version the caller read (`If-Match`).
    #[error("{kind} {name} was changed by someone else (version {current}, not {expected})")]
    Conflict {
        kind: &'static str,
        name: String,
        expected: i64,
        current: i64,
    },
    /// The run is no longer held by this daemon (its lease ran out).
    #[error("run {0} is no longer held by this daemon")]
    LeaseLost(String),
    /// Audit records that do not continue the stored chain of their log.
    #[error("audit record seq {seq} was refused: it {reason}")]
    AuditChain { seq: i64, reason: String },
    /// A stored value does not read back (a corrupt or foreign database).
    #[error("the database holds an unreadable {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl StoreError {
    pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { what, source }
    }

    pub(crate) fn migrate(e: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migrate(e)
    }

    /// Whether `e` is a unique-constraint violation (on either database).
    pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
    }
}
