//! `format: ocsf`: a record as an OCSF 1.1 event (the mapping table is in the README).
//!
//! The record itself travels in `raw_data` (the stored line, byte for byte, so its chain
//! fields stay verifiable) and its fields OCSF has no place for in `unmapped`.

use serde_json::{json, Map, Value};

use crate::source::Entry;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// An OCSF class: (category_uid, class_uid, class name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub category: u32,
    pub uid: u32,
    pub name: &'static str,
}

const AUTHENTICATION: Class = Class {
    category: 3,
    uid: 3002,
    name: "Authentication",
};
const NETWORK_ACTIVITY: Class = Class {
    category: 4,
    uid: 4001,
    name: "Network Activity",
};
const PROCESS_ACTIVITY: Class = Class {
    category: 1,
    uid: 1007,
    name: "Process Activity",
};
const API_ACTIVITY: Class = Class {
    category: 6,
    uid: 6003,
    name: "API Activity",
};

/// The class and activity (`activity_id`, its name) of an event type and action.
pub fn classify(event_type: &str, action: &str, outcome: &str) -> (Class, u32, &'static str) {
    match event_type {
        "auth.login" | "auth.failure" => (AUTHENTICATION, 1, "Logon"),
        "auth.logout" => (AUTHENTICATION, 2, "Logoff"),
        "agent.net.connect" if outcome == "denied" => (NETWORK_ACTIVITY, 5, "Refuse"),
        "agent.net.connect" => (NETWORK_ACTIVITY, 1, "Open"),
        "agent.start" => (PROCESS_ACTIVITY, 1, "Launch"),
        "agent.stop" => (PROCESS_ACTIVITY, 2, "Terminate"),
        "agent.create" => (API_ACTIVITY, 1, "Create"),
        "agent.delete" => (API_ACTIVITY, 4, "Delete"),
        _ => match action {
            "create" => (API_ACTIVITY, 1, "Create"),
            "read" | "get" | "list" => (API_ACTIVITY, 2, "Read"),
            "update" => (API_ACTIVITY, 3, "Update"),
            "delete" => (API_ACTIVITY, 4, "Delete"),
            _ => (API_ACTIVITY, 99, "Other"),
        },
    }
}

