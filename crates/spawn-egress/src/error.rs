//! Errors of the egress proxy.

/// What went wrong in the proxy (not a policy denial: those are [`spawn_policy::net::Denial`]).
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A name did not resolve (no such name, no answer in time, or no address at all).
    #[error("cannot resolve {name}: {reason}")]
    Resolve {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No checked address of the destination accepted the connection.
    #[error("cannot connect to {dest}: {source}")]
    Connect {
        /// `host:port`.
        dest: String,
        /// The last failure.
        source: std::io::Error,
    },
    /// Making or configuring a run's network failed.
    #[error("network set-up: {stage}: {reason}")]
    Network {
        /// What was being done.
        stage: String,
        /// Why it failed (the tool's message).
        reason: String,
    },
    /// The proxy's own socket failed.
    #[error("egress proxy: {0}")]
    Io(#[from] std::io::Error),
}
