//! The run's gateway endpoint: an HTTP/1.1 server on the host end of the run's link (the
//! only model endpoint the sandbox can reach) that takes the run's placeholder, checks each
//! call against the run's policy and budget, and forwards it to the provider with the real
//! credential, relaying the answer as it comes (server-sent events included) while reading
//! its usage. Each call is reported to the run ([`Events`]) for its audit trail and trace.
//!
//! Served on a thread of its own with a single-threaded tokio runtime: the run's process
//! (the CLI, or a run's supervisor under `spawnd`) stays free of async machinery, and the
//! native runtime, which needs a single-threaded process until its sandbox exists, gets one:
//! the listener is bound before, served after ([`Gateway::serve`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use zeroize::Zeroizing;

use crate::budget::{Budget, Exhausted, Price, Usage};
use crate::errors::{self, Provider, Refusal};
use crate::request::{self, Endpoint, Policy};
use crate::scripted::Script;
use crate::token::{Placeholder, Verdict};
use crate::usage::Meter;
use crate::GatewayError;

/// The largest request body taken (a model call's prompt; bigger is refused with 413).
pub const MAX_BODY: usize = 32 << 20;
/// How much of a request and of an answer a call's record keeps (the rest is counted).
pub const MAX_RECORDED: usize = 4 << 20;
/// How long the provider may take to answer (headers), and then between two chunks.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting to the provider may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a run's gateway serves at once; more wait to be accepted (the agent's
/// connections cannot exhaust the descriptors or memory of the process that runs the run).
pub const MAX_CONNECTIONS: usize = 256;

/// Where the run's calls go.
pub enum Upstream {
    /// A provider's HTTP API at `base` (`https://api.anthropic.com`, or any compatible
    /// server; a `/v1` at its end is the API's own and not repeated), with the real
    /// credential: sent as `x-api-key` (Anthropic) or `Authorization: Bearer` (OpenAI).
    Http {
        base: String,
        credential: Zeroizing<String>,
    },
    /// Answers from a script (`provider: scripted`), in the API the client spoke.
    Scripted(Script),
    /// Answers from a recorded run (`spawn replay`): each endpoint's calls get the
    /// recording's answers in order; a request unlike the recording's is a divergence.
    Replay(Arc<Replayed>),
}

/// A call of a recorded run.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub endpoint: Endpoint,
    pub stream: bool,
    /// The request's body (as recorded: redacted of the run's secrets).
    pub request: serde_json::Value,
    /// The answer's body as it passed.
    pub response: Vec<u8>,
}

/// A recorded run's calls, served in order.
#[derive(Debug, Default)]
pub struct Replayed {
    queues: std::sync::Mutex<
        std::collections::HashMap<Endpoint, std::collections::VecDeque<(usize, Recorded)>>,
    >,
}

impl Replayed {
    /// The calls, in the order they were made.
    pub fn new(calls: Vec<Recorded>) -> Replayed {
        let mut queues: std::collections::HashMap<
            Endpoint,
            std::collections::VecDeque<(usize, Recorded)>,
        > = std::collections::HashMap::new();
        for (i, c) in calls.into_iter().enumerate() {
            queues.entry(c.endpoint).or_default().push_back((i + 1, c));
        }
        Replayed {
            queues: std::sync::Mutex::new(queues),
        }
    }

    fn next(&self, endpoint: Endpoint) -> Option<(usize, Recorded)> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&endpoint)
            .and_then(std::collections::VecDeque::pop_front)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Http { base, .. } => write!(f, "Upstream::Http({base}, credential: ..)"),
            Upstream::Scripted(_) => f.write_str("Upstream::Scripted"),
            Upstream::Replay(_) => f.write_str("Upstream::Replay"),
        }
    }
}