/// The OCSF event of a record, as one line of JSON.
pub fn event(entry: &Entry) -> String {
    let rec: Map<String, Value> = serde_json::from_str(&entry.line).unwrap_or_default();
    let s = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or_default();
    let action = s("action");
    let (class, activity, activity_name) = classify(&entry.event_type, action, &entry.outcome);
    let (status_id, status) = match entry.outcome.as_str() {
        "success" => (1, "Success"),
        "denied" | "error" => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    let (severity_id, severity) = if entry.event_type == "sandbox.escape.attempt" {
        (5, "Critical")
    } else {
        match entry.outcome.as_str() {
            "success" => (1, "Informational"),
            "denied" => (3, "Medium"),
            "error" => (4, "High"),
            _ => (0, "Unknown"),
        }
    };
    let principal = rec.get("principal").cloned().unwrap_or(Value::Null);
    let p = |k: &str| principal.get(k).and_then(Value::as_str);
    let mut user = Map::new();
    if let Some(name) = p("name").or(p("id")) {
        user.insert("name".into(), json!(name));
    }
    if let Some(id) = p("id") {
        user.insert("uid".into(), json!(id));
    }
    if let Some(kind) = p("type") {
        user.insert("type".into(), json!(kind));
    }
    let time_ms = time::OffsetDateTime::parse(
        &entry.timestamp,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
    .unwrap_or(0);
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "spawn", "vendor_name": "spawn"},
        "original_time": entry.timestamp,
        "sequence": entry.seq,
        "log_name": "audit",
    });
    if let Some(h) = &entry.hash {
        metadata["uid"] = json!(h);
    }
    if let Some(t) = &entry.trace_id {
        metadata["correlation_uid"] = json!(t);
    }
    let mut ev = json!({
        "category_uid": class.category,
        "class_uid": class.uid,
        "class_name": class.name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": u64::from(class.uid) * 100 + u64::from(activity),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": time_ms,
        "message": format!("{} {} {}", entry.event_type, action, entry.outcome),
        "metadata": metadata,
        "actor": {"user": Value::Object(user.clone())},
        "raw_data": entry.line,
    });
    if let Some(ip) = rec.get("sourceIP").and_then(Value::as_str) {
        ev["src_endpoint"] = json!({"ip": ip});
    }
    let resource = rec.get("resource").cloned().unwrap_or(Value::Null);
    match class.uid {
        3002 => {
            ev["user"] = Value::Object(user);
        }
        4001 => {
            let name = resource.get("name").and_then(Value::as_str).unwrap_or("");
            let mut dst = Map::new();
            match name.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some((host, Ok(port))) => {
                    dst.insert("hostname".into(), json!(host));
                    dst.insert("port".into(), json!(port));
                }
                _ => {
                    dst.insert("hostname".into(), json!(name));
                }
            }
            ev["dst_endpoint"] = Value::Object(dst);
        }
        1007 => {
            let mut process = json!({"name": resource.get("name").cloned().unwrap_or(Value::Null)});
            if let Some(t) = &entry.trace_id {
                process["uid"] = json!(t);
            }
            ev["process"] = process;
        }
        _ => {
            let mut api = json!({"operation": action});
            if let Some(r) = &entry.request_id {
                api["request"] = json!({"uid": r});
            }
            ev["api"] = api;
            ev["resources"] = json!([{
                "type": resource.get("type").cloned().unwrap_or(Value::Null),
                "name": resource.get("name").cloned().unwrap_or(Value::Null),
            }]);
        }
    }
    // What OCSF has no field for, under the record's own names.
    let mut unmapped = Map::new();
    for k in [
        "eventType",
        "action",
        "resource",
        "details",
        "requestId",
        "traceId",
    ] {
        if let Some(v) = rec.get(k) {
            unmapped.insert(k.into(), v.clone());
        }
    }
    ev["unmapped"] = Value::Object(unmapped);
    ev.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry {
        let v: Value = serde_json::from_str(line).unwrap();
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        Entry {
            seq: v["seq"].as_u64().unwrap(),
            line: line.to_owned(),
            event_type: s("eventType").unwrap_or_default(),
            outcome: s("outcome").unwrap_or_default(),
            timestamp: s("timestamp").unwrap_or_default(),
            hash: s("hash"),
            trace_id: s("traceId"),
            request_id: s("requestId"),
        }
    }

    #[test]
    fn classes_by_event_type() {
        for (t, action, outcome, class, activity) in [
            ("auth.login", "login", "success", 3002, 1),
            ("auth.failure", "authenticate", "denied", 3002, 1),
            ("auth.logout", "logout", "success", 3002, 2),
            ("agent.net.connect", "connect", "success", 4001, 1),
            ("agent.net.connect", "connect", "denied", 4001, 5),
            ("agent.start", "start", "success", 1007, 1),
            ("agent.stop", "stop", "success", 1007, 2),
            ("agent.create", "create", "success", 6003, 1),
            ("agent.delete", "delete", "success", 6003, 4),
            ("rbac.permission.denied", "create", "denied", 6003, 1),
            ("agent.secret.access", "read", "success", 6003, 2),
            ("policy.violation", "exec", "denied", 6003, 99),
        ] {
            let (c, a, _) = classify(t, action, outcome);
            assert_eq!((c.uid, a), (class, activity), "{t} {action}");
        }
    }

    #[test]
    fn an_event_keeps_the_record_verbatim() {
        let line = r#"{"seq":7,"timestamp":"2026-01-15T10:30:00.123Z","eventType":"agent.net.connect","principal":{"type":"agent","id":"ag_x","name":"r"},"resource":{"type":"host","name":"example.com:443"},"action":"connect","outcome":"denied","details":{"reason":"policy"},"traceId":"tr_y","prevHash":"sha256:00","hash":"sha256:ab"}"#;
        let ev: Value = serde_json::from_str(&event(&entry(line))).unwrap();
        assert_eq!(ev["raw_data"], line);
        assert_eq!(ev["class_uid"], 4001);
        assert_eq!(ev["type_uid"], 400105);
        assert_eq!(ev["time"], 1_768_473_000_123_i64);
        assert_eq!(ev["status_id"], 2);
        assert_eq!(ev["dst_endpoint"]["hostname"], "example.com");
        assert_eq!(ev["dst_endpoint"]["port"], 443);
        assert_eq!(ev["metadata"]["uid"], "sha256:ab");
        assert_eq!(ev["metadata"]["sequence"], 7);
        assert_eq!(ev["metadata"]["correlation_uid"], "tr_y");
        assert_eq!(ev["unmapped"]["details"]["reason"], "policy");
        assert_eq!(ev["actor"]["user"]["uid"], "ag_x");
    }
}
