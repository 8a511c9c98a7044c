//! Runs through the daemon.
//!
//! The API queues a run (`POST …/runs`). Every daemon's scheduler claims queued runs under
//! a lease (`spawn-store`: each run claimed by exactly one daemon) and starts, for each, a
//! **supervisor** process (`spawnd supervise`: the pattern of containerd's shims), in a
//! session of its own, so that the daemon can stop or restart without touching it. The
//! supervisor holds the run's lease (renewed every [`RENEW_EVERY`]), stores the run's output
//! as it comes (readable from any daemon, streamed over SSE), passes a cancellation on, and
//! records the end. It runs the sandbox itself, driving `spawn-run` as `spawn run` does,
//! and makes it while still single-threaded (a native sandbox must be started from a
//! single-threaded process); its store work starts on a thread once the sandbox exists
//! (`spawn_run::Run::on_started`). If a supervisor
//! dies, its lease lapses and any daemon marks the run `interrupted`; it is never started
//! again.

use std::io::{Read as _, Write as _};
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spawn_auth::rbac::{Resource, Verb};
use spawn_store::{NewRun, RunRecord, RunState, Store, StoreError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use spawn_audit::{Event, EventType, Outcome};

use crate::api::{
    authorize, body_error, check_name, json_object, list_params, not_found_in, principal, ApiError,
    Caller, Ctx, ListQ, ListQuery, RequestId, Shared,
};
use crate::views::{ErrorBody, LogChunk, Logs, Page, RunEnd, RunView, StoppedView};
use crate::{Config, ServerError};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a supervisor renews its run's lease (and looks for a cancellation).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a scheduler looks for queued runs and lapsed leases.
const SCHEDULE_EVERY: Duration = Duration::from_millis(200);
/// Largest piece of output stored at once.
const CHUNK: usize = 64 * 1024;

/// What a run runs: a snapshot of its agent's manifest (or none, for a bare command) and
/// what the request overrides. Stored as the run's `spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunInput {
    /// The manifest (JSON of an Agent), if any.
    #[serde(default)]
    pub manifest: Option<Value>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `POST …/runs`: from an agent of the namespace (`agent`), or an inline manifest, or a
/// bare command; `command`, `runtime` and `timeout` override.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    /// An agent of the namespace: the run takes a snapshot of its manifest.
    #[serde(default)]
    agent: Option<String>,
    /// An Agent manifest (SPEC §3) as JSON, instead of `agent`. Host mounts
    /// (`fs.mounts[].source`) are refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    manifest: Option<Value>,
    /// The command (overrides the manifest's).
    #[serde(default)]
    command: Vec<String>,
    /// `native`, `gvisor`, … (overrides the manifest's).
    #[serde(default)]
    runtime: Option<String>,
    /// How long it may run, e.g. `30s`, `5m` (overrides the manifest's).
    #[serde(default)]
    timeout: Option<String>,
}

/// The routes of this module (mounted behind authentication), each from its handler's
/// `#[utoipa::path]`.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, create_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(run_logs))
        .routes(routes!(start_agent))
        .routes(routes!(stop_agent))
}

/// Whether a test key may run in `ns`: only in `test` and `test-…` namespaces.
pub fn is_test_namespace(ns: &str) -> bool {
    ns == "test" || ns.starts_with("test-")
}

/// A test key starts runs only in test namespaces: a policy of this daemon (a
/// `policy.violation` event, rule `test-key-namespace`; the answer stays 403 `forbidden`).
async fn may_run_in(
    state: &crate::AppState,
    caller: &Caller,
    req_id: &str,
    ns: &str,
) -> Result<(), ApiError> {
    if caller.test_key && !is_test_namespace(ns) {
        let message =
            format!("a test key starts runs only in test namespaces (test, test-…), not {ns}");
        let v = crate::policy::Violation {
            rule: "test-key-namespace",
            field: None,
            message: message.clone(),
        };
        let resource = spawn_audit::Resource {
            kind: "namespace".into(),
            name: ns.to_owned(),
        };
        crate::api::policy_violation(state, caller, req_id, resource, "start", v).await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
    }
    Ok(())
}

