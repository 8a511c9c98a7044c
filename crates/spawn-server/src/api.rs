//! The HTTP API: request ids, authentication, RBAC, errors, and the handlers.
//!
//! Every response carries `X-Request-Id: req_…` (also in the audit events the request
//! causes). Every error is `{"error": {"code": "...", "message": "..."}}` (SPEC §8),
//! including those of the framework (unknown routes, methods, bodies too large). RBAC is
//! decided before anything is looked up, so a caller without `get` in a namespace learns
//! nothing of what is in it: the answer is the same 403 whether the object exists or not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;
use spawn_audit::{AuditLog, Event, EventType, Outcome};
use spawn_auth::rbac::{
    self, Permissions, Resource, Role, RoleBinding, Subject, SubjectKind, Verb,
};
use spawn_auth::ApiKey;
use spawn_store::{Store, StoreError};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Limits;
use crate::listen::ClientCert;
use crate::remembered::Remembered;
use crate::views::{AgentView, ErrorBody, Page, Status, Whoami};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub(crate) store: Store,
    /// The daemon's own events, durable before an action is acknowledged.
    audit: crate::audit_writer::AuditWriter,
    /// Which credentials are in a session (their next use is not a login).
    sessions: crate::sessions::Sessions,
    pub(crate) limits: Limits,
    /// Wakes the scheduler when a run is queued.
    pub(crate) runs_queued: Arc<tokio::sync::Notify>,
    rate: crate::abuse::RateLimiter,
    lockout: crate::abuse::Lockout,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Supervisors this daemon started that are running.
    pub(crate) supervisors: Arc<std::sync::atomic::AtomicUsize>,
    /// Who each key is, and agents (remembered only where that is exact: see
    /// `remembered`).
    keys: Remembered<[u8; 32], crate::remembered::KeyGrants>,
    pub(crate) agents: Remembered<(String, String), Arc<crate::remembered::AgentAnswer>>,
    /// The issuer whose bearer JWTs are accepted, if one is configured.
    jwt: Option<spawn_auth::bearer::JwtVerifier>,
    /// The database's copy of this daemon's audit log, once the daemon has set it up.
    audit_copy: std::sync::OnceLock<Arc<crate::audit_api::AuditCopy>>,
    /// The audit sinks' counters, when sinks are configured.
    sinks: Option<spawn_sinks::SinkMonitor>,
    /// The namespaces' secrets, under the daemon's master key.
    secrets: Option<spawn_secrets::Secrets>,
}

impl AppState {
    /// The state of a daemon on `store`, writing its events to `audit` (through a thread of
    /// its own: see `audit_writer`).
    pub fn new(
        store: Store,
        audit: AuditLog,
        limits: Limits,
    ) -> Result<AppState, crate::ServerError> {
        let audit =
            crate::audit_writer::AuditWriter::start(audit).map_err(|e| crate::ServerError::Io {
                what: "start the audit log's writer".into(),
                source: e,
            })?;
        Ok(AppState {
            store,
            audit,
            sessions: crate::sessions::Sessions::default(),
            rate: crate::abuse::RateLimiter::new(&limits),
            lockout: crate::abuse::Lockout::new(&limits),
            limits,
            runs_queued: Arc::default(),
            metrics: crate::metrics::Metrics::default(),
            supervisors: Arc::default(),
            keys: Remembered::new(false),
            agents: Remembered::new(false),
            jwt: None,
            audit_copy: std::sync::OnceLock::new(),
            sinks: None,
            secrets: None,
        })
    }

    /// The same, keeping the namespaces' secrets in `secrets`.
    pub fn with_secrets(mut self, secrets: spawn_secrets::Secrets) -> AppState {
        self.secrets = Some(secrets);
        self
    }

    pub(crate) fn secrets(&self) -> Option<&spawn_secrets::Secrets> {
        self.secrets.as_ref()
    }

    /// Sets the database's copy of the audit log the audit API answers from (once).
    pub fn set_audit_copy(&self, copy: Arc<crate::audit_api::AuditCopy>) {
        let _ = self.audit_copy.set(copy);
    }

    pub(crate) fn audit_copy(&self) -> Option<Arc<crate::audit_api::AuditCopy>> {
        self.audit_copy.get().cloned()
    }

    /// The same, showing the audit sinks' counters in `/metrics`.
    pub fn with_sinks(mut self, sinks: spawn_sinks::SinkMonitor) -> AppState {
        self.sinks = Some(sinks);
        self
    }

