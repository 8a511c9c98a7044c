//! Two `spawnd` on one PostgreSQL are one control plane: 200 runs submitted through both
//! are each executed at most once, and one daemon SIGKILLed mid-way stops little: the
//! supervisors it started carry on, the other daemon claims the rest, and what it had
//! claimed without starting yet is marked interrupted, never run twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../spawn-store/tests/common/mod.rs"]
mod pg;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Daemon;
use reqwest::Client;
use serde_json::Value;

const RUNS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_on_one_postgres_run_each_run_exactly_once() {
    let url = pg::postgres_url().await;
    let mut a = Daemon::start(Some(url.clone()));
    let b = Daemon::start_with(Some(url.clone()), Some(&a.admin.clone()));
    let c = Client::new();
    let mut ids = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        // Half through each daemon; A is killed once half the runs are in.
        if i == RUNS / 2 {
            a.child.kill().unwrap();
            a.child.wait().unwrap();
        }
        let via = if i % 2 == 0 && i < RUNS / 2 { &a } else { &b };
        let res = c
            .post(via.url("/v1/namespaces/load/runs"))
            .header("x-api-key", &a.admin)
            .json(&serde_json::json!({"command": ["true"], "runtime": "native"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "run {i}");
        ids.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Every run ends, through the daemon left.
    let until = Instant::now() + Duration::from_secs(240);
    let mut states: HashMap<String, String> = HashMap::new();
    loop {
        states.clear();
        let mut after: Option<String> = None;
        loop {
            let mut u = b.url("/v1/namespaces/load/runs?limit=500");
            if let Some(a) = &after {
                u.push_str(&format!("&after={a}"));
            }
            let page: Value = c
                .get(u)
                .header("x-api-key", &b.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for r in page["items"].as_array().unwrap() {
                states.insert(
                    r["id"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                );
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        let open = states
            .values()
            .filter(|s| *s == "queued" || *s == "running")
            .count();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < until, "{open} runs still open: {states:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(states.len(), RUNS);
    let mut by_state: HashMap<&str, usize> = HashMap::new();
    for s in states.values() {
        *by_state.entry(s.as_str()).or_default() += 1;
    }
    // A killed daemon's supervisors are not its children: what it had started finishes.
    // What it had claimed but not yet started is marked interrupted once its lease lapses
    // (never run by the other daemon: a run has side effects). Nothing else.
    let succeeded = by_state.get("succeeded").copied().unwrap_or(0);
    let interrupted = by_state.get("interrupted").copied().unwrap_or(0);
    assert_eq!(succeeded + interrupted, RUNS, "{by_state:?}");
    assert!(
        interrupted <= 8,
        "more than one claim batch lost: {by_state:?}"
    );
    // Each run started at most once (one agent.start with its trace id, in either log),
    // each that succeeded exactly once.
    let logs = format!("{}{}", a.audit(), b.audit());
    let mut starts: HashMap<String, usize> = HashMap::new();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        // The sandbox's start (the API's is the run's queueing, by its caller).
        if v["eventType"] == "agent.start" && v["resource"]["type"] == "sandbox" {
            *starts
                .entry(v["traceId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    for id in &ids {
        let n = starts.get(id).copied().unwrap_or(0);
        if states[id] == "succeeded" {
            assert_eq!(n, 1, "run {id} succeeded after {n} starts");
        } else {
            assert!(n <= 1, "run {id} started {n} times");
        }
    }
    // Both daemons ran some (a run's sandbox started in its log; the API's record of the
    // run's queueing is in the log of the daemon that was asked).
    let ran = |log: String| -> std::collections::HashSet<String> {
        log.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["eventType"] == "agent.start" && v["resource"]["type"] == "sandbox")
            .map(|v| v["traceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let (ran_a, ran_b) = (ran(a.audit()), ran(b.audit()));
    let (in_a, in_b) = (
        ids.iter().filter(|id| ran_a.contains(id.as_str())).count(),
        ids.iter().filter(|id| ran_b.contains(id.as_str())).count(),
    );
    assert!(in_a > 0 && in_b > 0, "runs by daemon: {in_a} and {in_b}");
    assert!(in_a + in_b <= RUNS && in_a + in_b >= succeeded);

    // The database holds both daemons' audit logs, each its own chain: the daemon left
    // names them and checks each (its own against its checkpoints too).
    let auditor = b.key_for("aud", "auditor", "*", false).await;
    let get = |path: String| c.get(b.url(&path)).header("x-api-key", &auditor).send();
    let logs: Value = get("/v1/audit/logs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{logs}");
    assert!(names.contains(&logs["this"].as_str().unwrap()), "{logs}");
    for name in names {
        let v: Value = get(format!("/v1/audit/verify?log={name}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["intact"], true, "{name}: {v}");
        assert!(v["records"].as_u64().unwrap() > 0, "{name}: {v}");
    }
}
