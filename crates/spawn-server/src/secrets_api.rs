//! Secrets over the API (RBAC resource `secrets`): set (a new version), list (names,
//! versions and dates) and delete, in a namespace; values are write-only, never in an
//! answer, a URL or the daemon's log. Each change is an `agent.secret.access` event,
//! durable before the change is made (no audit, no action), followed by an `error` one
//! when the change failed. Runs of the namespace resolve them at their start (see
//! `runs.rs`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use spawn_audit::{Event, EventType, Outcome};
use spawn_auth::rbac::{Resource, Verb};
use spawn_secrets::{Secrets, SecretsError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use crate::api::{authorize, body_error, check_name, principal, ApiError, Ctx, Shared};
use crate::views::ErrorBody;

/// The routes of this module (mounted behind authentication).
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets, shred_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretView {
    name: String,
    /// The latest version (each set makes one).
    version: i64,
    /// Milliseconds since the epoch: the first version, and the latest.
    created_ms: i64,
    updated_ms: i64,
    /// Who set the latest version.
    updated_by: String,
}

impl From<spawn_store::SecretEntry> for SecretView {
    fn from(e: spawn_store::SecretEntry) -> SecretView {
        SecretView {
            name: e.name,
            version: e.version,
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
            updated_by: e.updated_by,
        }
    }
}

/// A change of secrets: `event` durable first (no audit, no action), then `change`, whose
/// failure is recorded too.
async fn audited<T>(
    state: &crate::api::AppState,
    event: Event,
    change: impl std::future::Future<Output = Result<T, SecretsError>>,
) -> Result<T, ApiError> {
    state.record(event.clone()).await?;
    let done = change.await.map_err(from_secrets);
    state.record_failure(event, done).await
}

/// The body of a set: the value as text, or its bytes in base64 (one of the two).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SetSecret {
    /// The value, as UTF-8 text.
    #[schema(value_type = Option<String>)]
    value: Option<Zeroizing<String>>,
    /// The value's bytes, in standard base64.
    #[schema(value_type = Option<String>)]
    value_base64: Option<Zeroizing<String>>,
}

/// The secrets of the daemon, or 503 when it has none (it could not read its master key).
fn secrets_of(state: &crate::api::AppState) -> Result<&Secrets, ApiError> {
    state.secrets().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets_unavailable",
            "this daemon has no master key for secrets (see its log)",
        )
    })
}

fn check_secret_name(name: &str) -> Result<(), ApiError> {
    spawn_secrets::check_name(name).map_err(|e| ApiError::invalid(format!("name: {e}")))
}

fn event(caller: &crate::api::Caller, req_id: &str, ns: &str, name: &str, action: &str) -> Event {
    Event {
        request_id: Some(req_id.to_owned()),
        ..Event::new(
            EventType::AgentSecretAccess,
            principal(caller),
            spawn_audit::Resource {
                kind: "secret".into(),
                name: name.to_owned(),
            },
            action,
            Outcome::Success,
        )
        .with_detail("namespace", ns.to_owned())
        .with_detail("source", "store")
    }
}

fn from_secrets(e: SecretsError) -> ApiError {
    match e {
        SecretsError::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        SecretsError::InvalidValue { .. }
        | SecretsError::InvalidName(_)
        | SecretsError::InvalidNamespace(_) => ApiError::invalid(e.to_string()),
        other => {
            tracing::error!(error = %other, "secrets");
            ApiError::internal()
        }
    }
}

/// The namespace's secrets, by name: never a value.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/secrets",
    tag = "secrets",
    params(("ns" = String, Path, description = "The namespace (a DNS label)")),
    responses(
        (status = 200, description = "The secrets: names, versions, dates", body = Vec<SecretView>),
        (status = 400, description = "`invalid`: a bad namespace", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `secrets` in the \
            namespace", body = ErrorBody),
        (status = 503, description = "`secrets_unavailable`", body = ErrorBody),
    )
)]
async fn list_secrets(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Secrets, Verb::List).await?;
    let list = secrets_of(&state)?.list(&ns).await.map_err(from_secrets)?;
    Ok(Json(list.into_iter().map(SecretView::from).collect()))
}

