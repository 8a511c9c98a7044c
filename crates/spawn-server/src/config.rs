//! `spawn.yaml`: what `spawnd` serves, where its state is, its limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ServerError;

/// The default listen address (SPEC §2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Largest configuration file.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The daemon's configuration. Unknown fields are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Address to serve on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// spawn's home (`$SPAWN_HOME`, default `~/.spawn`): the SQLite database and the audit
    /// log live here.
    #[serde(default)]
    pub home: Option<PathBuf>,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: Log,
    /// Serve TLS 1.3 with this certificate chain and key (PEM files).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Callers besides API keys (`Authorization: Bearer <JWT>`).
    #[serde(default)]
    pub auth: Auth,
    /// The audit log's signed checkpoints.
    #[serde(default)]
    pub audit: Audit,
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The file this configuration was read from (given to the supervisors).
    #[serde(skip)]
    pub config_path: Option<PathBuf>,
}

/// The namespaces' secrets: each data key is rotated in the background once it is
/// `rotationDays` old (its values resealed under a new one, the completion an
/// `agent.secret.access` event `rotate-data-key`), checked every `rotationCheckSeconds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretsConfig {
    /// Days (fractions allowed, more than 0, at most 36500); default 90.
    #[serde(default = "default_rotation_days")]
    pub rotation_days: f64,
    /// 1 to 86400; default 3600.
    #[serde(default = "default_rotation_check")]
    pub rotation_check_seconds: u64,
}

impl Default for SecretsConfig {
    fn default() -> SecretsConfig {
        SecretsConfig {
            rotation_days: default_rotation_days(),
            rotation_check_seconds: default_rotation_check(),
        }
    }
}

impl SecretsConfig {
    /// How old a data key may get.
    pub fn rotation_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.rotation_days * 86_400.0)
    }
}

fn default_rotation_days() -> f64 {
    f64::from(spawn_secrets::DEFAULT_ROTATION_DAYS)
}

fn default_rotation_check() -> u64 {
    3600
}

/// The audit log's signed checkpoints (`spawn_audit::checkpoint`): made every
/// `checkpointIntervalSeconds` when the log grew, and when the daemon shuts down; and the
/// sinks the log is forwarded to (`spawn_sinks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Audit {
    /// 1 to 86400; default 300.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_seconds: u64,
    /// The Ed25519 key that signs them (signed-note format, owner-only), made if missing;
    /// default `HOME/keys/audit-signing.key`. Keep it apart from the database.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Where the log's records and checkpoints are forwarded (file, syslog, webhook,
    /// OTLP), each at least once, from its own cursor; see spawn-sinks' README.
    #[serde(default)]
    pub sinks: Vec<spawn_sinks::SinkSpec>,
    /// Retention: audit records older than this many days (1 to 36500) are deleted from the
    /// database under a signed cut (`spawn_audit::cut`), and runs (traces) that ended before
    /// then with their output. None (the default): kept for good. The log file on the host
    /// is not cut (see spawn-audit's README).
    #[serde(default)]
    pub retention_days: Option<u32>,
}

impl Default for Audit {
    fn default() -> Audit {
        Audit {
            checkpoint_interval_seconds: default_checkpoint_interval(),
            signing_key: None,
            sinks: Vec::new(),
            retention_days: None,
        }
    }
}

fn default_checkpoint_interval() -> u64 {
    300
}

/// Where the state is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `postgres://…`, or a SQLite path; default `HOME/spawn.db`. Never logged (it may hold
    /// a password).
    pub url: Option<String>,
}

/// How callers may authenticate besides API keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Bearer JWTs from one issuer; none accepted without it.
    #[serde(default)]
    pub jwt: Option<Jwt>,
}

/// The issuer whose JWTs are accepted (`Authorization: Bearer …`): signed with its key,
/// for this audience, unexpired; `sub` is the User they authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Jwt {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its values).
    pub audience: String,
    /// The issuer's public key, PEM: Ed25519 for `EdDSA`, P-256 for `ES256`, RSA for
    /// `RS256`.
    pub public_key: PathBuf,
    /// The one signature algorithm accepted: `EdDSA` (default), `ES256` or `RS256`.
    #[serde(default = "default_jwt_algorithm")]
    pub algorithm: String,
}

fn default_jwt_algorithm() -> String {
    "EdDSA".into()
}

/// The server's certificate, and the client certificates it accepts (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA certificates (PEM, one or more) client certificates must chain to; none
    /// asked for without it. The CA is trusted to name users (a certificate's CommonName
    /// is the User it authenticates): use one kept for this alone.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate (`required`) or may (`optional`, the
    /// default with `clientCa`). Only with `clientCa`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Certificate revocation lists (PEM, one or more, one from each CA that issues in
    /// the chains: a certificate whose issuer has none here is refused). Only with
    /// `clientCa`.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without one is served, and authenticates by API key or bearer JWT.
    #[default]
    Optional,
    /// The handshake fails without a valid one.
    Required,
}

