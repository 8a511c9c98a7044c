//! Bearer JWTs against a real `spawnd` (SQLite): a token of the configured issuer
//! authenticates its `sub` as a User with that User's RoleBindings; every other token is a
//! 401, audited, with nothing of the token in the answer or the log; a daemon with no
//! issuer configured accepts none.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::Daemon;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "spawn";

/// Panics with what failed: the helpers below run only in tests.
fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// An Ed25519 key pair made with openssl: (private PEM, public PEM path).
fn keypair(dir: &std::path::Path, name: &str) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status();
    let made = must(
        made,
        "openssl (Debian's openssl package) makes the test's keys",
    );
    assert!(made.success(), "openssl genpkey");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status();
    assert!(must(out, "openssl pkey").success(), "openssl pkey -pubout");
    (must(std::fs::read(&private), "read the key"), public)
}

fn now() -> i64 {
    let since = must(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
        "the clock",
    );
    must(i64::try_from(since.as_secs()), "seconds")
}

fn sign(private: &[u8], claims: &Value) -> String {
    let key = must(EncodingKey::from_ed_pem(private), "the signing key");
    must(encode(&Header::new(Algorithm::EdDSA), claims, &key), "sign")
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

async fn whoami(c: &Client, d: &Daemon, auth: &str) -> reqwest::Response {
    must(
        c.get(d.url("/v1/whoami"))
            .header("authorization", auth)
            .send()
            .await,
        "GET /v1/whoami",
    )
}

#[tokio::test]
async fn bearer_jwts_of_the_configured_issuer_and_nothing_else() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = keypair(keys.path(), "issuer");
    let (other_private, _) = keypair(keys.path(), "other");
    let public_pem = std::fs::read(&public).unwrap();
    let d = Daemon::start_full(
        None,
        None,
        "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n",
        &format!(
            "auth:\n  jwt:\n    issuer: {ISSUER}\n    audience: {AUDIENCE}\n    publicKey: {}\n",
            public.display()
        ),
    );
    let c = Client::new();
    // alice is a viewer in `team`.
    let binding = "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: alice-views, namespace: team}\nsubjects: [{kind: User, name: alice}]\nroleRef: {kind: Role, name: viewer}\n";
    let res = c
        .put(d.url("/v1/namespaces/team/rolebindings/alice-views"))
        .header("x-api-key", &d.admin)
        .body(binding)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let good = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() + 300});
    let token = sign(&private, &good);
    let res = whoami(&c, &d, &format!("Bearer {token}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("User"), Some("alice"))
    );
    // The scheme is case-insensitive; `aud` may be a list naming this audience.
    let listed = sign(
        &private,
        &json!({"iss": ISSUER, "aud": ["other", AUDIENCE], "sub": "alice", "exp": now() + 300}),
    );
    assert_eq!(
        whoami(&c, &d, &format!("bearer {listed}")).await.status(),
        StatusCode::OK
    );
    // Two tokens, two credentials: a login each, once for all their requests; no token
    // in them.
    let logins: Vec<Value> = d
        .audit()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["eventType"] == "auth.login" && r["details"]["credential"] == "jwt")
        .collect();
    assert_eq!(logins.len(), 2, "{logins:#?}");
    for l in &logins {
        assert_eq!(l["principal"]["name"], "alice");
        assert_eq!(l["details"]["credential"], "jwt");
        assert_eq!(l["outcome"], "success");
    }
    assert_eq!(
        whoami(&c, &d, &format!("Bearer {token}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(d.audit().matches("\"credential\":\"jwt\"").count(), 2);
    // A token cannot be ended by the daemon: the logout is refused and recorded so; the
    // token still works.
    let res = c
        .post(d.url("/v1/logout"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_revocable", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("exp"),
        "{body}"
    );
    let logout = d
        .audit()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["eventType"] == "auth.logout")
        .unwrap();
    assert_eq!(logout["outcome"], "denied");
    assert_eq!(logout["principal"]["name"], "alice");
    assert_eq!(
        whoami(&c, &d, &format!("Bearer {token}")).await.status(),
        StatusCode::OK
    );
    // What the User's bindings grant, and no more.
    let res = c
        .get(d.url("/v1/namespaces/team/agents"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for (method, path) in [
        ("POST", "/v1/namespaces/team/runs"),
        ("GET", "/v1/namespaces/prod/agents"),
    ] {
        let res = c
            .request(method.parse().unwrap(), d.url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(r#"{"command": ["true"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }

    // Every other token is a 401.
    let claims = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut m = good.as_object().unwrap().clone();
        f(&mut m);
        Value::Object(m)
    };
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let admin_payload = b64(serde_json::to_string(&claims(&|m| {
        m.insert("sub".into(), "admin".into());
    }))
    .unwrap()
    .as_bytes());
    let hs256_with_the_public_key = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), payload);
    let es256_header = format!(
        "{}.{payload}.{signature}",
        b64(br#"{"alg":"ES256","typ":"JWT"}"#)
    );
    let hostile: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("exp".into(), (now() - 120).into());
                }),
            ),
        ),
        (
            "not yet valid",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("nbf".into(), (now() + 600).into());
                }),
            ),
        ),
        (
            "another issuer",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("iss".into(), "https://evil.test".into());
                }),
            ),
        ),
        (
            "another audience",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("aud".into(), "other".into());
                }),
            ),
        ),
        (
            "no exp",
            sign(
                &private,
                &claims(&|m| {
                    m.remove("exp");
                }),
            ),
        ),
        (
            "no sub",
            sign(
                &private,
                &claims(&|m| {
                    m.remove("sub");
                }),
            ),
        ),
        (
            "no iss",
            sign(
                &private,
                &claims(&|m| {
                    m.remove("iss");
                }),
            ),
        ),
        (
            "no aud",
            sign(
                &private,
                &claims(&|m| {
                    m.remove("aud");
                }),
            ),
        ),
        (
            "sub not a name",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("sub".into(), "alice\nUser/admin".into());
                }),
            ),
        ),
        (
            "sub empty",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("sub".into(), "".into());
                }),
            ),
        ),
        (
            "sub a number",
            sign(
                &private,
                &claims(&|m| {
                    m.insert("sub".into(), 7.into());
                }),
            ),
        ),
        ("another key", sign(&other_private, &good)),
        (
            "payload changed after signing",
            format!("{head}.{admin_payload}.{signature}"),
        ),
        ("signature cut", format!("{head}.{payload}.")),
        ("alg none", none),
        ("HS256 keyed with the public key", hs256_with_the_public_key),
        ("ES256 header on an EdDSA signature", es256_header),
        ("garbage", "abc".into()),
        ("two parts", format!("{head}.{payload}")),
        ("four parts", format!("{token}.x")),
        ("empty", String::new()),
        ("too long", format!("{token}{}", "A".repeat(9000))),
    ];
    for (what, bad) in &hostile {
        let res = whoami(&c, &d, &format!("Bearer {bad}")).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body = res.text().await.unwrap();
        assert!(body.contains("unauthenticated"), "{what}: {body}");
        if bad.len() > 10 {
            assert!(
                !body.contains(bad.as_str()),
                "{what}: the answer repeats the token"
            );
        }
    }
    for scheme in ["Basic YWxpY2U6eA==", "Token abc", "Bearer"] {
        let res = whoami(&c, &d, scheme).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{scheme}");
    }
    // Each failure audited; no token in the log.
    let log = d.audit();
    let failures = log
        .lines()
        .filter(|l| l.contains("\"auth.failure\""))
        .count();
    assert!(failures >= hostile.len(), "{failures} auth.failure events");
    assert!(!log.contains(&token), "a token reached the audit log");
    assert!(
        !log.contains(signature),
        "a token's signature reached the audit log"
    );

    // A daemon with no issuer configured accepts no bearer token.
    let plain = Daemon::start(None);
    let res = whoami(&c, &plain, &format!("Bearer {token}")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = res.text().await.unwrap();
    assert!(body.contains("no JWT issuer"), "{body}");
}

/// A configuration whose key cannot be used stops the daemon with the reason.
#[test]
fn a_bad_issuer_key_stops_the_daemon_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    for (jwt, says) in [
        (format!("issuer: {ISSUER}\n    audience: {AUDIENCE}\n    publicKey: {}\n", not_a_key.display()), "not a EdDSA public key"),
        (format!("issuer: {ISSUER}\n    audience: {AUDIENCE}\n    publicKey: {}/missing.pem\n", dir.path().display()), "missing.pem"),
        (format!("issuer: {ISSUER}\n    audience: {AUDIENCE}\n    publicKey: {}\n    algorithm: HS256\n", not_a_key.display()), "HS256"),
        (format!("issuer: ''\n    audience: {AUDIENCE}\n    publicKey: {}\n", not_a_key.display()), "must not be empty"),
    ] {
        let err = common::refused(dir.path(), &format!("auth:\n  jwt:\n    {jwt}"));
        assert!(err.contains("auth.jwt") && err.contains(says), "{jwt}: {err}");
    }
}
