//! The gateway served on loopback in front of a fake provider (tests/common/provider.rs),
//! with a real HTTP client: the credential swap, the run's policy, budgets under
//! concurrency, streams relayed as they come, and hostile requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::provider::{self, Provider as Fake};
use serde_json::{json, Value};
use spawn_gateway::budget::{Budget, Exhausted, Limits, Price, Which};
use spawn_gateway::errors::Provider;
use spawn_gateway::request::Policy;
use spawn_gateway::server::{CallRecord, Config, Events, Gateway, Upstream};
use spawn_gateway::token::Placeholder;
use zeroize::Zeroizing;

const REAL_KEY: &str = "sk-ant-real-KEY-never-in-the-sandbox-0123456789";

#[derive(Default)]
struct Heard {
    calls: Mutex<Vec<CallRecord>>,
    exhausted: Mutex<Vec<Exhausted>>,
}

impl Events for Heard {
    fn call(&self, record: CallRecord) {
        self.calls.lock().unwrap().push(record);
    }
    fn exhausted(&self, why: Exhausted) {
        self.exhausted.lock().unwrap().push(why);
    }
}

struct Setup {
    url: String,
    key: Zeroizing<String>,
    heard: Arc<Heard>,
    budget: Budget,
    _gateway: Gateway,
}

fn gateway(
    provider: Provider,
    model: &str,
    upstream: Upstream,
    limits: Limits,
    price: Option<Price>,
) -> Setup {
    gateway_with(provider, model, upstream, limits, price, |_| {})
}

fn gateway_with(
    provider: Provider,
    model: &str,
    upstream: Upstream,
    limits: Limits,
    price: Option<Price>,
    adjust: impl FnOnce(&mut Config),
) -> Setup {
    let (placeholder, key) = Placeholder::mint().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heard = Arc::new(Heard::default());
    let budget = Budget::new(limits);
    let mut config = Config {
        policy: Policy {
            provider,
            model: model.into(),
            any_api: false,
        },
        upstream,
        placeholder,
        budget: budget.clone(),
        price,
        peers: Vec::new(),
        tools: None,
        redactor: Some(Arc::new(
            spawn_redact::Redactor::new([("API_TOKEN", b"hunter2-secret-value".as_slice())])
                .unwrap(),
        )),
        events: heard.clone(),
        timeout: spawn_gateway::server::UPSTREAM_TIMEOUT,
    };
    adjust(&mut config);
    let g = Gateway::serve(listener, config).unwrap();
    Setup {
        url,
        key,
        heard,
        budget,
        _gateway: g,
    }
}

fn to(fake: &Fake) -> Upstream {
    Upstream::Http {
        base: fake.base(),
        credential: Zeroizing::new(REAL_KEY.to_owned()),
    }
}

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "say hunter2-secret-value"}]})
}

