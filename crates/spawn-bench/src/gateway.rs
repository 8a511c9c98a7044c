//! The model gateway (issue 12): what it adds to a model call, against calling the same
//! fake provider directly, in one run. A provider on loopback answers `POST /v1/messages`
//! at once (a small JSON answer, or the six server-sent events of a short stream); a
//! keep-alive HTTP/1.1 client calls it directly and through a gateway (the real
//! `spawn_gateway::server`, placeholder checked, policy and budget applied, the answer
//! relayed and metered, each call appended to an audit log as a run's gateway does),
//! alternating the two call by call so that both see the same machine. Added latency is the
//! difference of the percentiles; requests per second come from 16 connections for a few
//! seconds, each way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use spawn_gateway::budget::{Budget, Exhausted, Limits};
use spawn_gateway::errors::Provider;
use spawn_gateway::request::Policy;
use spawn_gateway::server::{CallRecord, Config, Events, Gateway, Upstream};
use spawn_gateway::token::Placeholder;

const ROUNDS: usize = 4000;
const WARMUP: usize = 200;
const CONNECTIONS: usize = 16;
const RPS_SECONDS: u64 = 3;

/// What one run measured, in microseconds (latencies) and requests per second.
#[derive(Debug, Default)]
pub struct Figures {
    pub direct_p50: f64,
    pub direct_p99: f64,
    pub gateway_p50: f64,
    pub gateway_p99: f64,
    pub stream_direct_p50: f64,
    pub stream_direct_p99: f64,
    pub stream_gateway_p50: f64,
    pub stream_gateway_p99: f64,
    pub direct_rps: f64,
    pub gateway_rps: f64,
}

const JSON_ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"bench-model","content":[{"type":"text","text":"Hello."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":5}}"#;

fn stream_answer() -> String {
    [
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"bench-model","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}"#,
        r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello."}}"#,
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":0}"#,
        r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#,
        r#"event: message_stop
data: {"type":"message_stop"}"#,
    ]
    .iter()
    .map(|e| format!("{e}\n\n"))
    .collect()
}

/// The provider: answers every POST at once, streaming when the body asks.
async fn provider(listener: tokio::net::TcpListener) {
    let stream_body = Bytes::from(stream_answer());
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let stream_body = stream_body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let stream_body = stream_body.clone();
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let streamed = body.windows(14).any(|w| w == b"\"stream\":true}");
                    let (ct, bytes) = if streamed {
                        ("text/event-stream", stream_body)
                    } else {
                        (
                            "application/json",
                            Bytes::from_static(JSON_ANSWER.as_bytes()),
                        )
                    };
                    let mut r = Response::new(Full::new(bytes));
                    r.headers_mut()
                        .insert("content-type", hyper::header::HeaderValue::from_static(ct));
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
        });
    }
}

/// As a run's gateway records each call: one audit event appended per call.
struct Recorder {
    log: Mutex<spawn_audit::AuditLog>,
}

