//! The crate's error type.
//!
//! No variant carries a header value or any other secret: a webhook's headers are named by
//! the environment variable they come from, never shown.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while configuring a sink or delivering to it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A sink's configuration is refused; `sink` is its name (or its index if it has none).
    #[error("audit sink {sink}: {reason}")]
    Config { sink: String, reason: String },
    /// The environment variable a header's value comes from is not set (or not UTF-8).
    #[error("audit sink {sink}: environment variable {var} (header {header}) is not set")]
    MissingEnv {
        sink: String,
        header: String,
        var: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A TLS configuration (CA file, server name) that cannot be used.
    #[error("TLS for {what}: {reason}")]
    Tls { what: String, reason: String },
    /// Connecting to, or writing to, a network sink failed.
    #[error("cannot deliver to {target}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    /// An HTTP exchange failed below the status line (connection, protocol, timeout).
    #[error("HTTP to {target}: {reason}")]
    Http { target: String, reason: String },
    /// The receiver answered, but not with a 2xx: the batch is retried later.
    #[error("{target} answered {status}")]
    Status { target: String, status: u16 },
    #[error("{target} did not answer within {seconds} s")]
    Timeout { target: String, seconds: u64 },
    /// A forwarder's blocking work panicked or was cancelled (a bug, not the sink's doing).
    #[error("audit sink task: {0}")]
    Task(String),
    #[error(transparent)]
    Audit(#[from] spawn_audit::AuditError),
}