/// Abuse limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most runs this daemon supervises at once.
    #[serde(default = "default_max_runs")]
    pub max_runs_per_host: usize,
    /// Most runs of one namespace running at once, across the daemons sharing the state
    /// (each daemon counts the others' at its claim; see `spawn_store::claim_runs_capped`).
    #[serde(default = "default_max_runs_ns")]
    pub max_runs_per_namespace: usize,
    /// Requests per second a principal may make (on average), per daemon.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Requests a principal may make at once after a quiet while.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Failed authentications from one address within the window that lock it out.
    #[serde(default = "default_auth_failures")]
    pub auth_failures: u32,
    #[serde(default = "default_auth_window")]
    pub auth_failure_window_seconds: u64,
    /// How long a locked-out address stays out.
    #[serde(default = "default_lockout")]
    pub lockout_seconds: u64,
    /// Largest request head (request line and headers): 431 beyond.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Time a client has to send its request head (and to finish a TLS handshake).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_seconds: u64,
}

fn default_max_header() -> usize {
    32 * 1024
}

fn default_header_timeout() -> u64 {
    10
}

fn default_rps() -> u32 {
    50
}

fn default_burst() -> u32 {
    500
}

fn default_auth_failures() -> u32 {
    10
}

fn default_auth_window() -> u64 {
    60
}

fn default_lockout() -> u64 {
    300
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: default_max_body(),
            max_runs_per_host: default_max_runs(),
            max_runs_per_namespace: default_max_runs_ns(),
            requests_per_second: default_rps(),
            burst: default_burst(),
            auth_failures: default_auth_failures(),
            auth_failure_window_seconds: default_auth_window(),
            lockout_seconds: default_lockout(),
            max_header_bytes: default_max_header(),
            header_read_timeout_seconds: default_header_timeout(),
        }
    }
}

fn default_max_runs() -> usize {
    16
}

fn default_max_runs_ns() -> usize {
    8
}

/// Log output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    // A constant that parses.
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

fn default_max_body() -> usize {
    1 << 20
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_listen(),
            home: None,
            database: Database::default(),
            limits: Limits::default(),
            log: Log::default(),
            tls: None,
            auth: Auth::default(),
            audit: Audit::default(),
            secrets: SecretsConfig::default(),
            config_path: None,
        }
    }
}

