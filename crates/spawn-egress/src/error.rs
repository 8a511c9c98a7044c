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
    /// The proxy cannot promise a new run the descriptors its caps allow.
    #[error(
        "the egress proxy is full: the run's network caps need {needed} descriptors and \
         {free} of {total} are free (lower spec.capabilities.net.maxConnections or \
         maxDnsQueries, or wait for other runs to end)"
    )]
    Full {
        /// What the run's caps need.
        needed: u64,
        /// What is left.
        free: u64,
        /// What the proxy can promise in all.
        total: u64,
    },
    /// The proxy's own socket failed.
    #[error("egress proxy: {0}")]
    Io(#[from] std::io::Error),
}
