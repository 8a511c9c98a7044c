//! Abuse limits against a real `spawnd`: a principal's rate (429 with Retry-After, then
//! allowed again), and the lock-out of an address that keeps presenting invalid keys (each
//! attempt an `auth.failure`; valid keys from it refused too while it lasts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Daemon;
use reqwest::{Client, StatusCode};
use serde_json::Value;

async fn whoami(c: &Client, d: &Daemon, key: &str) -> reqwest::Response {
    c.get(d.url("/v1/whoami"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_principal_beyond_its_rate_waits_and_is_served_again() {
    let d = Daemon::start_limits(None, None, "  requestsPerSecond: 2\n  burst: 5\n");
    let c = Client::new();
    for i in 0..5 {
        assert_eq!(whoami(&c, &d, &d.admin).await.status(), 200, "request {i}");
    }
    let res = whoami(&c, &d, &d.admin).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&res);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Health is not rate-limited; another principal is not affected.
    assert_eq!(c.get(d.url("/healthz")).send().await.unwrap().status(), 200);
    let other = d.key_for("other", "viewer", "team", false).await;
    assert_eq!(whoami(&c, &d, &other).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(whoami(&c, &d, &d.admin).await.status(), 200);
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_locked_out_for_a_while() {
    let d = Daemon::start_limits(
        None,
        None,
        "  authFailures: 3\n  authFailureWindowSeconds: 60\n  lockoutSeconds: 2\n",
    );
    let c = Client::new();
    let bad = "spawn_sk_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for _ in 0..3 {
        assert_eq!(whoami(&c, &d, bad).await.status(), 401);
    }
    // Locked out: even the valid key, from this address.
    let res = whoami(&c, &d, &d.admin).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&res);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let log = std::fs::read_to_string(d.home.join("audit/audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"auth.failure\"").count(), 4, "{log}");
    assert!(log.contains("locked out"));
    assert!(!log.contains(&d.admin[14..]), "a key reached the audit log");
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    assert_eq!(whoami(&c, &d, &d.admin).await.status(), 200);
}