/// Waits (2 s at most) until `done` holds: a relayed answer is recorded as its relay ends,
/// after the client has it.
async fn until(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the gateway has recorded a call.
async fn first_call(s: &Setup) {
    until(|| !s.heard.calls.lock().unwrap().is_empty()).await;
}

/// Sends `body` to `path` with the run's key, for the answer as it streams.
async fn send(s: &Setup, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .header("x-api-key", s.key.as_str())
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post(s: &Setup, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .header("x-api-key", s.key.as_str())
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_goes_out_with_the_real_key_and_never_the_placeholder() {
    let fake = provider::start();
    let s = gateway(
        Provider::Anthropic,
        "claude-x",
        to(&fake),
        Limits::default(),
        None,
    );
    let (status, headers, body) = post(&s, "/v1/messages", &messages("claude-x", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "Hello from the fake provider.");
    assert_eq!(headers["request-id"], "req_fake_1");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.header("x-api-key"), [REAL_KEY]);
    assert!(call.header("authorization").is_empty());
    assert_eq!(call.header("anthropic-version"), ["2023-06-01"]);
    assert_eq!(call.header("accept-encoding"), ["identity"]);
    for (n, v) in &call.headers {
        assert!(!v.contains("spawn_gw_"), "the placeholder went out in {n}");
    }
    // The body as the client sent it.
    assert_eq!(
        serde_json::from_slice::<Value>(&call.body).unwrap(),
        messages("claude-x", false)
    );
    // Recorded: usage, and the content with the run's secret redacted.
    let calls = s.heard.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        c.usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((11, 5))
    );
    assert_eq!(c.counted.0, 16);
    let req = String::from_utf8_lossy(&c.request);
    assert!(
        req.contains("[REDACTED:API_TOKEN]") && !req.contains("hunter2"),
        "{req}"
    );
    assert_eq!(s.budget.used(), (16, 0, 1));

    // OpenAI's API, with the key as a Bearer token.
    let s = gateway(
        Provider::OpenAi,
        "gpt-x",
        to(&fake),
        Limits::default(),
        None,
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.url))
        .bearer_auth(s.key.as_str())
        .json(&json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fake.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.header("authorization"),
        [format!("Bearer {REAL_KEY}").as_str()]
    );
    assert!(last.header("x-api-key").is_empty());
}

/// A stream reaches the client event by event: the first event arrives while the provider
/// still holds the rest; its usage is counted at its end.
#[tokio::test(flavor = "multi_thread")]
async fn streams_are_relayed_as_they_come_and_still_counted() {
    let fake = provider::start();
    let s = gateway(
        Provider::Anthropic,
        "held",
        to(&fake),
        Limits::default(),
        None,
    );
    let mut r = send(&s, "/v1/messages?beta=true", &messages("held", true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first event came before the provider finished")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    assert!(
        s.heard.calls.lock().unwrap().is_empty(),
        "recorded before its end"
    );
    fake.state.release.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&rest).contains("message_stop"));
    // The record is made as the relay ends: wait for it.
    first_call(&s).await;
    let calls = s.heard.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0].usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((11, 5))
    );
    assert!(calls[0].stream);
    assert_eq!(s.budget.used().0, 16);

    // Every API streamed, counted.
    for (provider, path, body) in [
        (
            Provider::OpenAi,
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": []}),
        ),
        (
            Provider::OpenAi,
            "/v1/responses",
            json!({"model": "m", "stream": true, "input": "hi"}),
        ),
        (Provider::Anthropic, "/v1/messages", messages("m", true)),
    ] {
        let s = gateway(provider, "m", to(&fake), Limits::default(), None);
        let (status, _, body) = post(&s, path, &body).await;
        assert_eq!(status, 200, "{path}");
        let text = body.as_str().unwrap_or_default().to_owned();
        assert!(text.contains("data: "), "{path}: {text}");
        until(|| s.budget.used().0 > 0).await;
        assert_eq!(s.budget.used(), (16, 0, 1), "{path}");
    }
}

/// A stream the provider breaks off keeps the call's worst case in the budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_stream_keeps_its_worst_case() {
    let fake = provider::start();
    let s = gateway(
        Provider::Anthropic,
        "broken",
        to(&fake),
        Limits::default(),
        None,
    );
    let r = send(&s, "/v1/messages", &messages("broken", true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the client sees the break");
    first_call(&s).await;
    let c = s.heard.calls.lock().unwrap()[0].clone();
    assert!(c.broken.is_some() && c.usage.is_none(), "{c:?}");
    let body_len = serde_json::to_vec(&messages("broken", true)).unwrap().len() as u64;
    assert_eq!(s.budget.used().0, body_len + 100);
}

/// What the run's policy refuses, in the provider's own error shape, never forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn other_models_providers_and_keys_are_refused_in_the_providers_shape() {
    let fake = provider::start();
    let s = gateway(
        Provider::Anthropic,
        "claude-x",
        to(&fake),
        Limits::default(),
        None,
    );
    let (status, _, body) = post(&s, "/v1/messages", &messages("claude-y", false)).await;
    assert_eq!(status, 403);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("claude-x"));
    let (status, _, body) = post(
        &s,
        "/v1/chat/completions",
        &json!({"model": "claude-x", "messages": []}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "provider_not_allowed", "{body}");
    // `GET /v1/models` lists the pinned model only, answered by the gateway.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/models", s.url))
        .bearer_auth(s.key.as_str())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], "claude-x");
    // Claude Code's warm-up.
    let r = reqwest::Client::new().head(&s.url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(fake.seen().is_empty(), "nothing refused was forwarded");

    // Keys: none, the real one, another run's placeholder, two different ones, junk.
    let (_, other_key) = Placeholder::mint().unwrap();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("none", vec![]),
        ("the real key", vec![("x-api-key", REAL_KEY.into())]),
        ("another run's", vec![("x-api-key", other_key.to_string())]),
        (
            "two keys",
            vec![
                ("x-api-key", s.key.to_string()),
                ("authorization", format!("Bearer {REAL_KEY}")),
            ],
        ),
        (
            "basic",
            vec![("authorization", format!("Basic {}", s.key.as_str()))],
        ),
        (
            "twice",
            vec![
                ("x-api-key", s.key.to_string()),
                ("x-api-key", s.key.to_string()),
            ],
        ),
        (
            "cut",
            vec![("x-api-key", s.key[..s.key.len() - 1].to_owned())],
        ),
    ];
    for (what, headers) in cases {
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/messages", s.url))
            .json(&messages("claude-x", false));
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "authentication_error", "{what}: {v}");
        assert!(
            !text.contains(REAL_KEY) && !text.contains("spawn_gw_"),
            "{what}: {text}"
        );
    }
    assert!(fake.seen().is_empty());
}

