//! The audit log over the API, for principals with `audit` `list`/`get` bound cluster-wide
//! (the built-in `auditor` role in namespace `*`): the records the database holds, queried
//! (`/v1/audit/events`), exported as the JSON lines the log wrote (`/v1/audit/export`), and
//! verified against the chain and this daemon's signed checkpoints (`/v1/audit/verify`).
//!
//! The database holds a copy of each daemon's log file (`spawn_store::Ingest`), brought up to
//! date before every answer, so an answer includes every event written before the request.
//! Audit events are of the whole cluster: a binding in one namespace grants none of them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spawn_audit::checkpoint::{Opened, VerifierKey};
use spawn_audit::cut::Cut;
use spawn_audit::query::Filter;
use spawn_auth::rbac::{Resource, Verb, ALL_NAMESPACES};
use spawn_store::{Ingest, Store};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{authorize, ApiError, Ctx, Shared};
use crate::views::ErrorBody;

/// The routes of this module (mounted behind authentication).
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(audit_events))
        .routes(routes!(audit_export))
        .routes(routes!(audit_verify))
        .routes(routes!(audit_capabilities))
        .routes(routes!(audit_logs))
}

/// This daemon's log as the database holds it.
#[derive(Debug)]
pub struct AuditCopy {
    /// The log's name (its checkpoint key's origin).
    pub(crate) log: String,
    ingest: tokio::sync::Mutex<Ingest>,
    /// The log file.
    path: std::path::PathBuf,
    /// Where the log's checkpoints are kept, and the key that opens them.
    notes_dir: std::path::PathBuf,
    verifier: VerifierKey,
}

/// What one retention pass did ([`AuditCopy::retain`]).
#[derive(Debug)]
pub struct Retention {
    /// In the database.
    pub stored: spawn_store::Retained,
    /// In the log file, at the latest cut it can take (`None` when the stored log does
    /// not verify: nothing is cut then).
    pub file: Option<Result<spawn_audit::cut::FileCut, spawn_audit::AuditError>>,
}

impl AuditCopy {
    /// The copy of the log file at `path` (named `log`), whose checkpoints `verifier` opens.
    pub async fn new(
        store: &Store,
        log: &str,
        path: &std::path::Path,
        verifier: VerifierKey,
    ) -> Result<AuditCopy, spawn_store::StoreError> {
        Ok(AuditCopy {
            log: log.to_owned(),
            ingest: tokio::sync::Mutex::new(Ingest::new(store, log, path).await?),
            path: path.to_owned(),
            notes_dir: path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned(),
            verifier,
        })
    }

    /// Copies what the log file holds beyond the database's copy; returns the last seq
    /// stored. Stops at the first record that does not continue the stored chain (an
    /// error, which names it).
    pub async fn catch_up(&self, store: &Store) -> Result<Option<i64>, spawn_store::StoreError> {
        let mut ingest = self.ingest.lock().await;
        ingest.catch_up(store).await?;
        Ok(ingest.stored())
    }

    /// The cuts of `log` the database holds and this daemon's key signed, with those kept
    /// beside its checkpoints.
    async fn cuts(&self, store: &Store, log: &str) -> Result<Vec<Cut>, ApiError> {
        let mut cuts: Vec<Cut> = store
            .audit_cuts(log)
            .await?
            .into_iter()
            .filter_map(|(_, note)| Cut::open(&self.verifier, &note).ok())
            .collect();
        if log == self.log {
            let notes = spawn_audit::checkpoint::notes(&self.notes_dir).unwrap_or_default();
            cuts.extend(spawn_audit::cut::cuts_in(&self.verifier, &notes));
        }
        Ok(cuts)
    }

