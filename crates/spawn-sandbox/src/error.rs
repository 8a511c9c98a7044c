//! The sandbox crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong before the sandboxed command runs. Any of these means the
/// command did not start (exit 125).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The runtime cannot be used on this host; never replaced by a weaker one.
    #[error("runtime {runtime} is unavailable: {reason}{}", fix.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    RuntimeUnavailable {
        /// Runtime name.
        runtime: String,
        /// Why.
        reason: String,
        /// What the user can do about it.
        fix: Option<String>,
    },
    /// A set-up step failed, inside or outside the sandbox.
    #[error("sandbox set-up failed at {stage}: {source}")]
    Setup {
        /// What was being done (e.g. "mount /usr").
        stage: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The seccomp filter could not be built.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// The Landlock ruleset could not be built or applied.
    #[error("landlock: {0}")]
    Landlock(String),
    /// A cgroup could not be created, configured or removed.
    #[error("cgroup {}: {source}", path.display())]
    Cgroup {
        /// The cgroup directory or file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The caller refused to let the run start (see `Observer::created`).
    #[error("the run was refused: {0}")]
    Refused(String),
    /// The policy asks for something this runtime cannot enforce.
    #[error("{0}")]
    Unsupported(String),
}

impl SandboxError {
    pub(crate) fn setup(stage: impl Into<String>, source: impl Into<io::Error>) -> Self {
        SandboxError::Setup {
            stage: stage.into(),
            source: source.into(),
        }
    }

    pub(crate) fn cgroup(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SandboxError::Cgroup {
            path: path.into(),
            source,
        }
    }
}
