//! The webhook sink: a batch of CloudEvents 1.0 in the JSON batch format
//! (`application/cloudevents-batch+json`), POSTed; a 2xx acknowledges it.
//!
//! A record is an event `{"specversion": "1.0", "id": <its hash, else "seq-N">, "source",
//! "type": "dev.spawn.audit.<eventType>", "time": <its timestamp>, "datacontenttype":
//! "application/json", "spawnseq": N, "data": <the stored line, verbatim>}`; a checkpoint
//! is `"type": "dev.spawn.audit.checkpoint"`, `"id": "checkpoint-<size>"`,
//! `"datacontenttype": "text/plain"` and its note as `data`. The envelope is assembled
//! around the line rather than re-serialized, so `data` is byte for byte what the log
//! holds and its chain fields verify downstream.

use serde_json::json;

use crate::config::Format;
use crate::item::{Item, CHECKPOINT_KIND};

pub const CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Prefix of every event's `type`.
pub const TYPE_PREFIX: &str = "dev.spawn.";

/// The batch body of `items`.
pub fn batch(items: &[Item], format: Format, source: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 1024);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            Item::Record(e) => {
                let mut env = json!({
                    "specversion": "1.0",
                    "id": e.hash.clone().unwrap_or_else(|| format!("seq-{}", e.seq)),
                    "source": source,
                    "type": format!("{TYPE_PREFIX}{}", e.event_type),
                    "datacontenttype": "application/json",
                    "spawnseq": e.seq,
                });
                if !e.timestamp.is_empty() {
                    env["time"] = json!(e.timestamp);
                }
                // `{…envelope…,"data":<line>}`: the envelope without its closing brace.
                let env = env.to_string();
                out.extend_from_slice(&env.as_bytes()[..env.len() - 1]);
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(item.json_line(format).as_bytes());
                out.push(b'}');
            }
            Item::Checkpoint { size, note } => {
                let env = json!({
                    "specversion": "1.0",
                    "id": format!("checkpoint-{size}"),
                    "source": source,
                    "type": format!("{TYPE_PREFIX}{CHECKPOINT_KIND}"),
                    "time": spawn_audit::now_rfc3339(),
                    "datacontenttype": "text/plain",
                    "data": note,
                });
                out.extend_from_slice(env.to_string().as_bytes());
            }
        }
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Entry;

    #[test]
    fn the_batch_is_json_and_data_is_the_line_verbatim() {
        let line = r#"{"seq":3,"eventType":"auth.login","d":"a\"]\\\n\u001b","hash":"sha256:ab"}"#;
        let items = [
            Item::Record(Entry {
                seq: 3,
                line: line.into(),
                event_type: "auth.login".into(),
                outcome: "success".into(),
                timestamp: "2026-01-15T10:30:00.123Z".into(),
                hash: Some("sha256:ab".into()),
                trace_id: None,
                request_id: None,
            }),
            Item::Checkpoint {
                size: 3,
                note: "o\n3\nx\n\n— o sig\n".into(),
            },
        ];
        let body = batch(&items, Format::Spawn, "spawnd://h");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(&format!("\"data\":{line}}}")), "{text}");
        assert_eq!(v[0]["specversion"], "1.0");
        assert_eq!(v[0]["id"], "sha256:ab");
        assert_eq!(v[0]["type"], "dev.spawn.auth.login");
        assert_eq!(v[0]["time"], "2026-01-15T10:30:00.123Z");
        assert_eq!(v[0]["source"], "spawnd://h");
        assert_eq!(v[0]["spawnseq"], 3);
        assert_eq!(v[0]["data"]["d"], "a\"]\\\n\u{1b}");
        assert_eq!(v[1]["type"], "dev.spawn.audit.checkpoint");
        assert_eq!(v[1]["datacontenttype"], "text/plain");
        assert_eq!(v[1]["data"], "o\n3\nx\n\n— o sig\n");
    }
}
