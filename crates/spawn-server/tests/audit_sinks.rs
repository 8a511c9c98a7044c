//! The audit sinks of a real `spawnd`: the events of API actions reach a webhook, and at
//! shutdown so does the last checkpoint; a dead sink (one that never answers, one that
//! refuses) neither slows nor blocks the API, and its backlog shows in `/metrics`.

// The receiver and helpers are test code outside `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, AGENT};
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use serde_json::Value;

const LIMITS: &str = "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n";

/// A webhook receiver on loopback answering 200; the CloudEvents it took, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let g = g.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
                        g.lock().unwrap().extend(batch);
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}

async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn records(d: &Daemon) -> Vec<Value> {
    d.audit()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_events_and_the_shutdown_checkpoint_reach_a_webhook() {
    let (addr, got) = receiver().await;
    let mut d = Daemon::start_full(
        None,
        None,
        LIMITS,
        &format!(
            "audit:\n  sinks:\n    - name: hook\n      type: webhook\n      \
             url: http://{addr}/events\n      source: spawnd://test\n"
        ),
    );
    let c = reqwest::Client::new();
    let res = c
        .put(d.url("/v1/namespaces/team/agents/bot"))
        .header("x-api-key", &d.admin)
        .body(AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = c
        .get(d.url("/v1/namespaces/team/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    until(20, "the agent's creation forwarded", || {
        got.lock().unwrap().iter().any(|e| {
            e["type"] == "dev.spawn.agent.create" && e["data"]["resource"]["name"] == "team/bot"
        })
    })
    .await;
    // Stopped: the shutdown checkpoint (over every record) is forwarded before it exits.
    common::stop(&mut d.child);
    let log = records(&d);
    let events = got.lock().unwrap().clone();
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] != "dev.spawn.audit.checkpoint")
        .map(|e| e["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    for (e, rec) in events.iter().zip(&log) {
        assert_eq!(&e["data"], rec);
        assert_eq!(e["id"], rec["hash"]);
    }
    assert!(log
        .iter()
        .any(|r| r["eventType"] == "auth.failure" && r["outcome"] == "denied"));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "dev.spawn.audit.checkpoint");
    assert_eq!(last["id"], format!("checkpoint-{}", log.len()));
    let notes = spawn_audit::checkpoint::notes(&d.home.join("audit")).unwrap();
    assert_eq!(last["data"], notes.last().unwrap().1.as_str());
    let cursor = std::fs::read_to_string(d.home.join("audit/sinks/hook.cursor")).unwrap();
    let cursor: Value = serde_json::from_str(&cursor).unwrap();
    assert_eq!(cursor["seq"], log.len() as u64);
    assert_eq!(cursor["checkpoint"], log.len() as u64);
}

/// The value of series `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_neither_slows_nor_blocks_the_api() {
    // One sink that takes connections and never answers; one that refuses them.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = hole.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut d = Daemon::start_full(
        None,
        None,
        LIMITS,
        &format!(
            "audit:\n  sinks:\n    - name: hole\n      type: webhook\n      \
             url: http://{hole_addr}/\n      timeoutSeconds: 60\n    \
             - name: refused\n      type: syslog\n      transport: tcp\n      \
             address: {refused}\n"
        ),
    );
    let c = reqwest::Client::new();
    for i in 0..30 {
        let started = Instant::now();
        let res = c
            .get(d.url("/v1/namespaces/team/agents"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "request {i} took {took:?}");
    }
    let res = c
        .put(d.url("/v1/namespaces/team/agents/bot"))
        .header("x-api-key", &d.admin)
        .body(AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "an API action succeeds while the sinks are down"
    );
    let total = records(&d).len() as f64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = c
            .get(d.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&text, "spawn_audit_sink_failures_total{sink=\"refused\"}") >= Some(2.0)
            && !held.lock().unwrap().is_empty()
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no failures counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for sink in ["hole", "refused"] {
        assert_eq!(
            metric(
                &text,
                &format!("spawn_audit_sink_backlog{{sink=\"{sink}\"}}")
            ),
            Some(total),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                &format!("spawn_audit_sink_delivered_total{{sink=\"{sink}\"}}")
            ),
            Some(0.0)
        );
    }
    assert!(!text.contains("spawn_audit_sink_last_success_timestamp_seconds{"));
    // Stopping waits for the sinks a bounded time only.
    let started = Instant::now();
    common::stop(&mut d.child);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(!d.home.join("audit/sinks/hole.cursor").exists());
}

#[test]
fn a_sink_whose_header_variable_is_unset_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = common::refused(
        dir.path(),
        "audit:\n  sinks:\n    - {name: hook, type: webhook, url: 'http://127.0.0.1:9/', \
         headers: {Authorization: SPAWND_TEST_UNSET_TOKEN}}\n",
    );
    assert!(
        err.contains("environment variable SPAWND_TEST_UNSET_TOKEN (header Authorization)"),
        "{err}"
    );
}