/// Sets a secret: a new version of it (`create` for a new name, `update` for one that has
/// versions). The value is write-only: no answer ever holds it.
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/secrets/{name}",
    tag = "secrets",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The secret's name: `[A-Za-z_][A-Za-z0-9_]*`"),
    ),
    request_body(content = SetSecret, description = "`value` (text) or `valueBase64` (bytes), \
        1 byte to 64 KiB"),
    responses(
        (status = 200, description = "Set: its new version", body = SecretView),
        (status = 400, description = "`invalid`: a bad name, body or value", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` (or `update`) \
            `secrets` in the namespace", body = ErrorBody),
        (status = 503, description = "`audit_unavailable` or `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn put_secret(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    check_secret_name(&name)?;
    let secrets = secrets_of(&state)?;
    let exists = secrets
        .list(&ns)
        .await
        .map_err(from_secrets)?
        .into_iter()
        .any(|e| e.name == name);
    let verb = if exists { Verb::Update } else { Verb::Create };
    authorize(&state, &caller, &req_id, &ns, Resource::Secrets, verb).await?;
    let body = body.map_err(|e| body_error(&state, &e))?;
    let value = value_of(&body)?;
    let by = format!("{}/{}", caller.subject.kind.as_str(), caller.subject.name);
    let event = event(&caller, &req_id, &ns, &name, "set");
    let version = audited(&state, event, secrets.set(&ns, &name, &value, &by)).await?;
    let entry = secrets
        .list(&ns)
        .await
        .map_err(from_secrets)?
        .into_iter()
        .find(|e| e.name == name);
    // (Deleted meanwhile by another request: what this one set.)
    let view = match entry {
        Some(e) => SecretView::from(e),
        None => SecretView {
            name,
            version,
            created_ms: 0,
            updated_ms: 0,
            updated_by: by,
        },
    };
    Ok((StatusCode::OK, Json(view)).into_response())
}

/// The value of a set's body: an object with `value` or `valueBase64`, never both.
fn value_of(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    // An object only: serde would take an array as the fields by position.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body: expected a JSON object"));
    }
    // The parser's message quotes no value (serde_json's errors name a position).
    let set: SetSecret = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("body: {}", strip_value(&e))))?;
    match (set.value, set.value_base64) {
        (Some(v), None) => Ok(Zeroizing::new(v.as_bytes().to_vec())),
        (None, Some(b)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim().as_bytes())
                .map(Zeroizing::new)
                .map_err(|_| ApiError::invalid("valueBase64: not standard base64"))
        }
        _ => Err(ApiError::invalid(
            "body: exactly one of `value` and `valueBase64`",
        )),
    }
}

/// serde's message without what it quotes of the input (a value could be in it).
fn strip_value(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("not JSON (line {}, column {})", e.line(), e.column())
        }
        Category::Data => {
            let text = e.to_string();
            // "unknown field `x`, expected ..." names only fields; a type error may quote
            // the value ("invalid type: integer `5`"): kept only when it names a field.
            if text.starts_with("unknown field") || text.starts_with("missing field") {
                text
            } else {
                format!(
                    "the fields are not `value` or `valueBase64` strings (line {}, column {})",
                    e.line(),
                    e.column()
                )
            }
        }
    }
}

/// Deletes every version of a secret.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/secrets/{name}",
    tag = "secrets",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The secret's name"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid`: a bad name", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` `secrets` in \
            the namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`audit_unavailable` or `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn delete_secret(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::Secrets,
        Verb::Delete,
    )
    .await?;
    check_secret_name(&name)?;
    let secrets = secrets_of(&state)?;
    let event = event(&caller, &req_id, &ns, &name, "delete");
    audited(&state, event, secrets.delete(&ns, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a namespace's shredding destroyed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Shredded {
    /// Data keys destroyed (with them, every value sealed under them).
    data_keys: u64,
    /// Sealed values deleted.
    values: u64,
}

/// Crypto-shredding: every secret of the namespace and its data keys destroyed (what a
/// namespace's deletion does to its secrets); a backup of the database opens none of them
/// any more. Recorded before it is done.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/secrets",
    tag = "secrets",
    params(("ns" = String, Path, description = "The namespace (a DNS label)")),
    responses(
        (status = 200, description = "Shredded", body = Shredded),
        (status = 400, description = "`invalid`: a bad namespace", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` `secrets` in \
            the namespace", body = ErrorBody),
        (status = 503, description = "`audit_unavailable` or `secrets_unavailable`", body = ErrorBody),
    )
)]
async fn shred_secrets(
    State(state): State<Shared>,
    (Extension(caller), Extension(crate::api::RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
) -> Result<Json<Shredded>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::Secrets,
        Verb::Delete,
    )
    .await?;
    let secrets = secrets_of(&state)?;
    let event = event(&caller, &req_id, &ns, "*", "shred");
    let (data_keys, values) = audited(&state, event, secrets.shred(&ns)).await?;
    Ok(Json(Shredded { data_keys, values }))
}