impl Events for Recorder {
    fn call(&self, record: CallRecord) {
        let e = spawn_audit::Event::new(
            spawn_audit::EventType::AgentCapabilityInvoke,
            spawn_audit::Principal {
                kind: "agent".into(),
                id: "ag_bench".into(),
                name: None,
            },
            spawn_audit::Resource {
                kind: "model".into(),
                name: record.model.unwrap_or_default(),
            },
            "chat",
            spawn_audit::Outcome::Success,
        )
        .with_detail("status", record.status)
        .with_detail("durationMs", record.latency.as_secs_f64() * 1000.0);
        if let Ok(mut log) = self.log.lock() {
            let _ = log.append(&[e]);
        }
    }
    fn exhausted(&self, _why: Exhausted) {}
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect")?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("handshake")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One call, timed to the end of its answer.
async fn call(sender: &mut Sender, key: &str, body: &'static str) -> Result<Duration> {
    let req = Request::post("/v1/messages")
        .header("host", "gateway")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let t = Instant::now();
    sender.ready().await?;
    let r = sender.send_request(req).await?;
    anyhow::ensure!(r.status() == 200, "status {}", r.status());
    let _ = r.into_body().collect().await?;
    Ok(t.elapsed())
}

/// The `p`th percentile of timings, in microseconds.
fn percentile(samples: &[Duration], p: usize) -> f64 {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    crate::stats::percentile(&us, p).unwrap_or(f64::NAN)
}

const BODY: &str =
    r#"{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_BODY: &str = r#"{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;

pub fn run() -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let provider_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    provider_listener.set_nonblocking(true)?;
    let provider_addr = provider_listener.local_addr()?;
    // The provider on a runtime (thread) of its own, as a remote one would be.
    std::thread::spawn(move || {
        if let Ok(prt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            prt.block_on(async move {
                if let Ok(l) = tokio::net::TcpListener::from_std(provider_listener) {
                    provider(l).await;
                }
            });
        }
    });
    let audit_dir = tempfile::tempdir()?;
    let log = spawn_audit::AuditLog::open(audit_dir.path()).context("open the audit log")?;
    let (placeholder, key) = Placeholder::mint().context("mint")?;
    let gw_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let gw_addr = gw_listener.local_addr()?;
    let _gateway = Gateway::serve(
        gw_listener,
        Config {
            policy: Policy {
                provider: Provider::Anthropic,
                model: "bench-model".into(),
                any_api: false,
            },
            upstream: Upstream::Http {
                base: format!("http://{provider_addr}"),
                credential: zeroize::Zeroizing::new("sk-bench-real-key".into()),
            },
            placeholder,
            budget: Budget::new(Limits::default()),
            price: None,
            peers: Vec::new(),
            tools: None,
            redactor: None,
            events: Arc::new(Recorder {
                log: Mutex::new(log),
            }),
            timeout: spawn_gateway::server::UPSTREAM_TIMEOUT,
        },
    )
    .context("serve the gateway")?;
    let key = key.to_string();
    rt.block_on(async move {
        let mut f = Figures::default();
        for (body, streamed) in [(BODY, false), (STREAM_BODY, true)] {
            let mut direct = connect(provider_addr).await?;
            let mut through = connect(gw_addr).await?;
            let (mut d, mut g) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
            for i in 0..WARMUP + ROUNDS {
                let a = call(&mut direct, "sk-bench-real-key", body).await?;
                let b = call(&mut through, &key, body).await?;
                if i >= WARMUP {
                    d.push(a);
                    g.push(b);
                }
            }
            let (dp50, dp99, gp50, gp99) = (
                percentile(&d, 50),
                percentile(&d, 99),
                percentile(&g, 50),
                percentile(&g, 99),
            );
            if streamed {
                (
                    f.stream_direct_p50,
                    f.stream_direct_p99,
                    f.stream_gateway_p50,
                    f.stream_gateway_p99,
                ) = (dp50, dp99, gp50, gp99);
            } else {
                (f.direct_p50, f.direct_p99, f.gateway_p50, f.gateway_p99) =
                    (dp50, dp99, gp50, gp99);
            }
        }
        for (addr, through) in [(provider_addr, false), (gw_addr, true)] {
            let deadline = Instant::now() + Duration::from_secs(RPS_SECONDS);
            let mut tasks = Vec::new();
            for _ in 0..CONNECTIONS {
                let key = if through {
                    key.clone()
                } else {
                    "sk-bench-real-key".into()
                };
                tasks.push(tokio::spawn(async move {
                    let mut s = connect(addr).await?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        call(&mut s, &key, BODY).await?;
                        n += 1;
                    }
                    anyhow::Ok(n)
                }));
            }
            let start = Instant::now();
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            let rps = total as f64 / start.elapsed().as_secs_f64();
            if through {
                f.gateway_rps = rps;
            } else {
                f.direct_rps = rps;
            }
        }
        Ok(f)
    })
}
