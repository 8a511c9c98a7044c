//! The OTLP sink: OpenTelemetry logs over OTLP/HTTP in JSON (`POST {endpoint}/v1/logs`,
//! `application/json`), one `ExportLogsServiceRequest` per batch.
//!
//! Each record is a `logRecord` whose `body.stringValue` is the stored line (verbatim),
//! `timeUnixNano` its timestamp (64-bit integers are strings in OTLP/JSON), severity from
//! its outcome (success INFO 9, denied WARN 13, error ERROR 17), and attributes
//! `spawn.seq` (`intValue`), `spawn.event_type`, `spawn.outcome`, `spawn.hash`,
//! `spawn.trace_id`, `spawn.request_id`. `traceId` is set only when the record's `tr_…`
//! id is one `spawn_audit::parse_id` reads: then it is that id's 128 bits in hex, the
//! trace id `spawn trace export` gives the same run, so the logs join its spans. A
//! checkpoint is a record with `eventName` and body the note, `spawn.checkpoint.size`.

use serde_json::{json, Value};

use crate::config::Format;
use crate::item::{Item, CHECKPOINT_KIND};

pub const CONTENT_TYPE: &str = "application/json";

fn attr_str(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}

fn attr_int(key: &str, v: u64) -> Value {
    json!({"key": key, "value": {"intValue": v.to_string()}})
}

fn unix_nanos(rfc3339: &str) -> Option<String> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos().to_string())
}

fn now_nanos() -> String {
    time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request body of `items`.
pub fn logs(items: &[Item], format: Format) -> Vec<u8> {
    let observed = now_nanos();
    let records: Vec<Value> = items
        .iter()
        .map(|item| match item {
            Item::Record(e) => {
                let (num, text) = match e.outcome.as_str() {
                    "success" => (9, "INFO"),
                    "denied" => (13, "WARN"),
                    _ => (17, "ERROR"),
                };
                let mut attrs = vec![
                    attr_int("spawn.seq", e.seq),
                    attr_str("spawn.event_type", &e.event_type),
                    attr_str("spawn.outcome", &e.outcome),
                ];
                for (k, v) in [
                    ("spawn.hash", &e.hash),
                    ("spawn.trace_id", &e.trace_id),
                    ("spawn.request_id", &e.request_id),
                ] {
                    if let Some(v) = v {
                        attrs.push(attr_str(k, v));
                    }
                }
                let mut r = json!({
                    "timeUnixNano": unix_nanos(&e.timestamp).unwrap_or_else(|| observed.clone()),
                    "observedTimeUnixNano": observed,
                    "severityNumber": num,
                    "severityText": text,
                    "eventName": format!("spawn.{}", e.event_type),
                    "body": {"stringValue": item.json_line(format)},
                    "attributes": attrs,
                });
                if let Some(bits) = e
                    .trace_id
                    .as_deref()
                    .and_then(|t| spawn_audit::parse_id("tr", t))
                {
                    r["traceId"] = json!(hex(&bits));
                }
                r
            }
            Item::Checkpoint { size, note } => json!({
                "timeUnixNano": observed,
                "observedTimeUnixNano": observed,
                "severityNumber": 9,
                "severityText": "INFO",
                "eventName": format!("spawn.{CHECKPOINT_KIND}"),
                "body": {"stringValue": note},
                "attributes": [attr_int("spawn.checkpoint.size", *size)],
            }),
        })
        .collect();
    json!({
        "resourceLogs": [{
            "resource": {"attributes": [attr_str("service.name", "spawn")]},
            "scopeLogs": [{
                "scope": {"name": "spawn.audit"},
                "logRecords": records,
            }],
        }],
    })
    .to_string()
    .into_bytes()
}