    /// The same, accepting the bearer JWTs of the issuer `config` names.
    pub fn accepting_jwts(
        mut self,
        config: &crate::config::Jwt,
    ) -> Result<AppState, crate::ServerError> {
        self.jwt = Some(crate::jwt::load(config)?);
        Ok(self)
    }

    /// The same, remembering who each key is and the agents between requests: only for a
    /// store this daemon alone writes (SQLite under its lock).
    pub fn remembering_config(mut self) -> AppState {
        self.keys = Remembered::new(true);
        self.agents = Remembered::new(true);
        self
    }

    /// Records the event of a refusal (an `auth.failure`, an `rbac.permission.denied`):
    /// durable when this returns, or reported in the daemon's log if the audit log cannot
    /// take it. The request is refused either way, so nothing is granted without its event.
    pub(crate) async fn audit(&self, event: Event) {
        // The writer has said why in the daemon's log.
        let _ = self.audit.durable(vec![event]).await;
    }

    /// Records the event of an action before the action ("no audit, no action"): returns
    /// once it is durable, or `503 audit_unavailable` if the audit log cannot take it, and
    /// the caller must then not act.
    ///
    /// The event says what is about to be done; if the action then fails, the caller
    /// records it with [`AppState::record_failure`]. So a request's outcome is its last
    /// event.
    pub(crate) async fn record(&self, event: Event) -> Result<(), ApiError> {
        self.audit.durable(vec![event]).await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log cannot record this action, so it was not done; retry later",
            )
        })
    }

    /// After [`AppState::record`]: the recorded action failed (`error`), so its event is
    /// followed by the same event with outcome `error` and the reason. Then the error is
    /// returned as it was.
    pub(crate) async fn record_failure<T>(
        &self,
        event: Event,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(e) = &result {
            let mut failed = event;
            failed.outcome = Outcome::Error;
            failed
                .details
                .insert("reason".into(), Value::String(e.code.to_owned()));
            failed
                .details
                .insert("message".into(), Value::String(e.message.clone()));
            self.audit(failed).await;
        }
        result
    }
}

pub(crate) type Shared = Arc<AppState>;

/// The request's id (`req_…`), set first for every request.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Who is calling: the principal its API key is bound to.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) subject: Subject,
    pub(crate) key_id: String,
    pub(crate) test_key: bool,
    /// (namespace, role) of each binding naming the principal, read with its key.
    pub(crate) grants: Vec<(String, String)>,
    /// The credential's name in `sessions` (an API key's stored hash, never the key).
    pub(crate) session: [u8; 32],
}

/// An error answer in SPEC §8's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub(crate) fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; the request id in X-Request-Id finds it in the daemon's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { kind, name } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{kind} {name} not found"))
            }
            StoreError::AlreadyExists { kind, name } => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{kind} {name} already exists; send If-Match with its ETag to replace it"),
            ),
            StoreError::Conflict {
                kind,
                name,
                current,
                ..
            } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{kind} {name} was changed meanwhile (its ETag is now \"{current}\"); read it again"),
            ),
            other => {
                tracing::error!(error = %other, "store");
                ApiError::internal()
            }
        }
    }
}

/// The API's routes over `state`, and its OpenAPI document (`openapi.rs`) made from them.
///
/// Each route is registered with `routes!` from its handler's `#[utoipa::path]`, which
/// also puts it in the document.
pub fn router(state: Shared) -> Router {
    let max_body = state.limits.max_body_bytes;
    let mut v1 = OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(logout))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, put_agent, delete_agent))
        .merge(crate::rbac_api::routes())
        .merge(crate::runs::routes())
        .merge(crate::audit_api::routes())
        .merge(crate::secrets_api::routes());
    crate::openapi::behind_authentication(v1.get_openapi_mut());
    let v1 = v1
        // The body is read after authentication: nobody unauthenticated makes the daemon
        // hold a body.
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let (routes, doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(crate::openapi::openapi_json))
        .merge(v1)
        .split_for_parts();
    let doc = crate::openapi::Document::new(&crate::openapi::finish(doc));
    routes
        .layer(Extension(doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(errors_in_shape))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// Gives the request its id and puts it on the response; counts it and its time.
async fn request_id(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = spawn_audit::new_id("req").unwrap_or_else(|_| "req_unavailable".into());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    state
        .metrics
        .request(res.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Turns the framework's own error answers (plain text: a body too large, a path that does
/// not parse, …) into SPEC §8's shape.
async fn errors_in_shape(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "that method is not allowed here"),
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        s if s.is_server_error() => ("internal", "the server failed"),
        _ => ("invalid", "the request is not valid"),
    };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut out = (status, Json(ErrorBody::new(code, message))).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "that method is not allowed here",
    )
}

