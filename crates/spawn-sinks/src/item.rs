//! What a sink is given: records of the log, and signed checkpoints.

use serde_json::json;

use crate::config::Format;
use crate::source::Entry;

/// The kind a checkpoint is sent as: the event type of its JSON line and syslog MSGID, the
/// suffix of its CloudEvents type.
pub const CHECKPOINT_KIND: &str = "audit.checkpoint";

/// One message for a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A record of the log, as stored.
    Record(Entry),
    /// A signed checkpoint (`spawn_audit::checkpoint`): a C2SP signed note over the log's
    /// first `size` records.
    Checkpoint { size: u64, note: String },
}

impl Item {
    /// The item as one line of JSON (no newline): a record's stored line (or its OCSF
    /// event); a checkpoint as `{"type":"audit.checkpoint","size":N,"note":"…"}` — it has
    /// no `seq`, so a reader of a sink's file tells the two apart.
    pub fn json_line(&self, format: Format) -> String {
        match (self, format) {
            (Item::Record(e), Format::Spawn) => e.line.clone(),
            (Item::Record(e), Format::Ocsf) => crate::ocsf::event(e),
            (Item::Checkpoint { size, note }, _) => {
                json!({"type": CHECKPOINT_KIND, "size": size, "note": note}).to_string()
            }
        }
    }
}
