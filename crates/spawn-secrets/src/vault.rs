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

/// HashiCorp Vault's Transit engine as the master key provider: the key `KEY` of the engine
/// mounted at `MOUNT` wraps the data keys (`POST MOUNT/encrypt/KEY`, `…/decrypt/KEY`), its
/// rotation is the engine's (`POST MOUNT/keys/KEY/rotate`), and it never leaves Vault.
/// What is encrypted is the SHA-256 of the data key's associated data followed by the key:
/// a wrapped key moved to another namespace or version does not unwrap (checked in constant
/// time). A wrapped key is named `transit:MOUNT/KEY:vN`, N the Transit key's version that
/// wrapped it; older versions keep decrypting until Vault's `min_decryption_version` says
/// otherwise (retiring them is Vault's, not spawn's).
#[derive(Debug)]
pub struct TransitMasterKeys {
    client: std::sync::Mutex<VaultClient>,
    mount: String,
    key: String,
    /// The key's latest version, as last read.
    latest: std::sync::atomic::AtomicU64,
}

impl TransitMasterKeys {
    /// Connects and reads the key's latest version (the key must exist).
    pub fn connect(
        config: &VaultConfig,
        mount: &str,
        key: &str,
    ) -> Result<TransitMasterKeys, SecretsError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|p| {
                    !p.is_empty()
                        && p != "."
                        && p != ".."
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                })
        };
        if !ok(mount) || !ok(key) || key.contains('/') {
            return Err(err(format!(
                "transit://{mount}/{key} is not MOUNT/KEY of letters, digits, '_', '-', '.'"
            )));
        }
        let t = TransitMasterKeys {
            client: std::sync::Mutex::new(VaultClient::connect(config)?),
            mount: mount.to_owned(),
            key: key.to_owned(),
            latest: std::sync::atomic::AtomicU64::new(0),
        };
        t.refresh()?;
        Ok(t)
    }

    fn call(
        &self,
        method: &str,
        op: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value, SecretsError> {
        let mut c = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.renew_if_due()?;
        let what = format!("transit {op} with {}/{}", self.mount, self.key);
        let path = match op {
            "read" => format!("{}/keys/{}", self.mount, self.key),
            "rotate" => format!("{}/keys/{}/rotate", self.mount, self.key),
            _ => format!("{}/{op}/{}", self.mount, self.key),
        };
        let r = c.request(method, &path);
        let answer = match body {
            Some(b) => r.set("Content-Type", "application/json").send_string(b),
            None => r.call(),
        };
        json_of(answer, &what)
    }

    fn refresh(&self) -> Result<u64, SecretsError> {
        let v = self.call("GET", "read", None)?;
        let latest = v["data"]["latest_version"]
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                err(format!(
                    "transit key {}/{}: no latest_version",
                    self.mount, self.key
                ))
            })?;
        self.latest
            .store(latest, std::sync::atomic::Ordering::SeqCst);
        Ok(latest)
    }

    fn name(&self, version: u64) -> String {
        format!("transit:{}/{}:v{version}", self.mount, self.key)
    }
}

/// What Transit encrypts for a data key: the SHA-256 of its associated data, then the key.
fn transit_plaintext(data_key: &crate::crypto::Key, aad: &[u8]) -> Zeroizing<Vec<u8>> {
    use sha2::Digest as _;
    let mut p = Zeroizing::new(sha2::Sha256::digest(aad).to_vec());
    p.extend_from_slice(data_key.expose());
    p
}

impl crate::master::MasterKeys for TransitMasterKeys {
    fn current(&self) -> String {
        self.name(self.latest.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn wrap(
        &self,
        data_key: &crate::crypto::Key,
        aad: &[u8],
    ) -> Result<(String, Vec<u8>), SecretsError> {
        use base64::Engine as _;
        let plaintext = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(&*transit_plaintext(data_key, aad)),
        );
        let body =
            Zeroizing::new(serde_json::json!({ "plaintext": plaintext.as_str() }).to_string());
        let v = self.call("POST", "encrypt", Some(&body))?;
        let ciphertext = v["data"]["ciphertext"]
            .as_str()
            .ok_or_else(|| err("transit encrypt: no ciphertext"))?;
        let version = ciphertext
            .strip_prefix("vault:v")
            .and_then(|r| r.split_once(':'))
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .ok_or_else(|| err("transit encrypt: a ciphertext not of the form vault:vN:…"))?;
        Ok((self.name(version), ciphertext.as_bytes().to_vec()))
    }

    fn unwrap(
        &self,
        master: &str,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<crate::crypto::Key, SecretsError> {
        use base64::Engine as _;
        use subtle::ConstantTimeEq as _;
        let ours = format!("transit:{}/{}:v", self.mount, self.key);
        if !master.starts_with(&ours) {
            return Err(SecretsError::WrongMasterKey {
                master: master.to_owned(),
            });
        }
        let ciphertext =
            std::str::from_utf8(wrapped).map_err(|_| SecretsError::WrappedKeyTampered)?;
        let body = serde_json::json!({ "ciphertext": ciphertext }).to_string();
        let v = self
            .call("POST", "decrypt", Some(&body))
            .map_err(|e| match e {
                // Vault refuses a ciphertext it did not make (or one changed) with 400.
                SecretsError::Vault(m) if m.contains(" 400") => SecretsError::WrappedKeyTampered,
                other => other,
            })?;
        let encoded = Zeroizing::new(
            v["data"]["plaintext"]
                .as_str()
                .ok_or(SecretsError::WrappedKeyTampered)?
                .to_owned(),
        );
        let plain = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| SecretsError::WrappedKeyTampered)?,
        );
        use sha2::Digest as _;
        let expected = sha2::Sha256::digest(aad);
        if plain.len() != 64 || !bool::from(plain[..32].ct_eq(expected.as_slice())) {
            return Err(SecretsError::WrappedKeyTampered);
        }
        crate::crypto::Key::from_bytes(&plain[32..]).ok_or(SecretsError::WrappedKeyTampered)
    }

    fn rotate(&self) -> Result<String, SecretsError> {
        self.call("POST", "rotate", Some("{}"))?;
        let latest = self.refresh()?;
        Ok(self.name(latest))
    }

    fn retire(&self) -> Result<usize, SecretsError> {
        Ok(0)
    }
}
