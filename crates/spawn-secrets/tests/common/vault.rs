//! A Vault stand-in for tests, written from HashiCorp Vault's published HTTP API (no Vault
//! server can be had here): the KV v2 read (`GET /v1/MOUNT/data/PATH` → `data.data`,
//! `data.metadata`, `lease_duration` 0), AppRole login (`POST /v1/auth/approle/login` →
//! `auth.client_token`, `lease_duration`, `renewable`), token renewal (`POST
//! /v1/auth/token/renew-self`), errors as `{"errors": [...]}` with 400/403/404, the
//! `X-Vault-Token` and `X-Vault-Namespace` headers, and the Transit engine's key read,
//! `encrypt`, `decrypt` and `keys/KEY/rotate` (ciphertexts `vault:vN:…`). HTTP/1.1, one request a connection,
//! over TLS with a certificate of a CA of its own (its PEM written to a file), or plain.
//! It is not Vault: policies, versions, leases of dynamic engines, response wrapping and
//! everything else are not here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the stand-in holds and saw.
#[derive(Default)]
pub struct State {
    /// KV v2 secrets: API path (`secret/data/app`) → key → value.
    pub secrets: HashMap<String, HashMap<String, String>>,
    /// Tokens it accepts.
    pub tokens: Vec<String>,
    /// AppRole: (role id, secret id) → the token a login gives, its lease (seconds).
    pub approle: Option<(String, String, String, u64)>,
    /// Transit: the engine's mount, its key's name and latest version; what it encrypted
    /// (ciphertext → plaintext, opaque to the client as Vault's are).
    pub transit: Option<(String, String, u64)>,
    pub encrypted: HashMap<String, String>,
    /// Renewals made, logins made, namespaces seen.
    pub renewals: usize,
    pub logins: usize,
    pub namespaces: Vec<String>,
}

/// A running stand-in: its address (`https://127.0.0.1:PORT` or `http://…`) and, with
/// TLS, its CA's PEM file.
pub struct Vault {
    pub addr: String,
    pub ca: Option<PathBuf>,
    pub state: Arc<Mutex<State>>,
    pub requests: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

impl Vault {
    /// Starts one (TLS when `tls`) holding `state`.
    pub fn start(tls: bool, state: State) -> Vault {
        let dir = must(tempfile::tempdir(), "a directory");
        let listener = must(TcpListener::bind("127.0.0.1:0"), "bind");
        let port = must(listener.local_addr(), "address").port();
        let state = Arc::new(Mutex::new(state));
        let requests = Arc::new(AtomicUsize::new(0));
        let (config, ca) = if tls {
            let (config, ca_pem) = server_tls();
            let ca = dir.path().join("vault-ca.pem");
            must(std::fs::write(&ca, ca_pem), "write the CA");
            (Some(Arc::new(config)), Some(ca))
        } else {
            (None, None)
        };
        let (st, count) = (state.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, count, config) = (st.clone(), count.clone(), config.clone());
                std::thread::spawn(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                    match config {
                        Some(c) => {
                            let Ok(conn) = rustls::ServerConnection::new(c) else {
                                return;
                            };
                            let mut tls = rustls::StreamOwned::new(conn, stream);
                            serve_one(&mut tls, &st);
                        }
                        None => {
                            let mut s = stream;
                            serve_one(&mut s, &st);
                        }
                    }
                });
            }
        });
        let scheme = if tls { "https" } else { "http" };
        Vault {
            addr: format!("{scheme}://127.0.0.1:{port}"),
            ca,
            state,
            requests,
            _dir: dir,
        }
    }
}

/// A server certificate for 127.0.0.1 and localhost, from a CA made now; the CA's PEM.
fn server_tls() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = must(KeyPair::generate(), "CA key");
    let mut ca_params = must(CertificateParams::new(Vec::<String>::new()), "CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = must(ca_params.self_signed(&ca_key), "CA");
    let key = must(KeyPair::generate(), "server key");
    let params = must(
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
        "server params",
    );
    let cert = must(params.signed_by(&key, &ca, &ca_key), "server certificate");
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = must(
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions(),
        "TLS versions",
    )
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der_key);
    (must(config, "TLS config"), ca.pem())
}

fn serve_one(s: &mut (impl Read + Write), state: &Mutex<State>) {
    let mut reader = BufReader::new(&mut *s);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    drop(reader);
    let (status, answer) = route(&method, &path, &headers, &body, state);
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = s.flush();
}

