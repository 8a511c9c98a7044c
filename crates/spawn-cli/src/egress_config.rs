//! What `spawn` tells the `spawn-egress` proxy process on its stdin (one JSON line);
//! shared by both binaries.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spawn_audit::{Limits, Principal};
use spawn_egress::ServiceConfig;

/// What the proxy child is told on its stdin (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChildConfig {
    pub(crate) service: ServiceConfig,
    pub(crate) audit_dir: PathBuf,
    pub(crate) principal: Principal,
    pub(crate) trace_id: String,
    /// How much of the log the run's network events may take (`SPAWN_AUDIT_LIMITS`).
    pub(crate) audit_limits: Limits,
}
