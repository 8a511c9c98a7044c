//! What the API answers, as types: each handler returns one of these, and the OpenAPI
//! document (`openapi.rs`) describes them from their `ToSchema` derivations.
//!
//! The JSON is the one the handlers wrote with `json!` before these types: the same field
//! names, `null` where a value is absent (never a missing field), and the fields in the
//! order `serde_json`'s map wrote them (sorted by name). That is why each struct declares
//! its fields alphabetically by their JSON names.
//!
//! A view of a stored JSON text (a manifest, a Role's rules, a binding's subjects) keeps it
//! as `serde_json::Value` (`null` if it does not parse, as before), and names the shape it
//! has in the document with `value_type`.

use serde::Serialize;
use serde_json::Value;
use spawn_auth::rbac;
use spawn_store::{AgentRecord, BindingRecord, KeyRecord, OutputChunk, RoleRecord, RunRecord};
use utoipa::ToSchema;

/// An error answer (SPEC §8): every 4xx and 5xx, the framework's own included.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `invalid`, `unauthenticated`, `forbidden`, `not_found`,
    /// `already_exists`, `conflict`, `payload_too_large`, `request_timeout`,
    /// `rate_limited`, `method_not_allowed`, `unsupported_media_type`, `unavailable`,
    /// `internal`.
    #[schema(example = "not_found")]
    pub code: String,
    /// For a person: what was wrong and, where it helps, what to do.
    pub message: String,
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: String,
}

/// Who the caller is: the principal its API key belongs to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    /// The key's id (`key_…`).
    pub key_id: String,
    /// `User`, `ServiceAccount` or `Group`.
    pub kind: String,
    pub name: String,
    /// Whether the key is a test key (runs only in `test` and `test-…` namespaces).
    pub test: bool,
}

/// One page of a list, newest or first by name; `next` is the `after` of the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `?after=` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// A stored page, each item in its view.
    pub(crate) fn of<'a, R>(page: &'a spawn_store::Page<R>) -> Page<T>
    where
        T: From<&'a R>,
    {
        Page {
            items: page.items.iter().map(T::from).collect(),
            next: page.next.clone(),
        }
    }
}

/// Parses a stored JSON text; `null` if it does not parse.
fn stored(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// An Agent as stored: its manifest (SPEC §3, as JSON) and its version (the ETag).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// `ag_…`: the runs and audit events of this agent name it.
    pub id: String,
    /// The Agent manifest (`apiVersion`, `kind`, `metadata`, `spec`; SPEC §3), as JSON.
    #[schema(value_type = Object)]
    pub manifest: Value,
    pub name: String,
    pub namespace: String,
    pub updated_ms: i64,
    /// Grows by one with each change; the ETag is `"version"`.
    pub version: i64,
}

impl From<&AgentRecord> for AgentView {
    fn from(a: &AgentRecord) -> AgentView {
        AgentView {
            created_ms: a.created_ms,
            id: a.id.clone(),
            manifest: stored(&a.manifest),
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            updated_ms: a.updated_ms,
            version: a.version,
        }
    }
}

/// The `metadata` of a Role or RoleBinding.
#[derive(Debug, Serialize, ToSchema)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
}

/// A rule of a Role: these verbs on these resources.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rule {
    /// `agents`, `runs`, `agentlogs`, `roles`, `rolebindings`, `keys`, or `*`.
    pub resources: Vec<String>,
    /// `get`, `list`, `create`, `update`, `delete`, `stop`, or `*`.
    pub verbs: Vec<String>,
}

/// A Role as `spawn apply` takes it, with its version (the ETag).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    /// `spawn.dev/v1`.
    pub api_version: String,
    /// `Role`.
    pub kind: String,
    pub metadata: Metadata,
    #[schema(value_type = Vec<Rule>)]
    pub rules: Value,
    pub version: i64,
}

impl From<&RoleRecord> for RoleView {
    fn from(r: &RoleRecord) -> RoleView {
        RoleView {
            api_version: rbac::API_VERSION.into(),
            kind: "Role".into(),
            metadata: Metadata {
                name: r.name.clone(),
                namespace: r.namespace.clone(),
            },
            rules: stored(&r.rules),
            version: r.version,
        }
    }
}

/// Who a RoleBinding binds, or whom a key belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subject {
    /// `User`, `ServiceAccount` or `Group`.
    pub kind: String,
    pub name: String,
}

/// The Role a RoleBinding binds (a Role of the namespace or a built-in one).
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleRef {
    /// `Role`.
    pub kind: String,
    pub name: String,
}

/// A RoleBinding as `spawn apply` takes it, with its version (the ETag).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBindingView {
    /// `spawn.dev/v1`.
    pub api_version: String,
    /// `RoleBinding`.
    pub kind: String,
    pub metadata: Metadata,
    pub role_ref: RoleRef,
    #[schema(value_type = Vec<Subject>)]
    pub subjects: Value,
    pub version: i64,
}

