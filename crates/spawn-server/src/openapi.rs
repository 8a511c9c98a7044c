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
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, Content, HeaderBuilder, Info, License, OpenApi, Ref, RefOr,
};
use utoipa::{PartialSchema, ToSchema};

use crate::api::ApiError;
use crate::views::ErrorBody;

/// The name of the API-key security scheme.
pub(crate) const API_KEY_SCHEME: &str = "api_key";

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
            op.security = Some(vec![SecurityRequirement::new(
                API_KEY_SCHEME,
                Vec::<String>::new(),
            )]);
            answer(
                op,
                StatusCode::UNAUTHORIZED,
                error_response(
                    "`unauthenticated`: no API key, or one that is not valid, not known or \
                     revoked (each an `auth.failure` audit event)",
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
            "An API key (`spawn_live_…` or `spawn_test_…`), from `spawnd init` or \
             `POST /v1/namespaces/{ns}/keys`",
        ))),
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
