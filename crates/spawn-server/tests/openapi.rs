//! The OpenAPI document against a real `spawnd` on loopback: served without a key, OpenAPI
//! 3.1 by a validator nobody here wrote, and each answer of a scenario through the whole
//! API as the document says (its status documented for its route, its body of the schema
//! named there). That the document lists every route the router serves, with its methods,
//! is checked in the crate, against the router itself (`src/openapi.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, AGENT};
use reqwest::{Client, Method};
use serde_json::{json, Value};

/// Where scripts/install-deps.sh installs openapi-spec-validator.
const VALIDATOR: &str = "/opt/spawn-tools/venv/bin/openapi-spec-validator";

/// The served document, fetched without an API key.
async fn document(c: &Client, d: &Daemon) -> Value {
    let res = c.get(d.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let header = |n: &str| res.headers()[n].to_str().unwrap().to_owned();
    assert!(header("content-type").starts_with("application/json"));
    assert!(header("x-request-id").starts_with("req_"));
    let doc: Value = res.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    doc
}

/// The JSON type of `v`, as JSON Schema names it.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `value` does not conform to `schema`, as far as this API's schemas go (`$ref`,
/// `type`, `enum`, `properties` (no others), `required`, `items`).
fn nonconformities(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{r}: no such schema");
        return nonconformities(doc, target, value, at, out);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let t = type_of(value);
    if !types.is_empty()
        && !types
            .iter()
            .any(|x| *x == t || (*x == "number" && t == "integer"))
    {
        out.push(format!(
            "{at}: a {t} ({value}), the document says {types:?}"
        ));
        return;
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            out.push(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    match value {
        Value::Object(fields) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in fields {
                    match props.get(k) {
                        Some(s) => nonconformities(doc, s, v, &format!("{at}.{k}"), out),
                        None => out.push(format!("{at}.{k}: not in the document")),
                    }
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{at}.{r}: required, missing"));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, v) in items.iter().enumerate() {
                nonconformities(doc, &schema["items"], v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// One request of the scenario, checked against the document.
struct Api<'a> {
    c: Client,
    d: &'a Daemon,
    doc: Value,
    /// (method, route, status) answered, each checked.
    seen: Vec<String>,
}

impl Api<'_> {
    /// `method` on `route` (with its parameters as `path` has them), with `key` and `body`;
    /// asserts that the answer is `status`, that the document has that status for the
    /// route, and that the body is of the schema it names there. Returns the body.
    async fn call(
        &mut self,
        method: Method,
        route: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
        status: u16,
    ) -> Value {
        let mut req = self.c.request(method.clone(), self.d.url(path));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Yaml(t)) => req.header("content-type", "application/yaml").body(t),
            None => req,
        };
        let res = req.send().await.unwrap();
        let m = method.as_str().to_lowercase();
        assert_eq!(res.status().as_u16(), status, "{m} {path}");
        assert!(res.headers().contains_key("x-request-id"));
        let response = &self.doc["paths"][route][&m]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{m} {route}: {status} is not in the document"
        );
        let text = res.text().await.unwrap();
        self.seen.push(format!("{m} {route} {status}"));
        let content = &response["content"];
        if text.is_empty() {
            assert!(
                content.is_null(),
                "{m} {route} {status}: no body, documented one"
            );
            return Value::Null;
        }
        let value: Value = serde_json::from_str(&text).unwrap();
        let schema = &content["application/json"]["schema"];
        assert!(schema.is_object(), "{m} {route} {status}: no JSON schema");
        let mut out = Vec::new();
        nonconformities(&self.doc, schema, &value, "$", &mut out);
        assert!(out.is_empty(), "{m} {route} {status}: {out:#?}\n{value}");
        value
    }
}

enum Body {
    Json(Value),
    Yaml(String),
}

/// The answers of a scenario through every part of the API are as the document says.
#[tokio::test]
async fn the_answers_are_as_the_document_says() {
    let d = Daemon::start(None);
    let c = Client::new();
    let doc = document(&c, &d).await;
    let mut api = Api {
        c,
        d: &d,
        doc,
        seen: Vec::new(),
    };
    let admin = Some(d.admin.as_str());
    let get = Method::GET;
    let (put, post, delete) = (Method::PUT, Method::POST, Method::DELETE);

    api.call(get.clone(), "/healthz", "/healthz", None, None, 200)
        .await;
    api.call(get.clone(), "/readyz", "/readyz", None, None, 200)
        .await;
    let me = api
        .call(get.clone(), "/v1/whoami", "/v1/whoami", admin, None, 200)
        .await;
    assert_eq!(me["name"], "admin");
    api.call(get.clone(), "/v1/whoami", "/v1/whoami", None, None, 401)
        .await;

    // Agents.
    let agent = "/v1/namespaces/{ns}/agents/{name}";
    let bot = "/v1/namespaces/team/agents/bot";
    let yaml = || Some(Body::Yaml(AGENT.to_owned()));
    api.call(put.clone(), agent, bot, admin, yaml(), 201).await;
    api.call(put.clone(), agent, bot, admin, yaml(), 409).await;
    let got = api.call(get.clone(), agent, bot, admin, None, 200).await;
    assert_eq!(got["manifest"]["kind"], "Agent");
    let list = "/v1/namespaces/{ns}/agents";
    let page = api
        .call(
            get.clone(),
            list,
            "/v1/namespaces/team/agents?limit=1",
            admin,
            None,
            200,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    api.call(
        get.clone(),
        list,
        "/v1/namespaces/team/agents?limit=0",
        admin,
        None,
        400,
    )
    .await;
    let viewer = d.key_for("vic", "viewer", "team", false).await;
    api.call(put.clone(), agent, bot, Some(&viewer), yaml(), 403)
        .await;
    api.call(
        get.clone(),
        agent,
        "/v1/namespaces/team/agents/nobody",
        admin,
        None,
        404,
    )
    .await;

    // Roles and bindings.
    let role = "/v1/namespaces/{ns}/roles/{name}";
    let role_doc =
        "apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: reader, namespace: team}\n\
                    rules:\n- resources: [agents]\n  verbs: [get, list]\n";
    api.call(
        put.clone(),
        role,
        "/v1/namespaces/team/roles/reader",
        admin,
        Some(Body::Yaml(role_doc.into())),
        201,
    )
    .await;
    api.call(
        get.clone(),
        role,
        "/v1/namespaces/team/roles/reader",
        admin,
        None,
        200,
    )
    .await;
    api.call(
        get.clone(),
        "/v1/namespaces/{ns}/roles",
        "/v1/namespaces/team/roles",
        admin,
        None,
        200,
    )
    .await;
    let binding = "/v1/namespaces/{ns}/rolebindings/{name}";
    let binding_doc = "apiVersion: spawn.dev/v1\nkind: RoleBinding\n\
                       metadata: {name: readers, namespace: team}\n\
                       subjects: [{kind: User, name: ann}]\nroleRef: {kind: Role, name: reader}\n";
    api.call(
        put.clone(),
        binding,
        "/v1/namespaces/team/rolebindings/readers",
        admin,
        Some(Body::Yaml(binding_doc.into())),
        201,
    )
    .await;
    api.call(
        get.clone(),
        binding,
        "/v1/namespaces/team/rolebindings/readers",
        admin,
        None,
        200,
    )
    .await;
    api.call(
        get.clone(),
        "/v1/namespaces/{ns}/rolebindings",
        "/v1/namespaces/team/rolebindings",
        admin,
        None,
        200,
    )
    .await;

    // Secrets: set (never answered back), listed, deleted.
    let secret = "/v1/namespaces/{ns}/secrets/{name}";
    let set = api
        .call(
            Method::PUT,
            secret,
            "/v1/namespaces/team/secrets/DOC_TOKEN",
            admin,
            Some(Body::Json(json!({"value": "doc-value-1"}))),
            200,
        )
        .await;
    assert_eq!(set["version"], 1);
    api.call(
        Method::PUT,
        secret,
        "/v1/namespaces/team/secrets/DOC_TOKEN",
        admin,
        Some(Body::Json(json!({"value": 1}))),
        400,
    )
    .await;
    let listed = api
        .call(
            get.clone(),
            "/v1/namespaces/{ns}/secrets",
            "/v1/namespaces/team/secrets",
            admin,
            None,
            200,
        )
        .await;
    assert_eq!(listed[0]["name"], "DOC_TOKEN");
    assert!(!listed.to_string().contains("doc-value-1"));
    api.call(
        delete.clone(),
        secret,
        "/v1/namespaces/team/secrets/DOC_TOKEN",
        admin,
        None,
        204,
    )
    .await;
    api.call(
        delete.clone(),
        secret,
        "/v1/namespaces/team/secrets/DOC_TOKEN",
        admin,
        None,
        404,
    )
    .await;
    let shredded = api
        .call(
            delete.clone(),
            "/v1/namespaces/{ns}/secrets",
            "/v1/namespaces/team/secrets",
            admin,
            None,
            200,
        )
        .await;
    assert!(shredded["dataKeys"].is_u64());

    // Keys: made (shown once), listed, revoked.
    let keys = "/v1/namespaces/{ns}/keys";
    let made = api
        .call(
            post.clone(),
            keys,
            "/v1/namespaces/team/keys",
            admin,
            Some(Body::Json(json!({"name": "ci", "role": "viewer"}))),
            201,
        )
        .await;
    assert!(made["key"].as_str().unwrap().starts_with("spawn_sk_live_"));
    api.call(
        post.clone(),
        keys,
        "/v1/namespaces/team/keys",
        admin,
        Some(Body::Json(json!({"name": "ci", "role": "viewer"}))),
        409,
    )
    .await;
    let listed = api
        .call(
            get.clone(),
            keys,
            "/v1/namespaces/team/keys",
            admin,
            None,
            200,
        )
        .await;
    assert!(listed["items"][0].get("key").is_none());
    let id = made["id"].as_str().unwrap();
    let revoked = api
        .call(
            delete.clone(),
            "/v1/namespaces/{ns}/keys/{id}",
            &format!("/v1/namespaces/team/keys/{id}"),
            admin,
            None,
            200,
        )
        .await;
    assert!(revoked["revokedMs"].is_i64());
    // A key ends itself (logout).
    let own = api
        .call(
            post.clone(),
            keys,
            "/v1/namespaces/team/keys",
            admin,
            Some(Body::Json(json!({"name": "leaver", "role": "viewer"}))),
            201,
        )
        .await;
    let own_key = own["key"].as_str().unwrap().to_owned();
    let ended = api
        .call(
            post.clone(),
            "/v1/logout",
            "/v1/logout",
            Some(&own_key),
            None,
            200,
        )
        .await;
    assert_eq!(ended["id"], own["id"]);
    assert!(ended["revokedMs"].is_i64());
    api.call(
        post.clone(),
        "/v1/logout",
        "/v1/logout",
        Some(&own_key),
        None,
        401,
    )
    .await;

    // Runs: one to its end and its output, one cancelled.
    let runs = "/v1/namespaces/{ns}/runs";
    let run = "/v1/namespaces/{ns}/runs/{id}";
    let queued = api
        .call(
            post.clone(),
            runs,
            "/v1/namespaces/team/runs",
            admin,
            Some(Body::Json(json!({
                "command": ["sh", "-c", "echo out; echo err >&2; exit 3"], "runtime": "native"
            }))),
            201,
        )
        .await;
    let id = queued["id"].as_str().unwrap().to_owned();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let ended = loop {
        let r = api
            .call(
                get.clone(),
                run,
                &format!("/v1/namespaces/team/runs/{id}"),
                admin,
                None,
                200,
            )
            .await;
        if r["finishedMs"].is_i64() {
            break r;
        }
        assert!(std::time::Instant::now() < until, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended["exitCode"], 3, "{ended}");
    let logs = api
        .call(
            get.clone(),
            "/v1/namespaces/{ns}/runs/{id}/logs",
            &format!("/v1/namespaces/team/runs/{id}/logs"),
            admin,
            None,
            200,
        )
        .await;
    assert!(logs["items"].as_array().unwrap().len() >= 2, "{logs}");
    // The event stream is the content type the document names.
    let sse = d.url(&format!("/v1/namespaces/team/runs/{id}/logs"));
    let res = api
        .c
        .get(sse)
        .header("x-api-key", &d.admin)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert!(
        api.doc["paths"]["/v1/namespaces/{ns}/runs/{id}/logs"]["get"]["responses"]["200"]
            ["content"]["text/event-stream"]
            .is_object()
    );
    let text = res.text().await.unwrap();
    assert!(text.contains("event: end"), "{text}");
    let sleeper = api
        .call(
            post.clone(),
            runs,
            "/v1/namespaces/team/runs",
            admin,
            Some(Body::Json(
                json!({"command": ["sleep", "30"], "runtime": "native"}),
            )),
            201,
        )
        .await;
    let sid = sleeper["id"].as_str().unwrap();
    let cancelled = api
        .call(
            post.clone(),
            "/v1/namespaces/{ns}/runs/{id}/cancel",
            &format!("/v1/namespaces/team/runs/{sid}/cancel"),
            admin,
            None,
            200,
        )
        .await;
    assert_eq!(cancelled["cancelRequested"], true);
    api.call(
        get.clone(),
        runs,
        "/v1/namespaces/team/runs",
        admin,
        None,
        200,
    )
    .await;
    api.call(
        get.clone(),
        run,
        "/v1/namespaces/team/runs/tr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        admin,
        None,
        404,
    )
    .await;
    api.call(
        post.clone(),
        runs,
        "/v1/namespaces/team/runs",
        admin,
        Some(Body::Json(json!({"command": []}))),
        400,
    )
    .await;

    // An agent started (with and without overrides) and stopped.
    let start = "/v1/namespaces/{ns}/agents/{name}/start";
    let stop = "/v1/namespaces/{ns}/agents/{name}/stop";
    let started = api
        .call(
            post.clone(),
            start,
            &format!("{bot}/start"),
            admin,
            None,
            201,
        )
        .await;
    assert!(started["agentId"].as_str().unwrap().starts_with("ag_"));
    api.call(
        post.clone(),
        start,
        &format!("{bot}/start"),
        admin,
        Some(Body::Json(json!({"runtime": "vm"}))),
        400,
    )
    .await;
    api.call(
        post.clone(),
        start,
        "/v1/namespaces/team/agents/nobody/start",
        admin,
        None,
        404,
    )
    .await;
    let stopped = api
        .call(post.clone(), stop, &format!("{bot}/stop"), admin, None, 200)
        .await;
    assert_eq!(stopped["agent"], "bot");
    api.call(
        post.clone(),
        stop,
        "/v1/namespaces/team/agents/bot/stop",
        Some(&viewer),
        None,
        403,
    )
    .await;

    api.call(delete.clone(), agent, bot, admin, None, 204).await;
    api.call(
        delete.clone(),
        binding,
        "/v1/namespaces/team/rolebindings/readers",
        admin,
        None,
        204,
    )
    .await;
    api.call(
        delete.clone(),
        role,
        "/v1/namespaces/team/roles/reader",
        admin,
        None,
        204,
    )
    .await;

    // The audit log: an auditor bound cluster-wide reads it; a viewer may not.
    let auditor_key = d.key_for("ada", "auditor", "*", false).await;
    let auditor = Some(auditor_key.as_str());
    let events = "/v1/audit/events";
    api.call(
        get.clone(),
        events,
        "/v1/audit/events?limit=5",
        auditor,
        None,
        200,
    )
    .await;
    api.call(
        get.clone(),
        events,
        "/v1/audit/events?limit=0",
        auditor,
        None,
        400,
    )
    .await;
    api.call(
        get.clone(),
        events,
        events,
        Some(viewer.as_str()),
        None,
        403,
    )
    .await;
    let logs = api
        .call(
            get.clone(),
            "/v1/audit/logs",
            "/v1/audit/logs",
            auditor,
            None,
            200,
        )
        .await;
    assert_eq!(logs["logs"], json!([logs["this"].clone()]), "{logs}");
    api.call(
        get.clone(),
        "/v1/audit/logs",
        "/v1/audit/logs?x=1",
        auditor,
        None,
        400,
    )
    .await;
    api.call(
        get.clone(),
        "/v1/audit/logs",
        "/v1/audit/logs",
        Some(viewer.as_str()),
        None,
        403,
    )
    .await;
    let caps = "/v1/audit/capabilities";
    api.call(
        get.clone(),
        caps,
        &format!("{caps}?agent=bot"),
        auditor,
        None,
        200,
    )
    .await;
    api.call(get.clone(), caps, caps, auditor, None, 400).await;
    api.call(
        get.clone(),
        caps,
        &format!("{caps}?agent=bot"),
        Some(viewer.as_str()),
        None,
        403,
    )
    .await;
    for route in ["/v1/audit/export", "/v1/audit/verify"] {
        api.call(
            get.clone(),
            route,
            &format!("{route}?bogus=1"),
            auditor,
            None,
            400,
        )
        .await;
        api.call(get.clone(), route, route, Some(viewer.as_str()), None, 403)
            .await;
    }
    let verified = api
        .call(
            get.clone(),
            "/v1/audit/verify",
            "/v1/audit/verify",
            auditor,
            None,
            200,
        )
        .await;
    assert_eq!(verified["intact"], true, "{verified}");
    // The export is JSON lines, as documented.
    let res = api
        .c
        .get(d.url("/v1/audit/export"))
        .header("x-api-key", &auditor_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    assert!(
        api.doc["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"]
            ["application/x-ndjson"]
            .is_object()
    );
    for line in res.text().await.unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert!(record["hash"].is_string(), "{line}");
    }
    api.seen.push("get /v1/audit/export 200".into());

    // The check of a body against its schema is no check that passes anything.
    let mut wrong = got.clone();
    wrong["extra"] = json!(1);
    wrong["version"] = json!("1");
    wrong.as_object_mut().unwrap().remove("id");
    let mut found = Vec::new();
    let view = json!({"$ref": "#/components/schemas/AgentView"});
    nonconformities(&api.doc, &view, &wrong, "$", &mut found);
    assert_eq!(found.len(), 3, "{found:#?}");

    // Every operation of the document was answered here, but the two that are not JSON
    // (or are the document itself).
    let answered: BTreeSet<String> = api
        .seen
        .iter()
        .map(|s| s.rsplit_once(' ').unwrap().0.to_owned())
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{method} {path}"));
        }
    }
    let left: Vec<&String> = documented.difference(&answered).collect();
    assert_eq!(
        left,
        ["get /metrics", "get /v1/openapi.json"],
        "{answered:#?}"
    );
}

/// The served document is valid OpenAPI 3.1 by `openapi-spec-validator` (Python,
/// installed in a venv by scripts/install-deps.sh, which `make test` runs first).
#[tokio::test]
async fn the_document_is_valid_openapi_3_1_by_a_validator_nobody_here_wrote() {
    let tool = std::env::var_os("SPAWN_OPENAPI_VALIDATOR")
        .map_or_else(|| PathBuf::from(VALIDATOR), PathBuf::from);
    assert!(
        tool.exists(),
        "{} is missing: scripts/install-deps.sh installs it (make test runs that first); \
         or name another with SPAWN_OPENAPI_VALIDATOR",
        tool.display()
    );
    let d = Daemon::start(None);
    let c = Client::new();
    let doc = document(&c, &d).await;
    let dir = tempfile::tempdir().unwrap();
    let validate = |doc: &Value| {
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
        let out = Command::new(&tool)
            .args(["--schema", "3.1"])
            .arg(&file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.success(),
            said.chars().take(4000).collect::<String>(),
        )
    };
    let (ok, said) = validate(&doc);
    assert!(ok, "{said}");
    // It refuses what is not valid: it is no tool that passes anything.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("info");
    let (ok, said) = validate(&broken);
    assert!(
        !ok && said.contains("'info' is a required property"),
        "{said}"
    );
}
