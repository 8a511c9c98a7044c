//! HTTP tests against a real `spawnd` on loopback (the binary, started with `spawnd init`
//! then `spawnd --listen 127.0.0.1:0`), on SQLite and on a real PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../spawn-store/tests/common/mod.rs"]
mod pg;

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use common::{spawnd, Daemon, AGENT};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use spawn_auth::{ApiKey, KeyEnv};
use spawn_store::Store;

fn agent_named(name: &str, ns: &str) -> String {
    AGENT
        .replace("name: bot", &format!("name: {name}"))
        .replace("namespace: team", &format!("namespace: {ns}"))
}

/// GETs `path` with `key`.
async fn get_as(c: &Client, d: &Daemon, key: &str, path: &str) -> reqwest::Response {
    c.get(d.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

/// PUTs `body` to `path` with `key`; returns the status.
async fn put_as(c: &Client, d: &Daemon, key: &str, path: &str, body: &str) -> reqwest::Response {
    c.put(d.url(path))
        .header("x-api-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn role_doc(name: &str, ns: &str, rules: &str) -> String {
    format!("apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {{name: {name}, namespace: {ns}}}\nrules:\n{rules}")
}

fn binding_doc(name: &str, ns: &str, role: &str, subject: &str) -> String {
    format!(
        "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         subjects: [{{kind: User, name: {subject}}}]\nroleRef: {{kind: Role, name: {role}}}\n"
    )
}

/// Makes a key for a new ServiceAccount `name` with `role` in `ns`, as `key`; the key.
async fn make_key(
    c: &Client,
    d: &Daemon,
    key: &str,
    ns: &str,
    name: &str,
    role: &str,
    test: bool,
) -> reqwest::Response {
    c.post(d.url(&format!("/v1/namespaces/{ns}/keys")))
        .header("x-api-key", key)
        .json(&serde_json::json!({"name": name, "role": role, "test": test}))
        .send()
        .await
        .unwrap()
}

/// The key of a new ServiceAccount `name` with `role` in `ns`, made by the admin.
async fn key_made(c: &Client, d: &Daemon, ns: &str, name: &str, role: &str, test: bool) -> String {
    make_key(c, d, &d.admin, ns, name, role, test)
        .await
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Checks an error answer's shape and code; returns its message.
async fn error_of(res: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(res.status(), status);
    let id = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_"), "{id}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sqlite_health_keys_agents_rbac_and_hostile_input() {
    let mut d = Daemon::start(None);
    scenario(&mut d).await;
}

#[tokio::test]
async fn postgres_health_keys_agents_rbac_and_hostile_input() {
    let url = pg::postgres_url().await;
    let mut d = Daemon::start(Some(url));
    scenario(&mut d).await;
}

/// With a short rotation period, the daemon rotates each namespace's data key in the
/// background: the completion is on record (namespace, versions, values resealed, never a
/// value), and the values still open: a run granted one gets it; a bad period is refused.
#[tokio::test]
async fn data_keys_rotate_in_the_background_and_values_still_open() {
    let d = Daemon::start_full(
        None,
        None,
        "",
        "secrets:\n  rotationDays: 0.00002\n  rotationCheckSeconds: 1\n",
    );
    let c = Client::new();
    const VALUE: &str = "rotated-value-Qx81";
    let res = put_as(
        &c,
        &d,
        &d.admin,
        "/v1/namespaces/team/secrets/API_TOKEN",
        &serde_json::json!({ "value": VALUE }).to_string(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let rotated = |audit: &str| -> Vec<Value> {
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["action"] == "rotate-data-key" && e["details"]["namespace"] == "team")
            .collect()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while rotated(&d.audit()).len() < 2 {
        assert!(
            std::time::Instant::now() < until,
            "no rotation: {}",
            d.audit()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = rotated(&d.audit());
    assert_eq!(events[0]["eventType"], "agent.secret.access");
    assert_eq!(events[0]["outcome"], "success", "{}", events[0]);
    assert_eq!(events[0]["details"]["previousKeyVersion"], 1);
    assert_eq!(events[0]["details"]["keyVersion"], 2);
    assert_eq!(events[0]["details"]["resealed"], 1);
    assert!(!d.audit().contains(VALUE));
    // The value opens under the newest key.
    let script = "printf %s \"$API_TOKEN\" | sha256sum | cut -c1-64";
    let (done, id) = run_with_secret(&c, &d, "team", script).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        logs(&c, &d, "team", &id).await,
        vec![(
            "stdout".into(),
            format!("{}\n", sha256_hex(VALUE.as_bytes()))
        )]
    );
    // A period that is no period is refused at start, with the setting named.
    for bad in [
        "rotationDays: 0",
        "rotationDays: -1",
        "rotationDays: .nan",
        "rotationCheckSeconds: 0",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = common::refused(dir.path(), &format!("secrets:\n  {bad}\n"));
        assert!(out.contains("secrets."), "{bad}: {out}");
    }
}

async fn scenario(d: &mut Daemon) {
    let c = Client::new();
    health(d, &c).await;
    authentication(d, &c).await;
    agents(d, &c).await;
    rbac(d, &c).await;
    rbac_over_the_api(d, &c).await;
    keys_over_the_api(d, &c).await;
    secrets(d, &c).await;
    runs(d, &c).await;
    start_and_stop_agents(d, &c).await;
    hostile(d, &c).await;
    audit_completeness(d, &c).await;
    audit_api(d, &c).await;
    metrics(d, &c).await;
    // Still healthy after all of it; then a restart keeps the state.
    assert_eq!(c.get(d.url("/healthz")).send().await.unwrap().status(), 200);
    // A run going on while the daemon restarts: it finishes, its output whole.
    let long = post_run(
        &c,
        d,
        &d.admin,
        "team",
        serde_json::json!({
            "command": ["sh", "-c", "echo before; sleep 3; echo after"], "runtime": "native"
        }),
    )
    .await;
    assert_eq!(long.status(), 201);
    let long_id = long.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(&c, d, "team", &long_id, &["running"]).await;
    d.restart();
    let done = wait_state(&c, d, "team", &long_id, &["succeeded", "failed"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        logs(&c, d, "team", &long_id).await,
        vec![("stdout".into(), "before\nafter\n".into())]
    );
    let res = get_as(&c, d, &d.admin, "/v1/namespaces/team/agents/kept").await;
    assert_eq!(res.status(), 200);
    // init made the secrets' master key, owner-only.
    let key = d.home.join("keys/secrets-master.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    // init refuses to run twice (a second admin key is not made behind anyone's back).
    let again = Command::new(spawnd())
        .arg("--config")
        .arg(&d.config)
        .arg("init")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(again.stdout.is_empty());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialized"));
    // The events of the daemon before and after its restart are in the database's copy,
    // one unbroken log.
    let auditor = d.key_for("auditor-2", "auditor", "*", false).await;
    let v: Value = get_as(&c, d, &auditor, "/v1/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], true, "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    let export = get_as(&c, d, &auditor, "/v1/audit/export")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(export.as_ref(), d.audit().as_bytes());
}

/// The audit log over the API: only for `audit` bound cluster-wide; every event written
/// before a request is in its answer; queries, pages, the export bit for bit, the check;
/// hostile parameters refused.
async fn audit_api(d: &Daemon, c: &Client) {
    let auditor = d.key_for("auditor", "auditor", "*", false).await;
    let viewer = d.key_for("viewer-all", "viewer", "*", false).await;
    let local = d.key_for("auditor-team", "auditor", "team", false).await;
    let get = |key: &str, q: &str| {
        c.get(d.url(&format!("/v1/audit/events{q}")))
            .header("x-api-key", key)
            .send()
    };
    for (who, key) in [
        ("a viewer", &viewer),
        ("an auditor of one namespace", &local),
    ] {
        for path in ["/v1/audit/events", "/v1/audit/export", "/v1/audit/verify"] {
            let res = get_as(c, d, key, path).await;
            assert_eq!(res.status(), 403, "{who} {path}");
        }
    }
    let no_key = c.get(d.url("/v1/audit/events")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);

    // The denials just made are in the answer (an answer includes what was written
    // before it), with the viewer's name.
    let page: Value = get(&auditor, "?type=rbac.permission.denied&limit=1000")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .filter(|r| r["principal"]["id"] == "User/viewer-all"
                || r["principal"]["name"] == "viewer-all")
            .count()
            >= 3,
        "{page}"
    );
    assert!(items
        .iter()
        .all(|r| r["eventType"] == "rbac.permission.denied"));
    assert!(page["log"]
        .as_str()
        .unwrap()
        .starts_with("spawn.audit/log_"));

    // Every record, a page at a time, is the log file, in order.
    let file: Vec<Value> = d
        .audit()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            "?limit=97".to_owned()
        } else {
            format!("?limit=97&after={after}")
        };
        let page: Value = get(&auditor, &q).await.unwrap().json().await.unwrap();
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged.len(), file.len());
    assert_eq!(paged, file[..paged.len()].to_vec());

    // Filters: each answer is what the same filter keeps of the file.
    for (q, keep) in [
        (
            "?outcome=denied",
            &(|r: &Value| r["outcome"] == "denied") as &dyn Fn(&Value) -> bool,
        ),
        ("?type=auth.failure,agent.create", &|r: &Value| {
            r["eventType"] == "auth.failure" || r["eventType"] == "agent.create"
        }),
        ("?q=VIEWER-ALL", &|r: &Value| {
            r.to_string().to_lowercase().contains("viewer-all")
        }),
        ("?since=9999-01-01T00:00:00.000Z", &|_: &Value| false),
    ] {
        let page: Value = get(&auditor, &format!("{q}&limit=1000"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want: Vec<&Value> = file.iter().filter(|r| keep(r)).collect();
        let got: Vec<&Value> = page["items"].as_array().unwrap().iter().collect();
        assert_eq!(got.len(), want.len(), "{q}");
        assert_eq!(got, want, "{q}");
    }

    // Hostile parameters: refused with the reason, never a 500.
    for q in [
        "?type=bogus",
        "?type=auth.failure,",
        "?type=",
        "?outcome=maybe",
        "?outcome=",
        "?since=yesterday",
        "?since=2026-01-15T10:30:00Z",
        "?until=2026-01-15T10:30:00.000%2B01:00",
        "?trace=xyz",
        "?trace=tr_%27%3B--",
        "?limit=0",
        "?limit=1001",
        "?limit=-1",
        "?limit=1e3",
        "?after=-1",
        "?after=1.5",
        "?after=99999999999999999999",
        "?q=%00",
        "?q=%1b%5b31m",
        "?bogus=1",
        "?log=%0a",
    ] {
        let res = get(&auditor, q).await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], "invalid", "{q}: {body}");
    }
    // SQL in a value is a value.
    let page: Value = get(
        &auditor,
        "?q=%27%3B%20DROP%20TABLE%20audit_records%3B--&log=x%27%20OR%201%3D1--",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");

    // Per capability, an agent's uses, as the same rule over the file gives them.
    let agent = file
        .iter()
        .find(|r| {
            r["eventType"]
                .as_str()
                .is_some_and(|t| t.starts_with("agent.capability."))
        })
        .map(|r| r["principal"]["id"].as_str().unwrap().to_owned())
        .expect("the scenario's runs wrote capability events");
    let filter = spawn_audit::query::Filter {
        types: vec![
            "agent.capability.invoke".into(),
            "agent.capability.denied".into(),
            "agent.net.connect".into(),
        ],
        agent: Some(agent.clone()),
        ..Default::default()
    };
    let kept: Vec<Value> = d
        .audit()
        .lines()
        .map(|l| (serde_json::from_str::<Value>(l).unwrap(), l.to_owned()))
        .filter(|(r, l)| filter.matches(r, l))
        .map(|(r, _)| r)
        .collect();
    let want = serde_json::to_value(spawn_audit::query::capabilities(&kept)).unwrap();
    assert!(!want.as_array().unwrap().is_empty());
    let caps: Value = get_as(
        c,
        d,
        &auditor,
        &format!("/v1/audit/capabilities?agent={agent}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(caps["capabilities"], want, "{caps}");
    for q in ["", "?agent=", "?agent=x&since=1d", "?agent=x&bogus=1"] {
        let res = get_as(c, d, &auditor, &format!("/v1/audit/capabilities{q}")).await;
        assert_eq!(res.status(), 400, "{q}");
    }

    // The export is the log file, bit for bit; the check passes.
    let export = get_as(c, d, &auditor, "/v1/audit/export").await;
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let bytes = export.bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), d.audit().as_bytes());
    let v: Value = get_as(c, d, &auditor, "/v1/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(
        usize::try_from(v["records"].as_u64().unwrap()).unwrap(),
        d.audit().lines().count(),
        "{v}"
    );
}

/// `/metrics`: the counters reflect what the scenario did.
async fn metrics(d: &Daemon, c: &Client) {
    let res = c.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} missing: {text}"))
            .parse()
            .unwrap()
    };
    assert!(value("spawnd_http_requests_total{status=\"200\"}") > 10.0);
    assert!(value("spawnd_http_requests_total{status=\"403\"}") >= 7.0);
    assert!(value("spawnd_auth_failures_total") >= 6.0);
    assert!(value("spawnd_rbac_denials_total") >= 7.0);
    assert!(value("spawnd_runs{state=\"succeeded\"}") >= 1.0);
    assert!(value("spawnd_http_request_duration_seconds_count") > 10.0);
    value("spawnd_supervisors");
}

async fn health(d: &Daemon, c: &Client) {
    for path in ["/healthz", "/readyz"] {
        let res = c.get(d.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let id = res.headers().get("x-request-id").unwrap().to_str().unwrap();
        assert!(id.starts_with("req_") && id.len() > 10, "{id}");
    }
}

async fn authentication(d: &Daemon, c: &Client) {
    let who = |key: Option<&str>| {
        let mut r = c.get(d.url("/v1/whoami"));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    let res = who(Some(&d.admin)).await.unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("ServiceAccount"), Some("admin"))
    );

    // A typo (checksum), a key never issued, none, a garbage header, a revoked key.
    let mut typo = d.admin.clone().into_bytes();
    let at = typo.len() - 10;
    typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let never = ApiKey::generate(KeyEnv::Live).unwrap();
    for (key, says) in [
        (Some(typo.as_str()), "checksum"),
        (Some(never.expose()), "not known"),
        (None, "no API key"),
        (Some("spawn_sk_live_short"), "not valid"),
        (Some("Bearer x"), "not valid"),
    ] {
        let msg = error_of(
            who(key).await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
        assert!(msg.contains(says), "{key:?}: {msg}");
    }
    let victim = d.key_for("carol", "viewer", "team", false).await;
    assert_eq!(who(Some(&victim)).await.unwrap().status(), 200);
    let store = Store::open(&d.db_url).await.unwrap();
    let id = store
        .key_by_hash(&ApiKey::parse(&victim).unwrap().hash().0)
        .await
        .unwrap()
        .unwrap()
        .id;
    store.revoke_key(&id).await.unwrap();
    // Revoked behind this daemon's back (as another daemon on PostgreSQL does, or an
    // operator with sqlite3): effective at the next request on PostgreSQL; within the
    // second a daemon remembers a key on SQLite (its own revocations hold at once: see
    // keys_over_the_api).
    if !d.db_url.starts_with("postgres") {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while who(Some(&victim)).await.unwrap().status() == 200 {
            assert!(std::time::Instant::now() < until, "still served after 2 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let msg = error_of(
        who(Some(&victim)).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert!(msg.contains("revoked"), "{msg}");
    // last_used was kept for the key that was used.
    assert!(store.key(&id).await.unwrap().last_used_ms.is_some());
    store.close().await;
    // Each failure audited, without any key in the log.
    let log = d.audit();
    assert!(log.matches("\"auth.failure\"").count() >= 6, "{log}");
    for secret in [
        d.admin.as_str(),
        typo.as_str(),
        never.expose(),
        victim.as_str(),
    ] {
        assert!(!log.contains(secret), "a key reached the audit log");
        assert!(
            !log.contains(&secret[14..]),
            "part of a key reached the audit log"
        );
    }
    assert!(log.contains("\"requestId\":\"req_"), "{log}");
}

async fn agents(d: &Daemon, c: &Client) {
    let url = d.url("/v1/namespaces/team/agents/bot");
    let put = |body: String, if_match: Option<&str>| {
        let mut r = c.put(&url).header("x-api-key", &d.admin).body(body);
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send()
    };
    let res = put(AGENT.into(), None).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let created: Value = res.json().await.unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("ag_"));
    assert_eq!(created["manifest"]["spec"]["command"][0], "true");
    // Created again: a conflict that says how to replace it.
    let msg = error_of(
        put(AGENT.into(), None).await.unwrap(),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    assert!(msg.contains("If-Match"), "{msg}");
    let res = put(AGENT.replace("[\"true\"]", "[\"false\"]"), Some("\"1\""))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    // A writer that read version 1 loses.
    error_of(
        put(AGENT.into(), Some("\"1\"")).await.unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let got = c
        .get(&url)
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["etag"], "\"2\"");
    let got: Value = got.json().await.unwrap();
    assert_eq!(got["manifest"]["spec"]["command"][0], "false");
    assert_eq!(got["id"], created["id"]);

    // Pages.
    for i in 0..5 {
        let name = format!("page-{i}");
        let res = c
            .put(d.url(&format!("/v1/namespaces/team/agents/{name}")))
            .header("x-api-key", &d.admin)
            .body(agent_named(&name, "team"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut u = d.url("/v1/namespaces/team/agents?limit=2");
        if let Some(a) = &after {
            u.push_str(&format!("&after={a}"));
        }
        let page: Value = c
            .get(u)
            .header("x-api-key", &d.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        names,
        ["bot", "page-0", "page-1", "page-2", "page-3", "page-4"]
    );

    // Deleting at a stale version is a conflict; then gone.
    let del = |m: Option<&str>| {
        let mut r = c.delete(&url).header("x-api-key", &d.admin);
        if let Some(m) = m {
            r = r.header("if-match", m);
        }
        r.send()
    };
    error_of(
        del(Some("\"1\"")).await.unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(del(Some("\"2\"")).await.unwrap().status(), 204);
    error_of(
        c.get(&url)
            .header("x-api-key", &d.admin)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // One to survive the restart.
    let res = c
        .put(d.url("/v1/namespaces/team/agents/kept"))
        .header("x-api-key", &d.admin)
        .body(agent_named("kept", "team"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let log = d.audit();
    assert!(
        log.contains("\"agent.create\"") && log.contains("\"agent.delete\""),
        "{log}"
    );
}

async fn rbac(d: &Daemon, c: &Client) {
    let viewer = d.key_for("vera", "viewer", "team", false).await;
    let developer = d.key_for("dev", "developer", "team", false).await;
    let get = |key: &str, path: &str| c.get(d.url(path)).header("x-api-key", key).send();
    // The viewer reads in its namespace, writes nothing.
    assert_eq!(
        get(&viewer, "/v1/namespaces/team/agents/kept")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&viewer, "/v1/namespaces/team/agents")
            .await
            .unwrap()
            .status(),
        200
    );
    let res = c
        .put(d.url("/v1/namespaces/team/agents/new"))
        .header("x-api-key", &viewer)
        .body(agent_named("new", "team"))
        .send()
        .await
        .unwrap();
    let msg = error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        msg.contains("may not create agents in namespace team"),
        "{msg}"
    );
    // Outside its namespace: the same answer whether the agent exists or not.
    for key in [&viewer, &developer] {
        c.put(d.url("/v1/namespaces/secret-ns/agents/hidden"))
            .header("x-api-key", &d.admin)
            .body(agent_named("hidden", "secret-ns"))
            .send()
            .await
            .unwrap();
        let exists = error_of(
            get(key, "/v1/namespaces/secret-ns/agents/hidden")
                .await
                .unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        let absent = error_of(
            get(key, "/v1/namespaces/secret-ns/agents/nothing")
                .await
                .unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_eq!(exists, absent);
        // Even a name that is not valid gets the same 403 first.
        let bad = error_of(
            get(key, "/v1/namespaces/secret-ns/agents/Bad_Name")
                .await
                .unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_eq!(exists, bad);
    }
    // The developer creates and updates, but does not delete.
    let res = c
        .put(d.url("/v1/namespaces/team/agents/devbot"))
        .header("x-api-key", &developer)
        .body(agent_named("devbot", "team"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = c
        .delete(d.url("/v1/namespaces/team/agents/devbot"))
        .header("x-api-key", &developer)
        .send()
        .await
        .unwrap();
    error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
    let log = d.audit();
    assert!(
        log.matches("\"rbac.permission.denied\"").count() >= 7,
        "{log}"
    );
}

async fn rbac_over_the_api(d: &Daemon, c: &Client) {
    // Seed 001's example, as written, through the API.
    let seed = "apiVersion: spawn.dev/v1\nkind: Role\nmetadata:\n  name: agent-operator\n  namespace: production\nrules:\n  - resources: [agents]\n    verbs: [get, list, create, start, stop]\n  - resources: [agents/logs]\n    verbs: [get]\n  - resources: [tasks]\n    verbs: [get, list, create]\n";
    let res = put_as(
        c,
        d,
        &d.admin,
        "/v1/namespaces/production/roles/agent-operator",
        seed,
    )
    .await;
    assert_eq!(res.status(), 201);
    let binding = "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata:\n  name: alice-operator\n  namespace: production\nsubjects:\n  - kind: User\n    name: alice@company.com\nroleRef:\n  kind: Role\n  name: agent-operator\n";
    let res = put_as(
        c,
        d,
        &d.admin,
        "/v1/namespaces/production/rolebindings/alice-operator",
        binding,
    )
    .await;
    assert_eq!(res.status(), 201);
    let role: Value = get_as(
        c,
        d,
        &d.admin,
        "/v1/namespaces/production/roles/agent-operator",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(role["rules"][0]["resources"][0], "agents");
    // A key for alice (made in the store: the API makes keys only for new ServiceAccounts).
    let alice = d
        .key_for("alice@company.com", "none-such-role", "nowhere", false)
        .await;
    let res = put_as(
        c,
        d,
        &alice,
        "/v1/namespaces/production/agents/bot",
        &agent_named("bot", "production"),
    )
    .await;
    assert_eq!(res.status(), 201, "the seed's role creates agents");
    let res = c
        .delete(d.url("/v1/namespaces/production/agents/bot"))
        .header("x-api-key", &alice)
        .send()
        .await
        .unwrap();
    error_of(res, StatusCode::FORBIDDEN, "forbidden").await;

    // A principal that may write Roles and bindings, but holds little else.
    let lite_rules = "  - {resources: [roles], verbs: [get, list, create, update]}\n  - {resources: [rolebindings], verbs: [get, create]}\n  - {resources: [agents], verbs: [get]}\n";
    assert_eq!(
        put_as(
            c,
            d,
            &d.admin,
            "/v1/namespaces/team/roles/lite",
            &role_doc("lite", "team", lite_rules)
        )
        .await
        .status(),
        201
    );
    let res = make_key(c, d, &d.admin, "team", "lite-sa", "lite", false).await;
    assert_eq!(res.status(), 201);
    let lite = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Within what it holds: fine.
    let within = role_doc(
        "reader",
        "team",
        "  - {resources: [agents], verbs: [get]}\n",
    );
    assert_eq!(
        put_as(c, d, &lite, "/v1/namespaces/team/roles/reader", &within)
            .await
            .status(),
        201
    );
    assert_eq!(
        put_as(
            c,
            d,
            &lite,
            "/v1/namespaces/team/rolebindings/r",
            &binding_doc("r", "team", "reader", "x")
        )
        .await
        .status(),
        201
    );
    // Beyond it: each refused, and said why.
    for (path, doc) in [
        (
            "/v1/namespaces/team/roles/esc",
            role_doc("esc", "team", "  - {resources: [secrets], verbs: [get]}\n"),
        ),
        (
            "/v1/namespaces/team/roles/star",
            role_doc("star", "team", "  - {resources: ['*'], verbs: ['*']}\n"),
        ),
        (
            "/v1/namespaces/team/rolebindings/up",
            binding_doc("up", "team", "admin", "x"),
        ),
        (
            "/v1/namespaces/team/rolebindings/op",
            binding_doc("op", "team", "operator", "x"),
        ),
    ] {
        let msg = error_of(
            put_as(c, d, &lite, path, &doc).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert!(msg.contains("cannot grant"), "{path}: {msg}");
    }
    // Its own role, widened: refused too.
    let wider = role_doc(
        "lite",
        "team",
        &format!("{lite_rules}  - {{resources: [secrets], verbs: [list]}}\n"),
    );
    let res = c
        .put(d.url("/v1/namespaces/team/roles/lite"))
        .header("x-api-key", &lite)
        .header("if-match", "\"1\"")
        .body(wider)
        .send()
        .await
        .unwrap();
    error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
    // A binding to a Role that does not exist (yet) would grant whatever it later holds.
    let msg = error_of(
        put_as(
            c,
            d,
            &lite,
            "/v1/namespaces/team/rolebindings/g",
            &binding_doc("g", "team", "ghost", "x"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    assert!(msg.contains("ghost"), "{msg}");
    // Another namespace: nothing at all.
    error_of(
        put_as(
            c,
            d,
            &lite,
            "/v1/namespaces/prod/roles/reader",
            &role_doc(
                "reader",
                "prod",
                "  - {resources: [agents], verbs: [get]}\n",
            ),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Keys: not its to make.
    error_of(
        make_key(c, d, &lite, "team", "more", "reader", false).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // The path and the document must agree; a Role's path takes no RoleBinding.
    error_of(
        put_as(c, d, &d.admin, "/v1/namespaces/team/roles/other", &within).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    error_of(
        put_as(
            c,
            d,
            &d.admin,
            "/v1/namespaces/team/roles/r",
            &binding_doc("r", "team", "reader", "x"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    let log = d.audit();
    assert!(log.contains("\"escalate\""), "escalations are audited");
}

async fn keys_over_the_api(d: &Daemon, c: &Client) {
    let res = make_key(c, d, &d.admin, "team", "ci", "developer", true).await;
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("spawn_sk_test_"));
    assert_eq!(made["principal"]["name"], "ci");
    let me: Value = get_as(c, d, &key, "/v1/whoami").await.json().await.unwrap();
    assert_eq!(
        (me["name"].as_str(), me["test"].as_bool()),
        (Some("ci"), Some(true))
    );
    // Shown once: never in a list.
    let list = get_as(c, d, &d.admin, "/v1/namespaces/team/keys").await;
    assert_eq!(list.status(), 200);
    let list_text = list.text().await.unwrap();
    assert!(list_text.contains(made["id"].as_str().unwrap()));
    assert!(!list_text.contains(&key) && !list_text.contains(&key[14..]));
    // A principal that exists already gets no key (its other bindings would come with it).
    error_of(
        make_key(c, d, &d.admin, "team", "ci", "viewer", false).await,
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    for body in [
        serde_json::json!({"name": "x", "role": "developer", "extra": 1}),
        serde_json::json!({"name": "Bad Name", "role": "developer"}),
        serde_json::json!({"name": "y", "role": "nonexistent"}),
        serde_json::json!({"role": "developer"}),
    ] {
        let res = c
            .post(d.url("/v1/namespaces/team/keys"))
            .header("x-api-key", &d.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
    }
    // Revoked through the API: refused at its next request. A key of another namespace is
    // not found from this one.
    let id = made["id"].as_str().unwrap();
    let res = c
        .delete(d.url(&format!("/v1/namespaces/prod/keys/{id}")))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    error_of(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = c
        .delete(d.url(&format!("/v1/namespaces/team/keys/{id}")))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = get_as(c, d, &key, "/v1/whoami").await;
    error_of(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

/// Secrets over the API: set (a new version each time, text or base64), listed without
/// values, deleted; only with `secrets` verbs; hostile names and bodies refused without
/// quoting the value; a run of the namespace granted one gets it (and its output is
/// redacted), a run elsewhere does not; no answer, audit event or file of the daemon holds
/// a value.
async fn secrets(d: &Daemon, c: &Client) {
    use base64::Engine as _;
    const VALUE: &str = "sv-Api-7f3e9a1c-SECRET";
    let path = "/v1/namespaces/team/secrets/API_TOKEN";
    let put = |key: String, path: String, body: String| async move {
        c.put(d.url(&path))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    };
    let res = put(
        d.admin.clone(),
        path.into(),
        serde_json::json!({ "value": VALUE }).to_string(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains(VALUE), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["version"].as_i64()),
        (Some("API_TOKEN"), Some(1))
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
    let res = put(
        d.admin.clone(),
        path.into(),
        serde_json::json!({ "valueBase64": b64 }).to_string(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    let list = get_as(c, d, &d.admin, "/v1/namespaces/team/secrets").await;
    assert_eq!(list.status(), 200);
    let text = list.text().await.unwrap();
    assert!(!text.contains(VALUE) && !text.contains(&b64), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list[0]["name"], "API_TOKEN");
    assert_eq!(list[0]["version"], 2);
    // No route reads a value.
    let res = get_as(c, d, &d.admin, path).await;
    assert_eq!(res.status(), 405);

    // RBAC: a viewer and a developer may neither list nor set; each refusal is audited.
    for role in ["viewer", "developer"] {
        let key = d.key_for(&format!("{role}-s"), role, "team", false).await;
        let res = get_as(c, d, &key, "/v1/namespaces/team/secrets").await;
        error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = put(
            key.clone(),
            path.into(),
            serde_json::json!({"value": "x"}).to_string(),
        )
        .await;
        error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
        // Nor start a run that is granted one (it would read it).
        let res = post_run(
            c,
            d,
            &key,
            "team",
            serde_json::json!({"manifest": secret_agent("team"), "runtime": "native"}),
        )
        .await;
        error_of(res, StatusCode::FORBIDDEN, "forbidden").await;
    }

    // Hostile names and bodies: 400, and the message never quotes the value.
    for name in ["1X", "A-B", "A%20B", "%C3%84", "a.b"] {
        let res = put(
            d.admin.clone(),
            format!("/v1/namespaces/team/secrets/{name}"),
            serde_json::json!({ "value": VALUE }).to_string(),
        )
        .await;
        let msg = error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
        assert!(!msg.contains(VALUE), "{name}: {msg}");
    }
    for body in [
        format!("[\"{VALUE}\"]"),
        format!("{{\"value\": \"{VALUE}\", \"valueBase64\": \"eA==\"}}"),
        "{}".to_owned(),
        format!("{{\"value\": 5, \"x\": \"{VALUE}\"}}"),
        format!("{{\"valueBase64\": \"{VALUE}!\"}}"),
        format!("{{\"value\": [\"{VALUE}\"]}}"),
        format!("{{\"value\": \"{VALUE}"),
        "{\"value\": \"\"}".to_owned(),
        format!("{{\"value\": \"{}\"}}", "v".repeat(65 << 10)),
        "not json".to_owned(),
    ] {
        let res = put(d.admin.clone(), path.into(), body.clone()).await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
            "{status}: {body:.80}: {text}"
        );
        assert!(!text.contains(VALUE), "{body:.80}: {text}");
    }

    // A run of the namespace granted it: the agent has it (its digest), the stored output
    // holds the marker, never the value.
    let script = "printf %s \"$API_TOKEN\" | sha256sum | cut -c1-64; echo \"token=$API_TOKEN\"";
    let (done, id) = run_with_secret(c, d, "team", script).await;
    assert_eq!(
        done["state"],
        "succeeded",
        "{done} {:?}",
        logs(c, d, "team", &id).await
    );
    let digest = sha256_hex(VALUE.as_bytes());
    assert_eq!(
        logs(c, d, "team", &id).await,
        vec![(
            "stdout".into(),
            format!("{digest}\ntoken=[REDACTED:API_TOKEN]\n")
        )]
    );
    // The same manifest in another namespace finds no such secret there: 125, the reason.
    let (done, id) = run_with_secret(c, d, "other", "true").await;
    assert_eq!(done["exitCode"], 125, "{done}");
    let out = logs(c, d, "other", &id).await;
    assert!(
        out.iter()
            .any(|(_, t)| t.contains("not set in namespace other")),
        "{out:?}"
    );

    // Deleted; again is 404.
    let res = c
        .delete(d.url(path))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = c
        .delete(d.url(path))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    error_of(res, StatusCode::NOT_FOUND, "not_found").await;

    // On record: two sets, a resolution, the deletion (and the failed one); never a value.
    let audit = d.audit();
    for form in [VALUE.to_owned(), b64.clone()] {
        assert!(!audit.contains(&form), "the audit log holds a value");
    }
    let actions: Vec<(String, String)> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["eventType"] == "agent.secret.access" && e["resource"]["name"] == "API_TOKEN")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for want in [
        ("set", "success"),
        ("resolve", "success"),
        ("resolve", "error"),
        ("delete", "success"),
        ("delete", "error"),
    ] {
        assert!(
            actions.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} not in {actions:?}"
        );
    }
    // No file of the daemon's holds it (SQLite's, when the store is there; the keys).
    let mut stack = vec![d.home.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                for form in [VALUE.as_bytes(), b64.as_bytes()] {
                    assert!(
                        !bytes.windows(form.len()).any(|w| w == form),
                        "{} holds a value",
                        p.display()
                    );
                }
            }
        }
    }
}

/// Runs `script` as an agent of `ns` granted `API_TOKEN` (native), as the admin, to its
/// end: the run's last state and its id.
async fn run_with_secret(c: &Client, d: &Daemon, ns: &str, script: &str) -> (Value, String) {
    let res = post_run(
        c,
        d,
        &d.admin,
        ns,
        serde_json::json!({"manifest": secret_agent(ns), "command": ["sh", "-c", script],
                           "runtime": "native"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (
        wait_state(c, d, ns, &id, &["succeeded", "failed"]).await,
        id,
    )
}

/// The SHA-256 of `bytes`, in hex (what `sha256sum` prints).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An agent of namespace `ns` granted the secret `API_TOKEN`.
fn secret_agent(ns: &str) -> Value {
    serde_json::json!({
        "apiVersion": "spawn.dev/v1",
        "kind": "Agent",
        "metadata": {"name": "with-secret", "namespace": ns},
        "spec": {
            "command": ["true"],
            "sandbox": {"runtime": "native"},
            "capabilities": {"secrets": [{"name": "API_TOKEN", "from": "store://API_TOKEN"}]}
        }
    })
}

async fn post_run(c: &Client, d: &Daemon, key: &str, ns: &str, body: Value) -> reqwest::Response {
    c.post(d.url(&format!("/v1/namespaces/{ns}/runs")))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Polls run `id` until its state is one of `states` (60 s at most); returns it.
async fn wait_state(c: &Client, d: &Daemon, ns: &str, id: &str, states: &[&str]) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = get_as(c, d, &d.admin, &format!("/v1/namespaces/{ns}/runs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if states.iter().any(|s| r["state"] == *s) {
            return r;
        }
        assert!(std::time::Instant::now() < until, "run {id} stayed {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A run's output as (stream, text), merging consecutive pieces of one stream.
async fn logs(c: &Client, d: &Daemon, ns: &str, id: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let body: Value = get_as(
        c,
        d,
        &d.admin,
        &format!("/v1/namespaces/{ns}/runs/{id}/logs"),
    )
    .await
    .json()
    .await
    .unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for item in body["items"].as_array().unwrap() {
        let stream = item["stream"].as_str().unwrap().to_owned();
        let data = base64::engine::general_purpose::STANDARD
            .decode(item["data"].as_str().unwrap())
            .unwrap();
        let text = String::from_utf8(data).unwrap();
        match out.last_mut() {
            Some((s, t)) if *s == stream => t.push_str(&text),
            _ => out.push((stream, text)),
        }
    }
    out
}

async fn runs(d: &Daemon, c: &Client) {
    use base64::Engine as _;
    // A bare command: its exit code, its output by stream.
    let res = post_run(c, d, &d.admin, "team", serde_json::json!({
        "command": ["sh", "-c", "echo out; sleep 0.2; echo err >&2; exit 3"], "runtime": "native"
    })).await;
    assert_eq!(res.status(), 201);
    let queued: Value = res.json().await.unwrap();
    let id = queued["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tr_"));
    assert!(queued["requestId"].as_str().unwrap().starts_with("req_"));
    let done = wait_state(c, d, "team", &id, &["succeeded", "failed", "interrupted"]).await;
    assert_eq!(
        (done["state"].as_str(), done["exitCode"].as_i64()),
        (Some("failed"), Some(3)),
        "{done}"
    );
    assert_eq!(
        logs(c, d, "team", &id).await,
        vec![
            ("stdout".into(), "out\n".into()),
            ("stderr".into(), "err\n".into())
        ]
    );
    // The same as server-sent events, and resumed after the first.
    let sse = c
        .get(d.url(&format!("/v1/namespaces/team/runs/{id}/logs")))
        .header("x-api-key", &d.admin)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty() && !e.starts_with(':'))
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(
        events[0].contains("event: stdout") && events[0].contains("id: 1"),
        "{text}"
    );
    let data = events[0]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        b"out\n"
    );
    assert!(
        events[2].contains("event: end") && events[2].contains("\"exitCode\":3"),
        "{text}"
    );
    let resumed = c
        .get(d.url(&format!("/v1/namespaces/team/runs/{id}/logs")))
        .header("x-api-key", &d.admin)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains("id: 1\n") && resumed.contains("id: 2") && resumed.contains("event: end"),
        "{resumed}"
    );

    // A run whose sandbox cannot be made (no microVM runtime here): failed with 125 and
    // spawn's reason in its stderr, recorded by its supervisor all the same.
    let res = post_run(
        c,
        d,
        &d.admin,
        "team",
        serde_json::json!({"command": ["true"], "runtime": "firecracker"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_state(c, d, "team", &id, &["succeeded", "failed", "interrupted"]).await;
    assert_eq!(
        (done["state"].as_str(), done["exitCode"].as_i64()),
        (Some("failed"), Some(125)),
        "{done}"
    );
    let said = logs(c, d, "team", &id).await;
    assert!(
        said.iter()
            .any(|(stream, text)| stream == "stderr" && text.contains("firecracker")),
        "{said:?}"
    );

    // From an agent of the namespace.
    let res = post_run(c, d, &d.admin, "team", serde_json::json!({"agent": "kept"})).await;
    assert_eq!(res.status(), 201);
    let from_agent: Value = res.json().await.unwrap();
    assert!(from_agent["agentId"].as_str().unwrap().starts_with("ag_"));
    let done = wait_state(
        c,
        d,
        "team",
        from_agent["id"].as_str().unwrap(),
        &["succeeded", "failed"],
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // The sandbox's audit events carry the API's run and agent ids.
    let log = d.audit();
    let agent_run = from_agent["id"].as_str().unwrap();
    assert!(
        log.contains(&format!("\"traceId\":\"{agent_run}\"")),
        "{log}"
    );
    assert!(
        log.contains(from_agent["agentId"].as_str().unwrap()),
        "{log}"
    );

    // Cancelled while it runs.
    let res = post_run(
        c,
        d,
        &d.admin,
        "team",
        serde_json::json!({"command": ["sleep", "30"], "runtime": "native"}),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(c, d, "team", &id, &["running"]).await;
    let res = c
        .post(d.url(&format!("/v1/namespaces/team/runs/{id}/cancel")))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let done = wait_state(c, d, "team", &id, &["cancelled", "failed", "succeeded"]).await;
    assert_eq!(done["state"], "cancelled", "{done}");

    // A supervisor killed: the run (and its sandbox) ends with it, and once its lease
    // lapses the run is marked interrupted, never run again. (The sleep is this daemon's
    // own, told apart from the other test's by its port.)
    let long_sleep = format!("300.{}", d.addr.rsplit(':').next().unwrap());
    let res = post_run(
        c,
        d,
        &d.admin,
        "team",
        serde_json::json!({"command": ["sleep", &long_sleep], "runtime": "native"}),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_state(c, d, "team", &id, &["running"]).await;
    // A claimed run is `running` before its supervisor has started: wait for the agent,
    // which the supervisor starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Command::new("pgrep")
        .args(["-x", "-f", &format!("sleep {long_sleep}")])
        .output()
        .unwrap()
        .stdout
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent of {id} did not start in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The oldest: the sandbox's init and guard, forked from it, carry its command line.
    let pids = Command::new("pgrep")
        .args(["-o", "-f", &format!("supervise --run {id}")])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8(pids.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("one supervisor");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let done = wait_state(
        c,
        d,
        "team",
        &id,
        &["interrupted", "failed", "succeeded", "cancelled"],
    )
    .await;
    assert_eq!(done["state"], "interrupted", "{done}");
    let sleeping = Command::new("pgrep")
        .args(["-a", "-x", "-f", &format!("sleep {long_sleep}")])
        .output()
        .unwrap();
    assert!(
        sleeping.stdout.is_empty(),
        "the agent outlived its supervisor: {}",
        String::from_utf8_lossy(&sleeping.stdout)
    );

    // Test keys run only in test namespaces.
    let res = make_key(c, d, &d.admin, "team", "tester", "developer", true).await;
    let test_key = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = error_of(
        post_run(
            c,
            d,
            &test_key,
            "team",
            serde_json::json!({"command": ["true"], "runtime": "native"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(msg.contains("test namespaces"), "{msg}");
    let res = make_key(c, d, &d.admin, "test-ci", "tester2", "developer", true).await;
    let test_key2 = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = post_run(
        c,
        d,
        &test_key2,
        "test-ci",
        serde_json::json!({"command": ["true"], "runtime": "native"}),
    )
    .await;
    assert_eq!(res.status(), 201);

    // What cannot run is refused before it is queued.
    let host_mount = serde_json::json!({
        "apiVersion": "spawn.dev/v1", "kind": "Agent", "metadata": {"name": "m"},
        "spec": {"command": ["true"], "capabilities": {"fs": {"mounts": [{"source": "/etc", "path": "/data", "mode": "ro"}]}}}
    });
    // What the daemon's policy forbids is refused, naming the rule (and audited: see
    // audit_completeness).
    let msg = error_of(
        post_run(
            c,
            d,
            &d.admin,
            "team",
            serde_json::json!({"manifest": host_mount}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "policy_violation",
    )
    .await;
    assert!(
        msg.contains("host mounts") && msg.contains("host-mount"),
        "{msg}"
    );
    // A model script of the daemon's host, or an endpoint of the caller's (where the
    // daemon's provider key would go): refused the same way.
    for (model, rule) in [
        (
            serde_json::json!({"provider": "scripted", "name": "m", "endpoint": "/etc/shadow"}),
            "model-script",
        ),
        (
            serde_json::json!({"provider": "anthropic", "name": "m", "endpoint": "http://169.254.169.254"}),
            "model-endpoint",
        ),
    ] {
        let manifest = serde_json::json!({
            "apiVersion": "spawn.dev/v1", "kind": "Agent", "metadata": {"name": "modelled"},
            "spec": {"command": ["true"], "model": model}
        });
        let msg = error_of(
            post_run(
                c,
                d,
                &d.admin,
                "team",
                serde_json::json!({"manifest": manifest}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "policy_violation",
        )
        .await;
        assert!(msg.contains(rule), "{msg}");
    }
    for (body, says) in [
        (serde_json::json!({}), "command"),
        (serde_json::json!({"command": []}), "command"),
        (
            serde_json::json!({"agent": "kept", "manifest": {}}),
            "not both",
        ),
        (
            serde_json::json!({"command": ["true"], "bogus": 1}),
            "bogus",
        ),
        (serde_json::json!([null, null, ["true"]]), "object"),
        (serde_json::json!(["true"]), "object"),
        (serde_json::json!("true"), "object"),
        (
            serde_json::json!({"command": ["true"], "runtime": "vm"}),
            "runtime",
        ),
        (
            serde_json::json!({"command": ["true"], "timeout": "forever"}),
            "timeout",
        ),
        (
            serde_json::json!({"manifest": {"kind": "Agent"}}),
            "manifest",
        ),
    ] {
        let msg = error_of(
            post_run(c, d, &d.admin, "team", body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        )
        .await;
        assert!(msg.contains(says), "{body}: {msg}");
    }
    error_of(
        post_run(c, d, &d.admin, "team", serde_json::json!({"agent": "nope"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // A run is found only in its namespace; ids that are not ids are refused.
    let res = get_as(c, d, &d.admin, &format!("/v1/namespaces/prod/runs/{id}")).await;
    error_of(res, StatusCode::NOT_FOUND, "not_found").await;
    // Every other spelling of a run id is a 400 before any lookup; a well-formed id of
    // no run is a 404.
    let upper = format!("tr_{}", id[3..].to_uppercase());
    let longer = format!("{id}a");
    let shorter = id[..id.len() - 1].to_owned();
    let encoded_last = format!(
        "{}%{:02X}",
        &id[..id.len() - 1],
        id.as_bytes()[id.len() - 1]
    );
    let bad_last = format!("{}b", &id[..id.len() - 1]);
    let digits = format!("tr_{}", "0".repeat(26));
    let nul = format!("{id}%00");
    let prefix = format!("ag_{}", &id[3..]);
    for bad in [
        "x",
        "tr_",
        "tr_ABC",
        "tr_a%27b",
        "tr_..",
        upper.as_str(),
        &longer,
        &shorter,
        &bad_last,
        &digits,
        &nul,
        &prefix,
        "tr_aaaaaaaaaaaaaaaaaaaaaaaa%C3%A9",
    ] {
        let res = get_as(c, d, &d.admin, &format!("/v1/namespaces/team/runs/{bad}")).await;
        error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
    }
    // Percent-encoding a character of a real id still names it.
    let res = get_as(
        c,
        d,
        &d.admin,
        &format!("/v1/namespaces/team/runs/{encoded_last}"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{encoded_last}");
    let res = get_as(
        c,
        d,
        &d.admin,
        "/v1/namespaces/team/runs/tr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    )
    .await;
    error_of(res, StatusCode::NOT_FOUND, "not_found").await;
    // (Spaces around a header's value are not part of it in HTTP: " 1" is "1".)
    for bad in [
        "nope",
        "-1",
        "+1",
        "1e3",
        "0x1",
        "1.0",
        "99999999999999999999",
    ] {
        let res = c
            .get(d.url(&format!("/v1/namespaces/team/runs/{id}/logs")))
            .header("x-api-key", &d.admin)
            .header("accept", "text/event-stream")
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
    }
}

/// POSTs to `…/agents/{name}/{verb}` in `ns` as `key`, with `body` if any.
async fn agent_verb(
    c: &Client,
    d: &Daemon,
    key: &str,
    ns: &str,
    name: &str,
    verb: &str,
    body: Option<&str>,
) -> reqwest::Response {
    let mut req = c
        .post(d.url(&format!("/v1/namespaces/{ns}/agents/{name}/{verb}")))
        .header("x-api-key", key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    req.send().await.unwrap()
}

async fn start_and_stop_agents(d: &Daemon, c: &Client) {
    // An agent that runs until it is stopped (its sleep told apart by this daemon's port).
    let sleep = format!("301.{}", d.addr.rsplit(':').next().unwrap());
    let long = agent_named("sleeper", "team").replace(
        "command: [\"true\"]",
        &format!("command: [\"sleep\", \"{sleep}\"]"),
    );
    let res = put_as(c, d, &d.admin, "/v1/namespaces/team/agents/sleeper", &long).await;
    assert_eq!(res.status(), 201);
    let agent: Value = res.json().await.unwrap();

    // `start` and `stop` are verbs of their own: a viewer has neither, an operator both.
    let viewer = key_made(c, d, "team", "watcher", "viewer", false).await;
    let operator = key_made(c, d, "team", "pager", "operator", false).await;
    for verb in ["start", "stop"] {
        for name in ["sleeper", "nonexistent"] {
            // The same 403 whether the agent exists or not.
            error_of(
                agent_verb(c, d, &viewer, "team", name, verb, None).await,
                StatusCode::FORBIDDEN,
                "forbidden",
            )
            .await;
        }
        error_of(
            agent_verb(c, d, &operator, "team", "nonexistent", verb, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        // The operator of `team` has nothing in `prod`.
        error_of(
            agent_verb(c, d, &operator, "prod", "sleeper", verb, None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    assert!(d.audit().contains("\"rbac.permission.denied\""));

    // Started twice (one with an empty body, one with an override), stopped once: both
    // runs end cancelled, and an unrelated run of the namespace is left alone.
    let res = agent_verb(c, d, &operator, "team", "sleeper", "start", None).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["agentId"], agent["id"], "{first}");
    let res = agent_verb(
        c,
        d,
        &operator,
        "team",
        "sleeper",
        "start",
        Some(&format!(
            r#"{{"command": ["sleep", "{sleep}"], "timeout": "5m"}}"#
        )),
    )
    .await;
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let other = post_run(
        c,
        d,
        &d.admin,
        "team",
        serde_json::json!({
            "command": ["sh", "-c", "sleep 1; echo untouched"], "runtime": "native"
        }),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let first_id = first["id"].as_str().unwrap();
    let second_id = second["id"].as_str().unwrap();
    wait_state(c, d, "team", first_id, &["running"]).await;
    let res = agent_verb(c, d, &operator, "team", "sleeper", "stop", None).await;
    assert_eq!(res.status(), 200);
    let stopped: Value = res.json().await.unwrap();
    assert_eq!(stopped["agent"], "sleeper");
    let mut ids: Vec<&str> = stopped["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![first_id, second_id];
    want.sort_unstable();
    assert_eq!(ids, want, "{stopped}");
    for id in [first_id, second_id] {
        let done = wait_state(c, d, "team", id, &["cancelled", "failed", "succeeded"]).await;
        assert_eq!(done["state"], "cancelled", "{done}");
    }
    let other_id = other["id"].as_str().unwrap();
    let done = wait_state(
        c,
        d,
        "team",
        other_id,
        &["succeeded", "failed", "cancelled"],
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let sleeping = Command::new("pgrep")
        .args(["-x", "-f", &format!("sleep {sleep}")])
        .output()
        .unwrap();
    assert!(sleeping.stdout.is_empty(), "a stopped agent still runs");
    // Stopping what is stopped: nothing to stop, not an error.
    let res = agent_verb(c, d, &operator, "team", "sleeper", "stop", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["stopped"],
        serde_json::json!([])
    );

    // Both audited with the request that caused them.
    let log = d.audit();
    for (kind, req) in [
        ("agent.start", &first["requestId"]),
        ("agent.stop", &Value::Null),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"{kind}\"")) && l.contains("team/sleeper"))
            .unwrap_or_else(|| panic!("no {kind} of team/sleeper in {log}"));
        assert!(line.contains("\"requestId\":\"req_"), "{line}");
        if let Some(r) = req.as_str() {
            assert!(line.contains(r), "{line}");
        }
    }

    // Hostile bodies for start; test keys only in test namespaces.
    for (body, says) in [
        ("{", "body"),
        ("[]", "body"),
        (r#"{"agent": "sleeper"}"#, "agent"),
        (r#"{"manifest": {}}"#, "manifest"),
        (r#"{"runtime": "vm"}"#, "runtime"),
        (r#"{"timeout": "-1s"}"#, "timeout"),
        ("\u{0}", "body"),
    ] {
        let res = agent_verb(c, d, &operator, "team", "sleeper", "start", Some(body)).await;
        assert_eq!(res.status(), 400, "{body:?}");
        let msg = error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let tester = key_made(c, d, "team", "tester3", "developer", true).await;
    let msg = error_of(
        agent_verb(c, d, &tester, "team", "sleeper", "start", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(msg.contains("test namespaces"), "{msg}");
    for bad in ["UPPER", "a..b", "%2e%2e", "a%00"] {
        let res = agent_verb(c, d, &operator, "team", bad, "start", None).await;
        assert!(
            res.status() == 400 || res.status() == 404,
            "{bad}: {}",
            res.status()
        );
    }
}

async fn hostile(d: &Daemon, c: &Client) {
    let put = |path: &str, body: Vec<u8>| {
        c.put(d.url(path))
            .header("x-api-key", &d.admin)
            .body(body)
            .send()
    };
    // Malformed YAML: the line and column. Unknown fields too.
    let msg = error_of(
        put(
            "/v1/namespaces/team/agents/bot",
            b"apiVersion: [\n".to_vec(),
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    assert!(msg.contains("line"), "{msg}");
    let msg = error_of(
        put(
            "/v1/namespaces/team/agents/bot",
            format!("{AGENT}bogus: 1\n").into_bytes(),
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    assert!(msg.contains("bogus"), "{msg}");
    // Not UTF-8, empty, JSON that is not a manifest.
    for body in [
        vec![0xff, 0xfe, 0x00],
        Vec::new(),
        b"{\"a\": 1}".to_vec(),
        b"null".to_vec(),
    ] {
        error_of(
            put("/v1/namespaces/team/agents/bot", body).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid",
        )
        .await;
    }
    // The path and the manifest disagree.
    let msg = error_of(
        put(
            "/v1/namespaces/team/agents/other",
            AGENT.as_bytes().to_vec(),
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    assert!(msg.contains("metadata.name"), "{msg}");
    let msg = error_of(
        put("/v1/namespaces/prod/agents/bot", AGENT.as_bytes().to_vec())
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid",
    )
    .await;
    assert!(msg.contains("metadata.namespace"), "{msg}");
    // Names: traversal, encodings, case, Unicode, length.
    for name in [
        "..",
        "%2e%2e",
        "Bot",
        "b%C3%B6t",
        "a%00b",
        "a%20b",
        "-bot",
        &"a".repeat(64),
        "%E2%80%AEbot",
    ] {
        let res = get_as(
            c,
            d,
            &d.admin,
            &format!("/v1/namespaces/team/agents/{name}"),
        )
        .await;
        let status = res.status();
        assert!(status == 400 || status == 404, "{name}: {status}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{name}: {body}");
    }
    // Too large a body: 413 in the API's shape.
    error_of(
        put("/v1/namespaces/team/agents/bot", vec![b'a'; 70_000])
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // ETags and queries that are not ours.
    for m in [
        "1",
        "\"\"",
        "\"-1\"",
        "\"1\", \"2\"",
        "W/\"1\"",
        "\"99999999999999999999\"",
        "*",
    ] {
        let res = c
            .delete(d.url("/v1/namespaces/team/agents/kept"))
            .header("x-api-key", &d.admin)
            .header("if-match", m)
            .send()
            .await
            .unwrap();
        error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
    }
    for q in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "after=..",
        "bogus=1",
        "limit=1&limit=2",
    ] {
        let res = get_as(c, d, &d.admin, &format!("/v1/namespaces/team/agents?{q}")).await;
        error_of(res, StatusCode::BAD_REQUEST, "invalid").await;
    }
    // Routes and methods that do not exist.
    error_of(
        c.get(d.url("/v2/nothing")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    error_of(
        c.post(d.url("/healthz")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    // Raw HTTP the client library would not send: an oversized header, a header with a
    // bare CR (injection), a key header twice. Each is refused; the daemon carries on.
    for raw in [
        format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: {}\r\n\r\n", "a".repeat(100_000)),
        format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\rX-Injected: 1\r\n\r\n", d.admin),
        format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Api-Key: x\r\nX-Api-Key: {}\r\nConnection: close\r\n\r\n", d.admin),
    ] {
        let answer = raw_request(&d.addr, &raw);
        assert!(
            !answer.starts_with("HTTP/1.1 200"),
            "{:?} was accepted: {answer:?}",
            &raw[..raw.len().min(80)]
        );
    }
}

/// Sends `raw` over a new connection; returns what came back (empty if the connection was
/// closed without an answer).
fn raw_request(addr: &str, raw: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Where each event type of SPEC §7 comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A request to spawnd's API (performed by `audit_completeness`).
    Api,
    /// A run queued through spawnd, in its sandbox (performed by `audit_completeness`).
    Run,
    /// Only the local CLI (the egress proxy, which runs through spawnd do not start; secrets,
    /// which spawnd does not resolve yet); checked by spawn-cli's tests (named).
    Cli(&'static str),
    /// Not emitted yet: the feature that will emit it does not exist (the issue that
    /// brings it).
    NotYet(&'static str),
}

/// Every event type of SPEC §7, in its order, and what produces it. A type emitted by no
/// code must be `NotYet`, and a `NotYet` type must be emitted by no code (checked against
/// the sources): an emitter added without updating this list, or the reverse, fails.
const EVENT_SOURCES: [(&str, Source); 17] = [
    ("auth.login", Source::Api),
    ("auth.logout", Source::Api),
    ("auth.failure", Source::Api),
    ("agent.create", Source::Api),
    ("agent.delete", Source::Api),
    ("agent.start", Source::Api),
    ("agent.stop", Source::Api),
    ("agent.capability.invoke", Source::Run),
    ("agent.capability.denied", Source::Run),
    (
        "agent.tool.invoke",
        Source::Cli("spawn-cli tests/suite/model.rs (the built-in agent loop)"),
    ),
    (
        "agent.secret.access",
        Source::Cli("spawn-cli tests/suite/secrets.rs (spawnd does not resolve secrets yet)"),
    ),
    (
        "agent.net.connect",
        Source::Cli("spawn-cli tests/network.rs, tests/egress_classes.rs"),
    ),
    ("mesh.message.send", Source::NotYet("no agent mesh yet")),
    ("rbac.permission.denied", Source::Api),
    ("sandbox.escape.attempt", Source::Run),
    ("policy.violation", Source::Api),
    ("resource.exhausted", Source::Run),
];

/// The types some code of spawn emits (`EventType::X` in a crate's `src/`, spawn-audit's
/// own definitions and spawn-bench's synthetic events aside).
fn emitted_types() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for c in std::fs::read_dir(&crates).unwrap() {
        let c = c.unwrap().path();
        let name = c.file_name().unwrap().to_string_lossy().into_owned();
        if name != "spawn-audit" && name != "spawn-bench" && c.join("src").is_dir() {
            walk(&c.join("src"), &mut files);
        }
    }
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    spawn_audit::EventType::ALL
        .iter()
        .filter(|t| text.contains(&format!("EventType::{t:?}")))
        .map(|t| t.as_str().to_owned())
        .collect()
}

/// The records of the daemon's log (a line torn by a failed write skipped).
fn records(d: &Daemon) -> Vec<Value> {
    d.audit()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every event type of SPEC §7 is emitted where it happens: each is produced here by a
/// real action through the API (or a run queued through it) and found with its principal
/// and outcome, but those only the CLI's egress proxy emits (tested there) and those whose
/// feature does not exist yet (listed with what will bring them).
async fn audit_completeness(d: &Daemon, c: &Client) {
    let names: Vec<&str> = EVENT_SOURCES.iter().map(|(n, _)| *n).collect();
    let spec: Vec<&str> = spawn_audit::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(names, spec, "EVENT_SOURCES must list SPEC §7's types");
    let emitted = emitted_types();
    for (name, source) in EVENT_SOURCES {
        let not_yet = matches!(source, Source::NotYet(_));
        assert_eq!(
            emitted.contains(name),
            !not_yet,
            "{name} is listed as {source:?} but is {}emitted by spawn's code: update \
             EVENT_SOURCES",
            if not_yet { "" } else { "not " }
        );
    }

    let ns = "team";
    let made = make_key(c, d, &d.admin, ns, "completer", "developer", false).await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let key = made["key"].as_str().unwrap().to_owned();
    let key_id = made["id"].as_str().unwrap().to_owned();
    let by_key = |r: &&Value| r["principal"]["id"] == key_id.as_str();
    let req_of =
        |res: &reqwest::Response| res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let who = |k: &str| {
        c.get(d.url("/v1/whoami"))
            .header("x-api-key", k.to_owned())
            .send()
    };

    // auth.login: the key's first use, once for a session of requests.
    let first = who(&key).await.unwrap();
    assert_eq!(first.status(), 200);
    let first_req = req_of(&first);
    for _ in 0..5 {
        assert_eq!(who(&key).await.unwrap().status(), 200);
    }
    let log = records(d);
    let logins: Vec<&Value> = log
        .iter()
        .filter(by_key)
        .filter(|r| r["eventType"] == "auth.login")
        .collect();
    assert_eq!(logins.len(), 1, "one login for a session: {logins:#?}");
    let l = logins[0];
    assert_eq!(l["outcome"], "success");
    assert_eq!(l["principal"]["name"], "completer");
    assert_eq!(l["principal"]["type"], "ServiceAccount");
    assert_eq!(l["details"]["credential"], "api-key");
    assert_eq!(l["sourceIP"], "127.0.0.1");
    assert_eq!(l["requestId"], first_req.as_str());
    assert!(!d.audit().contains(&key[14..]), "part of a key in the log");

    // auth.failure.
    let bad = who("spawn_sk_live_nope").await.unwrap();
    assert_eq!(bad.status(), 401);
    let bad_req = req_of(&bad);
    let ev = |log: &[Value], t: &str, req: &str| -> Value {
        log.iter()
            .find(|r| r["eventType"] == t && r["requestId"] == req)
            .unwrap_or_else(|| panic!("no {t} for {req}"))
            .clone()
    };
    let f = ev(&records(d), "auth.failure", &bad_req);
    assert_eq!(
        (f["outcome"].as_str(), f["principal"]["type"].as_str()),
        (Some("denied"), Some("anonymous"))
    );

    // rbac.permission.denied: a developer of `team` reading another namespace's roles.
    let res = get_as(c, d, &key, "/v1/namespaces/other/roles").await;
    assert_eq!(res.status(), 403);
    let r = ev(&records(d), "rbac.permission.denied", &req_of(&res));
    assert_eq!(
        (r["outcome"].as_str(), r["principal"]["id"].as_str()),
        (Some("denied"), Some(key_id.as_str()))
    );

    // policy.violation: an agent whose allowlist names a cloud metadata service, and a run
    // mounting a host path; refused, naming the rule, nothing stored.
    let blocked = agent_named("meta", ns).replace(
        "    runtime: native\n",
        "    runtime: native\n  capabilities:\n    net:\n      policy: restricted\n      \
         allowlist: [metadata.google.internal]\n",
    );
    let res = put_as(c, d, &key, "/v1/namespaces/team/agents/meta", &blocked).await;
    let req = req_of(&res);
    let msg = error_of(res, StatusCode::FORBIDDEN, "policy_violation").await;
    assert!(msg.contains("metadata.google.internal"), "{msg}");
    let p = ev(&records(d), "policy.violation", &req);
    assert_eq!(p["outcome"], "denied");
    assert_eq!(p["principal"]["id"], key_id.as_str());
    assert_eq!(p["details"]["rule"], "blocked-destination");
    assert_eq!(p["details"]["field"], "spec.capabilities.net.allowlist[0]");
    let res = get_as(c, d, &key, "/v1/namespaces/team/agents/meta").await;
    assert_eq!(res.status(), 404, "a refused agent was stored");

    // agent.create, agent.start (queued by the API, then the sandbox's), agent.stop,
    // agent.delete: the API's events by the caller.
    let res = put_as(
        c,
        d,
        &key,
        "/v1/namespaces/team/agents/complete",
        &agent_named("complete", ns),
    )
    .await;
    assert_eq!(res.status(), 201);
    let req = req_of(&res);
    let agent_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = ev(&records(d), "agent.create", &req);
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["principal"]["id"], key_id.as_str());
    assert_eq!(e["details"]["agentId"], agent_id.as_str());

    // Runs in their sandboxes: an exec (capability.invoke), a blocked mount (capability
    // denied, an escape attempt), a timeout (resource.exhausted).
    let mut runs = Vec::new();
    for body in [
        serde_json::json!({"agent": "complete", "command": ["sh", "-c", "mount -t tmpfs none /tmp"]}),
        serde_json::json!({"command": ["sleep", "30"], "runtime": "native", "timeout": "1s"}),
    ] {
        let res = post_run(c, d, &key, ns, body).await;
        assert_eq!(res.status(), 201);
        let req = req_of(&res);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        runs.push((req, id));
    }
    for (_, id) in &runs {
        wait_state(
            c,
            d,
            ns,
            id,
            &["succeeded", "failed", "cancelled", "interrupted"],
        )
        .await;
    }
    let log = records(d);
    for (req, id) in &runs {
        let s = ev(&log, "agent.start", req);
        assert_eq!(s["principal"]["id"], key_id.as_str(), "{s}");
        assert_eq!(
            (s["outcome"].as_str(), s["traceId"].as_str()),
            (Some("success"), Some(id.as_str()))
        );
    }
    let of_run = |t: &str, id: &str| -> Vec<Value> {
        log.iter()
            .filter(|r| r["eventType"] == t && r["traceId"] == id)
            .cloned()
            .collect()
    };
    let (mount_run, slow_run) = (&runs[0].1, &runs[1].1);
    for (t, id, outcome) in [
        ("agent.capability.invoke", mount_run, "success"),
        ("agent.capability.denied", mount_run, "denied"),
        ("sandbox.escape.attempt", mount_run, "denied"),
        ("resource.exhausted", slow_run, "denied"),
        // Killed by its timeout: its end is an error.
        ("agent.stop", slow_run, "error"),
    ] {
        let found = of_run(t, id);
        assert!(!found.is_empty(), "no {t} of run {id}");
        assert!(
            found
                .iter()
                .all(|r| r["outcome"] == outcome && r["principal"]["type"] == "agent"),
            "{found:#?}"
        );
    }
    let res = agent_verb(c, d, &key, ns, "complete", "stop", None).await;
    assert_eq!(res.status(), 200);
    let s = ev(&records(d), "agent.stop", &req_of(&res));
    assert_eq!(
        (s["outcome"].as_str(), s["principal"]["id"].as_str()),
        (Some("success"), Some(key_id.as_str()))
    );
    let res = c
        .delete(d.url("/v1/namespaces/team/agents/complete"))
        .header("x-api-key", &d.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let e = ev(&records(d), "agent.delete", &req_of(&res));
    assert_eq!(
        (e["outcome"].as_str(), e["principal"]["name"].as_str()),
        (Some("success"), Some("admin"))
    );

    // auth.logout: the key ends itself; it fails at once after.
    let res = c
        .post(d.url("/v1/logout"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let req = req_of(&res);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["id"], key_id.as_str());
    assert!(view["revokedMs"].is_i64(), "{view}");
    let msg = error_of(
        who(&key).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert!(msg.contains("revoked"), "{msg}");
    let o = ev(&records(d), "auth.logout", &req);
    assert_eq!(
        (o["outcome"].as_str(), o["principal"]["id"].as_str()),
        (Some("success"), Some(key_id.as_str()))
    );
    assert_eq!(o["resource"]["name"], key_id.as_str());

    // Each type the API or a run produces was found above; the rest are accounted for.
    let seen: std::collections::BTreeSet<String> = records(d)
        .iter()
        .map(|r| r["eventType"].as_str().unwrap().to_owned())
        .collect();
    for (name, source) in EVENT_SOURCES {
        match source {
            Source::Api | Source::Run => assert!(seen.contains(name), "{name} not seen"),
            Source::NotYet(_) => assert!(!seen.contains(name), "{name} seen: not NotYet"),
            Source::Cli(_) => {}
        }
    }
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs for the audit log and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with the file `dir/filler`.
fn fill(dir: &std::path::Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The last bytes, one at a time.
    while let Ok(1) = f.write(&[0]) {}
}

/// No audit, no action: with its audit log unable to take a line (its file system full),
/// spawnd refuses every state-changing action (503 `audit_unavailable`) and does nothing of
/// it — no agent, no run, no revocation — and still refuses what it would refuse; once the
/// log can be written again, the same requests succeed, each recorded.
#[tokio::test]
async fn no_audit_no_action() {
    let mut tmpfs = None;
    let d = Daemon::start_prepared(
        None,
        None,
        "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n",
        "",
        |home| tmpfs = Some(Tmpfs::mount(&home.join("audit"), "1m")),
    );
    let audit_dir = d.home.join("audit");
    let c = Client::new();
    let viewer = key_made(&c, &d, "team", "watcher", "viewer", false).await;
    let dev = key_made(&c, &d, "team", "builder", "developer", false).await;
    let victim = key_made(&c, &d, "team", "victim", "viewer", false).await;
    let victim_id = Store::open(&d.db_url)
        .await
        .unwrap()
        .key_by_hash(&ApiKey::parse(&victim).unwrap().hash().0)
        .await
        .unwrap()
        .unwrap()
        .id;
    // Each key logged in while the log could take it.
    for k in [&d.admin, &viewer, &dev, &victim] {
        let res = get_as(&c, &d, k, "/v1/whoami").await;
        assert_eq!(res.status(), 200);
    }
    fill(&audit_dir);
    // The log's last page may still hold a few lines: refusals take it (their events are
    // written while there is room, then not; each is refused either way).
    for _ in 0..32 {
        let res = put_as(
            &c,
            &d,
            &viewer,
            "/v1/namespaces/team/agents/x",
            &agent_named("x", "team"),
        )
        .await;
        assert_eq!(res.status(), 403);
    }
    let before = d.audit();

    let agent = agent_named("stopped", "team");
    let put = || put_as(&c, &d, &dev, "/v1/namespaces/team/agents/stopped", &agent);
    let run = || {
        post_run(
            &c,
            &d,
            &dev,
            "team",
            serde_json::json!({"command": ["true"], "runtime": "native"}),
        )
    };
    let revoke = || {
        c.delete(d.url(&format!("/v1/namespaces/team/keys/{victim_id}")))
            .header("x-api-key", &d.admin)
            .send()
    };
    let logout = || {
        c.post(d.url("/v1/logout"))
            .header("x-api-key", &victim)
            .send()
    };
    for (what, res) in [
        ("PUT agent", put().await),
        ("POST run", run().await),
        ("DELETE key", revoke().await.unwrap()),
        ("POST logout", logout().await.unwrap()),
    ] {
        let msg = error_of(res, StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable").await;
        assert!(msg.contains("audit log"), "{what}: {msg}");
    }
    // Nothing was done.
    let get = |k: &str, path: &str| c.get(d.url(path)).header("x-api-key", k.to_owned()).send();
    assert_eq!(
        get(&dev, "/v1/namespaces/team/agents/stopped")
            .await
            .unwrap()
            .status(),
        404
    );
    let runs: Value = get(&dev, "/v1/namespaces/team/runs")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        runs["items"],
        serde_json::json!([]),
        "a run was queued: {runs}"
    );
    assert_eq!(
        get(&victim, "/v1/whoami").await.unwrap().status(),
        200,
        "the key was revoked"
    );
    // Refusals stay refusals; nothing is granted for want of their events.
    assert_eq!(
        put_as(
            &c,
            &d,
            &viewer,
            "/v1/namespaces/team/agents/x",
            &agent_named("x", "team")
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        get("spawn_sk_live_nope", "/v1/whoami")
            .await
            .unwrap()
            .status(),
        401
    );
    // A credential whose login cannot be recorded is not served.
    let fresh = d.key_for("latecomer", "viewer", "team", false).await;
    let msg = error_of(
        get(&fresh, "/v1/whoami").await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
    )
    .await;
    assert!(msg.contains("audit log"), "{msg}");
    // The records before are all there.
    assert!(d.audit().starts_with(&before));

    // Room again: the same requests succeed, each recorded.
    std::fs::remove_file(audit_dir.join("filler")).unwrap();
    assert_eq!(put().await.status(), 201);
    let res = run().await;
    assert_eq!(res.status(), 201);
    let run_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&fresh, "/v1/whoami").await.unwrap().status(), 200);
    assert_eq!(logout().await.unwrap().status(), 200);
    assert_eq!(get(&victim, "/v1/whoami").await.unwrap().status(), 401);
    let log = records(&d);
    let has = |t: &str, f: &dyn Fn(&Value) -> bool| {
        log.iter()
            .any(|r| r["eventType"] == t && r["outcome"] == "success" && f(r))
    };
    assert!(has("agent.create", &|r| r["resource"]["name"] == "team/stopped"));
    assert!(has("agent.start", &|r| r["traceId"] == run_id.as_str()));
    assert!(has("auth.login", &|r| r["principal"]["name"] == "latecomer"));
    assert!(has("auth.logout", &|r| r["resource"]["name"]
        == victim_id.as_str()));
    drop(d);
    drop(tmpfs);
}