/// Liveness: the daemon answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Status))
)]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Metrics in Prometheus' text format (0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "`spawnd_http_requests_total`, \
            `spawnd_http_request_duration_seconds`, `spawnd_runs`, `spawnd_supervisors`, \
            `spawnd_auth_failures_total`, `spawnd_rbac_denials_total`, \
            `spawnd_rate_limited_total`; per audit sink `spawn_audit_sink_backlog`, \
            `spawn_audit_sink_delivered_total`, `spawn_audit_sink_failures_total`, \
            `spawn_audit_sink_last_success_timestamp_seconds`",
            body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
async fn metrics(State(state): State<Shared>) -> Response {
    let runs = state.store.count_runs_by_state().await.unwrap_or_default();
    let supervisors = state.supervisors.load(std::sync::atomic::Ordering::SeqCst);
    // The backlog is read from the end of the log: off the async threads.
    let sinks = match state.sinks.clone() {
        Some(m) => tokio::task::spawn_blocking(move || m.status())
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&runs, supervisors, &sinks),
    )
        .into_response()
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Status),
        (status = 503, description = "`unavailable`: the database does not answer",
            body = ErrorBody),
    )
)]
async fn readyz(State(state): State<Shared>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(Status {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database does not answer",
            )
            .into_response()
        }
    }
}

/// Reads a request's body whole, within `limits.headerReadTimeoutSeconds` and
/// `limits.maxBodyBytes`, before anything else of the request is done: a client that
/// sends its body slowly holds a connection no longer than one that sends its head slowly
/// (408), one that sends too much is cut off at the limit (413).
async fn read_body(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.limits.max_body_bytes;
    let deadline = std::time::Duration::from_secs(state.limits.header_read_timeout_seconds);
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes (or was cut off)"),
            )
            .into_response()
        }
        Err(_) => {
            let mut res = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The header that carries an API key.
const API_KEY_HEADER: &str = "x-api-key";

/// What an authentication failure is recorded with.
struct Attempt<'a> {
    state: &'a AppState,
    ip: std::net::IpAddr,
    req_id: &'a str,
    path: String,
    now: std::time::Instant,
}

impl Attempt<'_> {
    /// The `auth.failure` event (without any of the key or token), counted.
    async fn audit_failure(&self, reason: &str) {
        let event = Event {
            source_ip: Some(self.ip.to_string()),
            request_id: Some(self.req_id.to_owned()),
            ..Event::new(
                EventType::AuthFailure,
                spawn_audit::Principal {
                    kind: "anonymous".into(),
                    id: "-".into(),
                    name: None,
                },
                spawn_audit::Resource {
                    kind: "api".into(),
                    name: self.path.clone(),
                },
                "authenticate",
                Outcome::Denied,
            )
            .with_detail("reason", reason.to_owned())
        };
        self.state.audit(event).await;
        self.state
            .metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A 401 for `reason`, audited and counted against the source's lockout.
    async fn failure(&self, reason: &str) -> Response {
        self.state.lockout.failed(self.ip, self.now);
        self.audit_failure(reason).await;
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("{reason}; send a valid API key in the X-API-Key header"),
        )
        .into_response()
    }

    /// Records a login (`auth.login`) if this use of `caller`'s credential begins a
    /// session (see `sessions`); a login that cannot be recorded refuses the request
    /// (503) and leaves the credential outside any session.
    async fn login(&self, caller: &Caller, credential: &str) -> Result<(), Response> {
        if !self.state.sessions.begins(caller.session, self.now) {
            return Ok(());
        }
        let event = Event {
            source_ip: Some(self.ip.to_string()),
            request_id: Some(self.req_id.to_owned()),
            ..Event::new(
                EventType::AuthLogin,
                principal(caller),
                spawn_audit::Resource {
                    kind: "credential".into(),
                    name: caller.key_id.clone(),
                },
                "login",
                Outcome::Success,
            )
            .with_detail("credential", credential.to_owned())
            .with_detail("path", self.path.clone())
        };
        let event = if caller.test_key {
            event.with_detail("test", true)
        } else {
            event
        };
        if let Err(e) = self.state.record(event).await {
            self.state.sessions.end(&caller.session);
            return Err(e.into_response());
        }
        Ok(())
    }
}

