//! A run as a trace (`spawn trace export`): its records (those with its `traceId`), in
//! order, as steps with their time from the run's first event — as JSON, or as an
//! OpenTelemetry (OTLP/JSON) trace: a root span for the run and a span per step.

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::chain::hex;

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub seq: u64,
    pub timestamp: String,
    /// Milliseconds since the run's first event.
    pub offset_ms: i64,
    pub event_type: String,
    pub action: String,
    pub outcome: String,
    pub resource: Value,
    pub details: Value,
    /// The record's chain hash (which record this step is).
    pub hash: String,
}

/// A run's steps.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub trace_id: String,
    pub principal: Value,
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: i64,
    pub steps: Vec<Step>,
}

/// Unix time in nanoseconds of a log timestamp.
fn unix_nanos(ts: &str) -> Option<i128> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp_nanos)
}

/// The trace `trace_id` from `records` (any order; only that trace's are taken, by seq);
/// `None` if it has none.
pub fn of<'a>(trace_id: &str, records: impl IntoIterator<Item = &'a Value>) -> Option<Trace> {
    let mut mine: Vec<&Value> = records
        .into_iter()
        .filter(|r| r["traceId"] == trace_id)
        .collect();
    mine.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
    let first = mine.first()?;
    let last = mine.last()?;
    let t0 = unix_nanos(first["timestamp"].as_str().unwrap_or(""))?;
    let ms = |r: &Value| {
        unix_nanos(r["timestamp"].as_str().unwrap_or("")).map_or(0, |t| {
            i64::try_from((t - t0) / 1_000_000).unwrap_or(i64::MAX)
        })
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    Some(Trace {
        trace_id: trace_id.to_owned(),
        principal: first["principal"].clone(),
        started_at: s(&first["timestamp"]),
        ended_at: s(&last["timestamp"]),
        duration_ms: ms(last),
        steps: mine
            .iter()
            .map(|r| Step {
                seq: r["seq"].as_u64().unwrap_or(0),
                timestamp: s(&r["timestamp"]),
                offset_ms: ms(r),
                event_type: s(&r["eventType"]),
                action: s(&r["action"]),
                outcome: s(&r["outcome"]),
                resource: r["resource"].clone(),
                details: r["details"].clone(),
                hash: s(&r["hash"]),
            })
            .collect(),
    })
}

/// A span id: 8 bytes of SHA-256 over `what`, never all zero.
fn span_id(what: &str) -> String {
    let d = Sha256::digest(what.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    hex(&id)
}

fn attr(key: &str, value: &Value) -> Value {
    let v = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": v})
}

impl Trace {
    /// The trace as an OTLP/JSON `ExportTraceServiceRequest`: the trace id is the run id's
    /// 128 bits (`None` if the id is not one spawn made), a root span `spawn.run` from the
    /// first event to the last, and a child span per step, from it to the next step.
    pub fn to_otlp(&self) -> Option<Value> {
        let bits = crate::parse_id("tr", &self.trace_id)?;
        let trace_id = hex(&bits);
        let nanos = |ts: &str| unix_nanos(ts).map_or_else(String::new, |n| n.to_string());
        let root = span_id(&self.trace_id);
        let mut spans = vec![json!({
            "traceId": trace_id,
            "spanId": root,
            "name": "spawn.run",
            "kind": 1,
            "startTimeUnixNano": nanos(&self.started_at),
            "endTimeUnixNano": nanos(&self.ended_at),
            "attributes": [
                attr("spawn.trace_id", &json!(self.trace_id)),
                attr("spawn.principal.type", &self.principal["type"]),
                attr("spawn.principal.id", &self.principal["id"]),
                attr("spawn.principal.name", &self.principal["name"]),
            ],
        })];
        for (i, s) in self.steps.iter().enumerate() {
            let end = self.steps.get(i + 1).map_or(&s.timestamp, |n| &n.timestamp);
            let mut attributes = vec![
                attr("spawn.seq", &json!(s.seq)),
                attr("spawn.event_type", &json!(s.event_type)),
                attr("spawn.action", &json!(s.action)),
                attr("spawn.outcome", &json!(s.outcome)),
                attr("spawn.resource.type", &s.resource["type"]),
                attr("spawn.resource.name", &s.resource["name"]),
                attr("spawn.hash", &json!(s.hash)),
            ];
            // Model and tool calls follow OpenTelemetry's GenAI conventions: their
            // `gen_ai.*` fields are the span's own attributes, the span is named
            // `{operation} {model or tool}`, and it spans the call (it is recorded at its
            // end, with its duration).
            let genai = s
                .details
                .get("gen_ai.operation.name")
                .and_then(Value::as_str);
            if let Value::Object(d) = &s.details {
                for (k, v) in d {
                    if k.starts_with("gen_ai.") || k == "error.type" {
                        attributes.push(attr(k, v));
                    } else {
                        attributes.push(attr(&format!("spawn.details.{k}"), v));
                    }
                }
            }
            let (name, kind, start, end) = match genai {
                Some(op) => {
                    let target = s.details["gen_ai.request.model"]
                        .as_str()
                        .or(s.details["gen_ai.tool.name"].as_str())
                        .unwrap_or("");
                    let end_ns = unix_nanos(&s.timestamp);
                    let dur = s.details["durationMs"].as_f64().unwrap_or(0.0);
                    #[allow(clippy::cast_possible_truncation)]
                    let start_ns = end_ns.map(|e| e - (dur * 1e6) as i128);
                    (
                        format!("{op} {target}"),
                        if op == "execute_tool" { 1 } else { 3 },
                        start_ns.map_or_else(String::new, |n| n.to_string()),
                        end_ns.map_or_else(String::new, |n| n.to_string()),
                    )
                }
                None => (
                    format!(
                        "{} {}",
                        s.event_type,
                        s.resource["name"].as_str().unwrap_or("")
                    ),
                    1,
                    nanos(&s.timestamp),
                    nanos(end),
                ),
            };
            let status = match s.outcome.as_str() {
                "denied" | "error" => json!({"code": 2, "message": s.outcome}),
                _ => json!({"code": 0}),
            };
            spans.push(json!({
                "traceId": trace_id,
                "spanId": span_id(&format!("{}#{}", self.trace_id, s.seq)),
                "parentSpanId": root,
                "name": name,
                "kind": kind,
                "startTimeUnixNano": start,
                "endTimeUnixNano": end,
                "attributes": attributes,
                "status": status,
            }));
        }
        Some(json!({
            "resourceSpans": [{
                "resource": {"attributes": [attr("service.name", &json!("spawn"))]},
                "scopeSpans": [{
                    "scope": {"name": "spawn-audit", "version": env!("CARGO_PKG_VERSION")},
                    "spans": spans,
                }],
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, trace: &str, ts: &str, t: &str, outcome: &str) -> Value {
        json!({"seq": seq, "timestamp": ts, "eventType": t, "traceId": trace,
               "principal": {"type": "agent", "id": "ag_x", "name": "run"},
               "resource": {"type": "sandbox", "name": "native"}, "action": "a",
               "outcome": outcome, "details": {"n": 1, "s": "x", "f": 0.5},
               "hash": format!("sha256:{seq:064}")})
    }

    #[test]
    fn a_trace_is_its_records_in_order_with_offsets() {
        let tr = crate::format_id("tr", &[7; 16]);
        let records = [
            rec(5, &tr, "2026-01-01T00:00:00.250Z", "agent.stop", "success"),
            rec(3, &tr, "2026-01-01T00:00:00.000Z", "agent.start", "success"),
            rec(
                4,
                "tr_other",
                "2026-01-01T00:00:00.100Z",
                "agent.start",
                "success",
            ),
            rec(
                4,
                &tr,
                "2026-01-01T00:00:00.010Z",
                "agent.capability.denied",
                "denied",
            ),
        ];
        let t = of(&tr, &records).unwrap();
        assert_eq!(t.steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(
            t.steps.iter().map(|s| s.offset_ms).collect::<Vec<_>>(),
            [0, 10, 250]
        );
        assert_eq!(t.duration_ms, 250);
        assert!(of("tr_none", &records).is_none());

        let o = t.to_otlp().unwrap();
        let spans = o["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap();
        assert_eq!(spans.len(), 4);
        let trace_hex = "07".repeat(16);
        assert!(spans.iter().all(|s| s["traceId"] == trace_hex.as_str()));
        let root = spans[0]["spanId"].as_str().unwrap();
        assert_eq!(root.len(), 16);
        assert!(spans[1..].iter().all(|s| s["parentSpanId"] == root));
        assert_eq!(spans[2]["status"]["code"], 2);
        assert_eq!(spans[0]["startTimeUnixNano"], "1767225600000000000");
        assert_eq!(spans[0]["endTimeUnixNano"], "1767225600250000000");
        assert_eq!(spans[1]["endTimeUnixNano"], spans[2]["startTimeUnixNano"]);
        let ids: std::collections::HashSet<&str> = spans
            .iter()
            .map(|s| s["spanId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 4, "span ids are distinct");
        // A trace id spawn did not make has no OTLP form.
        let odd = of("tr_other", &records).unwrap();
        assert!(odd.to_otlp().is_none());
    }

    /// A model call is a GenAI span: named `chat MODEL`, kind CLIENT, spanning the call
    /// (recorded at its end with its duration), its `gen_ai.*` fields as attributes.
    #[test]
    fn model_and_tool_calls_are_genai_spans() {
        let tr = crate::format_id("tr", &[9; 16]);
        let mut call = rec(
            2,
            &tr,
            "2026-01-01T00:00:01.000Z",
            "agent.capability.invoke",
            "success",
        );
        call["details"] = json!({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1",
                                 "gen_ai.usage.input_tokens": 11, "durationMs": 250.0});
        let mut tool = rec(
            3,
            &tr,
            "2026-01-01T00:00:02.000Z",
            "agent.tool.invoke",
            "success",
        );
        tool["details"] = json!({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "exec",
                                 "durationMs": 10.0});
        let records = [
            rec(1, &tr, "2026-01-01T00:00:00.000Z", "agent.start", "success"),
            call,
            tool,
        ];
        let o = of(&tr, &records).unwrap().to_otlp().unwrap();
        let spans = o["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(spans[2]["name"], "chat m-1");
        assert_eq!(spans[2]["kind"], 3);
        assert_eq!(spans[2]["startTimeUnixNano"], "1767225600750000000");
        assert_eq!(spans[2]["endTimeUnixNano"], "1767225601000000000");
        let keys: Vec<&str> = spans[2]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["key"].as_str().unwrap())
            .collect();
        assert!(
            keys.contains(&"gen_ai.usage.input_tokens") && keys.contains(&"gen_ai.request.model"),
            "{keys:?}"
        );
        assert!(keys.contains(&"spawn.details.durationMs"), "{keys:?}");
        assert_eq!(spans[3]["name"], "execute_tool exec");
        assert_eq!(spans[3]["kind"], 1);
    }
}