/// One call through the gateway, as the run records it (content redacted of the run's
/// secrets, capped at [`MAX_RECORDED`]).
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The call's number in the run, from 1 (every request, answered or refused).
    pub number: u64,
    pub started: SystemTime,
    pub endpoint: Endpoint,
    /// The API the client spoke.
    pub provider: Provider,
    /// The model asked for (none for `GET /v1/models`, or a body that could not be read).
    pub model: Option<String>,
    pub stream: bool,
    /// The status the client got.
    pub status: u16,
    /// Why the gateway refused it (the client got the provider-shaped error).
    pub refusal: Option<(Refusal, String)>,
    /// What the provider reported it used (`None`: not a model call, refused, or
    /// unreadable, in which case the budget kept the worst case).
    pub usage: Option<Usage>,
    /// What the budget counted: tokens and micro-dollars.
    pub counted: (u64, u64),
    /// Time to the answer's first byte, and to its end.
    pub first_byte: Option<Duration>,
    pub latency: Duration,
    /// The request's body and the answer's, as they passed (redacted).
    pub request: Vec<u8>,
    pub response: Vec<u8>,
    /// Bytes of the answer in all (the record keeps at most [`MAX_RECORDED`]).
    pub response_bytes: u64,
    /// The answer could not be relayed whole (the client went away, the provider broke off).
    pub broken: Option<String>,
}

/// What the run hears from its gateway.
pub trait Events: Send + Sync {
    /// A call is over (answered, refused or failed).
    fn call(&self, record: CallRecord);
    /// The budget is spent: a call was refused because it could take the run past a
    /// limit. The run must stop.
    fn exhausted(&self, why: Exhausted);
    /// Replaying: a call is not what the recorded run made at this point.
    fn diverged(&self, _what: String) {}
}