/// Authenticates the caller by the first credential it presents, in this order: an API key
/// (`X-API-Key`), a bearer JWT (`Authorization`), the client certificate of its TLS
/// connection (mutual TLS) — a credential in the request wins over the connection's, and a
/// bad one is refused, not passed over. The key's checksum is checked before anything is
/// looked up; an unknown or revoked key is a 401 like a missing one, and so is a refused
/// token or certificate; each failure is an `auth.failure` event (without any of the key or
/// token). A credential's first use in a while is an `auth.login` event (`sessions`).
async fn authenticate(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(RequestId(req_id)): Extension<RequestId>,
    mut req: Request,
    next: Next,
) -> Response {
    let at = Attempt {
        state: &state,
        ip: peer.ip(),
        req_id: &req_id,
        path: req.uri().path().chars().take(256).collect(),
        now: std::time::Instant::now(),
    };
    let now = at.now;
    // A source locked out for its failures is refused before its key is read.
    if let Some(wait) = state.lockout.locked(at.ip, now) {
        at.audit_failure("locked out after repeated failed authentications")
            .await;
        return too_many(
            &state,
            "too many failed authentications from this address",
            wait,
        );
    }
    // A bearer JWT, when no API key is sent.
    if req.headers().get(API_KEY_HEADER).is_none() {
        if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            let Some(token) = token else {
                return at
                    .failure("the Authorization header is not a bearer token")
                    .await;
            };
            let Some(jwt) = &state.jwt else {
                return at
                    .failure("bearer tokens are not accepted: no JWT issuer is configured")
                    .await;
            };
            let user = match jwt.verify(token) {
                Ok(user) => user,
                Err(reason) => return at.failure(&reason).await,
            };
            let session = crate::sessions::credential_hash("jwt", token);
            return match user_caller(&state, user, "jwt", session, &req_id, now).await {
                Ok(caller) => {
                    if let Err(res) = at.login(&caller, "jwt").await {
                        return res;
                    }
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                }
                Err(res) => res,
            };
        }
        // The connection's client certificate, when the request carries no credential of its
        // own (rustls verified it at the handshake; a refused one is a 401 like a bad key).
        if let Some(ClientCert(named)) = req.extensions().get::<ClientCert>().cloned() {
            let user = match named {
                Ok(subject) => subject.name,
                Err(reason) => return at.failure(reason).await,
            };
            let session = crate::sessions::credential_hash("mtls", &user);
            return match user_caller(&state, user, "mtls", session, &req_id, now).await {
                Ok(caller) => {
                    if let Err(res) = at.login(&caller, "client-certificate").await {
                        return res;
                    }
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                }
                Err(res) => res,
            };
        }
    }
    let text = match req.headers().get(API_KEY_HEADER).map(|v| v.to_str()) {
        None => return at.failure("no API key").await,
        Some(Err(_)) => return at.failure("the API key is not valid").await,
        // Zeroed when dropped, like the key it becomes.
        Some(Ok(t)) => zeroize::Zeroizing::new(t.to_owned()),
    };
    let key = match ApiKey::parse(&text) {
        Ok(k) => k,
        Err(e) => return at.failure(&format!("the API key is not valid: {e}")).await,
    };
    let hash = key.hash().0;
    let (record, grants) = match crate::remembered::key(&state.keys, &state.store, &hash).await {
        Ok(Some(r)) => r,
        Ok(None) => return at.failure("the API key is not known").await,
        Err(e) => {
            tracing::error!(error = %e, request_id = %req_id, "key lookup");
            return ApiError::internal().into_response();
        }
    };
    if record.revoked_ms.is_some() {
        return at.failure("the API key was revoked").await;
    }
    let Some(kind) = SubjectKind::parse(&record.principal_kind) else {
        return at.failure("the API key's principal is not known").await;
    };
    let who = format!("{}/{}", kind.as_str(), record.principal_name);
    if let Err(wait) = state.rate.take(&who, now) {
        return too_many(&state, "too many requests for this principal", wait);
    }
    let caller = Caller {
        subject: Subject {
            kind,
            name: record.principal_name.clone(),
        },
        key_id: record.id.clone(),
        test_key: record.test,
        grants,
        session: hash,
    };
    if let Err(res) = at.login(&caller, "api-key").await {
        return res;
    }
    // `last_used` is written at most once a minute per key (not a write per request).
    let now_ms = spawn_store::now_ms();
    let stale = record
        .last_used_ms
        .is_none_or(|t| t < now_ms - spawn_store::LAST_USED_RESOLUTION_MS);
    if stale {
        match state.store.touch_key(&record.id, now_ms).await {
            Ok(()) => state
                .keys
                .update(&hash, |(r, _)| r.last_used_ms = Some(now_ms)),
            Err(e) => tracing::warn!(error = %e, "last_used"),
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The caller that is the User `user`, authenticated by `how` (`jwt`, `mtls`: its
/// `key_id`) with the credential `session` names: its RoleBindings, read now, and a
/// request taken from its rate.
async fn user_caller(
    state: &AppState,
    user: String,
    how: &str,
    session: [u8; 32],
    req_id: &str,
    now: std::time::Instant,
) -> Result<Caller, Response> {
    let grants = match state
        .store
        .bindings_of(SubjectKind::User.as_str(), &user)
        .await
    {
        Ok(b) => b.into_iter().map(|b| (b.namespace, b.role)).collect(),
        Err(e) => {
            tracing::error!(error = %e, request_id = %req_id, "bindings lookup");
            return Err(ApiError::internal().into_response());
        }
    };
    if let Err(wait) = state.rate.take(&format!("User/{user}"), now) {
        return Err(too_many(
            state,
            "too many requests for this principal",
            wait,
        ));
    }
    Ok(Caller {
        subject: Subject {
            kind: SubjectKind::User,
            name: user,
        },
        key_id: how.into(),
        test_key: false,
        grants,
        session,
    })
}

/// The caller as the audit log names it.
pub(crate) fn principal(caller: &Caller) -> spawn_audit::Principal {
    spawn_audit::Principal {
        kind: caller.subject.kind.as_str().into(),
        id: caller.key_id.clone(),
        name: Some(caller.subject.name.clone()),
    }
}

/// A run, key or other object of another namespace is "not found" from this one.
pub(crate) fn not_found_in(kind: &str, id: &str, ns: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{kind} {id} not found in namespace {ns}"),
    )
}

/// 429 with `Retry-After`.
fn too_many(state: &AppState, message: &str, wait: std::time::Duration) -> Response {
    state
        .metrics
        .rate_limited
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{message}; retry later"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&crate::abuse::retry_after(wait).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// What the caller may do in `ns`.
pub(crate) async fn permissions(
    state: &AppState,
    caller: &Caller,
    ns: &str,
) -> Result<Permissions, ApiError> {
    let bindings: Vec<RoleBinding> = caller
        .grants
        .iter()
        .map(|(namespace, role)| RoleBinding {
            namespace: namespace.clone(),
            name: String::new(),
            role: role.clone(),
            subjects: Vec::new(),
        })
        .collect();
    // The Roles (not built-in) the bindings that hold in `ns` name.
    let mut roles: HashMap<(String, String), Role> = HashMap::new();
    for b in &bindings {
        let holds = b.namespace == ns || b.namespace == rbac::ALL_NAMESPACES;
        if !holds || rbac::BuiltinRole::parse(&b.role).is_some() {
            continue;
        }
        match state.store.role(&b.namespace, &b.role).await {
            Ok(r) => {
                if let Some(role) = role_of(&r.namespace, &r.name, &r.rules) {
                    roles.insert((r.namespace.clone(), r.name.clone()), role);
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rbac::permissions_in(&bindings, ns, |n, r| {
        roles.get(&(n.to_owned(), r.to_owned())).cloned()
    }))
}

/// A stored Role's rules read back (a rule this version cannot read grants nothing).
pub(crate) fn role_of(namespace: &str, name: &str, rules: &str) -> Option<Role> {
    let value: Value = serde_json::from_str(rules).ok()?;
    let mut out = Vec::new();
    for r in value.as_array()? {
        let list = |k: &str| -> Option<Vec<String>> {
            r.get(k)?
                .as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect()
        };
        let resources = list("resources")?
            .iter()
            .map(|s| Resource::parse(s))
            .collect::<Option<Vec<_>>>()?;
        let verbs = list("verbs")?
            .iter()
            .map(|s| Verb::parse(s))
            .collect::<Option<Vec<_>>>()?;
        out.push(rbac::Rule { resources, verbs });
    }
    Some(Role {
        namespace: namespace.into(),
        name: name.into(),
        rules: out,
    })
}

/// Allows the request or refuses it (403, and an `rbac.permission.denied` event).
pub(crate) async fn authorize(
    state: &AppState,
    caller: &Caller,
    req_id: &str,
    ns: &str,
    resource: Resource,
    verb: Verb,
) -> Result<(), ApiError> {
    if permissions(state, caller, ns).await?.allows(resource, verb) {
        return Ok(());
    }
    let message = format!(
        "{} may not {} {} in namespace {ns}",
        caller.subject,
        verb.as_str(),
        resource.as_str()
    );
    Err(rbac_denied(
        state,
        caller,
        req_id,
        (resource.as_str(), ns),
        verb.as_str(),
        ("namespace", ns.to_owned()),
        message,
    )
    .await)
}

/// A refusal by RBAC: counted, audited (`rbac.permission.denied` on `on` = (kind, the
/// namespace), for `action`, with `detail`), and the 403 saying `message`.
pub(crate) async fn rbac_denied(
    state: &AppState,
    caller: &Caller,
    req_id: &str,
    on: (&str, &str),
    action: &str,
    detail: (&str, String),
    message: String,
) -> ApiError {
    let (kind, ns) = on;
    state
        .metrics
        .rbac_denials
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state
        .audit(Event {
            request_id: Some(req_id.to_owned()),
            ..Event::new(
                EventType::RbacPermissionDenied,
                principal(caller),
                spawn_audit::Resource {
                    kind: kind.into(),
                    name: ns.to_owned(),
                },
                action,
                Outcome::Denied,
            )
            .with_detail(detail.0, detail.1)
        })
        .await;
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// A body that could not be read: too large (413) or cut off.
pub(crate) fn body_error(
    state: &AppState,
    e: &axum::extract::rejection::BytesRejection,
) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {} bytes",
                state.limits.max_body_bytes
            ),
        )
    } else {
        ApiError::new(e.status(), "invalid", "the request body could not be read")
    }
}

/// A JSON object read as `T`. Only an object: serde would otherwise take an array as the
/// struct's fields by position (`[null, null, ["rm"]]`).
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body: expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("body: {e}")))
}

