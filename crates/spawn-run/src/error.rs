//! Why a run could not be made or run.

use spawn_sandbox::SandboxError;

/// Everything that stops a run before or while it runs (the CLI exits 125 for each).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sandbox could not be made or supervised.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The run's network (link, egress proxy, routed namespace) could not be made.
    #[error("{0}")]
    Network(String),
    /// The run could not be given an identity or its audit trail could not be started.
    #[error("{0}")]
    Audit(String),
    /// What this build of spawn does not run.
    #[error("{0}")]
    Unsupported(String),
    /// A granted secret could not be had: the run does not start.
    #[error("{0}")]
    Secrets(String),
    /// The run's model gateway could not be set up (its credential, script, price or
    /// listener): the run does not start.
    #[error("{0}")]
    Gateway(String),
    /// Another of these whose text quoted a granted secret: that text, redacted.
    #[error("{0}")]
    Redacted(String),
}

/// `result.net("make the link")?`: a network step's failure, saying which step.
pub(crate) trait NetContext<T> {
    fn net(self, what: &str) -> Result<T, RunError>;
}

impl<T, E: std::fmt::Display> NetContext<T> for Result<T, E> {
    fn net(self, what: &str) -> Result<T, RunError> {
        self.map_err(|e| RunError::Network(format!("{what}: {e}")))
    }
}

impl<T> NetContext<T> for Option<T> {
    fn net(self, what: &str) -> Result<T, RunError> {
        self.ok_or_else(|| RunError::Network(what.to_owned()))
    }
}
