//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create audit directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open audit log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit log {path} is a symlink; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("audit log {path} is not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("audit log {path} was replaced while it was being opened")]
    Replaced { path: PathBuf },
    #[error("cannot lock audit log {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read audit log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write audit log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync audit log {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line of the log is not a valid record; `line` counts from 1.
    #[error("malformed record at {path} line {line}")]
    Malformed {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// No valid record was found near the end of a non-empty log, so the next
    /// sequence number cannot be known; appending would risk duplicate seqs.
    #[error("no valid record in the last {scanned} bytes of audit log {path}")]
    CorruptTail { path: PathBuf, scanned: u64 },
    #[error("sequence number overflow in audit log {path}")]
    SeqOverflow { path: PathBuf },
    #[error("cannot encode audit event")]
    Encode(#[source] serde_json::Error),
    /// Unreachable in practice: every field is capped before this check.
    #[error("audit event exceeds {limit} bytes even after truncation")]
    TooLarge { limit: usize },
    #[error("unknown audit event type {0:?}")]
    UnknownEventType(String),
    #[error("unknown audit outcome {0:?}")]
    UnknownOutcome(String),
    /// Audit limits (`SPAWN_AUDIT_LIMITS`, or a registration's) that are malformed or out
    /// of bounds.
    #[error("invalid audit limits: {0}")]
    Limits(String),
    /// A signing or verifier key, or a checkpoint, that is malformed or does not verify.
    #[error("{0}")]
    Checkpoint(String),
    #[error("cannot read system randomness")]
    Random(#[source] io::Error),
}
