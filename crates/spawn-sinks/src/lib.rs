//! Forwarding spawn's audit log to the systems operators run: each configured sink
//! (a file, syslog, a webhook of CloudEvents, OpenTelemetry logs) gets every record of the
//! log, as stored, at least once and in order, and the log's signed checkpoints.
//!
//! See the crate's README.md for the model, the wire formats and what is not done.
#![forbid(unsafe_code)]

mod config;
pub mod cursor;
mod error;
mod file;
mod forwarder;
mod http;
mod item;
pub mod ocsf;
mod otlp;
mod source;
pub mod syslog;
mod tls;
mod webhook;

pub use config::{
    plan, FileOptions, Format, HttpOptions, SinkPlan, SinkSpec, SinkType, SyslogOptions, Target,
    Transport, SYSTEM_CA_BUNDLE,
};
pub use error::SinkError;
pub use forwarder::{Forwarders, SinkMonitor, SinkStatus, Timing};
pub use item::{Item, CHECKPOINT_KIND};
pub use source::{last_seq, Entry, LogReader};
