//! spawn's local audit log: SPEC §7 events appended as JSON lines under `$SPAWN_HOME`.
//!
//! See the crate's README.md for what the log guarantees and what it does not (yet).
#![forbid(unsafe_code)]

pub mod canonical;
pub mod chain;
pub mod checkpoint;
mod clock;
pub mod cut;
mod encode;
mod error;
mod event;
mod id;
mod limit;
mod log;
pub mod merkle;
pub mod query;
mod tail;
pub mod trace;

pub use clock::{now_rfc3339, rfc3339_ago};
pub use encode::MAX_EVENT_BYTES;
pub use error::AuditError;
pub use event::{Event, EventType, Outcome, Principal, Record, Resource};
pub use id::{format_id, new_id, parse_id, ID_RANDOM_BYTES};
pub use limit::{Limiter, LimiterStats, Limits, LIMIT_ACTION, SUMMARY_ACTION};
pub use log::{last_seq, read_records, snapshot, AuditLog, LOG_FILE_NAME};
