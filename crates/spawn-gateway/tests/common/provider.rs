//! A fake model provider on loopback, written from Anthropic's and OpenAI's published API
//! references (Messages, Chat Completions, Responses; JSON and server-sent events; errors
//! and `retry-after`): the outside world of the gateway's tests. It records what it was
//! sent (headers and bodies) so that tests can check what left the gateway.
//!
//! Behaviour by the requested model: `silent` never answers; `rate-limited` answers 429
//! with `retry-after: 7`;
//! `held` streams its first event and then waits until the test releases it; `broken`
//! closes the stream midway; anything else answers with `usage` = (input, output) set by
//! the test (default 11 and 5).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use serde_json::{json, Value};

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub seen: Mutex<Vec<Seen>>,
    pub input: AtomicU64,
    pub output: AtomicU64,
    pub release: tokio::sync::Notify,
}

/// The provider, serving until the test's runtime ends.
#[derive(Debug, Clone)]
pub struct Provider {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl Provider {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn set_usage(&self, input: u64, output: u64) {
        self.state.input.store(input, Ordering::SeqCst);
        self.state.output.store(output, Ordering::SeqCst);
    }
}

/// Starts it on a thread of its own (its own runtime), on 127.0.0.1.
pub fn start() -> Provider {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::default());
    state.input.store(11, Ordering::SeqCst);
    state.output.store(5, Ordering::SeqCst);
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(answer(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Provider { addr, state }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(v: impl Into<Bytes>) -> Body {
    Full::new(v.into())
        .map_err(|n: Infallible| match n {})
        .boxed()
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "req_fake_1")
        .body(full(v.to_string()))
        .unwrap()
}

fn event(kind: Option<&str>, data: &Value) -> Bytes {
    match kind {
        Some(k) => Bytes::from(format!("event: {k}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

async fn answer(st: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    st.seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("").to_owned();
    let stream = v["stream"] == json!(true);
    let (input, output) = (
        st.input.load(Ordering::SeqCst),
        st.output.load(Ordering::SeqCst),
    );
    let anthropic = path.starts_with("/v1/messages");
    if model == "silent" {
        // Never answers (until the test's runtime ends).
        std::future::pending::<()>().await;
    }
    if model == "rate-limited" {
        let body = if anthropic {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        } else {
            json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        };
        let mut r = json_response(429, &body);
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
        r.headers_mut()
            .insert("x-should-retry", "false".parse().unwrap());
        return r;
    }
    let text = "Hello from the fake provider.";
    let events: Vec<Bytes> = match (path.split('?').next().unwrap_or(""), stream) {
        ("/v1/messages/count_tokens", _) => {
            return json_response(200, &json!({"input_tokens": input}))
        }
        ("/v1/messages", false) => {
            return json_response(
                200,
                &json!({"id": "msg_fake", "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": output}}),
            )
        }
        ("/v1/messages", true) => vec![
            event(
                Some("message_start"),
                &json!({"type": "message_start", "message": {"id": "msg_fake",
                "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
            ),
            event(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
            ),
            event(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                Some("message_delta"),
                &json!({"type": "message_delta", "delta": {"stop_reason":
                "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}}),
            ),
            event(Some("message_stop"), &json!({"type": "message_stop"})),
        ],
        ("/v1/chat/completions", false) => {
            return json_response(
                200,
                &json!({"id": "chatcmpl-fake", "object": "chat.completion",
                "created": 0, "model": model, "choices": [{"index": 0, "message": {"role": "assistant",
                "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input, "completion_tokens": output,
                          "total_tokens": input + output}}),
            )
        }
        ("/v1/chat/completions", true) => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-fake",
                "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            vec![
                event(
                    None,
                    &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                ),
                event(None, &chunk(json!({"content": text}), Value::Null)),
                event(None, &chunk(json!({}), json!("stop"))),
                event(
                    None,
                    &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "created": 0, "model": model, "choices": [], "usage": {"prompt_tokens": input,
                    "completion_tokens": output, "total_tokens": input + output}}),
                ),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ]
        }
        ("/v1/responses", _) => {
            let script = spawn_gateway::scripted::Script::parse(&format!(
                "responses:\n  - text: {text:?}\n    usage: {{input: {input}, output: {output}}}\n"
            ))
            .unwrap();
            let asked = spawn_gateway::request::Inspected {
                model: model.clone(),
                max_output: None,
                stream,
                unbounded_input: false,
            };
            let r = script
                .answer(spawn_gateway::request::Endpoint::Responses, &asked, 1)
                .unwrap();
            if !stream {
                return json_response(200, &serde_json::from_slice(&r.body).unwrap());
            }
            // Event by event.
            String::from_utf8(r.body)
                .unwrap()
                .split_inclusive("\n\n")
                .map(|e| Bytes::from(e.to_owned()))
                .collect()
        }
        _ => {
            return json_response(
                404,
                &json!({"type": "error", "error": {"type": "not_found_error",
                "message": "no such endpoint"}}),
            )
        }
    };
    let held = model == "held";
    let broken = model == "broken";
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if broken && i == 2 {
                let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                return;
            }
            if tx.send(Ok(Frame::data(e))).await.is_err() {
                return;
            }
            if held && i == 0 {
                st.release.notified().await;
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("request-id", "req_fake_1")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}