pub(crate) fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    spawn_policy::check_dns_label(value).map_err(|m| ApiError::invalid(format!("{field}: {m}")))
}

/// The caller: the principal its API key belongs to.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "meta",
    responses((status = 200, description = "The caller", body = Whoami))
)]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami {
        key_id: caller.key_id,
        kind: caller.subject.kind.as_str().into(),
        name: caller.subject.name,
        test: caller.test_key,
    })
}

/// `body` with `ETag: "version"`.
pub(crate) fn with_etag(status: StatusCode, version: i64, body: impl serde::Serialize) -> Response {
    tagged((status, Json(body)).into_response(), version)
}

/// `res` with the `ETag` of `version`.
fn tagged(mut res: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// The version an `If-Match` names (`"N"`), if any.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match: not an ETag of this API"))?;
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| ApiError::invalid("If-Match: not an ETag of this API (\"N\")"))?;
    spawn_auth::bearer::header_number(inner)
        .map(Some)
        .ok_or_else(|| ApiError::invalid("If-Match: not an ETag of this API (\"N\")"))
}

pub(crate) type Ctx = (Extension<Caller>, Extension<RequestId>);

/// An agent, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/agents/{name}",
    tag = "agents",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The agent's name (a DNS label)"),
    ),
    responses(
        (status = 200, description = "The agent", body = AgentView,
            headers(("ETag" = String, description = "Its version: `\"N\"`"))),
        (status = 400, description = "`invalid`: a name that is not a DNS label", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `agents` in the \
            namespace (the same answer whether the agent exists or not)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn get_agent(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Agents, Verb::Get).await?;
    check_name("name", &name)?;
    let a = crate::remembered::agent(&state.agents, &state.store, &ns, &name).await?;
    // The view serialized once, as `Json` would write it.
    let res = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        a.body.clone(),
    );
    Ok(tagged(res.into_response(), a.version))
}