/// The run's gateway, as configured.
pub struct Config {
    pub policy: Policy,
    pub upstream: Upstream,
    pub placeholder: Placeholder,
    pub budget: Budget,
    /// The pinned model's price (required when the run has a cost limit).
    pub price: Option<Price>,
    /// The only peer addresses served (the sandbox's end of the link, and the host end for
    /// the built-in loop); empty: any.
    pub peers: Vec<IpAddr>,
    /// The built-in loop's tool calls, for the sandbox's tool runner (`None`: a command
    /// agent, and no tool endpoints).
    pub tools: Option<crate::tools::ToolQueue>,
    /// The run's secrets, redacted from what is recorded.
    pub redactor: Option<Arc<spawn_redact::Redactor>>,
    pub events: Arc<dyn Events>,
    /// How long the provider may take to answer, and then between two chunks
    /// ([`UPSTREAM_TIMEOUT`] unless a test says otherwise).
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("policy", &self.policy)
            .field("upstream", &self.upstream)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// A gateway being served; dropping it stops it (calls in flight are cut off).
#[derive(Debug)]
pub struct Gateway {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    config: Config,
    client: reqwest::Client,
    calls: std::sync::atomic::AtomicU64,
    /// Model calls that reached the (scripted) provider.
    answered: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// Serves `config` on `listener` (bound by the caller, before the sandbox exists) on a
    /// thread of its own, until dropped.
    pub fn serve(listener: std::net::TcpListener, config: Config) -> Result<Gateway, GatewayError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(config.timeout)
            // The provider's answer is read as it is (usage, records): never compressed.
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            // A redirect would carry the credential elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // spawn's own environment's proxy variables are not the run's.
            .no_proxy()
            .build()
            .map_err(|e| GatewayError::Serve(format!("make the provider's client: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| GatewayError::Serve(format!("listen: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GatewayError::Serve(format!("start: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new(Shared {
            config,
            client,
            calls: std::sync::atomic::AtomicU64::new(0),
            answered: std::sync::atomic::AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("spawn-gateway".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept_loop(listener, shared) => {}
                        _ = stopped => {}
                    }
                });
                // Calls still in flight are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(|e| GatewayError::Serve(format!("start its thread: {e}")))?;
        Ok(Gateway {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A connection is accepted only when one of the run's may be served.
        let Ok(slot) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors and the like: wait, never spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !shared.config.peers.is_empty() && !shared.config.peers.contains(&peer.ip()) {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 << 10)
                .header_read_timeout(Duration::from_secs(30))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The API a refusal is answered in: the endpoint's, else the run's.
fn api_of(endpoint: Option<Endpoint>, policy: &Policy) -> Provider {
    endpoint
        .and_then(Endpoint::provider)
        .unwrap_or(policy.provider)
}

/// A JSON answer of the gateway's own.
fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn refusal_response(provider: Provider, refusal: Refusal, message: &str) -> Response<Body> {
    let (status, body) = errors::body(provider, refusal, message);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body.to_string(),
    )
}

struct Call {
    number: u64,
    started: SystemTime,
    clock: Instant,
    endpoint: Option<Endpoint>,
    provider: Provider,
    model: Option<String>,
    stream: bool,
    request: Vec<u8>,
}

impl Call {
    fn record(&self, status: u16) -> CallRecord {
        CallRecord {
            number: self.number,
            started: self.started,
            endpoint: self.endpoint.unwrap_or(Endpoint::Models),
            provider: self.provider,
            model: self.model.clone(),
            stream: self.stream,
            status,
            refusal: None,
            usage: None,
            counted: (0, 0),
            first_byte: None,
            latency: self.clock.elapsed(),
            request: self.request.clone(),
            response: Vec::new(),
            response_bytes: 0,
            broken: None,
        }
    }
}

impl Shared {
    fn redacted(&self, bytes: &[u8]) -> Vec<u8> {
        let capped = &bytes[..bytes.len().min(MAX_RECORDED)];
        match &self.config.redactor {
            Some(r) => r.redact(capped),
            None => capped.to_vec(),
        }
    }

    /// Refuses `call` and records it.
    fn refuse(&self, call: &Call, refusal: Refusal, message: &str) -> Response<Body> {
        let response = refusal_response(call.provider, refusal, message);
        let mut record = call.record(response.status().as_u16());
        record.refusal = Some((refusal, message.to_owned()));
        record.response = response_text(call.provider, refusal, message);
        self.config.events.call(record);
        response
    }
}

fn response_text(provider: Provider, refusal: Refusal, message: &str) -> Vec<u8> {
    errors::body(provider, refusal, message)
        .1
        .to_string()
        .into_bytes()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let policy = &shared.config.policy;
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let endpoint = Endpoint::of(req.method().as_str(), &path);
    // The tool runner's requests are not calls: answered before any is counted.
    if let (Some(what), Some(queue)) = (path.strip_prefix("/spawn/v1/tools/"), &shared.config.tools)
    {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()));
        let valid = crate::credential::presented(headers)
            .map(|k| shared.config.placeholder.check(k) == Verdict::Valid)
            .unwrap_or(false);
        if !valid {
            return json_response(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"this run's key is required"}"#,
            );
        }
        return tool_endpoint(queue, what, req).await;
    }
    let number = shared
        .calls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let mut call = Call {
        number,
        started: SystemTime::now(),
        clock: Instant::now(),
        endpoint,
        provider: api_of(endpoint, policy),
        model: None,
        stream: false,
        request: Vec::new(),
    };
    // Claude Code's warm-up: answered, not a call, no key needed.
    if endpoint == Some(Endpoint::WarmUp) {
        return Response::new(full(Bytes::new()));
    }
    // The credential before anything else (the path of a request without one is not
    // looked at further).
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let verdict = match crate::credential::presented(headers) {
        Ok(key) => shared.config.placeholder.check(key),
        Err(why) => {
            return shared.refuse(
                &call,
                Refusal::Unauthenticated,
                &format!("spawn's model gateway: {why}"),
            );
        }
    };
    match verdict {
        Verdict::Valid => {}
        Verdict::Malformed(why) => {
            return shared.refuse(
                &call,
                Refusal::Unauthenticated,
                &format!("spawn's model gateway takes only this run's placeholder key: {why}"),
            )
        }
        Verdict::OtherRun => {
            return shared.refuse(
                &call,
                Refusal::Unauthenticated,
                "spawn's model gateway: the placeholder key of another run",
            )
        }
    }
    let Some(endpoint) = endpoint else {
        return shared.refuse(
            &call,
            Refusal::NotFound,
            "spawn's model gateway serves POST /v1/messages, /v1/messages/count_tokens, /v1/chat/completions, /v1/responses and GET /v1/models only",
        );
    };
    if endpoint == Endpoint::Models {
        if let Err((r, m)) = policy.allows(endpoint, None) {
            return shared.refuse(&call, r, &m);
        }
        let body = models_list(call.provider, &policy.model);
        let mut record = call.record(200);
        record.response = body.clone();
        shared.config.events.call(record);
        return json_response(StatusCode::OK, body);
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let mut r = shared.refuse(
                &call,
                Refusal::BadRequest,
                &format!("the request body is larger than {MAX_BODY} bytes"),
            );
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
        Err(BodyError::Read(e)) => {
            return shared.refuse(
                &call,
                Refusal::BadRequest,
                &format!("the request body could not be read: {e}"),
            )
        }
    };
    call.request = shared.redacted(&body);
    let inspected = match request::inspect(endpoint, &body) {
        Ok(i) => i,
        Err((r, m)) => return shared.refuse(&call, r, &m),
    };
    call.model = Some(inspected.model.clone());
    call.stream = inspected.stream;
    if let Err((r, m)) = policy.allows(endpoint, Some(&inspected.model)) {
        return shared.refuse(&call, r, &m);
    }
    // A model call reserves its worst case first; counting tokens is free.
    let mut body = body;
    let reservation = if endpoint.is_model_call() {
        let budget = &shared.config.budget;
        if inspected.unbounded_input && budget.is_limited() {
            return shared.refuse(
                &call,
                Refusal::BadRequest,
                "this call brings input its body does not hold (a stored response or conversation, files or URLs the provider fetches, or tools the provider runs): its use cannot be bounded before it is made, and this run has a token or cost limit",
            );
        }
        let mut max_output = inspected.max_output;
        if budget.is_limited() {
            // Under a budget, the output cap is what fits: set when the client set none (so
            // the worst case is one the provider keeps to), lowered when the client's does
            // not fit (a client asking for at most N gets at most fewer). The field the cap
            // is written in makes the body longer: that is counted too.
            let fit = affordable_output(&shared, body.len() + CAP_FIELD_BYTES);
            if max_output.is_none_or(|m| m > fit) {
                if let Some((b, cap)) = with_cap(endpoint, &body, fit) {
                    body = b;
                    call.request = shared.redacted(&body);
                    max_output = Some(cap);
                }
            }
        }
        let remaining = budget.remaining_tokens();
        let tokens = request::worst_case_tokens(body.len(), max_output, remaining);
        let input = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let cost = shared.config.price.map_or(0, |p| {
            p.cost_micros(Usage {
                input_tokens: input,
                output_tokens: tokens.saturating_sub(input),
            })
        });
        match budget.reserve(tokens, cost) {
            Ok(r) => Some(r),
            Err(why) => {
                let response = shared.refuse(
                    &call,
                    Refusal::BudgetExhausted,
                    &format!("{why}; the run is stopped"),
                );
                shared.config.events.exhausted(why);
                return response;
            }
        }
    } else {
        None
    };
    match &shared.config.upstream {
        Upstream::Scripted(script) => {
            // The n-th model call that reached the provider gets the n-th answer.
            let nth = shared
                .answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let answer = script.answer(endpoint, &inspected, nth);
            let answer = match answer {
                Ok(a) => a,
                Err(m) => return shared.refuse(&call, Refusal::Upstream, &m),
            };
            let usage = Some(answer.usage);
            answer_here(
                &shared,
                &call,
                reservation,
                answer.body,
                answer.stream,
                usage,
            )
        }
        Upstream::Replay(recorded) => {
            let Some((n, rec)) = recorded.next(endpoint) else {
                let why = format!(
                    "call {number} ({}) is one the recorded run did not make",
                    endpoint.name()
                );
                shared.config.events.diverged(why.clone());
                return shared.refuse(&call, Refusal::Upstream, &why);
            };
            let now: serde_json::Value = serde_json::from_slice(&call.request).unwrap_or_default();
            if now != rec.request {
                shared.config.events.diverged(format!(
                    "model call {n} ({}): the request differs from the recording's{}",
                    endpoint.name(),
                    first_difference(&rec.request, &now)
                        .map(|p| format!(" (first at {p})"))
                        .unwrap_or_default()
                ));
            }
            let usage = if rec.stream {
                let mut m = Meter::new(endpoint);
                m.push(&rec.response);
                m.finish()
            } else {
                Meter::of_body(endpoint, &rec.response)
            };
            answer_here(&shared, &call, reservation, rec.response, rec.stream, usage)
        }
        Upstream::Http { base, credential } => {
            forward(
                shared.clone(),
                call,
                Outgoing {
                    endpoint,
                    parts: &parts,
                    body,
                    base,
                    credential,
                    reservation,
                },
            )
            .await
        }
    }
}

/// A call answered by the gateway itself (the scripted provider, a replay): recorded and
/// settled at `usage`, then sent whole.
fn answer_here(
    shared: &Shared,
    call: &Call,
    reservation: Option<crate::budget::Reservation>,
    body: Vec<u8>,
    stream: bool,
    usage: Option<Usage>,
) -> Response<Body> {
    let mut record = call.record(200);
    record.usage = usage;
    record.first_byte = Some(call.clock.elapsed());
    record.response = shared.redacted(&body);
    record.response_bytes = body.len() as u64;
    record.counted = settle(shared, reservation, usage);
    shared.config.events.call(record);
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    r
}

/// The tool runner's side of [`crate::tools`]: its next call, or its result.
async fn tool_endpoint(
    queue: &crate::tools::ToolQueue,
    what: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let json = |status: StatusCode, v: serde_json::Value| json_response(status, v.to_string());
    if req.method() != hyper::Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "POST only"}),
        );
    }
    match what {
        "next" => json(StatusCode::OK, queue.next().await),
        "result" => {
            let body = match read_body(req.into_body()).await {
                Ok(b) if b.len() <= crate::tools::MAX_RESULT_BYTES => b,
                _ => {
                    return json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        serde_json::json!({"error": "a result is at most 4 MiB"}),
                    )
                }
            };
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "not JSON"}),
                    )
                }
            };
            match (v["id"].as_u64(), v.get("output")) {
                (Some(id), Some(output)) if queue.complete(id, output.clone()) => {
                    json(StatusCode::OK, serde_json::json!({"ok": true}))
                }
                (Some(_), Some(_)) => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no call waits with that id"}),
                ),
                _ => json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "id and output are required"}),
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such tool endpoint"}),
        ),
    }
}