/// Hostile requests: each refused with a clear status, nothing forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused() {
    let fake = provider::start();
    let s = gateway(Provider::Anthropic, "m", to(&fake), Limits::default(), None);
    let client = reqwest::Client::new();
    let big = vec![b'a'; spawn_gateway::server::MAX_BODY + 1];
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/v1/messages", b"{not json".to_vec(), 400),
        ("POST", "/v1/messages", b"[]".to_vec(), 400),
        (
            "POST",
            "/v1/messages",
            br#"{"model": 7, "max_tokens": 1}"#.to_vec(),
            400,
        ),
        ("POST", "/v1/messages", br#"{"model": "m"}"#.to_vec(), 400),
        (
            "POST",
            "/v1/messages",
            br#"{"model": "m", "max_tokens": -1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/messages",
            br#"{"model": "m", "max_tokens": 1e99}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/messages",
            br#"{"model": "m", "max_tokens": 1, "stream": "yes"}"#.to_vec(),
            400,
        ),
        ("POST", "/v1/messages", big, 413),
        ("POST", "/v1/messages?beta=false", b"{}".to_vec(), 404),
        ("POST", "/v1/messages/../admin", b"{}".to_vec(), 404),
        ("POST", "/v2/messages", b"{}".to_vec(), 404),
        ("GET", "/v1/messages", Vec::new(), 404),
        ("DELETE", "/v1/models", Vec::new(), 404),
        ("POST", "//v1/messages", b"{}".to_vec(), 404),
        ("POST", "/V1/MESSAGES", b"{}".to_vec(), 404),
    ];
    for (method, path, body, want) in cases {
        let r = client
            .request(method.parse().unwrap(), format!("{}{path}", s.url))
            .header("x-api-key", s.key.as_str())
            .body(body)
            .send()
            .await;
        let status = match r {
            Ok(r) => r.status().as_u16(),
            // The server may close on a body it will not read whole.
            Err(e) if want == 413 => {
                eprintln!("{method} {path}: {e}");
                413
            }
            Err(e) => panic!("{method} {path}: {e}"),
        };
        assert_eq!(status, want, "{method} {path}");
    }
    assert!(fake.seen().is_empty());
    // The provider's own errors pass through with their advice, and cost no step.
    let (status, headers, body) = post(&s, "/v1/messages", &messages("rate-limited", false)).await;
    // (the model is not the pinned one: refused first)
    assert_eq!(status, 403, "{body}");
    drop(headers);
    let s = gateway(
        Provider::Anthropic,
        "rate-limited",
        to(&fake),
        Limits {
            steps: Some(1),
            ..Limits::default()
        },
        None,
    );
    for _ in 0..3 {
        let (status, headers, body) =
            post(&s, "/v1/messages", &messages("rate-limited", false)).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    assert_eq!(s.budget.used(), (0, 0, 0));
    // A provider that is down: 502 in the provider's shape, no key in it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let s = gateway(
        Provider::Anthropic,
        "m",
        Upstream::Http {
            base,
            credential: Zeroizing::new(REAL_KEY.into()),
        },
        Limits::default(),
        None,
    );
    let (status, _, body) = post(&s, "/v1/messages", &messages("m", false)).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["type"], "api_error");
    assert!(!body.to_string().contains(REAL_KEY));
    assert_eq!(s.budget.used(), (0, 0, 0));
}