    /// Retention: cuts this daemon's log in the database before `before` (the log's
    /// timestamp form) under a cut signed with `key`, then the log file at the latest cut
    /// signed that it can take (the file keeps its last record: a cut of everything waits
    /// for one more, [`spawn_audit::cut::cut_file`]); a cut of the file a pass could not
    /// take (readers, or no record after it yet) is taken by a later one.
    pub async fn retain(
        &self,
        store: &Store,
        key: &spawn_audit::checkpoint::SigningKey,
        before: &str,
    ) -> Result<Retention, spawn_store::StoreError> {
        use spawn_audit::cut::{cut_file, FileCut};
        // Up to date first: what is cut must be what the log holds.
        self.catch_up(store).await?;
        let stored = store
            .audit_retain(&self.log, key, self.notes(), &self.notes_dir, before)
            .await?;
        if matches!(stored, spawn_store::Retained::Broken(_)) {
            return Ok(Retention { stored, file: None });
        }
        let mut cuts = self.cuts(store, &self.log).await.unwrap_or_default();
        cuts.sort_by_key(|c| std::cmp::Reverse(c.checkpoint.size));
        cuts.dedup_by_key(|c| c.checkpoint.size);
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let mut done = None;
            for cut in &cuts {
                match cut_file(&path, cut) {
                    Ok(FileCut::NotYet) => done = Some(Ok(FileCut::NotYet)),
                    other => return Some(other),
                }
            }
            done
        })
        .await
        .unwrap_or_else(|e| {
            Some(Err(spawn_audit::AuditError::Checkpoint(format!(
                "the cut of the log file stopped: {e}"
            ))))
        });
        Ok(Retention { stored, file })
    }

    /// This log's checkpoints, opened.
    fn notes(&self) -> Vec<Opened> {
        spawn_audit::checkpoint::notes(&self.notes_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(p, n)| {
                let opened = self.verifier.open(&n);
                (p, opened)
            })
            .collect()
    }
}

/// Most records in one answer.
const MAX_LIMIT: usize = 1000;
/// Longest free-text value taken.
const MAX_TEXT: usize = 256;

/// Which records: every condition given must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Event types, comma-separated (`agent.capability.denied,auth.failure`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// The agent (`ag_…` id or name).
    agent: Option<String>,
    /// The principal: `type/name`, an id or a name.
    principal: Option<String>,
    /// `success`, `denied` or `error`.
    outcome: Option<String>,
    /// At or after this time (`2026-01-15T10:30:00.000Z`).
    since: Option<String>,
    /// Before this time.
    until: Option<String>,
    /// The trace (`tr_…`).
    trace: Option<String>,
    /// Text found anywhere in the record, case-insensitively.
    q: Option<String>,
    /// Records after this seq (from a previous page's `next`).
    after: Option<String>,
    /// At most this many records (1 to 1000, default 100).
    limit: Option<usize>,
    /// The log (default: this daemon's; `GET /v1/audit/events` answers name it).
    log: Option<String>,
}

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsPage {
    /// The log the records are of.
    log: String,
    /// The records (SPEC §7), in seq order.
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
    /// Pass as `?after=` for the next page; `null` when there are no more.
    #[schema(required = true)]
    next: Option<String>,
}

/// A log's check.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyAnswer {
    log: String,
    /// Whether the chain and every checkpoint hold.
    intact: bool,
    records: u64,
    #[schema(required = true)]
    last_seq: Option<u64>,
    /// Checkpoints checked (only this daemon's own log has them here).
    checkpoints: usize,
    /// The first problem: its seq and what is wrong.
    #[schema(required = true, value_type = Option<Object>)]
    broken: Option<Value>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// The log (default: this daemon's).
    log: Option<String>,
}

fn text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) => {
            Err(ApiError::invalid(format!(
                "{field}: 1 to {MAX_TEXT} characters, no control characters"
            )))
        }
        v => Ok(v),
    }
}

/// A time in the log's form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn time(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(s) = v else { return Ok(None) };
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    let ok = s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        });
    if !ok {
        return Err(ApiError::invalid(format!(
            "{field}: a UTC time as the log writes it, e.g. 2026-01-15T10:30:00.000Z"
        )));
    }
    Ok(Some(s))
}

impl EventsQuery {
    fn filter(self) -> Result<(Filter, i64, usize, Option<String>), ApiError> {
        let types = match text("type", self.event_type)? {
            None => Vec::new(),
            Some(t) => t
                .split(',')
                .map(|t| {
                    t.parse::<spawn_audit::EventType>()
                        .map(|e| e.as_str().to_owned())
                        .map_err(|_| ApiError::invalid(format!("type: {t:?} is not an event type")))
                })
                .collect::<Result<_, _>>()?,
        };
        let outcome = match self.outcome.as_deref() {
            None => None,
            Some(o @ ("success" | "denied" | "error")) => Some(o.to_owned()),
            Some(_) => return Err(ApiError::invalid("outcome: success, denied or error")),
        };
        let trace = match self.trace {
            Some(t) if spawn_audit::parse_id("tr", &t).is_none() => {
                return Err(ApiError::invalid("trace: not a trace id (tr_…)"))
            }
            t => t,
        };
        let after = match self.after.as_deref() {
            None => 0,
            Some(a) => spawn_auth::bearer::header_number(a)
                .ok_or_else(|| ApiError::invalid("after: a seq from a previous page"))?,
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit: 1 to {MAX_LIMIT}")));
        }
        let filter = Filter {
            types,
            agent: text("agent", self.agent)?,
            principal: text("principal", self.principal)?,
            outcome,
            since: time("since", self.since)?,
            until: time("until", self.until)?,
            trace,
            text: text("q", self.q)?,
        };
        Ok((filter, after, limit, text("log", self.log)?))
    }
}

