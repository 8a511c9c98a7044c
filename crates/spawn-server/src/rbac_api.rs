//! Roles, RoleBindings and API keys over the API, and the rule that keeps them from being
//! a way up: nobody grants what they do not hold in the namespace.
//!
//! - A Role written to a namespace may hold only permissions its writer holds there.
//! - A RoleBinding may bind only an existing Role (or a built-in one) whose permissions its
//!   writer holds there: a binding to a Role that does not exist yet could later grant
//!   whatever someone else puts in it.
//! - A key is made for a new ServiceAccount (one no key or binding names yet: a key for an
//!   existing principal would let its maker act with that principal's other bindings) with
//!   one role in the namespace, under the same rule; it is shown once, in the answer.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use spawn_audit::{Event, EventType, Outcome};
use spawn_auth::rbac::{self, BuiltinRole, Document, Permissions, Resource, SubjectKind, Verb};
use spawn_auth::{ApiKey, KeyEnv};
use spawn_store::{BindingRecord, KeyRecord, NewKey, RoleRecord, StoreError};

use crate::api::{
    authorize, body_error, check_name, if_match, list_params, not_found_in, permissions, principal,
    role_of, with_etag, ApiError, Caller, Ctx, ListQ, RequestId, Shared,
};

/// The routes of this module (mounted behind authentication).
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/namespaces/{ns}/roles", get(list_roles))
        .route(
            "/v1/namespaces/{ns}/roles/{name}",
            get(get_role).put(put_role).delete(delete_role),
        )
        .route("/v1/namespaces/{ns}/rolebindings", get(list_bindings))
        .route(
            "/v1/namespaces/{ns}/rolebindings/{name}",
            get(get_binding).put(put_binding).delete(delete_binding),
        )
        .route("/v1/namespaces/{ns}/keys", get(list_keys).post(create_key))
        .route("/v1/namespaces/{ns}/keys/{id}", delete(revoke_key))
}

fn role_json(r: &RoleRecord) -> Value {
    json!({
        "apiVersion": rbac::API_VERSION,
        "kind": "Role",
        "metadata": {"name": r.name, "namespace": r.namespace},
        "rules": serde_json::from_str::<Value>(&r.rules).unwrap_or(Value::Null),
        "version": r.version,
    })
}

fn binding_json(b: &BindingRecord) -> Value {
    json!({
        "apiVersion": rbac::API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": b.name, "namespace": b.namespace},
        "subjects": serde_json::from_str::<Value>(&b.subjects).unwrap_or(Value::Null),
        "roleRef": {"kind": "Role", "name": b.role},
        "version": b.version,
    })
}

fn key_json(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "hint": k.hint,
        "test": k.test,
        "principal": {"kind": k.principal_kind, "name": k.principal_name},
        "namespace": k.namespace,
        "createdBy": k.created_by,
        "createdMs": k.created_ms,
        "lastUsedMs": k.last_used_ms,
        "revokedMs": k.revoked_ms,
    })
}

/// An `after` from a previous page of roles, bindings or keys: a name or an id.
fn check_after(a: &str) -> Result<(), ApiError> {
    if a.is_empty() || a.len() > 128 || !a.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid("after: not a name from a previous page"));
    }
    Ok(())
}

/// Reads one RBAC document of `kind` from a body, named as the path names it.
fn document(
    state: &crate::AppState,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    ns: &str,
    name: &str,
) -> Result<Document, ApiError> {
    let body = body.map_err(|e| body_error(state, &e))?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the document is not UTF-8"))?;
    let doc = rbac::parse_document(text).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (doc_ns, doc_name) = match &doc {
        Document::Role(r) => (&r.namespace, &r.name),
        Document::RoleBinding(b) => (&b.namespace, &b.name),
    };
    if doc_name != name {
        return Err(ApiError::invalid(format!(
            "metadata.name is {doc_name:?}, the path names {name:?}"
        )));
    }
    if doc_ns != ns {
        return Err(ApiError::invalid(format!(
            "metadata.namespace is {doc_ns:?}, the path names {ns:?}"
        )));
    }
    Ok(doc)
}

