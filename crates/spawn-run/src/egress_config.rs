//! What `spawn` tells the `spawn-egress` proxy process on its stdin (one JSON line);
//! shared by `spawn-run` and the `spawn-egress` binary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spawn_audit::{Limits, Principal};
use spawn_egress::ServiceConfig;

/// What the proxy child is told on its stdin (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildConfig {
    pub service: ServiceConfig,
    pub audit_dir: PathBuf,
    pub principal: Principal,
    pub trace_id: String,
    /// How much of the log the run's network events may take (`SPAWN_AUDIT_LIMITS`).
    pub audit_limits: Limits,
    /// The run's granted secrets, to be redacted from its network events (a host name or
    /// a request the agent makes can carry one). Only ever sent over the proxy's control
    /// socket; both ends wipe the message.
    #[serde(default)]
    pub redact: Vec<GrantedValue>,
}

/// A granted secret's value, by the variable it is granted as: wiped when dropped, never
/// printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct GrantedValue {
    pub name: String,
    pub value: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for GrantedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrantedValue({}=..)", self.name)
    }
}