fn route(
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    state: &Mutex<State>,
) -> (u16, serde_json::Value) {
    use serde_json::json;
    let Ok(mut st) = state.lock() else {
        return (500, json!({"errors": ["poisoned"]}));
    };
    if let Some(ns) = headers.get("x-vault-namespace") {
        st.namespaces.push(ns.clone());
    }
    let token = headers.get("x-vault-token").cloned().unwrap_or_default();
    let denied = || (403, json!({"errors": ["permission denied"]}));
    match (method, path) {
        ("POST", "/v1/auth/approle/login") => {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let Some((role, secret, issued, lease)) = st.approle.clone() else {
                return (
                    400,
                    json!({"errors": ["no handler for route \"auth/approle/login\""]}),
                );
            };
            if v["role_id"] == role.as_str() && v["secret_id"] == secret.as_str() {
                st.logins += 1;
                st.tokens.push(issued.clone());
                (
                    200,
                    json!({"auth": {"client_token": issued, "accessor": "acc",
                    "policies": ["default"], "lease_duration": lease, "renewable": true}}),
                )
            } else {
                (400, json!({"errors": ["invalid role or secret ID"]}))
            }
        }
        ("POST", "/v1/auth/token/renew-self") => {
            if !st.tokens.contains(&token) {
                return denied();
            }
            st.renewals += 1;
            let lease = st.approle.as_ref().map_or(3600, |a| a.3);
            (
                200,
                json!({"auth": {"client_token": token, "lease_duration": lease, "renewable": true}}),
            )
        }
        (m, p) if transit_op(&st, p).is_some() => {
            if !st.tokens.contains(&token) {
                return denied();
            }
            let op = transit_op(&st, p).unwrap_or_default();
            let Some((_, name, latest)) = st.transit.clone() else {
                return (404, json!({"errors": []}));
            };
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            match (m, op.as_str()) {
                ("GET", "read") => (
                    200,
                    json!({"data": {"name": name, "type": "aes256-gcm96",
                    "latest_version": latest, "min_decryption_version": 1}}),
                ),
                ("POST", "rotate") => {
                    if let Some(t) = st.transit.as_mut() {
                        t.2 += 1;
                    }
                    (
                        200,
                        json!({"data": {"name": name, "latest_version": latest + 1}}),
                    )
                }
                ("POST", "encrypt") => {
                    let Some(plain) = v["plaintext"].as_str() else {
                        return (400, json!({"errors": ["missing plaintext to encrypt"]}));
                    };
                    let id = st.encrypted.len();
                    let ciphertext = format!("vault:v{latest}:c{id}x{}", plain.len());
                    st.encrypted.insert(ciphertext.clone(), plain.to_owned());
                    (
                        200,
                        json!({"data": {"ciphertext": ciphertext, "key_version": latest}}),
                    )
                }
                ("POST", "decrypt") => {
                    match v["ciphertext"].as_str().and_then(|c| st.encrypted.get(c)) {
                        Some(plain) => (200, json!({"data": {"plaintext": plain}})),
                        None => (
                            400,
                            json!({"errors": ["cipher: message authentication failed"]}),
                        ),
                    }
                }
                _ => (405, json!({"errors": ["unsupported operation"]})),
            }
        }
        ("GET", p) => {
            if !st.tokens.contains(&token) {
                return denied();
            }
            let api = p.strip_prefix("/v1/").unwrap_or("");
            match st.secrets.get(api) {
                Some(data) => (
                    200,
                    json!({
                        "request_id": "req", "lease_id": "", "renewable": false, "lease_duration": 0,
                        "data": {"data": data, "metadata": {"created_time": "2026-01-01T00:00:00Z",
                            "custom_metadata": null, "deletion_time": "", "destroyed": false, "version": 1}},
                        "wrap_info": null, "warnings": null, "auth": null
                    }),
                ),
                None => (404, json!({"errors": []})),
            }
        }
        _ => (405, json!({"errors": ["unsupported operation"]})),
    }
}

/// The Transit operation `path` asks for (`read`, `rotate`, `encrypt`, `decrypt`), when it
/// is one of the engine's.
fn transit_op(st: &State, path: &str) -> Option<String> {
    let (mount, key, _) = st.transit.as_ref()?;
    let rest = path
        .strip_prefix("/v1/")?
        .strip_prefix(mount.as_str())?
        .strip_prefix('/')?;
    if rest == format!("keys/{key}") {
        return Some("read".into());
    }
    if rest == format!("keys/{key}/rotate") {
        return Some("rotate".into());
    }
    for op in ["encrypt", "decrypt"] {
        if rest == format!("{op}/{key}") {
            return Some(op.into());
        }
    }
    None
}