/// Refuses a grant of `granted` by `caller` in `ns` beyond what it holds there (403, and an
/// `rbac.permission.denied` event naming the attempt).
async fn no_escalation(
    state: &crate::AppState,
    caller: &Caller,
    req_id: &str,
    ns: &str,
    what: &str,
    granted: &Permissions,
) -> Result<(), ApiError> {
    let holder = permissions(state, caller, ns).await?;
    if let Err(e) = rbac::check_grant(&holder, granted) {
        state
            .metrics
            .rbac_denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.audit(Event {
            request_id: Some(req_id.to_owned()),
            ..Event::new(
                EventType::RbacPermissionDenied,
                principal(caller),
                spawn_audit::Resource {
                    kind: what.into(),
                    name: ns.to_owned(),
                },
                "escalate",
                Outcome::Denied,
            )
            .with_detail("reason", e.to_string())
        });
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            e.to_string(),
        ));
    }
    Ok(())
}

/// The permissions of the Role `name` as a binding in `ns` would grant them, if it exists.
async fn bound_permissions(
    state: &crate::AppState,
    ns: &str,
    name: &str,
) -> Result<Option<Permissions>, ApiError> {
    if let Some(b) = BuiltinRole::parse(name) {
        return Ok(Some(b.permissions()));
    }
    match state.store.role(ns, name).await {
        Ok(r) => Ok(role_of(&r.namespace, &r.name, &r.rules).map(|r| r.permissions())),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn get_role(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, Verb::Get).await?;
    check_name("name", &name)?;
    let r = state.store.role(&ns, &name).await?;
    Ok(with_etag(StatusCode::OK, r.version, role_json(&r)))
}

async fn list_roles(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Value>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, Verb::List).await?;
    let (limit, after) = list_params(q, check_after)?;
    let p = state.store.list_roles(&ns, after.as_deref(), limit).await?;
    Ok(Json(json!({
        "items": p.items.iter().map(role_json).collect::<Vec<_>>(),
        "next": p.next,
    })))
}

async fn put_role(
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
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, verb).await?;
    check_name("name", &name)?;
    let Document::Role(role) = document(&state, body, &ns, &name)? else {
        return Err(ApiError::invalid("kind: this path takes a Role"));
    };
    no_escalation(&state, &caller, &req_id, &ns, "role", &role.permissions()).await?;
    let rules = crate::rules_json(&role.rules);
    let r = state
        .store
        .put_role(&ns, &name, &rules, false, expected)
        .await?;
    let status = if expected.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status, r.version, role_json(&r)))
}

async fn delete_role(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, Verb::Delete).await?;
    check_name("name", &name)?;
    state
        .store
        .delete_role(&ns, &name, if_match(&headers)?)
        .await?;
    Ok((StatusCode::NO_CONTENT, Body::empty()).into_response())
}

async fn get_binding(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::RoleBindings,
        Verb::Get,
    )
    .await?;
    check_name("name", &name)?;
    let b = state.store.binding(&ns, &name).await?;
    Ok(with_etag(StatusCode::OK, b.version, binding_json(&b)))
}

async fn list_bindings(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Value>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(
        &state,
        &caller,
        &req_id,
        &ns,
        Resource::RoleBindings,
        Verb::List,
    )
    .await?;
    let (limit, after) = list_params(q, check_after)?;
    let p = state
        .store
        .list_bindings(&ns, after.as_deref(), limit)
        .await?;
    Ok(Json(json!({
        "items": p.items.iter().map(binding_json).collect::<Vec<_>>(),
        "next": p.next,
    })))
}

