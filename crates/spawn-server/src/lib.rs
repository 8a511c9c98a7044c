//! `spawnd`: spawn's multi-tenant daemon (SPEC §2, §8, §9). This is its first part: the
//! state (`spawn-store`), `spawnd init` and the first admin key, API-key authentication,
//! RBAC on every request, request ids, errors in SPEC §8's shape, health, and the Agents
//! API; runs, keys and RBAC over the API, TLS, metrics, and the OpenAPI 3.1 document
//! generated from the handlers (`GET /v1/openapi.json`; see README).
#![forbid(unsafe_code)]

mod abuse;
mod api;
pub mod audit_api;
mod audit_writer;
pub mod config;
mod jwt;
pub mod listen;
mod metrics;
mod openapi;
mod policy;
mod rbac_api;
mod remembered;
pub mod runs;
mod secrets_api;
mod sessions;
mod views;

use std::path::Path;
use std::sync::Arc;

use spawn_auth::rbac::{self, BuiltinRole, SubjectKind};
use spawn_auth::{ApiKey, KeyEnv};
use spawn_store::{NewKey, Store};
use thiserror::Error;

pub use api::{router, AppState};
pub use config::Config;

/// Why `spawnd` could not start or initialize.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{what} is not valid: {reason}")]
    Config { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] spawn_store::StoreError),
    #[error(transparent)]
    Auth(#[from] spawn_auth::AuthError),
    #[error(transparent)]
    Audit(#[from] spawn_audit::AuditError),
    #[error("spawn's state is already initialized (an admin binding exists): {0}")]
    AlreadyInitialized(String),
    #[error("could not {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The name of the first administrator (a ServiceAccount bound to `admin` everywhere).
pub const FIRST_ADMIN: &str = "admin";
/// The binding that makes it one.
const FIRST_ADMIN_BINDING: &str = "spawn-admin";

/// `spawnd init`: creates the state (schema, the built-in roles) and the first admin's API
/// key, which is returned to be shown once. Refuses to run twice.
pub async fn init(config: &Config) -> Result<ApiKey, ServerError> {
    let home = config.home();
    create_home(&home)?;
    let store = Store::open(&config.database_url()).await?;
    if let Ok(b) = store
        .binding(rbac::ALL_NAMESPACES, FIRST_ADMIN_BINDING)
        .await
    {
        return Err(ServerError::AlreadyInitialized(format!(
            "binding {}/{} of {}; create more keys with `spawn keys create`",
            b.namespace, b.name, b.role
        )));
    }
    // The secrets' master key (the local provider's file, owner-only), made now so that
    // its backup can be taken before the first secret is set.
    spawn_secrets::master::from_env(&config.secrets_master_key()).map_err(|e| {
        ServerError::Config {
            what: "the secrets' master key".into(),
            reason: e.to_string(),
        }
    })?;
    for role in BuiltinRole::ALL {
        let rules = rules_json(&role.rules());
        if store.role(rbac::ALL_NAMESPACES, role.name()).await.is_err() {
            store
                .put_role(rbac::ALL_NAMESPACES, role.name(), &rules, true, None)
                .await?;
        }
    }
    let subject = (
        SubjectKind::ServiceAccount.as_str().to_owned(),
        FIRST_ADMIN.to_owned(),
    );
    let subjects_json = serde_json::json!([{"kind": subject.0, "name": subject.1}]).to_string();
    store
        .put_binding(
            rbac::ALL_NAMESPACES,
            FIRST_ADMIN_BINDING,
            BuiltinRole::Admin.name(),
            &subjects_json,
            &[subject],
            None,
        )
        .await?;
    let key = ApiKey::generate(KeyEnv::Live)?;
    store
        .insert_key(&NewKey {
            hash: key.hash().0,
            hint: key.hint(),
            test: false,
            principal_kind: SubjectKind::ServiceAccount.as_str().into(),
            principal_name: FIRST_ADMIN.into(),
            created_by: "spawnd init".into(),
            namespace: rbac::ALL_NAMESPACES.into(),
        })
        .await?;
    store.close().await;
    Ok(key)
}

/// Rules as stored and returned: `[{"resources": [...], "verbs": [...]}]`.
pub fn rules_json(rules: &[rbac::Rule]) -> String {
    serde_json::Value::Array(
        rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "resources": r.resources.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
                    "verbs": r.verbs.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
    .to_string()
}

fn create_home(home: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| ServerError::Io {
            what: format!("create {}", home.display()),
            source: e,
        })
}

/// One daemon per SQLite store: the lock file `<database>.lock`, held while the daemon
/// serves (`None` for PostgreSQL, which several daemons share). The daemon is then the only
/// writer of keys, roles, bindings and agents, which lets it remember them.
pub fn lock_sqlite_store(store: &Store, url: &str) -> Result<Option<std::fs::File>, ServerError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if store.backend() != spawn_store::Backend::Sqlite {
        return Ok(None);
    }
    let path = format!("{}.lock", url.strip_prefix("sqlite://").unwrap_or(url));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| ServerError::Io {
            what: format!("open {path}"),
            source: e,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::Config {
            what: "database".into(),
            reason: format!(
                "another spawnd serves this SQLite store ({path} is locked); daemons share \
                 state through PostgreSQL (database.url: postgres://…)"
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(ServerError::Io {
            what: format!("lock {path}"),
            source: e,
        }),
    }
}

/// Serves the API on `listener` (`ready` called once it is set up) until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    config: &Config,
    listener: tokio::net::TcpListener,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let home = config.home();
    create_home(&home)?;
    let store = Store::open(&config.database_url()).await?;
    let audit = spawn_audit::AuditLog::open(&home.join("audit"))?;
    let lock = lock_sqlite_store(&store, &config.database_url())?;
    // The secrets' master key is read (or made) now: a key that cannot be used stops the
    // daemon before it serves.
    let master = spawn_secrets::master::from_env(&config.secrets_master_key()).map_err(|e| {
        ServerError::Config {
            what: "the secrets' master key".into(),
            reason: e.to_string(),
        }
    })?;
    let mut app = AppState::new(store.clone(), audit, config.limits.clone())?
        .with_secrets(spawn_secrets::Secrets::with_master(store.clone(), master));
    if let Some(jwt) = &config.auth.jwt {
        app = app.accepting_jwts(jwt)?;
    }
    if lock.is_some() {
        app = app.remembering_config();
    }
    // The audit log's checkpoints: the key is read (or made) now, so that a bad key stops
    // the daemon before it serves.
    let signing_key = Arc::new(
        spawn_audit::checkpoint::load_or_create_key(&config.audit_signing_key()).map_err(|e| {
            ServerError::Config {
                what: "audit.signingKey".into(),
                reason: e.to_string(),
            }
        })?,
    );
    // The audit sinks: a forwarder each, reading the log on its own; nothing here waits on
    // them. A sink that cannot be made (a header's variable unset, a CA unusable) stops
    // the daemon before it serves.
    let sink_error = |e: spawn_sinks::SinkError| ServerError::Config {
        what: "audit.sinks".into(),
        reason: e.to_string(),
    };
    let plans = config.sink_plans().map_err(sink_error)?;
    let forwarders = if plans.is_empty() {
        None
    } else {
        let f = spawn_sinks::Forwarders::start(
            &config.audit_dir(),
            plans,
            spawn_sinks::Timing::default(),
        )
        .map_err(sink_error)?;
        app = app.with_sinks(f.monitor());
        Some(f)
    };
    let state = Arc::new(app);
    let exe = std::env::current_exe().map_err(|e| ServerError::Io {
        what: "find spawnd".into(),
        source: e,
    })?;
    let (stop_scheduling, stop) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(runs::schedule(
        state.clone(),
        runs::holder_id(),
        runs::SupervisorCommand {
            exe,
            config: config.config_path.clone(),
            running: state.supervisors.clone(),
            ended: state.runs_queued.clone(),
        },
        stop,
    ));
    let tls = config.tls.as_ref().map(listen::tls_acceptor).transpose()?;
    let log_path = home.join("audit").join(spawn_audit::LOG_FILE_NAME);
    // The database's copy of the log (`/v1/audit/…`), brought up to date every moment and
    // before every answer of the audit API.
    let copy = Arc::new(
        audit_api::AuditCopy::new(
            &store,
            signing_key.name(),
            &log_path,
            signing_key.verifier(),
        )
        .await?,
    );
    state.set_audit_copy(copy.clone());
    let (stop_copying, copying_stop) = tokio::sync::watch::channel(false);
    let copying = tokio::spawn(keep_copying(
        copy.clone(),
        store.clone(),
        copying_stop,
        config
            .audit
            .retention_days
            .map(|days| (signing_key.clone(), days)),
    ));
    let (stop_checkpoints, mut checkpoints_stop) = tokio::sync::watch::channel(false);
    let checkpoints = {
        let (key, log_path) = (signing_key.clone(), log_path.clone());
        let every = std::time::Duration::from_secs(config.audit.checkpoint_interval_seconds);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = checkpoints_stop.changed() => break,
                }
                checkpoint(&log_path, &key).await;
            }
        })
    };
    let (stop_rotation, mut rotation_stop) = tokio::sync::watch::channel(false);
    let rotation = {
        let (state, period) = (state.clone(), config.secrets.rotation_period());
        let every = std::time::Duration::from_secs(config.secrets.rotation_check_seconds);
        tokio::spawn(async move {
            loop {
                rotate_due_keys(&state, period).await;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = rotation_stop.changed() => break,
                }
            }
        })
    };
    let app = router(state);
    ready();
    listen::serve(listener, app, tls, &config.limits, shutdown).await?;
    let _ = stop_checkpoints.send(true);
    let _ = checkpoints.await;
    let _ = stop_rotation.send(true);
    let _ = rotation.await;
    // The supervisors go on: only this daemon's scheduling stops, after the round it is
    // in (a run it claimed gets its supervisor).
    let _ = stop_scheduling.send(true);
    if let Err(e) = scheduler.await {
        tracing::error!(error = %e, "the scheduler");
    }
    // A last checkpoint of everything this daemon wrote, the database's copy brought up to
    // date, then what the sinks still lack (that checkpoint included) if they take it now,
    // for at most SINK_DRAIN.
    checkpoint(&log_path, &signing_key).await;
    let _ = stop_copying.send(true);
    let _ = copying.await;
    if let Err(e) = copy.catch_up(&store).await {
        tracing::error!(error = %e, "the audit log's copy in the database");
    }
    if let Some(f) = forwarders {
        f.shutdown(SINK_DRAIN).await;
    }
    store.close().await;
    Ok(())
}

