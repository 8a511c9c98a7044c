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
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use spawn_audit::{Event, EventType, Outcome};
use spawn_auth::rbac::{self, BuiltinRole, Document, Permissions, Resource, SubjectKind, Verb};
use spawn_auth::{ApiKey, KeyEnv};
use spawn_store::{NewKey, StoreError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    authorize, body_error, check_name, if_match, list_params, not_found_in, permissions, principal,
    rbac_denied, role_of, with_etag, ApiError, Caller, Ctx, ListQ, ListQuery, RequestId, Shared,
};
use crate::views::{CreatedKeyView, ErrorBody, KeyView, Page, RoleBindingView, RoleView};

/// The routes of this module (mounted behind authentication).
/// The routes of this module (mounted behind authentication), each from its handler's
/// `#[utoipa::path]`.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_roles))
        .routes(routes!(get_role, put_role, delete_role))
        .routes(routes!(list_bindings))
        .routes(routes!(get_binding, put_binding, delete_binding))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
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
    match rbac::check_grant(&holder, granted) {
        Ok(()) => Ok(()),
        Err(e) => Err(rbac_denied(
            state,
            caller,
            req_id,
            (what, ns),
            "escalate",
            ("reason", e.to_string()),
            e.to_string(),
        )
        .await),
    }
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

/// A Role, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/roles/{name}",
    tag = "roles",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The Role's name (a DNS label)"),
    ),
    responses(
        (status = 200, description = "The Role", body = RoleView,
            headers(("ETag" = String, description = "Its version: `\"N\"`"))),
        (status = 400, description = "`invalid`: a name that is not a DNS label", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `roles` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
async fn get_role(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, Verb::Get).await?;
    check_name("name", &name)?;
    let r = state.store.role(&ns, &name).await?;
    Ok(with_etag(StatusCode::OK, r.version, RoleView::from(&r)))
}

/// The Roles of a namespace, by name, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/roles",
    tag = "roles",
    params(("ns" = String, Path, description = "The namespace (a DNS label)"), ListQuery),
    responses(
        (status = 200, description = "A page of Roles", body = Page<RoleView>),
        (status = 400, description = "`invalid`: a bad namespace, `limit` or `after`",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `roles` in the \
            namespace", body = ErrorBody),
    )
)]
async fn list_roles(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Page<RoleView>>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Roles, Verb::List).await?;
    let (limit, after) = list_params(q, check_after)?;
    let p = state.store.list_roles(&ns, after.as_deref(), limit).await?;
    Ok(Json(Page::of(&p)))
}

/// Creates a Role (without `If-Match`) or replaces the version `If-Match` names. It may
/// hold only permissions its writer holds in the namespace.
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/roles/{name}",
    tag = "roles",
    params(
        ("ns" = String, Path, description = "The namespace: the document's \
            `metadata.namespace`"),
        ("name" = String, Path, description = "The Role's name: the document's \
            `metadata.name`"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`, the ETag of the \
            version to replace; without it, the Role is created"),
    ),
    request_body(
        description = "A Role document as `spawn apply` takes it (`apiVersion: spawn.dev/v1`, \
            `kind: Role`, `metadata`, `rules`), in YAML or JSON (read as YAML whatever the \
            `Content-Type`)",
        content(
            (String = "application/yaml"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Replaced (with `If-Match`)", body = RoleView,
            headers(("ETag" = String, description = "Its new version: `\"N\"`"))),
        (status = 201, description = "Created", body = RoleView,
            headers(("ETag" = String, description = "Its version: `\"1\"`"))),
        (status = 400, description = "`invalid`: not UTF-8, not a valid Role, names that \
            disagree with the path, a bad `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` (`update`) \
            `roles` in the namespace, or the Role holds more than the caller does there \
            (no escalation; the message names what is missing)", body = ErrorBody),
        (status = 404, description = "`not_found`: `If-Match` names a Role that does not \
            exist", body = ErrorBody),
        (status = 409, description = "`already_exists` or `conflict` (a stale `If-Match`)",
            body = ErrorBody),
    )
)]
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
    Ok(with_etag(status, r.version, RoleView::from(&r)))
}