async fn put_binding(
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
    authorize(&state, &caller, &req_id, &ns, Resource::RoleBindings, verb).await?;
    check_name("name", &name)?;
    let Document::RoleBinding(b) = document(&state, body, &ns, &name)? else {
        return Err(ApiError::invalid("kind: this path takes a RoleBinding"));
    };
    let Some(granted) = bound_permissions(&state, &ns, &b.role).await? else {
        return Err(ApiError::invalid(format!(
            "roleRef.name: no Role {:?} in namespace {ns} (create it first)",
            b.role
        )));
    };
    no_escalation(&state, &caller, &req_id, &ns, "rolebinding", &granted).await?;
    let subjects: Vec<(String, String)> = b
        .subjects
        .iter()
        .map(|s| (s.kind.as_str().to_owned(), s.name.clone()))
        .collect();
    let subjects_json = Value::Array(
        b.subjects
            .iter()
            .map(|s| json!({"kind": s.kind.as_str(), "name": s.name}))
            .collect(),
    )
    .to_string();
    let r = state
        .store
        .put_binding(&ns, &name, &b.role, &subjects_json, &subjects, expected)
        .await?;
    let status = if expected.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status, r.version, binding_json(&r)))
}

async fn delete_binding(
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
        Resource::RoleBindings,
        Verb::Delete,
    )
    .await?;
    check_name("name", &name)?;
    state
        .store
        .delete_binding(&ns, &name, if_match(&headers)?)
        .await?;
    Ok((StatusCode::NO_CONTENT, Body::empty()).into_response())
}

/// A key to make: for a new ServiceAccount `name`, holding `role` in the namespace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: String,
    role: String,
    #[serde(default)]
    test: bool,
}

async fn create_key(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Keys, Verb::Create).await?;
    let body = body.map_err(|e| body_error(&state, &e))?;
    let req: KeyRequest = crate::api::json_object(&body)?;
    check_name("name", &req.name)?;
    let Some(granted) = bound_permissions(&state, &ns, &req.role).await? else {
        return Err(ApiError::invalid(format!(
            "role: no Role {:?} in namespace {ns}",
            req.role
        )));
    };
    no_escalation(&state, &caller, &req_id, &ns, "key", &granted).await?;
    let kind = SubjectKind::ServiceAccount.as_str();
    if state.store.principal_known(kind, &req.name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!(
                "ServiceAccount {} exists already; a key is made for a new one",
                req.name
            ),
        ));
    }
    let key = ApiKey::generate(if req.test { KeyEnv::Test } else { KeyEnv::Live })
        .map_err(|_| ApiError::internal())?;
    // The binding first: a key whose binding failed would be a key for nothing.
    let subject = (kind.to_owned(), req.name.clone());
    let subjects_json = json!([{"kind": kind, "name": req.name}]).to_string();
    state
        .store
        .put_binding(
            &ns,
            &format!("key-{}", req.name),
            &req.role,
            &subjects_json,
            &[subject],
            None,
        )
        .await?;
    let record = state
        .store
        .insert_key(&NewKey {
            hash: key.hash().0,
            hint: key.hint(),
            test: req.test,
            principal_kind: kind.into(),
            principal_name: req.name.clone(),
            created_by: caller.subject.to_string(),
            namespace: ns.clone(),
        })
        .await?;
    let mut body = key_json(&record);
    body["key"] = Value::String(key.expose().to_owned());
    body["role"] = Value::String(req.role);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_keys(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Value>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Keys, Verb::List).await?;
    let (limit, after) = list_params(q, check_after)?;
    let p = state.store.list_keys(&ns, after.as_deref(), limit).await?;
    Ok(Json(json!({
        "items": p.items.iter().map(key_json).collect::<Vec<_>>(),
        "next": p.next,
    })))
}

async fn revoke_key(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Keys, Verb::Delete).await?;
    // A key of another namespace is "not found" here, like one that does not exist.
    let key = match state.store.key(&id).await {
        Ok(k) if k.namespace == ns => k,
        Ok(_) | Err(StoreError::NotFound { .. }) => return Err(not_found_in("key", &id, &ns)),
        Err(e) => return Err(e.into()),
    };
    let revoked = state.store.revoke_key(&key.id).await?;
    Ok(Json(key_json(&revoked)))
}