/// The query of a request that needs `verb` on `audit` cluster-wide: refused (403, and an
/// `rbac.permission.denied` event) before the query is even read.
async fn as_auditor<T>(
    state: &crate::AppState,
    caller: &crate::api::Caller,
    req_id: &str,
    verb: Verb,
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    authorize(state, caller, req_id, ALL_NAMESPACES, Resource::Audit, verb).await?;
    let Query(q) = q.map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
    Ok(q)
}

/// The copy, brought up to date, and the log asked for.
async fn ready(
    state: &crate::AppState,
    log: Option<String>,
) -> Result<(Arc<AuditCopy>, String), ApiError> {
    let copy = state.audit_copy().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this daemon keeps no copy of the audit log in its database",
        )
    })?;
    if let Err(e) = copy.catch_up(&state.store).await {
        // The answer still holds what was stored; the error is the operator's to see.
        tracing::error!(error = %e, "the audit log's copy in the database");
    }
    let log = log.unwrap_or_else(|| copy.log.clone());
    Ok((copy, log))
}

/// Audit records, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    tag = "audit",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of records", body = EventsPage),
        (status = 400, description = "`invalid`: a bad or unknown parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `audit` \
            cluster-wide", body = ErrorBody),
    )
)]
async fn audit_events(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let q = as_auditor(&state, &caller, &req_id, Verb::List, q).await?;
    let (filter, after, limit, log) = q.filter()?;
    let (_, log) = ready(&state, log).await?;
    let lines = state
        .store
        .audit_query(&log, &filter, after, limit + 1)
        .await?;
    let more = lines.len() > limit;
    let items: Vec<Value> = lines
        .iter()
        .take(limit)
        .filter_map(|l| serde_json::from_str(&l.line).ok())
        .collect();
    let next = more
        .then(|| lines.get(limit - 1).map(|l| l.seq.to_string()))
        .flatten();
    Ok(Json(EventsPage { log, items, next }))
}