/// Where two JSON values first differ, as a JSON pointer (`None`: equal).
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    difference_at(a, b).map(|p| if p.is_empty() { "/".to_owned() } else { p })
}

fn difference_at(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => difference_at(p, q).map(|d| format!("/{k}{d}")),
                _ => Some(format!("/{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            (0..x.len().max(y.len())).find_map(|i| match (x.get(i), y.get(i)) {
                (Some(p), Some(q)) => difference_at(p, q).map(|d| format!("/{i}{d}")),
                _ => Some(format!("/{i}")),
            })
        }
        _ if a == b => None,
        _ => Some(String::new()),
    }
}

/// `body` with its output cap set so that all its completions (`n`) together produce at
/// most `fit` tokens (at least one each); the new body and its whole cap.
fn with_cap(endpoint: Endpoint, body: &[u8], fit: u64) -> Option<(Vec<u8>, u64)> {
    let field = request::cap_field(endpoint)?;
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let n = v["n"]
        .as_u64()
        .filter(|_| endpoint == Endpoint::ChatCompletions)
        .unwrap_or(1)
        .max(1);
    let each = (fit / n).max(1);
    let obj = v.as_object_mut()?;
    for f in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        if obj.get(f).is_some_and(|x| !x.is_null()) {
            obj.insert(f.to_owned(), serde_json::json!(each));
        }
    }
    obj.insert(field.to_owned(), serde_json::json!(each));
    Some((serde_json::to_vec(&v).ok()?, each.saturating_mul(n)))
}

