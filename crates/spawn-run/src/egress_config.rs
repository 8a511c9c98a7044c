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
}