/// Deletes a Role (only the version `If-Match` names, if given).
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/roles/{name}",
    tag = "roles",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The Role's name (a DNS label)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`: delete only this \
            version"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid`: a bad name or `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` `roles` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: a stale `If-Match`", body = ErrorBody),
    )
)]
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

/// A RoleBinding, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/rolebindings/{name}",
    tag = "rolebindings",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The RoleBinding's name (a DNS label)"),
    ),
    responses(
        (status = 200, description = "The RoleBinding", body = RoleBindingView,
            headers(("ETag" = String, description = "Its version: `\"N\"`"))),
        (status = 400, description = "`invalid`: a name that is not a DNS label", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `get` `rolebindings` in \
            the namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
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
    Ok(with_etag(
        StatusCode::OK,
        b.version,
        RoleBindingView::from(&b),
    ))
}

/// The RoleBindings of a namespace, by name, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/rolebindings",
    tag = "rolebindings",
    params(("ns" = String, Path, description = "The namespace (a DNS label)"), ListQuery),
    responses(
        (status = 200, description = "A page of RoleBindings", body = Page<RoleBindingView>),
        (status = 400, description = "`invalid`: a bad namespace, `limit` or `after`",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `rolebindings` in \
            the namespace", body = ErrorBody),
    )
)]
async fn list_bindings(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Page<RoleBindingView>>, ApiError> {
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
    Ok(Json(Page::of(&p)))
}

/// Creates a RoleBinding (without `If-Match`) or replaces the version `If-Match` names. It
/// may bind only an existing Role (or a built-in one) whose permissions its writer holds in
/// the namespace.
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/rolebindings/{name}",
    tag = "rolebindings",
    params(
        ("ns" = String, Path, description = "The namespace: the document's \
            `metadata.namespace`"),
        ("name" = String, Path, description = "The RoleBinding's name: the document's \
            `metadata.name`"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`, the ETag of the \
            version to replace; without it, the RoleBinding is created"),
    ),
    request_body(
        description = "A RoleBinding document as `spawn apply` takes it (`apiVersion: \
            spawn.dev/v1`, `kind: RoleBinding`, `metadata`, `subjects`, `roleRef`), in YAML or \
            JSON (read as YAML whatever the `Content-Type`)",
        content(
            (String = "application/yaml"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Replaced (with `If-Match`)", body = RoleBindingView,
            headers(("ETag" = String, description = "Its new version: `\"N\"`"))),
        (status = 201, description = "Created", body = RoleBindingView,
            headers(("ETag" = String, description = "Its version: `\"1\"`"))),
        (status = 400, description = "`invalid`: not UTF-8, not a valid RoleBinding, names \
            that disagree with the path, a `roleRef` to a Role that does not exist, a bad \
            `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` (`update`) \
            `rolebindings` in the namespace, or the Role grants more than the caller holds \
            there (no escalation)", body = ErrorBody),
        (status = 404, description = "`not_found`: `If-Match` names a RoleBinding that does \
            not exist", body = ErrorBody),
        (status = 409, description = "`already_exists` or `conflict` (a stale `If-Match`)",
            body = ErrorBody),
    )
)]
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
    Ok(with_etag(status, r.version, RoleBindingView::from(&r)))
}