/// Queues `input` in `ns` once it is known to resolve (a run that cannot run is a 400, not
/// a failed run; one that breaks the daemon's policy a 403 and a `policy.violation`), and
/// wakes the schedulers. The run is recorded first (`agent.start`, its id as `traceId`),
/// durable before it exists: a run the log cannot record is not queued.
async fn queue(
    state: &crate::AppState,
    caller: &Caller,
    req_id: &str,
    ns: &str,
    input: &RunInput,
    agent: Option<&spawn_store::AgentRecord>,
) -> Result<RunRecord, ApiError> {
    if let Some(m) = &input.manifest {
        if let Ok(a) = spawn_policy::parse_agent(&m.to_string()) {
            if let Some(v) = crate::policy::check_agent(&a) {
                let resource = match agent {
                    Some(a) => spawn_audit::Resource {
                        kind: "agent".into(),
                        name: format!("{ns}/{}", a.name),
                    },
                    None => spawn_audit::Resource {
                        kind: "run".into(),
                        name: ns.to_owned(),
                    },
                };
                return Err(crate::api::policy_violation(
                    state, caller, req_id, resource, "start", v,
                )
                .await);
            }
        }
    }
    let resolved = resolve(input).map_err(|e| ApiError::invalid(e.to_string()))?;
    // A run that is granted secrets reads them (the model's credential among them): its
    // starter must be allowed to.
    let model_secret = resolved
        .model
        .as_ref()
        .is_some_and(|m| m.credential.is_some());
    if !resolved.secrets.is_empty() || model_secret {
        crate::api::authorize(state, caller, req_id, ns, Resource::Secrets, Verb::Get).await?;
    }
    let spec = serde_json::to_string(input).map_err(|_| ApiError::internal())?;
    let id = spawn_audit::new_id("tr").map_err(|_| ApiError::internal())?;
    let event = match agent {
        Some(a) => agent_event(caller, req_id, EventType::AgentStart, "start", ns, a),
        None => Event {
            request_id: Some(req_id.to_owned()),
            ..Event::new(
                EventType::AgentStart,
                principal(caller),
                spawn_audit::Resource {
                    kind: "run".into(),
                    name: format!("{ns}/{id}"),
                },
                "start",
                Outcome::Success,
            )
        },
    };
    let event = Event {
        trace_id: Some(id.clone()),
        ..event.with_detail("runId", id.clone())
    };
    state.record(event.clone()).await?;
    let run = state
        .store
        .create_run_as(
            &id,
            &NewRun {
                namespace: ns.to_owned(),
                agent_id: agent.map(|a| a.id.clone()),
                spec,
                created_by: caller.subject.to_string(),
                request_id: Some(req_id.to_owned()),
            },
        )
        .await
        .map_err(ApiError::from);
    let run = state.record_failure(event, run).await?;
    state.runs_queued.notify_one();
    Ok(run)
}