/// The query of a list: a page's size and where it starts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Items in the page: 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<i64>,
    /// The `next` of the previous page (the first page without it).
    pub(crate) after: Option<String>,
}

/// Most items in one page.
pub(crate) const MAX_PAGE: i64 = 500;

/// The query of a list endpoint.
pub(crate) type ListQ = Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>;

/// A list's `limit` (1 to [`MAX_PAGE`], default 50) and `after`, checked by `check_after`.
pub(crate) fn list_params(
    q: ListQ,
    check_after: impl Fn(&str) -> Result<(), ApiError>,
) -> Result<(i64, Option<String>), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: 1 to {MAX_PAGE}")));
    }
    if let Some(a) = &q.after {
        check_after(a)?;
    }
    Ok((limit, q.after))
}

/// The agents of a namespace, by name, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/agents",
    tag = "agents",
    params(("ns" = String, Path, description = "The namespace (a DNS label)"), ListQuery),
    responses(
        (status = 200, description = "A page of agents", body = Page<AgentView>),
        (status = 400, description = "`invalid`: a bad namespace, `limit` or `after`, or an \
            unknown query parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `agents` in the \
            namespace", body = ErrorBody),
    )
)]
async fn list_agents(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    query: ListQ,
) -> Result<Json<Page<AgentView>>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Agents, Verb::List).await?;
    let (limit, after) = list_params(query, |a| check_name("after", a))?;
    let page = state
        .store
        .list_agents(&ns, after.as_deref(), limit)
        .await?;
    Ok(Json(Page::of(&page)))
}