impl From<&BindingRecord> for RoleBindingView {
    fn from(b: &BindingRecord) -> RoleBindingView {
        RoleBindingView {
            api_version: rbac::API_VERSION.into(),
            kind: "RoleBinding".into(),
            metadata: Metadata {
                name: b.name.clone(),
                namespace: b.namespace.clone(),
            },
            role_ref: RoleRef {
                kind: "Role".into(),
                name: b.role.clone(),
            },
            subjects: stored(&b.subjects),
            version: b.version,
        }
    }
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Who made it (`Kind/name`).
    pub created_by: String,
    pub created_ms: i64,
    /// The key's last characters, to tell keys apart.
    pub hint: String,
    /// `key_…`: revoke it with `DELETE …/keys/{id}`.
    pub id: String,
    /// Last authenticated use (kept to the minute); `null` if never used.
    #[schema(required = true)]
    pub last_used_ms: Option<i64>,
    /// The namespace it was made in (`*` for the first admin's).
    pub namespace: String,
    pub principal: Subject,
    /// When it was revoked; `null` while it is valid.
    #[schema(required = true)]
    pub revoked_ms: Option<i64>,
    pub test: bool,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> KeyView {
        KeyView {
            created_by: k.created_by.clone(),
            created_ms: k.created_ms,
            hint: k.hint.clone(),
            id: k.id.clone(),
            last_used_ms: k.last_used_ms,
            namespace: k.namespace.clone(),
            principal: Subject {
                kind: k.principal_kind.clone(),
                name: k.principal_name.clone(),
            },
            revoked_ms: k.revoked_ms,
            test: k.test,
        }
    }
}

/// A key just made: as listed, plus the key itself (shown this once, never again) and the
/// role it holds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKeyView {
    pub created_by: String,
    pub created_ms: i64,
    pub hint: String,
    pub id: String,
    /// The API key (`spawn_live_…` or `spawn_test_…`): send it as `X-API-Key`. Shown once.
    pub key: String,
    #[schema(required = true)]
    pub last_used_ms: Option<i64>,
    pub namespace: String,
    pub principal: Subject,
    #[schema(required = true)]
    pub revoked_ms: Option<i64>,
    /// The role it holds in the namespace.
    pub role: String,
    pub test: bool,
}

impl CreatedKeyView {
    pub(crate) fn new(k: &KeyRecord, key: String, role: String) -> CreatedKeyView {
        let KeyView {
            created_by,
            created_ms,
            hint,
            id,
            last_used_ms,
            namespace,
            principal,
            revoked_ms,
            test,
        } = KeyView::from(k);
        CreatedKeyView {
            created_by,
            created_ms,
            hint,
            id,
            key,
            last_used_ms,
            namespace,
            principal,
            revoked_ms,
            role,
            test,
        }
    }
}

/// The states of a run (`spawn-store`'s `RunState`), as the document names them.
#[allow(dead_code)] // Named only in the document: the views carry the stored state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStateName {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

/// A run: queued, running, or ended with its verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The agent it was started from (`ag_…`); `null` for an inline manifest or command.
    #[schema(required = true)]
    pub agent_id: Option<String>,
    pub cancel_requested: bool,
    /// Who started it (`Kind/name`).
    pub created_by: String,
    pub created_ms: i64,
    /// Why it failed, when spawn (not the command) says; otherwise `null`.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The command's exit code once it ended; `null` before, or if it was killed.
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub finished_ms: Option<i64>,
    /// `tr_…`.
    pub id: String,
    pub namespace: String,
    /// The request that started it (`req_…`).
    #[schema(required = true)]
    pub request_id: Option<String>,
    #[schema(required = true)]
    pub started_ms: Option<i64>,
    #[schema(value_type = RunStateName)]
    pub state: String,
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> RunView {
        RunView {
            agent_id: r.agent_id.clone(),
            cancel_requested: r.cancel_requested,
            created_by: r.created_by.clone(),
            created_ms: r.created_ms,
            error: r.error.clone(),
            exit_code: r.exit_code,
            finished_ms: r.finished_ms,
            id: r.id.clone(),
            namespace: r.namespace.clone(),
            request_id: r.request_id.clone(),
            started_ms: r.started_ms,
            state: r.state.clone(),
        }
    }
}

/// A run's output so far (the JSON form of `…/logs`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Logs {
    pub items: Vec<LogChunk>,
}

/// One stored piece of a run's output.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub at_ms: i64,
    /// The bytes, in base64.
    #[schema(content_encoding = "base64")]
    pub data: String,
    /// Its number: pass as `?after=` (or `Last-Event-ID`) to read what follows.
    pub seq: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
}

impl From<&OutputChunk> for LogChunk {
    fn from(c: &OutputChunk) -> LogChunk {
        use base64::Engine as _;
        LogChunk {
            at_ms: c.at_ms,
            data: base64::engine::general_purpose::STANDARD.encode(&c.data),
            seq: c.seq,
            stream: c.stream.clone(),
        }
    }
}

/// The `data` of the `end` event of a run's log stream: its verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEnd {
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(value_type = RunStateName)]
    pub state: String,
}
