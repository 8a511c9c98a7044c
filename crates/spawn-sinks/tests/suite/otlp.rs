//! The OTLP sink against a receiver that checks the OTLP/JSON shape of what it takes.

use std::time::Duration;

use serde_json::Value;
use spawn_sinks::Forwarders;

use super::common::{append, plans, until, Receiver, FAST};

#[tokio::test]
async fn logs_follow_otlp_json() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let lines = append(&log_dir, 6);
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), 200).await;
    let yaml = format!(
        "- name: otel\n  type: otlp\n  endpoint: http://{}/\n  format: spawn\n",
        rx.addr
    );
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(10, "the logs delivered", || fw.status()[0].backlog == 0).await;
    fw.shutdown(Duration::from_secs(5)).await;
    let got = rx.acked();
    assert!(!got.is_empty());
    let mut records = Vec::new();
    for r in &got {
        assert_eq!(r.path, "/v1/logs");
        assert_eq!(r.headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let rl = &v["resourceLogs"][0];
        assert_eq!(
            rl["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "spawn"}})
        );
        let sl = &rl["scopeLogs"][0];
        assert_eq!(sl["scope"]["name"], "spawn.audit");
        records.extend(sl["logRecords"].as_array().unwrap().clone());
    }
    assert_eq!(records.len(), lines.len());
    for (line, lr) in lines.iter().zip(&records) {
        let rec: Value = serde_json::from_str(line).unwrap();
        // int64 as a decimal string; the timestamp's nanoseconds.
        let t = lr["timeUnixNano"].as_str().unwrap();
        assert!(
            t.len() >= 19 && t.bytes().all(|b| b.is_ascii_digit()),
            "{t}"
        );
        let ts = time::OffsetDateTime::parse(
            rec["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(t, ts.unix_timestamp_nanos().to_string());
        assert!(lr["observedTimeUnixNano"].as_str().is_some());
        let (num, text) = match rec["outcome"].as_str().unwrap() {
            "success" => (9, "INFO"),
            "denied" => (13, "WARN"),
            _ => (17, "ERROR"),
        };
        assert_eq!(lr["severityNumber"], num);
        assert_eq!(lr["severityText"], text);
        assert_eq!(lr["body"]["stringValue"], line.as_str());
        let attr = |k: &str| {
            lr["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
                .unwrap_or_else(|| panic!("no attribute {k}"))
        };
        assert_eq!(
            attr("spawn.seq"),
            serde_json::json!({"intValue": rec["seq"].to_string()})
        );
        assert_eq!(attr("spawn.event_type")["stringValue"], rec["eventType"]);
        assert_eq!(attr("spawn.hash")["stringValue"], rec["hash"]);
        let trace = rec["traceId"].as_str().unwrap();
        assert_eq!(attr("spawn.trace_id")["stringValue"], trace);
        // The run id's 128 bits as the trace id (what `spawn trace export` gives the run).
        let bits = spawn_audit::parse_id("tr", trace).unwrap();
        let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lr["traceId"], hex);
        assert_eq!(lr["traceId"].as_str().unwrap().len(), 32);
    }
}