/// 50 requests race for a budget with room for fewer: what is settled never passes a
/// limit, the refused ones get 403, and the run hears that its budget is spent.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_requests_cannot_overshoot_a_limit() {
    let fake = provider::start();
    fake.set_usage(10, 10);
    let body = messages("m", false);
    let worst = serde_json::to_vec(&body).unwrap().len() as u64 + 100;
    // Room for exactly 7 worst cases.
    let limit = worst * 7;
    let s = Arc::new(gateway(
        Provider::Anthropic,
        "m",
        to(&fake),
        Limits {
            tokens: Some(limit),
            ..Limits::default()
        },
        None,
    ));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            post(&s, "/v1/messages", &body).await.0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            403 => {}
            other => panic!("status {other}"),
        }
    }
    let (tokens, _, steps) = s.budget.used();
    assert!(tokens <= limit, "{tokens} > {limit}");
    assert_eq!(steps, ok);
    assert!(ok >= 7, "{ok}: at least the worst cases that fit");
    assert!(!s.heard.exhausted.lock().unwrap().is_empty() || ok == 50);

    // Exactly at a step limit: the third call is refused, and the run is told.
    let s = gateway(
        Provider::Anthropic,
        "m",
        to(&fake),
        Limits {
            steps: Some(2),
            ..Limits::default()
        },
        None,
    );
    for want in [200, 200, 403] {
        assert_eq!(post(&s, "/v1/messages", &body).await.0, want);
    }
    let heard = s.heard.exhausted.lock().unwrap().clone();
    assert_eq!(heard.first().map(|e| e.which), Some(Which::Steps));
    assert_eq!(s.budget.used().2, 2);

    // A cost limit, priced: $1 per million tokens in and out (1 µ$ a token); each call
    // uses 20 tokens and reserves its worst case: the first fits, the second would not.
    let price = Price {
        input_per_mtok_micros: 1_000_000,
        output_per_mtok_micros: 1_000_000,
    };
    let small = json!({"model": "m", "max_tokens": 1, "messages": []});
    let small_worst = serde_json::to_vec(&small).unwrap().len() as u64 + 1;
    let s = gateway(
        Provider::Anthropic,
        "m",
        to(&fake),
        Limits {
            cost_micros: Some(small_worst + 19),
            ..Limits::default()
        },
        Some(price),
    );
    assert_eq!(post(&s, "/v1/messages", &small).await.0, 200);
    assert_eq!(s.budget.used().1, 20);
    assert_eq!(post(&s, "/v1/messages", &small).await.0, 403);
    assert_eq!(s.heard.exhausted.lock().unwrap()[0].which, Which::Cost);
}

/// The scripted provider answers in the API the client spoke, in order, then refuses.
#[tokio::test(flavor = "multi_thread")]
async fn the_scripted_provider_answers_in_order() {
    let script = spawn_gateway::scripted::Script::parse(
        "responses:\n  - text: one\n  - tools: [{name: exec, input: {code: 'print(2)'}}]\n",
    )
    .unwrap();
    let s = gateway(
        Provider::Anthropic,
        "m",
        Upstream::Scripted(script),
        Limits::default(),
        None,
    );
    let (status, _, body) = post(&s, "/v1/messages", &messages("m", false)).await;
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "one");
    let (_, _, body) = post(&s, "/v1/messages", &messages("m", false)).await;
    assert_eq!(body["content"][0]["type"], "tool_use");
    assert_eq!(body["content"][0]["input"]["code"], "print(2)");
    let (status, _, _) = post(&s, "/v1/messages", &messages("m", false)).await;
    assert_eq!(status, 502);
}

