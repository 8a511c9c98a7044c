//! spawnd's OpenAPI 3.1 document, served at `GET /v1/openapi.json`.
//!
//! Generated, not written: each handler carries `#[utoipa::path(...)]` (its method, path,
//! parameters, body and answers) and is registered on the router with
//! `.routes(utoipa_axum::routes!(handler))`, which puts it on the router and in the
//! document from that one annotation; the schemas come from the views' `ToSchema`
//! (`views.rs`). What the middleware does to every route it wraps (the API key and its 401,
//! the rate limit's 429, a body too large or too slow, `X-Request-Id` on every answer) is
//! added here, to the operations of the routes it wraps (`api::router`).
//!
//! To add a handler: annotate it as its neighbours are (`security` and the middleware's
//! answers need not be written: they are added for every route behind authentication), and
//! register it in its module's `routes()` with `.routes(routes!(handler))` (handlers of one
//! path together: `routes!(get_x, put_x, delete_x)`). A route added with a plain
//! `.route(...)` is served but missing from the document, and the tests say so.
//!
//! The document is served without authentication: it describes the API (the same for every
//! deployment of this version, and public in the source), not anything of a tenant, and
//! clients and tools read it before they have a key. It is built and serialized once, when
//! the router is.

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, Content, HeaderBuilder, Info, License, OpenApi, Ref, RefOr,
};
use utoipa::{PartialSchema, ToSchema};

use crate::api::ApiError;
use crate::views::ErrorBody;

/// The name of the API-key security scheme.
pub(crate) const API_KEY_SCHEME: &str = "api_key";
/// The name of the bearer-JWT security scheme (accepted when `auth.jwt` is configured).
pub(crate) const BEARER_SCHEME: &str = "bearer_jwt";
/// The name of the client-certificate (mutual TLS) security scheme (accepted when
/// `tls.clientCa` is configured).
pub(crate) const MUTUAL_TLS_SCHEME: &str = "mutual_tls";

/// The tags of the document, in order, with what they group.
const TAGS: &[(&str, &str)] = &[
    ("health", "Liveness, readiness and metrics (no API key)"),
    ("meta", "This document and the caller's identity"),
    ("agents", "Agents: manifests (SPEC §3) stored per namespace"),
    (
        "runs",
        "Runs of agents, manifests or commands, and their output",
    ),
    ("roles", "Roles: permissions in a namespace"),
    (
        "rolebindings",
        "RoleBindings: who holds a Role in a namespace",
    ),
    ("keys", "API keys of ServiceAccounts"),
    (
        "secrets",
        "Secrets of a namespace: set (write-only), listed, deleted; resolved by its runs",
    ),
];

/// The document as served: serialized once.
#[derive(Debug, Clone)]
pub(crate) struct Document(Option<Bytes>);

impl Document {
    pub(crate) fn new(doc: &OpenApi) -> Document {
        match serde_json::to_vec(doc) {
            Ok(v) => Document(Some(Bytes::from(v))),
            Err(e) => {
                tracing::error!(error = %e, "the OpenAPI document could not be serialized");
                Document(None)
            }
        }
    }
}

/// This API's OpenAPI 3.1 document (this document).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API",
            content_type = "application/json", body = Object),
    )
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    match doc.0 {
        Some(bytes) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        None => ApiError::internal().into_response(),
    }
}

/// The operations of a path.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// An error answer (SPEC §8's shape).
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
    )
}

/// Adds `response` for `status` to `op`, unless its annotation has its own.
fn answer(op: &mut Operation, status: StatusCode, response: ResponseBuilder) {
    op.responses
        .responses
        .entry(status.as_u16().to_string())
        .or_insert_with(|| RefOr::T(response.build()));
}

