//! What the tests share: a log with records (some hostile), sink plans from YAML, fast
//! timing, waiting for a condition with a deadline, and an HTTP receiver.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use spawn_audit::{AuditLog, Event, EventType, Outcome, Principal, Resource};
use spawn_sinks::{SinkPlan, SinkSpec, Timing};

/// Polls quickly and retries soon: the tests take seconds.
pub const FAST: Timing = Timing {
    poll: Duration::from_millis(20),
    retry_initial: Duration::from_millis(50),
};

/// Details that try to break a framing or a terminal: quotes, backslashes, brackets,
/// newlines (escaped in the line), terminal escapes, and a long value.
pub fn hostile(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("quote", "a\"b".into()),
        ("backslash", "c:\\x\\".into()),
        ("bracket", "]] [spawn@32473 seq=\"999\"]".into()),
        ("newline", "one\ntwo\r\n<13>1 - forged - - - - x".into()),
        ("terminal", "\u{1b}[2J\u{1b}]0;pwned\u{7}".into()),
        ("nul", "a\u{0}b".into()),
        ("unicode", "日本語 é".into()),
        (
            "long",
            "L".repeat(if i.is_multiple_of(5) { 3000 } else { 10 }),
        ),
    ]
}

/// Appends `n` events to the log in `dir` (a mix of types and outcomes, hostile details),
/// in batches of 3; returns every line of the log.
pub fn append(dir: &Path, n: usize) -> Vec<String> {
    let mut log = AuditLog::open(dir).unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let (t, outcome) = match i % 4 {
                0 => (EventType::AuthLogin, Outcome::Success),
                1 => (EventType::AgentNetConnect, Outcome::Denied),
                2 => (EventType::AgentStart, Outcome::Error),
                _ => (EventType::AgentCreate, Outcome::Success),
            };
            let mut e = Event::new(
                t,
                Principal {
                    kind: "user".into(),
                    id: format!("key_{i}"),
                    name: Some("al]ice\"".into()),
                },
                Resource {
                    kind: "host".into(),
                    name: "example.com:443".into(),
                },
                "act",
                outcome,
            );
            for (k, v) in hostile(i) {
                e = e.with_detail(k, v);
            }
            e.trace_id = Some(spawn_audit::new_id("tr").unwrap());
            e
        })
        .collect();
    for chunk in events.chunks(3) {
        log.append(chunk).unwrap();
    }
    log.sync().unwrap();
    lines(dir)
}

/// Every line of the log in `dir`.
pub fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(spawn_audit::LOG_FILE_NAME))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The seq of a stored line.
pub fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

/// Plans of the sinks in `yaml` (a YAML list, as under `audit.sinks`).
pub fn plans(yaml: &str, log_dir: &Path) -> Vec<SinkPlan> {
    let specs: Vec<SinkSpec> = serde_yaml_ng::from_str(yaml).unwrap();
    spawn_sinks::plan(&specs, log_dir).unwrap()
}

/// Waits until `f` holds, failing with `what` after `secs`.
pub async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port free right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cursor file of sink `name`.
pub fn cursor(log_dir: &Path, name: &str) -> PathBuf {
    spawn_sinks::cursor::path_of(log_dir, name)
}

/// One request an HTTP receiver took.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

/// An HTTP/1.1 receiver on loopback answering every request with `status` (changeable),
/// keeping what it took.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub status: Arc<Mutex<u16>>,
    pub got: Arc<Mutex<Vec<Received>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (a port chosen earlier, or `127.0.0.1:0`).
    pub async fn start(addr: SocketAddr, status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(Mutex::new(status));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (status.clone(), got.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, g) = (s.clone(), g.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, g) = (s.clone(), g.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = *s.lock().unwrap();
                            g.lock().unwrap().push(Received {
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                                status,
                            });
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            status,
            got,
            task: Arc::new(task),
        }
    }

    /// The bodies it acknowledged (2xx), in order.
    pub fn acked(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}