/// Rotates each namespace's data key that is `period` old: its values resealed under a
/// new one, the completion (or the failure) an `agent.secret.access` event
/// `rotate-data-key` of the daemon's.
async fn rotate_due_keys(state: &AppState, period: std::time::Duration) {
    let Some(secrets) = state.secrets() else {
        return;
    };
    let due = match secrets.data_keys_due(spawn_store::now_ms(), period).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "secrets: the data keys due for rotation");
            return;
        }
    };
    for key in due {
        let done = secrets.rotate_data_key(&key.namespace).await;
        let mut event = spawn_audit::Event::new(
            spawn_audit::EventType::AgentSecretAccess,
            spawn_audit::Principal {
                kind: "System".into(),
                id: "spawnd".into(),
                name: Some("data-key rotation".into()),
            },
            spawn_audit::Resource {
                kind: "secret".into(),
                name: "*".into(),
            },
            "rotate-data-key",
            if done.is_ok() {
                spawn_audit::Outcome::Success
            } else {
                spawn_audit::Outcome::Error
            },
        )
        .with_detail("namespace", key.namespace.clone())
        .with_detail("previousKeyVersion", key.version)
        .with_detail("previousKeyCreatedMs", key.created_ms);
        match &done {
            Ok((version, resealed)) => {
                tracing::info!(namespace = %key.namespace, version, resealed, "secrets: data key rotated");
                event = event
                    .with_detail("keyVersion", *version)
                    .with_detail("resealed", *resealed);
            }
            Err(e) => {
                tracing::error!(namespace = %key.namespace, error = %e, "secrets: data-key rotation");
                event = event.with_detail("error", e.to_string());
            }
        }
        state.audit(event).await;
    }
}

