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

impl ErrorBody {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
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

/// Who the caller is: the principal its API key belongs to, or the User its bearer JWT or
/// client certificate names.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    /// The key's id (`key_…`); `jwt` for a bearer JWT, `mtls` for a client certificate.
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
    /// The API key (`spawn_sk_live_…` or `spawn_sk_test_…`): send it as `X-API-Key`. Shown once.
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

/// What `POST …/agents/{name}/stop` asked to stop.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoppedView {
    /// The agent's name.
    pub agent: String,
    /// Its runs that were queued (now `cancelled`) or running (now `cancelRequested`);
    /// empty when there was nothing to stop.
    pub stopped: Vec<RunView>,
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

#[cfg(test)]
mod tests {
    //! Each view serializes to the very bytes of the `json!` it replaced (copied here as it
    //! was), with values present and absent.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::{json, Value};
    use spawn_store::{AgentRecord, BindingRecord, KeyRecord, OutputChunk, RoleRecord, RunRecord};

    use super::*;

    fn same(view: impl Serialize, old: Value) {
        assert_eq!(serde_json::to_string(&view).unwrap(), old.to_string());
    }

    fn agent(manifest: &str) -> AgentRecord {
        AgentRecord {
            id: "ag_1".into(),
            namespace: "team".into(),
            name: "bot".into(),
            manifest: manifest.into(),
            version: 3,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn agent_json(a: &AgentRecord) -> Value {
        json!({
            "id": a.id,
            "namespace": a.namespace,
            "name": a.name,
            "version": a.version,
            "manifest": serde_json::from_str::<Value>(&a.manifest).unwrap_or(Value::Null),
            "createdMs": a.created_ms,
            "updatedMs": a.updated_ms,
        })
    }

    #[test]
    fn agents_and_pages() {
        for m in [
            r#"{"kind":"Agent","apiVersion":"spawn.dev/v1","spec":{}}"#,
            "not json",
        ] {
            let a = agent(m);
            same(AgentView::from(&a), agent_json(&a));
        }
        for next in [None, Some("bot".to_owned())] {
            let page = spawn_store::Page {
                items: vec![agent("{}"), agent("[]")],
                next: next.clone(),
            };
            same(
                Page::<AgentView>::of(&page),
                json!({
                    "items": page.items.iter().map(agent_json).collect::<Vec<_>>(),
                    "next": page.next,
                }),
            );
        }
    }

    #[test]
    fn roles_and_bindings() {
        let r = RoleRecord {
            namespace: "team".into(),
            name: "reader".into(),
            rules: r#"[{"resources":["agents"],"verbs":["get","list"]}]"#.into(),
            builtin: false,
            version: 2,
            created_ms: 1,
            updated_ms: 2,
        };
        same(
            RoleView::from(&r),
            json!({
                "apiVersion": rbac::API_VERSION,
                "kind": "Role",
                "metadata": {"name": r.name, "namespace": r.namespace},
                "rules": serde_json::from_str::<Value>(&r.rules).unwrap_or(Value::Null),
                "version": r.version,
            }),
        );
        let b = BindingRecord {
            namespace: "team".into(),
            name: "readers".into(),
            role: "reader".into(),
            subjects: r#"[{"kind":"User","name":"ann"}]"#.into(),
            version: 1,
            created_ms: 1,
            updated_ms: 1,
        };
        same(
            RoleBindingView::from(&b),
            json!({
                "apiVersion": rbac::API_VERSION,
                "kind": "RoleBinding",
                "metadata": {"name": b.name, "namespace": b.namespace},
                "subjects": serde_json::from_str::<Value>(&b.subjects).unwrap_or(Value::Null),
                "roleRef": {"kind": "Role", "name": b.role},
                "version": b.version,
            }),
        );
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

    #[test]
    fn keys_listed_and_made() {
        for (used, revoked) in [(None, None), (Some(5), Some(6))] {
            let k = KeyRecord {
                id: "key_1".into(),
                hash: vec![1, 2],
                hint: "abcd".into(),
                test: true,
                principal_kind: "ServiceAccount".into(),
                principal_name: "ci".into(),
                created_by: "ServiceAccount/admin".into(),
                created_ms: 4,
                last_used_ms: used,
                revoked_ms: revoked,
                namespace: "team".into(),
            };
            same(KeyView::from(&k), key_json(&k));
            let mut made = key_json(&k);
            made["key"] = Value::String("spawn_sk_test_x".into());
            made["role"] = Value::String("viewer".into());
            same(
                CreatedKeyView::new(&k, "spawn_sk_test_x".into(), "viewer".into()),
                made,
            );
        }
    }

    #[test]
    fn runs_logs_and_their_end() {
        for ended in [false, true] {
            let some = |v: i64| ended.then_some(v);
            let r = RunRecord {
                id: "tr_1".into(),
                namespace: "team".into(),
                agent_id: ended.then(|| "ag_1".into()),
                spec: "{}".into(),
                state: if ended { "failed" } else { "queued" }.into(),
                holder: None,
                lease_until_ms: None,
                cancel_requested: ended,
                exit_code: ended.then_some(3),
                error: ended.then(|| "why".into()),
                created_by: "User/ann".into(),
                request_id: ended.then(|| "req_1".into()),
                created_ms: 1,
                started_ms: some(2),
                finished_ms: some(3),
            };
            same(
                RunView::from(&r),
                json!({
                    "id": r.id,
                    "namespace": r.namespace,
                    "agentId": r.agent_id,
                    "state": r.state,
                    "exitCode": r.exit_code,
                    "error": r.error,
                    "cancelRequested": r.cancel_requested,
                    "createdBy": r.created_by,
                    "requestId": r.request_id,
                    "createdMs": r.created_ms,
                    "startedMs": r.started_ms,
                    "finishedMs": r.finished_ms,
                }),
            );
            same(
                RunEnd {
                    error: r.error.clone(),
                    exit_code: r.exit_code,
                    state: r.state.clone(),
                },
                json!({"state": r.state, "exitCode": r.exit_code, "error": r.error}),
            );
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let chunks = [
            OutputChunk {
                seq: 1,
                stream: "stdout".into(),
                data: b"out\n".to_vec(),
                at_ms: 7,
            },
            OutputChunk {
                seq: 2,
                stream: "stderr".into(),
                data: vec![0, 255],
                at_ms: 8,
            },
        ];
        same(
            Logs {
                items: chunks.iter().map(LogChunk::from).collect(),
            },
            json!({
                "items": chunks.iter().map(|c| json!({
                    "seq": c.seq, "stream": c.stream, "data": b64.encode(&c.data), "atMs": c.at_ms,
                })).collect::<Vec<_>>(),
            }),
        );
    }

    #[test]
    fn errors_health_and_whoami() {
        same(
            ErrorBody {
                error: ErrorDetail {
                    code: "not_found".into(),
                    message: "no such route".into(),
                },
            },
            json!({"error": {"code": "not_found", "message": "no such route"}}),
        );
        same(
            Status {
                status: "ok".into(),
            },
            json!({"status": "ok"}),
        );
        same(
            Whoami {
                key_id: "key_1".into(),
                kind: "User".into(),
                name: "ann".into(),
                test: false,
            },
            json!({"kind": "User", "name": "ann", "keyId": "key_1", "test": false}),
        );
    }

    /// The document's names of run states are the store's.
    #[test]
    fn run_state_names_are_the_stores() {
        let names = [
            RunStateName::Queued,
            RunStateName::Running,
            RunStateName::Succeeded,
            RunStateName::Failed,
            RunStateName::Cancelled,
            RunStateName::Interrupted,
        ];
        for n in names {
            let text = serde_json::to_value(&n).unwrap();
            let text = text.as_str().unwrap();
            let state = spawn_store::RunState::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(state.as_str(), text);
        }
    }
}