/// Queues a run: of an agent of the namespace, an inline manifest, or a bare command.
/// Resolved at once as `spawn run` resolves it: a run that cannot run is a 400, not a failed
/// run.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/runs",
    tag = "runs",
    params(("ns" = String, Path, description = "The namespace (a DNS label)")),
    request_body(content = CreateRun, content_type = "application/json"),
    responses(
        (status = 201, description = "Queued", body = RunView),
        (status = 400, description = "`invalid`: a body that is not such JSON, both `agent` \
            and `manifest`, no command, an unknown runtime, a bad timeout",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` `runs` (or, \
            with `agent`, `get` `agents`) in the namespace, or a test key outside `test` and \
            `test-…` namespaces (a `policy.violation` event); `policy_violation`: the \
            manifest asks for what the daemon's policy forbids — host mounts, an allowlist \
            naming an always-blocked destination (a `policy.violation` event naming the rule)",
            body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent", body = ErrorBody),
    )
)]
async fn create_run(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Runs, Verb::Create).await?;
    may_run_in(&state, &caller, &req_id, &ns).await?;
    let body = body.map_err(|e| body_error(&state, &e))?;
    let req: CreateRun = json_object(&body)?;
    let (manifest, agent) = match (&req.agent, &req.manifest) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "body: name an agent or give a manifest, not both",
            ))
        }
        (Some(name), None) => {
            authorize(&state, &caller, &req_id, &ns, Resource::Agents, Verb::Get).await?;
            check_name("agent", name)?;
            let a = state.store.agent(&ns, name).await?;
            let m: Value = serde_json::from_str(&a.manifest).map_err(|_| ApiError::internal())?;
            (Some(m), Some(a))
        }
        (None, Some(m)) => (Some(m.clone()), None),
        (None, None) => (None, None),
    };
    let input = RunInput {
        manifest,
        command: req.command,
        runtime: req.runtime,
        timeout: req.timeout,
    };
    let run = queue(&state, &caller, &req_id, &ns, &input, agent.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(RunView::from(&run))).into_response())
}

/// What `POST …/agents/{name}/start` may override (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartAgent {
    /// The command (overrides the manifest's).
    #[serde(default)]
    command: Vec<String>,
    /// `native`, `gvisor`, … (overrides the manifest's).
    #[serde(default)]
    runtime: Option<String>,
    /// How long it may run, e.g. `30s`, `5m` (overrides the manifest's).
    #[serde(default)]
    timeout: Option<String>,
}

fn agent_event(
    caller: &Caller,
    req_id: &str,
    kind: EventType,
    action: &str,
    ns: &str,
    agent: &spawn_store::AgentRecord,
) -> Event {
    Event {
        request_id: Some(req_id.to_owned()),
        ..Event::new(
            kind,
            principal(caller),
            spawn_audit::Resource {
                kind: "agent".into(),
                name: format!("{ns}/{}", agent.name),
            },
            action,
            Outcome::Success,
        )
        .with_detail("agentId", agent.id.clone())
    }
}

/// `POST …/agents/{name}/start` (verb `start` on agents): queues a run of the agent, as
/// `POST …/runs` with `{"agent": name}` does; answers the run.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/agents/{name}/start",
    tag = "agents",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The agent's name (a DNS label)"),
    ),
    request_body(content = Option<StartAgent>, content_type = "application/json",
        description = "Optional: overrides of the agent's manifest"),
    responses(
        (status = 201, description = "A run of the agent, queued", body = RunView),
        (status = 400, description = "`invalid`: a bad name, a body that is not such a JSON \
            object, an unknown runtime, a bad timeout", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `start` `agents` in the \
            namespace, or a test key outside `test` and `test-…` namespaces; \
            `policy_violation`: the agent's manifest breaks the daemon's policy (each a \
            `policy.violation` event)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent", body = ErrorBody),
    )
)]
async fn start_agent(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Agents, Verb::Start).await?;
    may_run_in(&state, &caller, &req_id, &ns).await?;
    check_name("name", &name)?;
    let body = body.map_err(|e| body_error(&state, &e))?;
    let req: StartAgent = if body.iter().all(u8::is_ascii_whitespace) {
        StartAgent::default()
    } else {
        json_object(&body)?
    };
    let a = state.store.agent(&ns, &name).await?;
    let manifest: Value = serde_json::from_str(&a.manifest).map_err(|_| ApiError::internal())?;
    let input = RunInput {
        manifest: Some(manifest),
        command: req.command,
        runtime: req.runtime,
        timeout: req.timeout,
    };
    let run = queue(&state, &caller, &req_id, &ns, &input, Some(&a)).await?;
    Ok((StatusCode::CREATED, Json(RunView::from(&run))).into_response())
}

/// `POST …/agents/{name}/stop` (verb `stop` on agents): cancels every queued or running
/// run of the agent (a running one is stopped by its supervisor, as a cancelled run is);
/// answers the runs asked to stop.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/agents/{name}/stop",
    tag = "agents",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The agent's name (a DNS label)"),
    ),
    responses(
        (status = 200, description = "The runs asked to stop (none is not an error)",
            body = StoppedView),
        (status = 400, description = "`invalid`: a bad namespace or name", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `stop` `agents` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: no such agent", body = ErrorBody),
    )
)]
async fn stop_agent(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<StoppedView>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Agents, Verb::Stop).await?;
    check_name("name", &name)?;
    let a = state.store.agent(&ns, &name).await?;
    // Recorded before it is done; the runs it stops are those queued or running then.
    let event = agent_event(&caller, &req_id, EventType::AgentStop, "stop", &ns, &a);
    state.record(event.clone()).await?;
    let stopped = state
        .store
        .cancel_agent_runs(&ns, &a.id)
        .await
        .map_err(ApiError::from);
    let stopped = state.record_failure(event, stopped).await?;
    tracing::info!(request_id = %req_id, agent = %a.id,
        runs = ?stopped.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), "agent stopped");
    Ok(Json(StoppedView {
        agent: name,
        stopped: stopped.iter().map(RunView::from).collect(),
    }))
}

/// The run `id` if it is in `ns` (a run of another namespace is "not found" here).
async fn run_in(state: &crate::AppState, ns: &str, id: &str) -> Result<RunRecord, ApiError> {
    match state.store.run(id).await {
        Ok(r) if r.namespace == ns => Ok(r),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(not_found_in("run", id, ns)),
        Err(e) => Err(e.into()),
    }
}

/// A run id in a path is one spawn could have made (`spawn_audit::parse_id`), or a 400
/// before anything is looked up.
fn check_run_id(id: &str) -> Result<(), ApiError> {
    if spawn_audit::parse_id("tr", id).is_some() {
        Ok(())
    } else {
        Err(ApiError::invalid("id: not a run id (tr_…)"))
    }
}

/// A run.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/runs/{id}",
    tag = "runs",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("id" = String, Path, description = "The run's id (`tr_…`)"),
    ),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 400, description = "`invalid`: a bad namespace or run id", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `runs` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run in this namespace",
            body = ErrorBody),
    )
)]
async fn get_run(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<RunView>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Runs, Verb::Get).await?;
    check_run_id(&id)?;
    Ok(Json(RunView::from(&run_in(&state, &ns, &id).await?)))
}

/// The runs of a namespace, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/runs",
    tag = "runs",
    params(("ns" = String, Path, description = "The namespace (a DNS label)"), ListQuery),
    responses(
        (status = 200, description = "A page of runs (`after`: a run id)", body = Page<RunView>),
        (status = 400, description = "`invalid`: a bad namespace, `limit` or `after`",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `runs` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: `after` names no run of this namespace",
            body = ErrorBody),
    )
)]
async fn list_runs(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Page<RunView>>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Runs, Verb::List).await?;
    let (limit, after) = list_params(q, check_run_id)?;
    if let Some(a) = &after {
        run_in(&state, &ns, a).await?;
    }
    let p = state
        .store
        .list_runs(&ns, None, after.as_deref(), limit)
        .await?;
    Ok(Json(Page::of(&p)))
}

/// Asks a run to stop: a queued run is cancelled, a running one is sent SIGTERM by its
/// supervisor (within a few seconds) and ends `cancelled`.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/runs/{id}/cancel",
    tag = "runs",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("id" = String, Path, description = "The run's id (`tr_…`)"),
    ),
    responses(
        (status = 200, description = "The run, `cancelRequested`", body = RunView),
        (status = 400, description = "`invalid`: a bad namespace or run id", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `stop` `runs` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run in this namespace",
            body = ErrorBody),
    )
)]
async fn cancel_run(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<RunView>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Runs, Verb::Stop).await?;
    check_run_id(&id)?;
    run_in(&state, &ns, &id).await?;
    Ok(Json(RunView::from(&state.store.cancel_run(&id).await?)))
}

/// `?after=SEQ` for the JSON form of the logs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Only the pieces after this one (their `seq`); `Last-Event-ID` wins over it.
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// A run's output: all of it as JSON, or streamed live as server-sent events
/// (`Accept: text/event-stream`): one event per stored piece (`id` its number, `event`
/// `stdout` or `stderr`, `data` the bytes in base64), then `end` with the run's verdict.
/// `Last-Event-ID` resumes after the piece it names.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/runs/{id}/logs",
    tag = "runs",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("id" = String, Path, description = "The run's id (`tr_…`)"),
        LogQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "For the event stream: \
            resume after the piece of this number (an event's `id`)"),
    ),
    responses(
        (status = 200, description = "The output stored so far as JSON or, with `Accept: \
            text/event-stream`, server-sent events until the run ends: one per piece (`id` \
            its `seq`, `event` `stdout` or `stderr`, `data` the bytes in base64), then an \
            `end` event whose `data` is a `RunEnd` as JSON",
            content(
                (Logs = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "`invalid`: a bad namespace, run id, `after` or \
            `Last-Event-ID`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `agentlogs` in \
            the namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run in this namespace",
            body = ErrorBody),
    )
)]
async fn run_logs(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, id)): Path<(String, String)>,
    headers: HeaderMap,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::AgentLogs,
        Verb::Get,
    )
    .await?;
    check_run_id(&id)?;
    run_in(&state, &ns, &id).await?;
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
    let last_event = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(spawn_auth::bearer::header_number)
                .ok_or_else(|| ApiError::invalid("Last-Event-ID: not an event id of this API"))?,
        ),
    };
    let after = last_event.or(q.after).unwrap_or(0).max(0);
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !sse {
        let chunks = state.store.output(&id, after, 10_000).await?;
        return Ok(Json(Logs {
            items: chunks.iter().map(LogChunk::from).collect(),
        })
        .into_response());
    }
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(
        (store, id, after, false),
        move |(store, id, mut after, done)| async move {
            if done {
                return None;
            }
            loop {
                // The run's state first: output stored before it ended is all there.
                let run = match store.run(&id).await {
                    Ok(r) => r,
                    Err(_) => return None,
                };
                let chunks = store.output(&id, after, 256).await.unwrap_or_default();
                if !chunks.is_empty() {
                    let events: Vec<Result<SseEvent, std::convert::Infallible>> = chunks
                        .iter()
                        .map(|c| {
                            Ok(SseEvent::default()
                                .id(c.seq.to_string())
                                .event(c.stream.clone())
                                .data(base64::engine::general_purpose::STANDARD.encode(&c.data)))
                        })
                        .collect();
                    after = chunks.last().map_or(after, |c| c.seq);
                    return Some((
                        futures_util::stream::iter(events),
                        (store, id, after, false),
                    ));
                }
                if run.state().is_ok_and(RunState::is_final) {
                    let verdict = RunEnd {
                        error: run.error.clone(),
                        exit_code: run.exit_code,
                        state: run.state.clone(),
                    };
                    let end = SseEvent::default()
                        .event("end")
                        .data(serde_json::to_string(&verdict).unwrap_or_default());
                    return Some((
                        futures_util::stream::iter(vec![Ok(end)]),
                        (store, id, after, true),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    );
    let flat = futures_util::StreamExt::flatten(stream);
    Ok(Sse::new(flat)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What the supervisor is told to run, resolved as `spawn run` resolves it. Host mounts are
/// refused: a caller of the API names no paths of the daemon's host.
pub fn resolve(input: &RunInput) -> Result<spawn_policy::RunSpec, ServerError> {
    let agent =
        match &input.manifest {
            Some(m) => Some(spawn_policy::parse_agent(&m.to_string()).map_err(|e| {
                ServerError::Config {
                    what: "the manifest".into(),
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };
    // Refused before anything is resolved: resolving a host path would tell the caller
    // whether it exists on the daemon's host.
    let host_mount = agent
        .as_ref()
        .and_then(|a| a.spec.capabilities.as_ref())
        .and_then(|c| c.fs.as_ref())
        .is_some_and(|fs| fs.mounts.iter().any(|m| m.source.is_some()));
    if host_mount {
        return Err(ServerError::Config {
            what: "the run".into(),
            reason: "host mounts (fs.mounts[].source) are not available through the API".into(),
        });
    }
    // The daemon's policy again where the run is resolved to run (an agent stored before
    // a rule existed still meets it).
    if let Some(v) = agent.as_ref().and_then(crate::policy::check_agent) {
        return Err(ServerError::Config {
            what: "the run".into(),
            reason: v.message,
        });
    }
    let parse_runtime = |r: &str| {
        r.parse::<spawn_policy::RuntimeKind>()
            .map_err(|e| ServerError::Config {
                what: "runtime".into(),
                reason: e.to_string(),
            })
    };
    let overrides = spawn_policy::Overrides {
        runtime: input.runtime.as_deref().map(parse_runtime).transpose()?,
        timeout: input.timeout.clone(),
        command: input.command.clone(),
        ..Default::default()
    };
    let root = PathBuf::from("/");
    let spec =
        spawn_policy::resolve(agent.as_ref(), &root, &root, &overrides, &[]).map_err(|e| {
            ServerError::Config {
                what: "the run".into(),
                reason: e.to_string(),
            }
        })?;
    if spec
        .mounts
        .iter()
        .any(|m| matches!(m.source, spawn_policy::MountSource::Host(_)))
    {
        return Err(ServerError::Config {
            what: "the run".into(),
            reason: "host mounts are not available through the API".into(),
        });
    }
    Ok(spec)
}

/// The scheduler of one daemon: marks runs whose lease lapsed `interrupted`, claims
/// queued runs and starts a supervisor for each. Runs until the process ends.
/// The scheduler of this daemon, until `stop` turns true. It stops between rounds, never
/// inside one: a run it claimed has its supervisor started (or is failed) before it
/// returns, so a graceful shutdown leaves no run claimed and never started.
pub(crate) async fn schedule(
    state: Shared,
    holder: String,
    supervisor: SupervisorCommand,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let now = spawn_store::now_ms();
        match state.store.interrupt_expired(now).await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(run = %id, "interrupted: its supervisor stopped renewing its lease");
                }
            }
            Err(e) => tracing::error!(error = %e, "interrupt lapsed runs"),
        }
        let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        // Never more supervisors at once than the host's cap (they are counted while this
        // daemon lives; those of a previous daemon on the host are not).
        let running = supervisor.running.load(std::sync::atomic::Ordering::SeqCst);
        let room = state
            .limits
            .max_runs_per_host
            .saturating_sub(running)
            .min(8);
        let claimed = if room == 0 {
            Ok(Vec::new())
        } else {
            state
                .store
                .claim_runs_capped(
                    &holder,
                    until,
                    i64::try_from(room).unwrap_or(8),
                    i64::try_from(state.limits.max_runs_per_namespace).unwrap_or(8),
                )
                .await
        };
        match claimed {
            Ok(runs) => {
                for run in runs {
                    if let Err(e) = supervisor.start(&run, &holder) {
                        tracing::error!(run = %run.id, error = %e, "start a supervisor");
                        let _ = state
                            .store
                            .finish_run(
                                &run.id,
                                &holder,
                                RunState::Failed,
                                None,
                                Some("its supervisor could not be started"),
                            )
                            .await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "claim runs"),
        }
        tokio::select! {
            _ = tokio::time::timeout(SCHEDULE_EVERY, state.runs_queued.notified()) => {}
            _ = stop.changed() => {}
        }
    }
}

/// How a daemon starts a supervisor: this binary, `supervise`, with its configuration.
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
    /// Supervisors started by this daemon and still running.
    pub running: Arc<std::sync::atomic::AtomicUsize>,
    /// Told when one ends: there is room for another run.
    pub ended: Arc<tokio::sync::Notify>,
}

impl SupervisorCommand {
    /// Starts the supervisor of `run` (just claimed), its input (the stored spec) on its
    /// stdin.
    fn start(&self, run: &RunRecord, holder: &str) -> std::io::Result<()> {
        let mut cmd = std::process::Command::new(&self.exe);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["supervise", "--run", &run.id, "--holder", holder]);
        cmd.args(["--namespace", &run.namespace]);
        if let Some(a) = &run.agent_id {
            cmd.args(["--agent", a]);
        }
        cmd.stdin(Stdio::from(run_input(&run.spec)?))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // A process group of its own: the daemon's terminal's signals do not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn()?;
        let (running, ended) = (self.running.clone(), self.ended.clone());
        running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Reaped when it ends, while this daemon lives; if the daemon goes first, by init.
        std::thread::spawn(move || {
            let _ = child.wait();
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            ended.notify_one();
        });
        Ok(())
    }
}

/// The supervisor's stdout and stderr, captured: the run's output (the agent's, and
/// spawn's messages about the run) is read from these pipes and stored. The process's own
/// log goes to what its stderr was before ([`capture_stdio`]).
#[derive(Debug)]
pub struct Captured {
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
}

/// Points this process's stdout and stderr at pipes of its own and returns their read
/// ends, with a copy of the stderr it had (close-on-exec) for its log.
pub fn capture_stdio() -> std::io::Result<(Captured, std::fs::File)> {
    use std::os::fd::AsFd as _;
    // A close-on-exec copy, numbered above 2.
    let log = std::io::stderr().as_fd().try_clone_to_owned()?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::unistd::dup2_stdout(&out_w)?;
    nix::unistd::dup2_stderr(&err_w)?;
    Ok((
        Captured {
            stdout: out_r,
            stderr: err_r,
        },
        std::fs::File::from(log),
    ))
}

/// What the run's end tells the supervisor's store side.
#[derive(Debug)]
struct Verdict {
    state: RunState,
    code: Option<i32>,
    error: Option<&'static str>,
}

/// A run's input for its supervisor's stdin, whole before the supervisor exists: a daemon
/// killed right after starting it cannot leave it half a spec (the run would fail instead
/// of running). In memory only (a sealed memfd, read from its start), never on a disk.
fn run_input(spec: &str) -> std::io::Result<std::fs::File> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::io::Seek as _;
    let fd = memfd_create(
        c"spawn-run-input",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(spec.as_bytes())?;
    file.rewind()?;
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_WRITE
                | nix::fcntl::SealFlag::F_SEAL_GROW
                | nix::fcntl::SealFlag::F_SEAL_SHRINK
                | nix::fcntl::SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(file)
}

/// `spawnd supervise`: runs the claimed run `run` (held by `holder`; its input, the
/// stored spec, on stdin) to its end, and records it. The sandbox is made while this
/// process is single-threaded (the native runtime needs that); once it exists, or once it
/// has failed, a thread of the process attaches to the store, stores the run's output from
/// the pipes its stdout and stderr were pointed at ([`capture_stdio`]), renews the lease and
/// passes a cancellation on, then records the end. Returns the process's exit code.
///
/// A run that grants secrets has them resolved by `secrets` (a helper process that opens
/// the store, see [`HelperResolver`]).
pub fn supervise(
    config: &Config,
    run: &str,
    holder: &str,
    agent_id: Option<&str>,
    captured: Captured,
    secrets: Option<HelperResolver>,
) -> u8 {
    // A runtime for the store side, made now: a current-thread runtime starts no thread.
    // SIGTERM (a cancellation passed on, or an operator's) gets a handler now, so that
    // once the run's own mask is lifted at its end it cannot kill the process before the
    // end is recorded; while the run is on it goes to the run's signal descriptor.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "start the async runtime");
            return 125;
        }
    };
    let term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    });
    if let Err(e) = term {
        tracing::error!(error = %e, "handle SIGTERM");
        return 125;
    }
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<Verdict>();
    let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let side = StoreSide {
        rt,
        url: config.database_url(),
        run: run.to_owned(),
        holder: holder.to_owned(),
        captured,
        verdict: verdict_rx,
        cancelled: cancelled.clone(),
    };
    let side = Arc::new(std::sync::Mutex::new(Some(side)));
    let handle: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
    let begin = {
        let (side, handle) = (side.clone(), handle.clone());
        move || {
            let Some(s) = side.lock().ok().and_then(|mut s| s.take()) else {
                return;
            };
            let h = std::thread::Builder::new()
                .name("supervisor".into())
                .spawn(move || s.serve());
            match h {
                Ok(h) => {
                    if let Ok(mut slot) = handle.lock() {
                        *slot = Some(h);
                    }
                }
                // Without it nothing records or observes the run: it must not go on.
                Err(e) => {
                    tracing::error!(error = %e, "start the supervisor's store side");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::getpid(),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    };
    let code = run_here(config, run, agent_id, secrets, begin.clone());
    // Whatever the run wrote is out; then stdout and stderr are closed (to /dev/null) so
    // that the store side reads to the end.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let verdict = match code {
        _ if cancelled.load(std::sync::atomic::Ordering::SeqCst) => Verdict {
            state: RunState::Cancelled,
            code: Some(i32::from(code)),
            error: None,
        },
        0 => Verdict {
            state: RunState::Succeeded,
            code: Some(0),
            error: None,
        },
        125 => Verdict {
            state: RunState::Failed,
            code: Some(125),
            error: Some("spawn failed before the command ran (its message is in the run's stderr)"),
        },
        c => Verdict {
            state: RunState::Failed,
            code: Some(i32::from(c)),
            error: None,
        },
    };
    // A run whose sandbox was never made has no store side yet.
    begin();
    let _ = verdict_tx.send(verdict);
    let joined = handle.lock().ok().and_then(|mut h| h.take());
    if let Some(h) = joined {
        let _ = h.join();
    }
    code
}

/// The run itself, as `spawn run` runs it, in this thread: its messages on stderr, its
/// exit code (125 when spawn failed before the command ran). `begin` is called once its
/// sandbox exists.
fn run_here(
    config: &Config,
    run: &str,
    agent_id: Option<&str>,
    secrets: Option<HelperResolver>,
    begin: impl FnOnce() + Send + 'static,
) -> u8 {
    let mut text = String::new();
    if std::io::stdin()
        .take(4 << 20)
        .read_to_string(&mut text)
        .is_err()
    {
        eprintln!("spawnd: the run's input could not be read");
        return 125;
    }
    let spec = match serde_json::from_str::<RunInput>(&text)
        .map_err(|e| ServerError::Config {
            what: "the run's input".into(),
            reason: e.to_string(),
        })
        .and_then(|i| resolve(&i))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("spawnd: {e}");
            return 125;
        }
    };
    let created = spawn_run::Run::create(spawn_run::RunRequest {
        spec,
        home: config.home(),
        audit_limits: spawn_audit::Limits::default(),
        run_id: Some(run.to_owned()),
        agent_id: agent_id.map(str::to_owned),
    });
    let mut r = match created {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spawn: {e}");
            return 125;
        }
    };
    for w in r.warnings() {
        eprintln!("spawn: warning: {w}");
    }
    if let Some(resolver) = secrets {
        r.set_secret_resolver(Box::new(resolver));
    }
    r.on_started(begin);
    let finished = r.execute(&mut |w| eprintln!("spawn: warning: {w}"));
    tracing::debug!(run, spawn_run = %finished.run_id, "ran");
    match &finished.result {
        Ok(report) => u8::try_from(report.exit_code).unwrap_or(125),
        Err(e) => {
            eprintln!("spawn: {e}");
            125
        }
    }
}

/// Resolves a run's granted secrets, from the secrets of the run's namespace (whatever
/// its manifest says its namespace is), in a helper process: `spawnd resolve-secrets`
/// (the store's drivers run threads; the sandbox is made while the supervisor has one).
#[derive(Debug)]
pub struct HelperResolver {
    /// The helper: `spawnd` with its configuration and `resolve-secrets --namespace NS`.
    pub exe: std::path::PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl spawn_run::SecretResolver for HelperResolver {
    fn resolve(
        &mut self,
        _namespace: &str,
        grants: &[spawn_policy::SecretGrant],
    ) -> Vec<Result<spawn_run::SecretValue, String>> {
        let mut helper = std::process::Command::new(&self.exe);
        helper.args(&self.args);
        let sources: Vec<String> = grants.iter().map(|g| g.source.to_string()).collect();
        let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
        match spawn_secrets::helper::resolve_with(helper, &sources) {
            Ok(values) => values,
            Err(e) => grants.iter().map(|_| Err(e.to_string())).collect(),
        }
    }
}

/// `spawnd resolve-secrets --namespace NS`: the helper of [`HelperResolver`] (see
/// `spawn_secrets::helper`), on the daemon's store and master key.
pub async fn resolve_secrets(config: &Config, namespace: &str) -> Result<(), ServerError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ServerError::Config {
        what: what.into(),
        reason: e.to_string(),
    };
    let store = spawn_store::Store::open(&config.database_url()).await?;
    let master = spawn_secrets::master::from_env(&config.secrets_master_key())
        .map_err(|e| fail("the secrets' master key", &e))?;
    let secrets = spawn_secrets::Secrets::with_master(store, master);
    let served = spawn_secrets::helper::serve(
        Some(&secrets),
        namespace,
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        |name| {
            format!(
                "it is not set in namespace {namespace} (PUT /v1/namespaces/{namespace}/secrets/{name})"
            )
        },
    )
    .await;
    secrets.store().close().await;
    served.map_err(|e| fail("the run's secrets", &e))
}

/// The supervisor's thread of store work.
struct StoreSide {
    rt: tokio::runtime::Runtime,
    url: String,
    run: String,
    holder: String,
    captured: Captured,
    verdict: tokio::sync::oneshot::Receiver<Verdict>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl StoreSide {
    fn serve(self) {
        let StoreSide {
            rt,
            url,
            run,
            holder,
            captured,
            verdict,
            cancelled,
        } = self;
        let kept = rt.block_on(store_side(
            &url, &run, &holder, captured, verdict, &cancelled,
        ));
        if let Err(e) = kept {
            // Not recorded, nor observed: the run must not go on (its guard ends the
            // sandbox); its lease lapses and a daemon marks it interrupted.
            tracing::error!(run, error = %e, "the run cannot be recorded");
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Stores the run's output as it comes, renews its lease, passes a cancellation on, and
/// records the end once `verdict` comes. An error means the run is not (or no longer)
/// this supervisor's to record.
async fn store_side(
    url: &str,
    run: &str,
    holder: &str,
    captured: Captured,
    mut verdict: tokio::sync::oneshot::Receiver<Verdict>,
    cancelled: &std::sync::atomic::AtomicBool,
) -> Result<(), ServerError> {
    // Its daemon brought the schema up to date before it claimed the run.
    let store = Store::attach(url).await?;
    let record = store.run(run).await?;
    if record.holder.as_deref() != Some(holder) || record.state()? != RunState::Running {
        return Err(ServerError::Config {
            what: format!("run {run}"),
            reason: "it is not running under this holder".into(),
        });
    }
    let pipe = |fd: std::os::fd::OwnedFd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| ServerError::Io {
            what: "read the run's output".into(),
            source: e,
        })
    };
    let (out, err) = (pipe(captured.stdout)?, pipe(captured.stderr)?);
    let store_out = store.clone();
    let id = run.to_owned();
    // stdout and stderr are stored as they come, one writer per run (the store numbers
    // the pieces in the order they are written).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(&'static str, Vec<u8>)>(64);
    let pump = |mut r: tokio::net::unix::pipe::Receiver,
                stream: &'static str,
                tx: tokio::sync::mpsc::Sender<(&'static str, Vec<u8>)>| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let p1 = tokio::spawn(pump(out, "stdout", tx.clone()));
    let p2 = tokio::spawn(pump(err, "stderr", tx));
    let writer = tokio::spawn(async move {
        while let Some((stream, data)) = rx.recv().await {
            if let Err(e) = store_out.append_output(&id, stream, &data).await {
                tracing::error!(error = %e, "store output");
            }
        }
    });
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    let end = loop {
        tokio::select! {
            v = &mut verdict => break v,
            _ = tokio::time::sleep(RENEW_EVERY) => {
                let until = spawn_store::now_ms() + lease_ms;
                match store.renew_lease(run, holder, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Interrupted meanwhile: the run must not go on unobserved.
                        return Err(ServerError::Config {
                            what: format!("run {run}"),
                            reason: "its lease was lost".into(),
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "renew the lease"),
                }
                let asked = store.run(run).await.is_ok_and(|r| r.cancel_requested);
                if asked && !cancelled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    // To the run's signal descriptor while it is on; to the handler
                    // installed at the start once it is over.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::getpid(),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
    };
    let _ = p1.await;
    let _ = p2.await;
    let _ = writer.await;
    if let Ok(v) = end {
        store
            .finish_run(run, holder, v.state, v.code, v.error)
            .await?;
    }
    store.close().await;
    Ok(())
}

/// The daemon's holder id: this host and process, and a random part.
pub fn holder_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    let rand = spawn_audit::new_id("d").unwrap_or_else(|_| "d_".into());
    format!("{host}-{}-{}", std::process::id(), &rand[2..10])
}

/// The path a supervisor is told for the configuration.
pub fn config_arg(path: Option<&FsPath>) -> Option<PathBuf> {
    path.map(FsPath::to_owned)
}

/// Shared by the scheduler and the API: wakes the scheduler when a run is queued.
pub type Wakeup = Arc<tokio::sync::Notify>;

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    /// The supervisor's input is whole and readable from its start before anyone reads
    /// it, whatever its size, and nothing can change it afterwards.
    #[test]
    fn a_runs_input_is_whole_before_its_supervisor_exists_and_sealed() {
        for len in [0usize, 1, 70, 65_536, 4 << 20] {
            let spec: String = "x".repeat(len);
            let mut file = super::run_input(&spec).unwrap();
            let mut back = String::new();
            file.read_to_string(&mut back).unwrap();
            assert_eq!(back.len(), len);
            assert!(file.write_all(b"more").is_err(), "{len}: writable");
            if len > 0 {
                assert!(file.set_len(0).is_err(), "{len}: shrinkable");
            }
        }
    }
}
