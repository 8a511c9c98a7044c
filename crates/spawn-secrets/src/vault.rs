//! HashiCorp Vault: the values of KV v2 secrets (`vault://MOUNT/data/PATH#KEY`, read from
//! `GET /v1/MOUNT/data/PATH`, the key `KEY` of its `data.data`), as the resolver of a run's
//! grants reads them at its start.
//!
//! Configured from the environment of the process that resolves (spawn's, or spawnd's), by
//! Vault's own variable names: `VAULT_ADDR` (`https://…`; `http://` only to a loopback
//! address), `VAULT_CACERT` (a PEM file of the CA to trust instead of the public roots),
//! `VAULT_NAMESPACE` (sent as `X-Vault-Namespace`), and either `VAULT_TOKEN` or AppRole's
//! `VAULT_ROLE_ID` with `VAULT_SECRET_ID` (logged in at `auth/approle/login`; its token is
//! renewed with `auth/token/renew-self` once half its lease has passed, while it is
//! renewable). Nothing here ever puts a token or a value in an error: errors name the
//! reference, the HTTP status and Vault's own `errors` (which quote no value).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::SecretsError;

/// Where Vault is and how to authenticate.
#[derive(Clone)]
pub struct VaultConfig {
    pub addr: String,
    pub auth: VaultAuth,
    pub ca_cert: Option<PathBuf>,
    pub namespace: Option<String>,
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultConfig({}, {:?})", self.addr, self.auth)
    }
}

/// A token, or AppRole's role and secret ids.
#[derive(Clone)]
pub enum VaultAuth {
    Token(Zeroizing<String>),
    AppRole {
        role_id: String,
        secret_id: Zeroizing<String>,
    },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaultAuth::Token(_) => "Token(..)",
            VaultAuth::AppRole { .. } => "AppRole(..)",
        })
    }
}

fn err(what: impl Into<String>) -> SecretsError {
    SecretsError::Vault(what.into())
}

impl VaultConfig {
    /// From the environment; `None` when `VAULT_ADDR` is not set.
    pub fn from_env() -> Result<Option<VaultConfig>, SecretsError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(addr) = var("VAULT_ADDR") else {
            return Ok(None);
        };
        let auth = match (
            var("VAULT_TOKEN"),
            var("VAULT_ROLE_ID"),
            var("VAULT_SECRET_ID"),
        ) {
            (Some(t), None, None) => VaultAuth::Token(Zeroizing::new(t)),
            (None, Some(role_id), Some(s)) => VaultAuth::AppRole {
                role_id,
                secret_id: Zeroizing::new(s),
            },
            _ => {
                return Err(err(
                    "set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole), not both",
                ))
            }
        };
        Ok(Some(VaultConfig {
            addr,
            auth,
            ca_cert: var("VAULT_CACERT").map(PathBuf::from),
            namespace: var("VAULT_NAMESPACE"),
        }))
    }
}

/// A connection to Vault, logged in.
pub struct VaultClient {
    agent: ureq::Agent,
    base: String,
    namespace: Option<String>,
    auth: VaultAuth,
    token: Zeroizing<String>,
    /// A renewable token's lease: when it was last granted, and for how long.
    lease: Option<(Instant, Duration)>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultClient({})", self.base)
    }
}

/// How long a request to Vault may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response read.
const MAX_RESPONSE: u64 = 1 << 20;

impl VaultClient {
    /// Connects (TLS with the configured CA, or the public roots) and logs in.
    pub fn connect(config: &VaultConfig) -> Result<VaultClient, SecretsError> {
        let base = config.addr.trim_end_matches('/').to_owned();
        let lower = base.to_ascii_lowercase();
        let loopback = ["http://127.", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| lower.starts_with(p));
        if !(lower.starts_with("https://") || loopback) {
            return Err(err(format!(
                "VAULT_ADDR {base} is not https:// (plain http only to a loopback address)"
            )));
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout(TIMEOUT)
            .redirects(0)
            .tls_config(Arc::new(tls(config.ca_cert.as_deref())?));
        builder = builder.user_agent("spawn");
        let mut client = VaultClient {
            agent: builder.build(),
            base,
            namespace: config.namespace.clone(),
            auth: config.auth.clone(),
            token: Zeroizing::new(String::new()),
            lease: None,
        };
        client.login()?;
        Ok(client)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, &format!("{}/v1/{path}", self.base));
        if let Some(ns) = &self.namespace {
            r = r.set("X-Vault-Namespace", ns);
        }
        if !self.token.is_empty() {
            r = r.set("X-Vault-Token", &self.token);
        }
        r
    }