/// Bytes the gateway's own output cap adds to a body (`,"max_completion_tokens":16777216`).
const CAP_FIELD_BYTES: usize = 48;

/// The most output tokens a call of `body_len` bytes can have within what is left of the
/// run's token and cost limits (at least 1: a call that cannot fit is refused by its
/// reservation), and at most [`request::MAX_OUTPUT_CAP`].
fn affordable_output(shared: &Shared, body_len: usize) -> u64 {
    let budget = &shared.config.budget;
    let input = u64::try_from(body_len).unwrap_or(u64::MAX);
    let by_tokens = budget.remaining_tokens().saturating_sub(input);
    let by_cost = match shared.config.price {
        Some(p) if p.output_per_mtok_micros > 0 => {
            let left = budget.remaining_cost().saturating_sub(p.cost_micros(Usage {
                input_tokens: input,
                output_tokens: 0,
            }));
            let tokens = u128::from(left) * 1_000_000 / u128::from(p.output_per_mtok_micros);
            u64::try_from(tokens).unwrap_or(u64::MAX)
        }
        _ => u64::MAX,
    };
    by_tokens.min(by_cost).clamp(1, request::MAX_OUTPUT_CAP)
}

/// Settles a reservation at `usage` (or at its worst case when the provider's usage could
/// not be read); what the budget counted. A limit reached stops the run.
fn settle(
    shared: &Shared,
    reservation: Option<crate::budget::Reservation>,
    usage: Option<Usage>,
) -> (u64, u64) {
    let Some(reservation) = reservation else {
        return (0, 0);
    };
    let (tokens, cost) = match usage {
        Some(u) => (
            u.input_tokens.saturating_add(u.output_tokens),
            shared.config.price.map_or(0, |p| p.cost_micros(u)),
        ),
        None => reservation.held(),
    };
    // A limit reached is not yet a stop: the agent has its answer to use. Its next call
    // is refused, and that stops the run.
    reservation.settle(tokens, cost);
    (tokens, cost)
}

enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_body(mut body: Incoming) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// `GET /v1/models`: the pinned model only, in the API's list shape.
fn models_list(provider: Provider, model: &str) -> Vec<u8> {
    let v = match provider {
        Provider::Anthropic => serde_json::json!({
            "data": [{"type": "model", "id": model, "display_name": model,
                      "created_at": "1970-01-01T00:00:00Z"}],
            "has_more": false, "first_id": model, "last_id": model,
        }),
        Provider::OpenAi => serde_json::json!({
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "spawn"}],
        }),
    };
    v.to_string().into_bytes()
}

/// Request headers passed on to the provider (what the SDKs and CLIs send that the API
/// reads); everything else — the client's credential above all, hop-by-hop headers, the
/// host, the client's encodings — is not.
fn passed_request_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "accept"
            | "anthropic-version"
            | "anthropic-beta"
            | "openai-beta"
            | "openai-organization"
            | "openai-project"
            | "user-agent"
            | "idempotency-key"
    ) || name.starts_with("x-stainless-")
}

/// Answer headers passed back to the client (what the SDKs read: the type, rate limits,
/// retry advice, request ids).
fn passed_response_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "retry-after"
            | "retry-after-ms"
            | "request-id"
            | "x-request-id"
            | "x-should-retry"
            | "openai-processing-ms"
            | "openai-version"
            | "cache-control"
    ) || name.starts_with("anthropic-ratelimit-")
        || name.starts_with("x-ratelimit-")
}

/// The provider's URL of `path` (which starts with `/v1/`) under `base`.
pub fn upstream_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}{path}")
}

/// A call on its way to the provider.
struct Outgoing<'a> {
    endpoint: Endpoint,
    parts: &'a hyper::http::request::Parts,
    body: Vec<u8>,
    base: &'a str,
    credential: &'a Zeroizing<String>,
    reservation: Option<crate::budget::Reservation>,
}