/// The whole log as the JSON lines it wrote: `spawn audit verify --file` checks it bit for
/// bit.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    params(LogQuery),
    responses(
        (status = 200, description = "JSON lines, one record each", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "`invalid`: a bad or unknown parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `audit` \
            cluster-wide", body = ErrorBody),
    )
)]
async fn audit_export(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = as_auditor(&state, &caller, &req_id, Verb::Get, q).await?;
    let (_, log) = ready(&state, text("log", q.log)?).await?;
    // A page at a time: the log may be larger than memory.
    let store = state.store.clone();
    let pages = futures_util::stream::unfold(Some(i64::MIN), move |after| {
        let (store, log) = (store.clone(), log.clone());
        async move {
            let after = after?;
            match store.audit_lines(&log, after, 5_000).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = page.last().map(|l| l.seq);
                    let mut buf = Vec::with_capacity(page.len() * 512);
                    for l in &page {
                        buf.extend_from_slice(l.line.as_bytes());
                        buf.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(buf), next))
                }
                // Cut off: the export is then missing its end, which `verify --file` and
                // the checkpoints show; the error is logged.
                Err(e) => {
                    tracing::error!(error = %e, "audit export");
                    Some((Err(std::io::Error::other("the audit export failed")), None))
                }
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

/// Checks the stored log: every row against its line, the chain, and (for this daemon's own
/// log) every signed checkpoint.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    params(LogQuery),
    responses(
        (status = 200, description = "The check; `intact` false names the first problem", body = VerifyAnswer),
        (status = 400, description = "`invalid`: a bad or unknown parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `audit` \
            cluster-wide", body = ErrorBody),
    )
)]
async fn audit_verify(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<VerifyAnswer>, ApiError> {
    let q = as_auditor(&state, &caller, &req_id, Verb::Get, q).await?;
    let (copy, log) = ready(&state, text("log", q.log)?).await?;
    let notes = if log == copy.log {
        copy.notes()
    } else {
        Vec::new()
    };
    let checkpoints = notes.len();
    let cuts = copy.cuts(&state.store, &log).await?;
    let v = state.store.audit_verify(&log, notes, cuts).await?;
    Ok(Json(VerifyAnswer {
        log,
        intact: v.broken.is_none(),
        records: v.records,
        last_seq: v.last_seq,
        checkpoints,
        broken: v
            .broken
            .map(|b| serde_json::json!({"seq": b.seq, "reason": b.reason})),
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CapabilitiesQuery {
    /// The agent (`ag_…` id or name).
    agent: String,
    /// Uses at or after this time (`2026-01-15T10:30:00.000Z`); default: all.
    since: Option<String>,
    /// The log (default: this daemon's).
    log: Option<String>,
}

/// One capability's uses.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CapabilityUseView {
    capability: String,
    /// Uses, allowed and denied.
    count: u64,
    denied: u64,
    /// The latest use's time.
    last_use: String,
}

/// An agent's uses of each capability.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CapabilitiesAnswer {
    log: String,
    agent: String,
    capabilities: Vec<CapabilityUseView>,
}

/// Per capability, how often an agent used it, how often it was denied, and when last (the
/// records of `agent.capability.invoke`/`.denied` and `agent.net.connect`, a summary of
/// held-back repeats counting as its count).
#[utoipa::path(
    get,
    path = "/v1/audit/capabilities",
    tag = "audit",
    params(CapabilitiesQuery),
    responses(
        (status = 200, description = "Per capability: uses, denials, last use", body = CapabilitiesAnswer),
        (status = 400, description = "`invalid`: a bad, missing or unknown parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `audit` \
            cluster-wide", body = ErrorBody),
    )
)]
async fn audit_capabilities(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    q: Result<Query<CapabilitiesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CapabilitiesAnswer>, ApiError> {
    let q = as_auditor(&state, &caller, &req_id, Verb::List, q).await?;
    let agent = text("agent", Some(q.agent))?.unwrap_or_default();
    let filter = Filter {
        types: [
            "agent.capability.invoke",
            "agent.capability.denied",
            "agent.net.connect",
        ]
        .map(str::to_owned)
        .to_vec(),
        agent: Some(agent.clone()),
        since: time("since", q.since)?,
        ..Filter::default()
    };
    let (_, log) = ready(&state, text("log", q.log)?).await?;
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = state
            .store
            .audit_query(&log, &filter, after, MAX_LIMIT)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(
            page.iter()
                .filter_map(|l| serde_json::from_str::<Value>(&l.line).ok()),
        );
        if page.len() < MAX_LIMIT {
            break;
        }
    }
    let capabilities = spawn_audit::query::capabilities(&records)
        .into_iter()
        .map(|c| CapabilityUseView {
            capability: c.capability,
            count: c.count,
            denied: c.denied,
            last_use: c.last_use,
        })
        .collect();
    Ok(Json(CapabilitiesAnswer {
        log,
        agent,
        capabilities,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NoQuery {}

/// The logs the database holds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogsAnswer {
    /// This daemon's own log.
    this: String,
    /// Every log the database holds records of (one per daemon that wrote to it), by name.
    logs: Vec<String>,
}

/// The audit logs of the cluster: one per daemon that shares the database (each signs its
/// own checkpoints); name one as `?log=` to the other audit routes.
#[utoipa::path(
    get,
    path = "/v1/audit/logs",
    tag = "audit",
    responses(
        (status = 200, description = "The logs", body = LogsAnswer),
        (status = 400, description = "`invalid`: an unknown parameter", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `audit` \
            cluster-wide", body = ErrorBody),
    )
)]
async fn audit_logs(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    q: Result<Query<NoQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogsAnswer>, ApiError> {
    let NoQuery {} = as_auditor(&state, &caller, &req_id, Verb::List, q).await?;
    let (_, this) = ready(&state, None).await?;
    let logs = state.store.audit_logs().await?;
    Ok(Json(LogsAnswer { this, logs }))
}