/// Marks every operation of `doc` as served behind `authenticate` and `read_body`
/// (`api::router`): an API key in `X-API-Key`, and the answers those give before a
/// handler is reached.
pub(crate) fn behind_authentication(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            // Any one: an API key, a bearer JWT, or a client certificate.
            op.security = Some(vec![
                SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new()),
                SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
                SecurityRequirement::new(MUTUAL_TLS_SCHEME, Vec::<String>::new()),
            ]);
            answer(
                op,
                StatusCode::UNAUTHORIZED,
                error_response(
                    "`unauthenticated`: no API key, or one that is not valid, not known or \
                     revoked; a bearer token or client certificate refused (each an \
                     `auth.failure` audit event)",
                ),
            );
            answer(
                op,
                StatusCode::TOO_MANY_REQUESTS,
                error_response(
                    "`rate_limited`: the principal's request rate, or an address locked out \
                     after repeated failed authentications",
                )
                .header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(u64::schema())
                        .description(Some("Seconds to wait before trying again"))
                        .build(),
                ),
            );
            answer(
                op,
                StatusCode::SERVICE_UNAVAILABLE,
                error_response(
                    "`audit_unavailable`: the audit log cannot record the request's action \
                     (or the login of its credential), so nothing was done",
                ),
            );
            // `read_body` reads any request's body; only those that take one document it.
            if op.request_body.is_some() {
                answer(
                    op,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    error_response(
                        "`payload_too_large`: the body is larger than `limits.maxBodyBytes`",
                    ),
                );
                answer(
                    op,
                    StatusCode::REQUEST_TIMEOUT,
                    error_response(
                        "`request_timeout`: the body did not arrive within \
                         `limits.headerReadTimeoutSeconds` (the connection is closed)",
                    ),
                );
            }
            answer(
                op,
                StatusCode::INTERNAL_SERVER_ERROR,
                error_response(
                    "`internal`: the server failed; `X-Request-Id` finds it in the daemon's log",
                ),
            );
        }
    }
}