/// A provider that never answers, or stops in the middle of a stream: the client gets the
/// provider's error shape (or a cut stream) after the gateway's timeout, and the budget
/// keeps nothing of a call that never started and the worst case of one cut short.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_stops_answering_times_out() {
    let fake = provider::start();
    let short = |c: &mut Config| c.timeout = Duration::from_millis(500);
    let s = gateway_with(
        Provider::Anthropic,
        "silent",
        to(&fake),
        Limits::default(),
        None,
        short,
    );
    let (status, _, body) = post(&s, "/v1/messages", &messages("silent", false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("did not answer in time"));
    assert_eq!(s.budget.used(), (0, 0, 0));

    let s = gateway_with(
        Provider::Anthropic,
        "held",
        to(&fake),
        Limits::default(),
        None,
        short,
    );
    let r = send(&s, "/v1/messages", &messages("held", true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the stream is cut");
    first_call(&s).await;
    let c = s.heard.calls.lock().unwrap()[0].clone();
    assert_eq!(c.broken.as_deref(), Some("the provider stopped sending"));
    let body_len = serde_json::to_vec(&messages("held", true)).unwrap().len() as u64;
    assert_eq!(s.budget.used(), (body_len + 100, 0, 1));
    fake.state.release.notify_one();
}

/// The built-in loop over the OpenAI Chat Completions API: tool calls in that shape, their
/// results given back as `tool` messages, run by a runner (this test) through the queue.
#[test]
fn the_loop_speaks_chat_completions_with_tool_calls() {
    use spawn_gateway::agent::{End, Grants, Loop, Observer, ToolRecord};
    let script = spawn_gateway::scripted::Script::parse(
        "responses:\n  - text: first\n    tools: [{name: exec, input: {language: python, code: 'print(1)'}}]\n  - tools: [{name: finish, input: {summary: done}}]\n",
    )
    .unwrap();
    let queue = spawn_gateway::tools::ToolQueue::new();
    let q = queue.clone();
    let s = gateway_with(
        Provider::OpenAi,
        "gpt-x",
        Upstream::Scripted(script),
        Limits::default(),
        None,
        move |c| {
            c.tools = Some(q);
        },
    );
    let runner_queue = queue.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runner = std::thread::spawn(move || {
        rt.block_on(async move {
            let mut seen = Vec::new();
            loop {
                let v = runner_queue.next().await;
                if v.get("exit").is_some() {
                    return seen;
                }
                if v.get("wait").is_some() {
                    continue;
                }
                seen.push(v.clone());
                runner_queue.complete(
                    v["id"].as_u64().unwrap(),
                    json!({"exitCode": 0, "stdout": "1\n"}),
                );
            }
        })
    });
    struct Said(Vec<String>, Vec<ToolRecord>);
    impl Observer for Said {
        fn say(&mut self, line: &str) {
            self.0.push(line.to_owned());
        }
        fn tool(&mut self, record: &ToolRecord) {
            self.1.push(record.clone());
        }
    }
    let l = Loop {
        api: Provider::OpenAi,
        model: "gpt-x".into(),
        instructions: "print one".into(),
        gateway: s.url.trim_start_matches("http://").parse().unwrap(),
        key: s.key.clone(),
        queue: queue.clone(),
        grants: Grants {
            languages: vec!["python".into()],
            exec_timeout: Duration::from_secs(5),
            exec_memory: None,
            net: false,
            read_roots: vec!["/workspace".into()],
            write_roots: vec!["/workspace".into()],
        },
        max_steps: 5,
    };
    let mut said = Said(Vec::new(), Vec::new());
    assert_eq!(l.run(&mut said), End::Finished("done".into()));
    queue.close(0);
    let seen = runner.join().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["tool"], "exec");
    assert_eq!(seen[0]["input"]["code"], "print(1)");
    assert_eq!(said.1[0].output["stdout"], "1\n");
    assert!(
        said.0.iter().any(|l| l == "[1] model: first"),
        "{:?}",
        said.0
    );
    // The second request carried the tool's result back as a `tool` message.
    let calls = s.heard.calls.lock().unwrap().clone();
    let second: Value = serde_json::from_slice(&calls[1].request).unwrap();
    let msgs = second["messages"].as_array().unwrap();
    let tool_msg = msgs
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message");
    assert_eq!(tool_msg["tool_call_id"], "call_spawn_1_0");
    assert!(tool_msg["content"]
        .as_str()
        .unwrap()
        .contains("\"stdout\":\"1\\n\""));
    let assistant = msgs.iter().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "exec");
    assert_eq!(
        second["tools"].as_array().unwrap().len(),
        5,
        "exec and the fs tools and finish"
    );
}