/// How often the database's copy of the audit log is brought up to date.
const COPY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Brings the database's copy of the audit log up to date every [`COPY_EVERY`] until `stop`;
/// an error is logged once until it changes (the copy stops at a record that does not
/// continue the stored chain: `spawn audit verify` tells which).
///
/// With a retention period (`retention`: the key that signs cuts, and days), records and
/// runs older than it are deleted at start and every [`RETAIN_EVERY`].
async fn keep_copying(
    copy: Arc<audit_api::AuditCopy>,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
    retention: Option<(Arc<spawn_audit::checkpoint::SigningKey>, u32)>,
) {
    let mut last_error = String::new();
    let mut next_retention = std::time::Instant::now();
    loop {
        if let Some((key, days)) = &retention {
            if std::time::Instant::now() >= next_retention {
                retain(&copy, &store, key, *days).await;
                next_retention = std::time::Instant::now() + RETAIN_EVERY;
            }
        }
        match copy.catch_up(&store).await {
            Ok(_) => last_error.clear(),
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::error!(error = %text, "the audit log's copy in the database");
                    last_error = text;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(COPY_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
}

/// How often retention runs (when a period is configured).
const RETAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes the audit records and runs older than `days` days; logs what it did.
async fn retain(
    copy: &audit_api::AuditCopy,
    store: &Store,
    key: &spawn_audit::checkpoint::SigningKey,
    days: u32,
) {
    let period = std::time::Duration::from_secs(u64::from(days) * 86_400);
    let before = spawn_audit::rfc3339_ago(period);
    use spawn_audit::cut::FileCut;
    match copy.retain(store, key, &before).await {
        Ok(done) => {
            match done.stored {
                spawn_store::Retained::Nothing => {}
                spawn_store::Retained::Cut { seq, deleted } => {
                    tracing::info!(
                        seq,
                        deleted,
                        "audit retention: records cut under a signed cut"
                    );
                }
                spawn_store::Retained::Broken(b) => tracing::error!(
                    seq = b.seq,
                    reason = %b.reason,
                    "audit retention: the stored log does not verify, nothing was cut"
                ),
            }
            match done.file {
                None | Some(Ok(FileCut::Already | FileCut::NotYet)) => {}
                Some(Ok(FileCut::Cut { seq, bytes })) => tracing::info!(
                    seq,
                    bytes,
                    "audit retention: the log file cut (its records up to seq are a hole)"
                ),
                Some(Ok(FileCut::Busy)) => tracing::warn!(
                    "audit retention: readers held the log file, its cut waits for the next pass"
                ),
                Some(Err(e)) => tracing::error!(error = %e, "audit retention: the log file"),
            }
        }
        Err(e) => tracing::error!(error = %e, "audit retention"),
    }
    let before_ms =
        spawn_store::now_ms().saturating_sub(i64::try_from(period.as_millis()).unwrap_or(i64::MAX));
    match store.delete_runs_ended_before(before_ms).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "retention: runs ended before the period deleted"),
        Err(e) => tracing::error!(error = %e, "retention of runs"),
    }
}

/// How long a stopping daemon lets the audit sinks take what they lack; a sink down then
/// resumes from its cursor at the next start.
const SINK_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Signs a checkpoint of the audit log if it grew (off the async threads: it reads the log);
/// what happened is logged, never an error of the daemon.
async fn checkpoint(log_path: &Path, key: &Arc<spawn_audit::checkpoint::SigningKey>) {
    use spawn_audit::checkpoint::{sign_log, Signed};
    let (path, key) = (log_path.to_owned(), key.clone());
    match tokio::task::spawn_blocking(move || sign_log(&path, &key)).await {
        Ok(Ok(Signed::Kept { size, path, .. })) => {
            tracing::info!(records = size, note = %path.display(), "audit checkpoint signed");
        }
        Ok(Ok(Signed::Unchanged { .. })) => {}
        Ok(Ok(Signed::Broken(b))) => tracing::error!(
            seq = b.seq,
            reason = %b.reason,
            "the audit log's chain is broken: no checkpoint signed"
        ),
        Ok(Err(e)) if matches!(&e, spawn_audit::AuditError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound) =>
            {}
        Ok(Err(e)) => tracing::error!(error = %e, "audit checkpoint"),
        Err(e) => tracing::error!(error = %e, "audit checkpoint"),
    }
}