/// Deletes a RoleBinding (only the version `If-Match` names, if given).
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/rolebindings/{name}",
    tag = "rolebindings",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("name" = String, Path, description = "The RoleBinding's name (a DNS label)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"N\"`: delete only this \
            version"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid`: a bad name or `If-Match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` \
            `rolebindings` in the namespace", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: a stale `If-Match`", body = ErrorBody),
    )
)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    /// The new ServiceAccount's name (a DNS label; no key or binding may name it yet).
    name: String,
    /// A Role of the namespace or a built-in one, holding no more than the caller does.
    role: String,
    /// A test key (`spawn_sk_test_…`): it starts runs only in `test` and `test-…` namespaces.
    #[serde(default)]
    test: bool,
}

/// Makes an API key for a new ServiceAccount bound to a role in the namespace (the binding
/// `key-NAME`), and shows it once.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/keys",
    tag = "keys",
    params(("ns" = String, Path, description = "The namespace (a DNS label)")),
    request_body(content = KeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Made: the key is in this answer and never again",
            body = CreatedKeyView),
        (status = 400, description = "`invalid`: a body that is not such JSON, a bad name, a \
            role that does not exist", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `create` `keys` in the \
            namespace, or the role grants more than the caller holds there", body = ErrorBody),
        (status = 409, description = "`already_exists`: a key or binding names that \
            ServiceAccount already", body = ErrorBody),
    )
)]
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
    let body = CreatedKeyView::new(&record, key.expose().to_owned(), req.role);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The keys made in a namespace, a page at a time (never the keys themselves).
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/keys",
    tag = "keys",
    params(("ns" = String, Path, description = "The namespace (a DNS label)"), ListQuery),
    responses(
        (status = 200, description = "A page of keys", body = Page<KeyView>),
        (status = 400, description = "`invalid`: a bad namespace, `limit` or `after`",
            body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `list` `keys` in the \
            namespace", body = ErrorBody),
    )
)]
async fn list_keys(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path(ns): Path<String>,
    q: ListQ,
) -> Result<Json<Page<KeyView>>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Keys, Verb::List).await?;
    let (limit, after) = list_params(q, check_after)?;
    let p = state.store.list_keys(&ns, after.as_deref(), limit).await?;
    Ok(Json(Page::of(&p)))
}

/// Revokes a key made in the namespace: it fails from the next request on, on every daemon.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/keys/{id}",
    tag = "keys",
    params(
        ("ns" = String, Path, description = "The namespace (a DNS label)"),
        ("id" = String, Path, description = "The key's id (`key_…`)"),
    ),
    responses(
        (status = 200, description = "Revoked: the key as listed, with `revokedMs`",
            body = KeyView),
        (status = 400, description = "`invalid`: a bad namespace", body = ErrorBody),
        (status = 403, description = "`forbidden`: the caller may not `delete` `keys` in the \
            namespace", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key in this namespace (a key of \
            another namespace is not found here)", body = ErrorBody),
    )
)]
async fn revoke_key(
    State(state): State<Shared>,
    (Extension(caller), Extension(RequestId(req_id))): Ctx,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<KeyView>, ApiError> {
    check_name("namespace", &ns)?;
    authorize(&state, &caller, &req_id, &ns, Resource::Keys, Verb::Delete).await?;
    // A key of another namespace is "not found" here, like one that does not exist.
    let key = match state.store.key(&id).await {
        Ok(k) if k.namespace == ns => k,
        Ok(_) | Err(StoreError::NotFound { .. }) => return Err(not_found_in("key", &id, &ns)),
        Err(e) => return Err(e.into()),
    };
    // Recorded before it is done: the end of a credential, by an administrator.
    let event = Event {
        request_id: Some(req_id),
        ..Event::new(
            EventType::AuthLogout,
            principal(&caller),
            spawn_audit::Resource {
                kind: "credential".into(),
                name: key.id.clone(),
            },
            "revoke",
            Outcome::Success,
        )
        .with_detail(
            "holder",
            format!("{}/{}", key.principal_kind, key.principal_name),
        )
    };
    state.record(event.clone()).await?;
    let revoked = state
        .store
        .revoke_key(&key.id)
        .await
        .map_err(ApiError::from);
    let revoked = state.record_failure(event, revoked).await?;
    Ok(Json(KeyView::from(&revoked)))
}