/// Under a budget, a call without an output cap goes out with the most that fits (so its
/// worst case is one the provider keeps to), a call whose input the body does not hold is
/// refused, and without a budget both pass — uncapped calls in parallel included.
#[tokio::test(flavor = "multi_thread")]
async fn uncapped_and_unboundable_calls_under_a_budget() {
    let fake = provider::start();
    let s = gateway(
        Provider::OpenAi,
        "gpt-x",
        to(&fake),
        Limits {
            tokens: Some(1000),
            ..Limits::default()
        },
        None,
    );
    let body = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, _) = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let sent_bytes = fake.seen().last().unwrap().body.clone();
    let sent: Value = serde_json::from_slice(&sent_bytes).unwrap();
    let len = serde_json::to_vec(&body).unwrap().len() as u64;
    let cap = sent["max_completion_tokens"].as_u64().unwrap();
    // Its worst case (the body as sent, and the cap) fits the limit, with little to spare.
    assert!(sent_bytes.len() as u64 + cap <= 1000, "{sent}");
    assert!(cap >= 1000 - len - 48, "{sent}");
    assert_eq!(sent["messages"], body["messages"]);
    let before = fake.seen().len();
    for unbounded in [
        json!({"model": "gpt-x", "messages": [], "tools": [{"type": "web_search_preview"}]}),
        json!({"model": "gpt-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
    ] {
        let (status, _, body) = post(&s, "/v1/chat/completions", &unbounded).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be bounded"));
    }
    let (status, _, _) = post(
        &s,
        "/v1/responses",
        &json!({"model": "gpt-x", "previous_response_id": "resp_1", "input": "more"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        fake.seen().len(),
        before,
        "nothing unboundable was forwarded"
    );

    // A client's cap that does not fit is lowered to what does (both spellings of it).
    let s2 = gateway(
        Provider::OpenAi,
        "gpt-x",
        to(&fake),
        Limits {
            tokens: Some(1000),
            ..Limits::default()
        },
        None,
    );
    let big = json!({"model": "gpt-x", "max_tokens": 5000, "n": 2, "messages": []});
    assert_eq!(post(&s2, "/v1/chat/completions", &big).await.0, 200);
    let sent_bytes = fake.seen().last().unwrap().body.clone();
    let sent: Value = serde_json::from_slice(&sent_bytes).unwrap();
    let each = sent["max_completion_tokens"].as_u64().unwrap();
    assert_eq!(sent["max_tokens"], each, "{sent}");
    assert!(sent_bytes.len() as u64 + 2 * each <= 1000, "{sent}");
    // A cap that fits is left as it is.
    let small = json!({"model": "gpt-x", "max_tokens": 7, "messages": []});
    assert_eq!(post(&s2, "/v1/chat/completions", &small).await.0, 200);
    let sent: Value = serde_json::from_slice(&fake.seen().last().unwrap().body).unwrap();
    assert_eq!(sent, small);

    // A cost limit alone caps the output by price: $1/M in, $2/M out, 500 µ$ left.
    let price = Price {
        input_per_mtok_micros: 1_000_000,
        output_per_mtok_micros: 2_000_000,
    };
    let s = gateway(
        Provider::OpenAi,
        "gpt-x",
        to(&fake),
        Limits {
            cost_micros: Some(500),
            ..Limits::default()
        },
        Some(price),
    );
    assert_eq!(post(&s, "/v1/chat/completions", &body).await.0, 200);
    let sent: Value = serde_json::from_slice(&fake.seen().last().unwrap().body).unwrap();
    assert_eq!(
        sent["max_completion_tokens"],
        (500 - len - 48) / 2,
        "{sent}"
    );

    // No budget: uncapped and unboundable calls pass untouched, 20 at once.
    let s = Arc::new(gateway(
        Provider::OpenAi,
        "gpt-x",
        to(&fake),
        Limits::default(),
        None,
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let b = if i % 2 == 0 {
            body.clone()
        } else {
            json!({"model": "gpt-x", "messages": [], "tools": [{"type": "web_search_preview"}]})
        };
        tasks.push(tokio::spawn(async move {
            post(&s, "/v1/chat/completions", &b).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let sent: Value = serde_json::from_slice(&fake.seen().last().unwrap().body).unwrap();
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
    assert_eq!(s.budget.used().2, 20);
}

/// An agent holding many connections open gets no more than the gateway's cap served at
/// once; the rest wait, and are served when connections close.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait() {
    let fake = provider::start();
    let s = gateway(Provider::Anthropic, "m", to(&fake), Limits::default(), None);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..spawn_gateway::server::MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let call = || {
        client
            .post(format!("{}/v1/messages", s.url))
            .header("x-api-key", s.key.as_str())
            .json(&messages("m", false))
            .send()
    };
    assert!(call().await.is_err(), "served beyond the cap");
    drop(idle);
    let mut served = false;
    for _ in 0..50 {
        if call().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
    }
    assert!(served, "not served once the connections closed");
}

/// The tool runner's endpoints take input from inside the sandbox: each hostile request
/// gets a clear status, and nothing reaches the loop but a result for a call that waits.
#[tokio::test(flavor = "multi_thread")]
async fn the_tool_endpoints_refuse_hostile_requests() {
    let fake = provider::start();
    let queue = spawn_gateway::tools::ToolQueue::new();
    let q = queue.clone();
    let s = gateway_with(
        Provider::Anthropic,
        "m",
        to(&fake),
        Limits::default(),
        None,
        move |c| {
            c.tools = Some(q);
        },
    );
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}/spawn/v1/tools/{p}", s.url);
    let big = vec![b'x'; spawn_gateway::server::MAX_BODY / 4];
    // (method, path under /spawn/v1/tools/, key, body, status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("POST", "next", None, Vec::new(), 401),
        (
            "POST",
            "next",
            Some("spawn_gw_not-a-real-one"),
            Vec::new(),
            401,
        ),
        ("GET", "next", Some("key"), Vec::new(), 405),
        ("POST", "result", Some("key"), b"{not json".to_vec(), 400),
        (
            "POST",
            "result",
            Some("key"),
            br#"{"output": 1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "result",
            Some("key"),
            br#"{"id": "1", "output": 1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "result",
            Some("key"),
            br#"{"id": 99, "output": 1}"#.to_vec(),
            404,
        ),
        (
            "POST",
            "result",
            Some("key"),
            br#"{"id": -1, "output": 1}"#.to_vec(),
            400,
        ),
        ("POST", "result", Some("key"), big, 413),
        ("POST", "other", Some("key"), Vec::new(), 404),
        ("POST", "../result", Some("key"), Vec::new(), 404),
    ];
    for (method, path, key, body, want) in cases {
        let mut r = client
            .request(method.parse().unwrap(), url(path))
            .body(body);
        if let Some(k) = key {
            r = r.header(
                "x-api-key",
                if k == "key" {
                    s.key.to_string()
                } else {
                    k.to_owned()
                },
            );
        }
        let status = r.send().await.map(|r| r.status().as_u16()).unwrap_or(413);
        assert_eq!(status, want, "{method} {path}");
    }
    // A real call gets its result through, once; a second result for it is refused.
    let caller = queue.clone();
    let waiting = std::thread::spawn(move || {
        caller.call("exec", json!({"code": "1"}), Duration::from_secs(10))
    });
    let next: Value = client
        .post(url("next"))
        .header("x-api-key", s.key.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = next["id"].as_u64().unwrap();
    let post_result = |v: Value| {
        client
            .post(url("result"))
            .header("x-api-key", s.key.as_str())
            .json(&v)
            .send()
    };
    assert_eq!(
        post_result(json!({"id": id, "output": {"stdout": "1\n"}}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post_result(json!({"id": id, "output": "again"}))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(waiting.join().unwrap().unwrap(), json!({"stdout": "1\n"}));
    assert!(fake.seen().is_empty());
}
