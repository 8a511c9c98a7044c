//! The webhook sink against a receiver that refuses connections, then answers 500, then
//! takes everything: at least once, in order, the cursor kept, a restart resuming from it,
//! the CloudEvents envelope, and the header's secret nowhere but on the wire.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use spawn_audit::checkpoint::{sign_log, Signed, SigningKey};
use spawn_sinks::{cursor, Forwarders};

use super::common::{append, free_port, plans, until, Receiver, FAST};

/// Log output captured by the test's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log output of this test binary: a global subscriber, set once. (A thread's default
/// subscriber would miss events whose callsite another test's thread, without one, had
/// already registered as uninteresting.)
fn captured() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let c = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || c.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            captured
        })
        .clone()
}

/// Every event of the acknowledged batches, in order.
fn events(rx: &Receiver) -> Vec<Value> {
    rx.acked()
        .iter()
        .flat_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v.as_array().unwrap().clone()
        })
        .collect()
}

fn record_seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["type"] != "dev.spawn.audit.checkpoint")
        .map(|e| e["data"]["seq"].as_u64().unwrap())
        .collect()
}

const SECRET: &str = "Bearer wh-secret-7f3a9c1e5b2d4086";

// One runtime thread: the forwarders run on the test's thread, under its subscriber.
#[tokio::test]
async fn at_least_once_through_an_outage_and_a_restart() {
    let captured = captured();
    std::env::set_var("SPAWN_TEST_HOOK_TOKEN", SECRET);

    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let lines = append(&log_dir, 20);
    let port = free_port();
    let yaml = format!(
        "- name: hook\n  type: webhook\n  url: http://127.0.0.1:{port}/ingest?tenant=1\n  \
         source: spawnd://test\n  batchSize: 7\n  retryMaxSeconds: 1\n  \
         headers:\n    Authorization: SPAWN_TEST_HOOK_TOKEN\n"
    );
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    assert!(!format!("{fw:?}").contains("wh-secret"), "{fw:?}");

    // Down: connections refused; nothing is acknowledged, the backlog is the whole log.
    until(10, "failures while refused", || {
        fw.status()[0].failures >= 2
    })
    .await;
    let s = &fw.status()[0];
    assert_eq!((s.backlog, s.delivered, s.last_success), (20, 0, None));

    // Up, but answering 500: retried, still nothing acknowledged, the cursor unmoved.
    let rx = Receiver::start(([127, 0, 0, 1], port).into(), 500).await;
    until(10, "500s answered", || rx.got.lock().unwrap().len() >= 2).await;
    assert!(rx.acked().is_empty());
    assert_eq!(
        cursor::load(&cursor::path_of(&log_dir, "hook"))
            .unwrap()
            .seq,
        0
    );

    // Back: everything arrives, in order, each once per acknowledged batch.
    *rx.status.lock().unwrap() = 200;
    until(20, "the backlog delivered", || fw.status()[0].backlog == 0).await;
    let evs = events(&rx);
    assert_eq!(record_seqs(&evs), (1..=20).collect::<Vec<_>>());
    assert_eq!(fw.status()[0].delivered, 20);
    assert!(fw.status()[0].last_success.is_some());
    for r in rx.got.lock().unwrap().iter() {
        assert_eq!(r.path, "/ingest");
        assert_eq!(r.headers["authorization"], SECRET);
        assert_eq!(
            r.headers["content-type"],
            "application/cloudevents-batch+json"
        );
    }
    // The envelope, and `data` byte for byte the stored line.
    let bodies: String = rx
        .acked()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    for (line, ev) in lines.iter().zip(&evs) {
        let rec: Value = serde_json::from_str(line).unwrap();
        assert!(bodies.contains(&format!("\"data\":{line}}}")), "{line}");
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["id"], rec["hash"]);
        assert_eq!(ev["source"], "spawnd://test");
        assert_eq!(
            ev["type"],
            format!("dev.spawn.{}", rec["eventType"].as_str().unwrap())
        );
        assert_eq!(ev["time"], rec["timestamp"]);
        assert_eq!(ev["datacontenttype"], "application/json");
        assert_eq!(ev["data"], rec);
    }
    let c = cursor::load(&cursor::path_of(&log_dir, "hook")).unwrap();
    assert_eq!(c.seq, 20);

    // A signed checkpoint follows its records, as a distinct kind.
    let key = SigningKey::generate("spawn.audit/test").unwrap();
    let Signed::Kept { note, .. } =
        sign_log(&log_dir.join(spawn_audit::LOG_FILE_NAME), &key).unwrap()
    else {
        panic!("no checkpoint signed");
    };
    until(10, "the checkpoint forwarded", || {
        events(&rx)
            .iter()
            .any(|e| e["type"] == "dev.spawn.audit.checkpoint")
    })
    .await;
    let cp = events(&rx)
        .into_iter()
        .find(|e| e["type"] == "dev.spawn.audit.checkpoint")
        .unwrap();
    assert_eq!(cp["data"], note.as_str());
    assert_eq!(cp["id"], "checkpoint-20");
    assert_eq!(cp["datacontenttype"], "text/plain");
    until(5, "the checkpoint in the cursor", || {
        cursor::load(&cursor::path_of(&log_dir, "hook"))
            .unwrap()
            .checkpoint
            == 20
    })
    .await;

    // Restarted: resumes after the cursor — nothing lost, nothing sent again.
    fw.shutdown(Duration::from_secs(5)).await;
    let before = events(&rx).len();
    append(&log_dir, 10);
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(20, "the new records delivered", || {
        fw.status()[0].backlog == 0 && events(&rx).len() >= before + 10
    })
    .await;
    assert_eq!(
        record_seqs(&events(&rx)[before..]),
        (21..=30).collect::<Vec<_>>()
    );
    fw.shutdown(Duration::from_secs(5)).await;
    rx.stop();

    // The secret was on the wire only: not in the log output, which did record the failures.
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("answered 500"), "{logs}");
    assert!(logs.contains("sink=hook"), "{logs}");
    assert!(!logs.contains("wh-secret"), "{logs}");
}

#[tokio::test]
async fn a_missing_header_variable_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "- name: hook\n  type: webhook\n  url: http://127.0.0.1:9/x\n  \
                headers:\n    X-Token: SPAWN_TEST_UNSET_VARIABLE\n";
    let err = Forwarders::start(dir.path(), plans(yaml, dir.path()), FAST).unwrap_err();
    assert_eq!(
        err.to_string(),
        "audit sink hook: environment variable SPAWN_TEST_UNSET_VARIABLE (header X-Token) is not set"
    );
}