/// Completes the document the routes made: its info, tags, the API-key scheme, and
/// `X-Request-Id` on every answer.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    doc.info = Info::builder()
        .title("spawnd")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "spawn's multi-tenant daemon (SPEC §2, §8, §9). Every answer carries \
             `X-Request-Id`; every error is `{\"error\": {\"code\", \"message\"}}` (SPEC §8), \
             the framework's own (no such route: 404 `not_found`; no such method: 405 \
             `method_not_allowed`) included.",
        ))
        .license(Some(
            License::builder()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    doc.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build()
            })
            .collect(),
    );
    let mut components = doc
        .components
        .take()
        .unwrap_or_else(|| ComponentsBuilder::new().build());
    components.security_schemes.insert(
        API_KEY_SCHEME.into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "An API key (`spawn_sk_live_…` or `spawn_sk_test_…`), from `spawnd init` or \
             `POST /v1/namespaces/{ns}/keys`",
        ))),
    );
    components.security_schemes.insert(
        BEARER_SCHEME.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT of the issuer the daemon's `auth.jwt` names (its `sub` is the \
                     User it authenticates); refused when none is configured",
                ))
                .build(),
        ),
    );
    components.security_schemes.insert(
        MUTUAL_TLS_SCHEME.into(),
        SecurityScheme::MutualTls {
            description: Some(
                "A client certificate of the CA the daemon's `tls.clientCa` names, presented \
                 in the TLS handshake: its subject's one CommonName is the User it \
                 authenticates. Used when the request carries no API key and no \
                 Authorization header; not asked for when no client CA is configured"
                    .into(),
            ),
            extensions: None,
        },
    );
    // The error answers the middleware adds name it even where no annotation does.
    components
        .schemas
        .entry(ErrorBody::name().into_owned())
        .or_insert_with(ErrorBody::schema);
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
    doc.components = Some(components);
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    r.headers.insert(
                        "X-Request-Id".into(),
                        HeaderBuilder::new()
                            .schema(String::schema())
                            .description(Some(
                                "This request's id (`req_…`), also in the audit events it causes",
                            ))
                            .build(),
                    );
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, BTreeSet};
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Method, Request, StatusCode};
    use axum::routing::{get, post};
    use serde_json::{json, Value};
    use tower::ServiceExt as _;

    /// The methods an OpenAPI path item may hold.
    const METHODS: [&str; 8] = [
        "get", "head", "post", "put", "delete", "patch", "options", "trace",
    ];

    /// The real router over a new SQLite state.
    async fn app() -> (axum::Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("spawn.db").display().to_string();
        let store = spawn_store::Store::open(&db).await.unwrap();
        let audit = spawn_audit::AuditLog::open(&dir.path().join("audit")).unwrap();
        // The probes without a key are failed authentications: none may lock the address out.
        let limits = crate::config::Limits {
            auth_failures: u32::MAX,
            ..Default::default()
        };
        let state = Arc::new(crate::AppState::new(store, audit, limits).unwrap());
        (crate::router(state), dir)
    }

    /// `method path` through `app`, in-process, without an API key.
    async fn call(app: &axum::Router, method: &str, path: &str) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The document `app` serves.
    async fn document(app: &axum::Router) -> Value {
        let (status, doc) = call(app, "get", "/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        doc
    }

    /// The paths `app` routes, read from its `Debug`: axum has no other way to list them
    /// (`Router { path_router: PathRouter { …, node: Node { paths: {RouteId(…): "/…", …} } },
    /// fallback_router: … }`).
    fn routed_paths(app: &axum::Router) -> BTreeSet<String> {
        let debug = format!("{app:?}");
        let (routes, _) = debug
            .split_once("fallback_router")
            .expect("axum's Router Debug shows its path_router, then its fallback_router");
        let (_, paths) = routes
            .split_once("paths: {")
            .expect("axum's Router Debug shows its paths");
        let found: BTreeSet<String> = paths
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|p| p.starts_with('/'))
            .map(str::to_owned)
            .collect();
        // Not a test that passes on nothing: the reading must find the routes.
        assert!(
            found.contains("/healthz") && found.contains("/v1/whoami"),
            "the router's paths could not be read from its Debug: {found:?}"
        );
        found
    }

    /// A request path for the route `path`: each `{param}` made a value.
    fn concrete(path: &str) -> String {
        let mut out = String::new();
        let mut rest = path;
        while let Some((before, after)) = rest.split_once('{') {
            out.push_str(before);
            out.push_str("probe");
            rest = after.split_once('}').map_or("", |(_, a)| a);
        }
        out.push_str(rest);
        out
    }

    /// The methods `app` serves at the route `path` (those that do not answer its 405), with
    /// the answer to each without an API key.
    async fn served(app: &axum::Router, path: &str) -> BTreeMap<&'static str, (StatusCode, Value)> {
        let uri = concrete(path);
        let mut out = BTreeMap::new();
        for method in METHODS {
            let (status, body) = call(app, method, &uri).await;
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
                "{method} {uri}: the router has no route for {path}"
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                // (An answer to HEAD has no body.)
                if method != "head" {
                    assert_eq!(
                        body["error"]["code"], "method_not_allowed",
                        "{method} {uri}"
                    );
                }
                continue;
            }
            out.insert(method, (status, body));
        }
        out
    }

    /// Where the router and the document disagree: paths one has and the other does not,
    /// methods served and not documented or documented and not served, and operations whose
    /// `security` says otherwise than the router's answer without a key.
    async fn disagreements(app: &axum::Router, doc: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let routed = routed_paths(app);
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("the document has paths")
            .keys()
            .cloned()
            .collect();
        for p in routed.difference(&documented) {
            out.push(format!("{p}: routed, not in the document"));
        }
        for p in documented.difference(&routed) {
            out.push(format!("{p}: in the document, not routed"));
        }
        for path in routed.intersection(&documented) {
            let item = &doc["paths"][path];
            let served = served(app, path).await;
            let in_doc: BTreeSet<&str> = METHODS
                .into_iter()
                .filter(|m| item.get(m).is_some())
                .collect();
            let mut by_router: BTreeSet<&str> = served.keys().copied().collect();
            // axum answers HEAD wherever it answers GET; the document names the GET.
            if by_router.contains("get") {
                by_router.remove("head");
            }
            if by_router != in_doc {
                out.push(format!(
                    "{path}: served {by_router:?}, documented {in_doc:?}"
                ));
            }
            for (method, (status, body)) in &served {
                let Some(op) = item.get(method) else {
                    continue;
                };
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                let refused = *status == StatusCode::UNAUTHORIZED
                    && body["error"]["code"] == "unauthenticated";
                if secured != refused {
                    out.push(format!(
                        "{method} {path}: security {secured} in the document, but without a \
                         key the answer is {status}"
                    ));
                }
            }
        }
        out
    }

    /// Every route the router serves is in the document with its methods, nothing else is,
    /// and the document's `security` is what the router does without a key.
    #[tokio::test]
    async fn the_router_and_its_document_agree() {
        let (app, _dir) = app().await;
        let doc = document(&app).await;
        let found = disagreements(&app, &doc).await;
        assert!(found.is_empty(), "{found:#?}");
    }

    /// The check above fails where it should: a route added without `routes!` (a new path,
    /// and a method on a documented path), and a document that claims what is not served.
    #[tokio::test]
    async fn a_route_left_out_of_the_document_is_caught() {
        let (app, _dir) = app().await;
        let doc = document(&app).await;
        let more = app
            .clone()
            .route("/v1/undocumented", get(|| async { "x" }))
            .route("/healthz", post(|| async { "x" }));
        let found = disagreements(&more, &doc).await;
        assert!(
            found.contains(&"/v1/undocumented: routed, not in the document".to_owned()),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|d| d.starts_with("/healthz: served")),
            "{found:#?}"
        );

        let mut claims = doc.clone();
        claims["paths"]["/v1/gone"] = json!({"get": {"responses": {}}});
        claims["paths"]["/readyz"]["post"] = claims["paths"]["/readyz"]["get"].clone();
        claims["paths"]["/v1/whoami"]["get"]
            .as_object_mut()
            .unwrap()
            .remove("security");
        let found = disagreements(&app, &claims).await;
        for expected in [
            "/v1/gone: in the document, not routed",
            "/readyz: served",
            "get /v1/whoami: security false",
        ] {
            assert!(
                found.iter().any(|d| d.starts_with(expected)),
                "{expected}: {found:#?}"
            );
        }
    }

    /// Each `$ref` in `v` (recursively).
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    /// The schema of `path method`'s answer `status` as `content_type`.
    fn answer_schema<'a>(
        doc: &'a Value,
        path: &str,
        method: &str,
        status: &str,
        content_type: &str,
    ) -> &'a Value {
        &doc["paths"][path][method]["responses"][status]["content"][content_type]["schema"]
    }

    #[tokio::test]
    async fn the_document_is_openapi_3_1_and_names_its_schemas() {
        let (app, _dir) = app().await;
        let doc = document(&app).await;
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "spawnd");
        let schemas = doc["components"]["schemas"].as_object().unwrap();

        // Every reference is to a schema the document has.
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "{}", all.len());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}: not a schema of the document"));
            assert!(schemas.contains_key(name), "{r}: no such schema");
        }

        // The main answers name their views, and those are not empty.
        let json = "application/json";
        for (path, method, status, view) in [
            ("/healthz", "get", "200", "Status"),
            ("/readyz", "get", "200", "Status"),
            ("/v1/whoami", "get", "200", "Whoami"),
            ("/v1/namespaces/{ns}/agents", "get", "200", "Page_AgentView"),
            (
                "/v1/namespaces/{ns}/agents/{name}",
                "get",
                "200",
                "AgentView",
            ),
            (
                "/v1/namespaces/{ns}/agents/{name}",
                "put",
                "200",
                "AgentView",
            ),
            (
                "/v1/namespaces/{ns}/agents/{name}",
                "put",
                "201",
                "AgentView",
            ),
            ("/v1/namespaces/{ns}/runs", "get", "200", "Page_RunView"),
            ("/v1/namespaces/{ns}/runs", "post", "201", "RunView"),
            ("/v1/namespaces/{ns}/runs/{id}", "get", "200", "RunView"),
            (
                "/v1/namespaces/{ns}/runs/{id}/cancel",
                "post",
                "200",
                "RunView",
            ),
            ("/v1/namespaces/{ns}/runs/{id}/logs", "get", "200", "Logs"),
            ("/v1/namespaces/{ns}/roles", "get", "200", "Page_RoleView"),
            ("/v1/namespaces/{ns}/roles/{name}", "get", "200", "RoleView"),
            ("/v1/namespaces/{ns}/roles/{name}", "put", "201", "RoleView"),
            (
                "/v1/namespaces/{ns}/rolebindings",
                "get",
                "200",
                "Page_RoleBindingView",
            ),
            (
                "/v1/namespaces/{ns}/rolebindings/{name}",
                "get",
                "200",
                "RoleBindingView",
            ),
            (
                "/v1/namespaces/{ns}/rolebindings/{name}",
                "put",
                "201",
                "RoleBindingView",
            ),
            ("/v1/namespaces/{ns}/keys", "get", "200", "Page_KeyView"),
            ("/v1/namespaces/{ns}/keys", "post", "201", "CreatedKeyView"),
            ("/v1/namespaces/{ns}/keys/{id}", "delete", "200", "KeyView"),
        ] {
            let schema = answer_schema(&doc, path, method, status, json);
            assert_eq!(
                schema["$ref"],
                format!("#/components/schemas/{view}"),
                "{method} {path} {status}: {schema}"
            );
            let props = schemas[view]["properties"].as_object();
            assert!(
                props.is_some_and(|p| !p.is_empty()),
                "{view}: no properties"
            );
        }
        assert_eq!(
            schemas["Page_RunView"]["properties"]["items"]["items"]["properties"]["state"]["$ref"],
            "#/components/schemas/RunStateName"
        );

        // Every error answer is SPEC §8's shape.
        let mut errors = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, _) in op["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" {
                        errors += 1;
                        assert_eq!(
                            answer_schema(&doc, path, method, status, json)["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
                // Every answer names its request id.
                for (status, r) in op["responses"].as_object().unwrap() {
                    assert!(
                        r["headers"]["X-Request-Id"].is_object(),
                        "{method} {path} {status}: no X-Request-Id"
                    );
                }
            }
        }
        assert!(errors > 100, "{errors}");
        let detail = &schemas["ErrorDetail"]["properties"];
        assert!(detail["code"].is_object() && detail["message"].is_object());

        // Headers and content types that matter.
        let agent = &doc["paths"]["/v1/namespaces/{ns}/agents/{name}"];
        assert!(agent["get"]["responses"]["200"]["headers"]["ETag"].is_object());
        assert!(agent["put"]["responses"]["201"]["headers"]["ETag"].is_object());
        assert!(agent["put"]["requestBody"]["content"]["application/yaml"].is_object());
        let params = |op: &Value| -> Vec<(String, String)> {
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["in"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        assert!(params(&agent["put"]).contains(&("If-Match".into(), "header".into())));
        assert!(params(&agent["delete"]).contains(&("If-Match".into(), "header".into())));
        let list = &doc["paths"]["/v1/namespaces/{ns}/agents"]["get"];
        assert!(params(list).contains(&("limit".into(), "query".into())));
        assert!(params(list).contains(&("after".into(), "query".into())));
        let logs = &doc["paths"]["/v1/namespaces/{ns}/runs/{id}/logs"]["get"];
        assert!(logs["responses"]["200"]["content"]["text/event-stream"].is_object());
        assert!(params(logs).contains(&("Last-Event-ID".into(), "header".into())));
        assert!(
            agent["get"]["responses"]["429"]["headers"]["Retry-After"].is_object(),
            "{}",
            agent["get"]["responses"]["429"]
        );
        assert_eq!(
            doc["paths"]["/v1/namespaces/{ns}/runs"]["post"]["requestBody"]["content"][json]
                ["schema"]["$ref"],
            "#/components/schemas/CreateRun"
        );
        assert_eq!(
            doc["paths"]["/v1/namespaces/{ns}/keys"]["post"]["requestBody"]["content"][json]
                ["schema"]["$ref"],
            "#/components/schemas/KeyRequest"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"],
            json!({
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": doc["components"]["securitySchemes"]["api_key"]["description"],
            })
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer_jwt"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["mutual_tls"]["type"],
            "mutualTLS"
        );
        assert_eq!(
            doc["paths"]["/v1/whoami"]["get"]["security"],
            json!([{"api_key": []}, {"bearer_jwt": []}, {"mutual_tls": []}])
        );
    }
}