async fn forward(shared: Arc<Shared>, call: Call, out: Outgoing<'_>) -> Response<Body> {
    let Outgoing {
        endpoint,
        parts,
        body,
        base,
        credential,
        reservation,
    } = out;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = upstream_url(base, path);
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &parts.headers {
        if passed_request_header(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let key = match call.provider {
        Provider::Anthropic => ("x-api-key", credential.to_string()),
        Provider::OpenAi => ("authorization", format!("Bearer {}", credential.as_str())),
    };
    let key_value = Zeroizing::new(key.1);
    match reqwest::header::HeaderValue::from_str(&key_value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            headers.insert(key.0, v);
        }
        Err(_) => {
            return shared.refuse(
                &call,
                Refusal::Upstream,
                "the run's provider credential cannot be sent as a header (control characters)",
            )
        }
    }
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        reqwest::header::HeaderValue::from_static("identity"),
    );
    let sent = shared
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            // Never the URL with anything in it beyond what the manifest says, never a key.
            let why = if e.is_timeout() {
                "the provider did not answer in time".to_owned()
            } else if e.is_connect() {
                format!("the provider at {base} could not be reached")
            } else {
                format!("the provider at {base} failed")
            };
            return shared.refuse(&call, Refusal::Upstream, &why);
        }
    };
    let status = upstream.status();
    let first_byte = call.clock.elapsed();
    let mut response = Response::builder().status(status.as_u16());
    let mut streamed = false;
    for (name, value) in upstream.headers() {
        if passed_response_header(name.as_str()) {
            if name == reqwest::header::CONTENT_TYPE
                && value.as_bytes().starts_with(b"text/event-stream")
            {
                streamed = true;
            }
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let success = status.is_success();
    tokio::spawn(relay(
        shared.clone(),
        call,
        endpoint,
        upstream,
        tx,
        Relay {
            status: status.as_u16(),
            streamed,
            first_byte,
            reservation: reservation.filter(|_| success),
        },
    ));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    response
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| refusal_response(Provider::Anthropic, Refusal::Upstream, "bad answer"))
}

struct Relay {
    status: u16,
    streamed: bool,
    first_byte: Duration,
    /// Held for a successful answer only: a failed one used nothing (and is not a step).
    reservation: Option<crate::budget::Reservation>,
}

/// Passes the provider's answer on chunk by chunk, reading its usage and keeping a copy
/// for the record, then settles the budget and reports the call.
async fn relay(
    shared: Arc<Shared>,
    call: Call,
    endpoint: Endpoint,
    mut upstream: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    r: Relay,
) {
    let mut meter = Meter::new(endpoint);
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut broken = None;
    let mut client_gone = false;
    let mut provider_broke = false;
    loop {
        match upstream.chunk().await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if r.streamed {
                    meter.push(&chunk);
                }
                if !r.streamed || kept.len() < MAX_RECORDED {
                    // A whole JSON answer is read for its usage: kept up to the body cap.
                    let room =
                        if r.streamed { MAX_RECORDED } else { MAX_BODY }.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                if !client_gone && tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    // The client went away: the provider's answer is still read to its end,
                    // so that what it used is known.
                    client_gone = true;
                    broken = Some("the client went away before the end of the answer".to_owned());
                }
            }
            Ok(None) => break,
            Err(e) => {
                let why = if e.is_timeout() {
                    "the provider stopped sending"
                } else {
                    "the provider broke off its answer"
                };
                broken = Some(why.to_owned());
                provider_broke = true;
                let _ = tx.send(Err(std::io::Error::other(why))).await;
                break;
            }
        }
    }
    drop(tx);
    // An answer broken off by the provider keeps its worst case.
    let usage = if r.status < 300 && !provider_broke {
        if r.streamed {
            meter.finish()
        } else {
            Meter::of_body(endpoint, &kept)
        }
    } else {
        None
    };
    let mut record = call.record(r.status);
    record.first_byte = Some(r.first_byte);
    record.usage = usage;
    record.response = shared.redacted(&kept);
    record.response_bytes = total;
    record.broken = broken;
    record.counted = settle(&shared, r.reservation, usage);
    shared.config.events.call(record);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let a = json!({"m": [{"c": "x"}, {"c": "y"}], "k": 1});
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &json!({"m": [{"c": "x"}, {"c": "z"}], "k": 1})).as_deref(),
            Some("/m/1/c")
        );
        assert_eq!(
            first_difference(&a, &json!({"m": [{"c": "x"}], "k": 1})).as_deref(),
            Some("/m/1")
        );
        assert_eq!(
            first_difference(&a, &json!({"m": [], "k": 1, "n": 2})).as_deref(),
            Some("/m/0")
        );
        assert_eq!(
            first_difference(&json!(1), &json!("1")).as_deref(),
            Some("/")
        );
        assert_eq!(
            upstream_url("http://h:1/v1/", "/v1/messages"),
            "http://h:1/v1/messages"
        );
        assert_eq!(
            upstream_url("https://api.anthropic.com", "/v1/messages"),
            "https://api.anthropic.com/v1/messages"
        );
    }
}