/// Creates an agent from its manifest (without `If-Match`), or replaces the version
/// `If-Match` names.
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/agents/{name}",
    tag = "agents",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The agent's name: its manifest's \
            `metadata.name`"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`, the ETag of the \
            version to replace; without it, the agent is created"),
    ),
    request_body(
        description = "The Agent manifest (SPEC §3), in YAML or JSON (read as YAML whatever \
            the `Content-Type`), validated by `spawn-policy`; its `metadata.name` and \
            `metadata.namespace` (if any) must be the path's",
        content(
            (String = "application/yaml"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Replaced (with `If-Match`)", body = AgentView,
            headers(("ETag" = String, description = "Its new version: `\"N\"`"))),
        (status = 201, description = "Created", body = AgentView,
            headers(("ETag" = String, description = "Its version: `\"1\"`"))),
        (status = 400, description = "`invalid`: not UTF-8, not a valid manifest (with line \
            and column), names that disagree with the path, a bad `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` (or, with \
            `If-Match`, `update`) `agents` in the namespace; `policy_violation`: the manifest \
            asks for what the daemon's policy forbids (host mounts, an allowlist naming an \
            always-blocked destination; a `policy.violation` event naming the rule)",
            body = ErrorBody),
        (status = 404, description = "`not_found`: `If-Match` names an agent that does not \
            exist", body = ErrorBody),
        (status = 409, description = "`already_exists` (created without `If-Match`), or \
            `conflict`: the version `If-Match` names is not the current one", body = ErrorBody),
    )
)]
async fn put_agent(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    let expected = if_match(&headers)?;
    let verb = if expected.is_some() {
        Verb::Update
    } else {
        Verb::Create
    };
    authorize(&state, &caller, &req_id, &ns, Resource::Agents, verb).await?;
    check_name("name", &name)?;
    let body = body.map_err(|e| body_error(&state, &e))?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the manifest is not UTF-8"))?;
    let agent = spawn_policy::parse_agent(text).map_err(|e| ApiError::invalid(e.to_string()))?;
    if agent.metadata.name != name {
        return Err(ApiError::invalid(format!(
            "metadata.name is {:?}, the path names {name:?}",
            agent.metadata.name
        )));
    }
    if agent.metadata.namespace.as_deref().is_some_and(|n| n != ns) {
        return Err(ApiError::invalid(format!(
            "metadata.namespace is {:?}, the path names {ns:?}",
            agent.metadata.namespace.as_deref().unwrap_or_default()
        )));
    }
    if let Some(v) = crate::policy::check_agent(&agent) {
        let resource = spawn_audit::Resource {
            kind: "agent".into(),
            name: format!("{ns}/{name}"),
        };
        return Err(policy_violation(&state, &caller, &req_id, resource, verb.as_str(), v).await);
    }
    let manifest = serde_json::to_string(&agent).map_err(|_| ApiError::internal())?;
    let a = if expected.is_none() {
        // Recorded before it exists, with the id it will have.
        let id = spawn_audit::new_id("ag").map_err(|_| ApiError::internal())?;
        let event = Event {
            request_id: Some(req_id),
            ..Event::new(
                EventType::AgentCreate,
                principal(&caller),
                spawn_audit::Resource {
                    kind: "agent".into(),
                    name: format!("{ns}/{name}"),
                },
                "create",
                Outcome::Success,
            )
            .with_detail("agentId", id.clone())
        };
        state.record(event.clone()).await?;
        let created = state
            .store
            .create_agent(&id, &ns, &name, &manifest)
            .await
            .map_err(ApiError::from);
        state.record_failure(event, created).await?
    } else {
        state
            .store
            .put_agent(&ns, &name, &manifest, expected)
            .await?
    };
    let status = if expected.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status, a.version, AgentView::from(&a)))
}