    fn login(&mut self) -> Result<(), SecretsError> {
        match &self.auth {
            VaultAuth::Token(t) => {
                self.token = t.clone();
                self.lease = None;
                Ok(())
            }
            VaultAuth::AppRole { role_id, secret_id } => {
                let body = Zeroizing::new(
                    serde_json::json!({"role_id": role_id, "secret_id": secret_id.as_str()})
                        .to_string(),
                );
                let answer = self
                    .agent
                    .post(&format!("{}/v1/auth/approle/login", self.base))
                    .set("Content-Type", "application/json");
                let answer = match &self.namespace {
                    Some(ns) => answer.set("X-Vault-Namespace", ns),
                    None => answer,
                };
                let v = json_of(answer.send_string(&body), "log in with AppRole")?;
                self.take_auth(&v, "log in with AppRole")
            }
        }
    }

    /// Takes the token and its lease from an `auth` answer.
    fn take_auth(&mut self, v: &serde_json::Value, what: &str) -> Result<(), SecretsError> {
        let auth = &v["auth"];
        let token = auth["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(format!("{what}: Vault gave no token")))?;
        self.token = Zeroizing::new(token.to_owned());
        let lease = auth["lease_duration"].as_u64().unwrap_or(0);
        self.lease = (auth["renewable"].as_bool() == Some(true) && lease > 0)
            .then(|| (Instant::now(), Duration::from_secs(lease)));
        Ok(())
    }

    /// Renews a renewable token once half its lease has passed.
    pub fn renew_if_due(&mut self) -> Result<bool, SecretsError> {
        let Some((granted, lease)) = self.lease else {
            return Ok(false);
        };
        if granted.elapsed() < lease / 2 {
            return Ok(false);
        }
        let v = json_of(
            self.request("POST", "auth/token/renew-self")
                .set("Content-Type", "application/json")
                .send_string("{}"),
            "renew the token",
        )?;
        self.take_auth(&v, "renew the token")?;
        Ok(true)
    }

    /// The key `key` of the KV v2 secret at the API path `path` (`MOUNT/data/…`).
    pub fn read_kv2(&mut self, path: &str, key: &str) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        self.renew_if_due()?;
        let what = format!("read vault://{path}#{key}");
        let v = Zeroizing::new(json_of(self.request("GET", path).call(), &what)?.to_string());
        // Parsed again from the wiped copy, so that the value is taken out of one tree only.
        let mut tree: serde_json::Value =
            serde_json::from_str(&v).map_err(|_| err(format!("{what}: not JSON")))?;
        let data = tree["data"]["data"].take();
        drop(tree);
        let found = match data.get(key) {
            Some(serde_json::Value::String(s)) => Ok(Zeroizing::new(s.as_bytes().to_vec())),
            Some(_) => Err(err(format!("{what}: the key is not a string"))),
            None if data.is_object() => Err(err(format!("{what}: the secret has no such key"))),
            None => Err(err(format!("{what}: not a KV v2 secret (no data.data)"))),
        };
        zero_json(data);
        found
    }
}

/// Overwrites the strings of `v` before it is dropped.
fn zero_json(v: serde_json::Value) {
    use zeroize::Zeroize as _;
    match v {
        serde_json::Value::String(mut s) => s.zeroize(),
        serde_json::Value::Array(items) => items.into_iter().for_each(zero_json),
        serde_json::Value::Object(map) => {
            for (_, v) in map {
                zero_json(v);
            }
        }
        _ => {}
    }
}

/// The JSON of an answer, or an error saying what failed: Vault's status and `errors`.
fn json_of(
    answer: Result<ureq::Response, ureq::Error>,
    what: &str,
) -> Result<serde_json::Value, SecretsError> {
    use std::io::Read as _;
    let read = |r: ureq::Response| -> Result<serde_json::Value, SecretsError> {
        let mut body = Zeroizing::new(Vec::new());
        r.into_reader()
            .take(MAX_RESPONSE)
            .read_to_end(&mut body)
            .map_err(|e| err(format!("{what}: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|_| err(format!("{what}: Vault's answer is not JSON")))
    };
    match answer {
        Ok(r) => read(r),
        Err(ureq::Error::Status(status, r)) => {
            let errors = read(r)
                .ok()
                .and_then(|v| {
                    v["errors"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str())
                            .map(|e| e.chars().take(200).collect::<String>())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                })
                .unwrap_or_default();
            let hint = match status {
                404 => " (not found)",
                403 => " (permission denied: the token or role may not read it)",
                _ => "",
            };
            Err(err(format!(
                "{what}: Vault answered {status}{hint} {errors}"
            )
            .trim_end()
            .to_owned()))
        }
        Err(ureq::Error::Transport(t)) => Err(err(format!("{what}: Vault cannot be reached: {t}"))),
    }
}

/// The TLS settings: the CA in `ca` (PEM) only, or the public roots.
fn tls(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, SecretsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .map_err(|e| err(format!("VAULT_CACERT {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(err(format!(
                    "VAULT_CACERT {}: no certificate in it",
                    path.display()
                )));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| err(format!("VAULT_CACERT {}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| err(format!("TLS: {e}")))
}