impl Config {
    /// Reads `path`; `None`: the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ServerError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let what = || format!("the configuration {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| ServerError::Config {
            what: what(),
            reason: e.to_string(),
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ServerError::Config {
                what: what(),
                reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::Config {
            what: what(),
            reason: e.to_string(),
        })?;
        let mut config: Config =
            serde_yaml_ng::from_str(&text).map_err(|e| ServerError::Config {
                what: what(),
                reason: e.to_string(),
            })?;
        if config.limits.max_body_bytes == 0 || config.limits.max_body_bytes > 64 << 20 {
            return Err(ServerError::Config {
                what: what(),
                reason: "limits.maxBodyBytes must be 1 to 67108864".into(),
            });
        }
        config.config_path = Some(path.to_owned());
        let l = &config.limits;
        let positive = [
            ("requestsPerSecond", u64::from(l.requests_per_second)),
            ("burst", u64::from(l.burst)),
            ("authFailures", u64::from(l.auth_failures)),
            ("authFailureWindowSeconds", l.auth_failure_window_seconds),
            ("lockoutSeconds", l.lockout_seconds),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0 || *v > 1_000_000) {
            return Err(ServerError::Config {
                what: what(),
                reason: format!("limits.{name} must be 1 to 1000000"),
            });
        }
        if !(8192..=1 << 20).contains(&config.limits.max_header_bytes) {
            return Err(ServerError::Config {
                what: what(),
                reason: "limits.maxHeaderBytes must be 8192 to 1048576".into(),
            });
        }
        if !(1..=300).contains(&config.limits.header_read_timeout_seconds) {
            return Err(ServerError::Config {
                what: what(),
                reason: "limits.headerReadTimeoutSeconds must be 1 to 300".into(),
            });
        }
        if config.limits.max_runs_per_namespace == 0 || config.limits.max_runs_per_namespace > 4096
        {
            return Err(ServerError::Config {
                what: what(),
                reason: "limits.maxRunsPerNamespace must be 1 to 4096".into(),
            });
        }
        if let Some(tls) = &config.tls {
            if tls.client_ca.is_none() && (tls.client_auth.is_some() || tls.client_crl.is_some()) {
                return Err(ServerError::Config {
                    what: what(),
                    reason: "tls.clientAuth and tls.clientCrl need tls.clientCa (the CA client \
                             certificates must chain to)"
                        .into(),
                });
            }
        }
        if config.limits.max_runs_per_host == 0 || config.limits.max_runs_per_host > 4096 {
            return Err(ServerError::Config {
                what: what(),
                reason: "limits.maxRunsPerHost must be 1 to 4096".into(),
            });
        }
        if config
            .audit
            .retention_days
            .is_some_and(|d| !(1..=36_500).contains(&d))
        {
            return Err(ServerError::Config {
                what: what(),
                reason: "audit.retentionDays must be 1 to 36500".into(),
            });
        }
        let days = config.secrets.rotation_days;
        if !(days > 0.0 && days <= 36_500.0) {
            return Err(ServerError::Config {
                what: what(),
                reason: "secrets.rotationDays must be more than 0 and at most 36500".into(),
            });
        }
        if !(1..=86_400).contains(&config.secrets.rotation_check_seconds) {
            return Err(ServerError::Config {
                what: what(),
                reason: "secrets.rotationCheckSeconds must be 1 to 86400".into(),
            });
        }
        if !(1..=86_400).contains(&config.audit.checkpoint_interval_seconds) {
            return Err(ServerError::Config {
                what: what(),
                reason: "audit.checkpointIntervalSeconds must be 1 to 86400".into(),
            });
        }
        config.sink_plans().map_err(|e| ServerError::Config {
            what: what(),
            reason: format!("audit.sinks: {e}"),
        })?;
        Ok(config)
    }

    /// The audit sinks, checked (`audit.sinks`).
    pub fn sink_plans(&self) -> Result<Vec<spawn_sinks::SinkPlan>, spawn_sinks::SinkError> {
        spawn_sinks::plan(&self.audit.sinks, &self.audit_dir())
    }

    /// The audit log's directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.home().join("audit")
    }

    /// The key that signs the audit log's checkpoints.
    pub fn audit_signing_key(&self) -> PathBuf {
        self.audit
            .signing_key
            .clone()
            .unwrap_or_else(|| self.home().join("keys").join("audit-signing.key"))
    }

    /// spawn's home: the configuration's, else `$SPAWN_HOME`, else `~/.spawn`.
    pub fn home(&self) -> PathBuf {
        if let Some(h) = &self.home {
            return h.clone();
        }
        if let Some(h) = std::env::var_os("SPAWN_HOME") {
            return PathBuf::from(h);
        }
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".spawn")
    }

    /// The database URL: the configuration's, else the SQLite file in the home.
    /// The master key file of the namespaces' secrets (`keys/secrets-master.key` in the
    /// state directory, as the local `spawn`'s).
    pub fn secrets_master_key(&self) -> PathBuf {
        self.home().join("keys").join("secrets-master.key")
    }

    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| self.home().join("spawn.db").to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("listen: 127.0.0.1:7070\nbogus: 1\n", "bogus"),
            ("database: {url: x, user: y}\n", "user"),
            ("listen: localhost\n", "listen"),
            ("listen: 127.0.0.1:99999\n", "listen"),
            ("limits: {maxBodyBytes: 0}\n", "maxBodyBytes"),
            ("limits: {maxBodyBytes: -1}\n", "maxBodyBytes"),
            ("limits: {maxRunsPerHost: 0}\n", "maxRunsPerHost"),
            ("limits: {maxRunsPerNamespace: 0}\n", "maxRunsPerNamespace"),
            ("limits: {burst: 0}\n", "burst"),
            ("limits: {maxHeaderBytes: 100}\n", "maxHeaderBytes"),
            (
                "limits: {headerReadTimeoutSeconds: 0}\n",
                "headerReadTimeoutSeconds",
            ),
            ("tls: {cert: /x}\n", "key"),
            (
                "tls: {cert: /x, key: /y, clientAuth: required}\n",
                "need tls.clientCa",
            ),
            (
                "tls: {cert: /x, key: /y, clientCrl: /z}\n",
                "need tls.clientCa",
            ),
            (
                "tls: {cert: /x, key: /y, clientCa: /z, clientAuth: yes}\n",
                "clientAuth",
            ),
            ("tls: {cert: /x, key: /y, client_ca: /z}\n", "client_ca"),
            ("limits: {lockoutSeconds: 99999999}\n", "lockoutSeconds"),
            ("limits: {requestsPerSecond: 1.5}\n", "requestsPerSecond"),
            ("log: {format: xml}\n", "format"),
            ("audit: {sinks: [{name: a, type: nope}]}\n", "nope"),
            ("audit: {sinks: [{name: ../a, type: file, path: /t/a}]}\n", "name"),
            ("audit: {sinks: [{name: a, type: file, path: /t/a, bogus: 1}]}\n", "bogus"),
            (
                "audit: {sinks: [{name: a, type: file, path: /t/a}, {name: a, type: file, path: /t/b}]}\n",
                "used by another sink",
            ),
            (
                "audit: {sinks: [{name: a, type: webhook, url: 'http://u:p@h/'}]}\n",
                "credentials",
            ),
            (
                "audit: {sinks: [{name: a, type: syslog, transport: tcp, address: 'h:99999'}]}\n",
                "address",
            ),
            ("[1, 2]\n", "invalid type"),
        ] {
            let path = dir.path().join("spawn.yaml");
            std::fs::write(&path, text).unwrap();
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let path = dir.path().join("ok.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:0\nlog: {format: json}\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.listen.port(), 0);
        std::fs::write(
            &path,
            "tls: {cert: /x, key: /y, clientCa: /z, clientAuth: required}\n",
        )
        .unwrap();
        let tls = Config::load(Some(&path)).unwrap().tls.unwrap();
        assert_eq!(tls.client_auth, Some(ClientAuth::Required));
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("/z")));
    }
}