/// Deletes an agent (only the version `If-Match` names, if given).
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/agents/{name}",
    tag = "agents",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The agent's name (a DNS label)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`: delete only this \
            version"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid`: a bad name or `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` `agents` in \
            the namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the version `If-Match` names is not the \
            current one", body = ErrorBody),
    )
)]
async fn delete_agent(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::Agents,
        Verb::Delete,
    )
    .await?;
    check_name("name", &name)?;
    let expected = if_match(&headers)?;
    let event = Event {
        request_id: Some(req_id),
        ..Event::new(
            EventType::AgentDelete,
            principal(&caller),
            spawn_audit::Resource {
                kind: "agent".into(),
                name: format!("{ns}/{name}"),
            },
            "delete",
            Outcome::Success,
        )
    };
    state.record(event.clone()).await?;
    let deleted = state
        .store
        .delete_agent(&ns, &name, expected)
        .await
        .map_err(ApiError::from);
    state.record_failure(event, deleted).await?;
    Ok((StatusCode::NO_CONTENT, Body::empty()).into_response())
}

/// Refuses a request that breaks this daemon's policy (`policy`): a `policy.violation`
/// event (outcome `denied`, the rule broken), then 403 `policy_violation` — refused whether
/// or not the event could be written.
pub(crate) async fn policy_violation(
    state: &AppState,
    caller: &Caller,
    req_id: &str,
    resource: spawn_audit::Resource,
    action: &str,
    v: crate::policy::Violation,
) -> ApiError {
    let mut event = Event {
        request_id: Some(req_id.to_owned()),
        ..Event::new(
            EventType::PolicyViolation,
            principal(caller),
            resource,
            action,
            Outcome::Denied,
        )
        .with_detail("rule", v.rule)
        .with_detail("reason", v.message.clone())
    };
    if let Some(f) = &v.field {
        event = event.with_detail("field", f.clone());
    }
    state.audit(event).await;
    ApiError::new(
        StatusCode::FORBIDDEN,
        "policy_violation",
        format!("{} (policy rule {})", v.message, v.rule),
    )
}

/// Ends the credential that authenticated the request (`auth.logout`). An API key is
/// revoked: it fails from the next request on, on every daemon (on SQLite this daemon
/// forgets what it remembered of it at once; on PostgreSQL every request reads the key). A
/// bearer JWT or a client certificate cannot be ended here — a token lasts until its `exp`
/// unless its issuer stops it, a certificate until its CA revokes it — so the request is
/// refused (400 `not_revocable`) and recorded as a denied `auth.logout`. Only the caller's
/// own credential: the request names nothing else.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "meta",
    responses(
        (status = 200, description = "The API key of the request, revoked (`revokedMs` set); \
            an `auth.logout` event", body = crate::views::KeyView),
        (status = 400, description = "`not_revocable`: the request was authenticated by a \
            bearer JWT or a client certificate, which this daemon cannot end (a denied \
            `auth.logout` event)", body = ErrorBody),
    )
)]
async fn logout(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
) -> Result<Json<crate::views::KeyView>, ApiError> {
    let event = Event {
        request_id: Some(req_id),
        ..Event::new(
            EventType::AuthLogout,
            principal(&caller),
            spawn_audit::Resource {
                kind: "credential".into(),
                name: caller.key_id.clone(),
            },
            "logout",
            Outcome::Success,
        )
    };
    if spawn_audit::parse_id("key", &caller.key_id).is_none() {
        let how = if caller.key_id == "jwt" {
            "a bearer token lasts until its exp unless its issuer revokes it"
        } else {
            "a client certificate lasts until its CA revokes it"
        };
        let mut refused = event;
        refused.outcome = Outcome::Denied;
        refused = refused.with_detail("reason", how);
        state.audit(refused).await;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_revocable",
            format!("this credential cannot be ended by spawnd: {how}"),
        ));
    }
    state.record(event.clone()).await?;
    let revoked = state
        .store
        .revoke_key(&caller.key_id)
        .await
        .map_err(ApiError::from);
    let revoked = state.record_failure(event, revoked).await?;
    state.sessions.end(&caller.session);
    Ok(Json(crate::views::KeyView::from(&revoked)))
}
