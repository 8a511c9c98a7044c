//! The one error type of this crate.
//!
//! Every message is a single sentence that names the offending field (`spec.sandbox.timeout`),
//! flag (`--memory`) or file, so `spawn validate` and `spawn run` can print it as is.

use std::io;
use std::path::PathBuf;

/// Why a manifest or a set of command-line overrides was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {}", path.display())]
    Read {
        /// The manifest's path as given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The manifest is larger than [`crate::MAX_MANIFEST_BYTES`].
    #[error("the manifest is larger than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },

    /// The manifest is not UTF-8 text.
    #[error("the manifest is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },

    /// The manifest is not well-formed YAML, or does not have the shape of an Agent
    /// (unknown field, wrong type, missing field, ...). Carries the position when known.
    #[error("{}{message}", location_prefix(*.line, *.column))]
    Syntax {
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong, usually starting with the field path.
        message: String,
    },

    /// A field, flag or value breaks a rule of the manifest contract (SPEC §3).
    #[error("{field}: {message}")]
    Invalid {
        /// Field path (`spec.capabilities.fs.mounts[0].path`) or flag (`--mount`).
        field: String,
        /// What is wrong with it, and the fix where there is one.
        message: String,
    },

    /// A field or flag that spawn parses but cannot enforce yet. Refused rather than
    /// ignored, so a policy never silently means less than it says.
    #[error("{field}: {message}")]
    Unsupported {
        /// Field path or flag.
        field: String,
        /// Always contains "not supported yet".
        message: String,
    },

    /// There is nothing to run.
    #[error("no command to run: {hint}")]
    NoCommand {
        /// How to give one.
        hint: &'static str,
    },

    /// A mount source could not be examined (other than "does not exist").
    #[error(
        "{field}: cannot resolve mount source {}",
        crate::names::plain_path(path)
    )]
    MountIo {
        /// Field path or flag.
        field: String,
        /// The resolved path that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// A single value (given to [`crate::parse_bytes`], [`crate::parse_cpu_millis`],
    /// [`crate::parse_duration`] or a `FromStr` impl) is malformed.
    #[error("{message}")]
    Value {
        /// What is wrong with the value.
        message: String,
    },

    /// An error inside a manifest file, prefixed with the file's path.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The manifest's path as given.
        path: PathBuf,
        /// The error (its text is part of this one's, so it is not a `source`).
        error: Box<PolicyError>,
    },
}

impl PolicyError {
    /// The error without an [`PolicyError::InFile`] wrapper, for matching.
    pub fn inner(&self) -> &PolicyError {
        match self {
            PolicyError::InFile { error, .. } => error.inner(),
            other => other,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `what` completes "... is not supported yet", e.g. `policy restricted`.
    pub(crate) fn unsupported(field: impl Into<String>, what: &str, hint: &str) -> Self {
        let mut message = format!("{what} is not supported yet");
        if !hint.is_empty() {
            message.push_str(" (");
            message.push_str(hint);
            message.push(')');
        }
        PolicyError::Unsupported {
            field: field.into(),
            message,
        }
    }
}

fn location_prefix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: "),
        (Some(line), None) => format!("line {line}: "),
        _ => String::new(),
    }
}
