//! `spawn secrets` in local mode: the secrets of `$SPAWN_HOME` (namespace `local`, the
//! namespace of local runs), sealed in its store under the master key file
//! `$SPAWN_HOME/keys/secrets-master.key` (made on first use, owner-only).
//!
//! Values come only from stdin or a file, never from argv (readable by every user of the
//! host); they are never printed. Every set, deletion and rotation is an
//! `agent.secret.access` event in the local audit log, written durably before the command
//! reports success; a log that cannot be opened refuses the action (no audit, no action).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;
use spawn_audit::{AuditLog, Event, EventType, Outcome, Principal, Resource};
use spawn_secrets::Secrets;
use zeroize::Zeroizing;

use crate::local::NAMESPACE;

/// The local master key file.
pub(crate) fn master_key_path(home: &Path) -> PathBuf {
    home.join("keys").join("secrets-master.key")
}

/// Whether `$SPAWN_HOME` holds a store of secrets: its master key file, or (with Vault's
/// Transit engine as the master key provider) its database.
fn has_secrets(home: &Path) -> bool {
    let transit = std::env::var("SPAWN_SECRETS_MASTER").is_ok_and(|v| v.starts_with("transit://"));
    if transit {
        home.join("spawn.db").exists()
    } else {
        master_key_path(home).exists()
    }
}

/// The secrets of `home`'s store under the provider the environment names (the local key
/// file by default; see `spawn_secrets::master::from_env`).
async fn open_secrets(home: &Path) -> anyhow::Result<Secrets> {
    let store = spawn_store::Store::open_home(home)
        .await
        .context("open the local store")?;
    let master = spawn_secrets::master::from_env(&master_key_path(home))?;
    Ok(Secrets::with_master(store, master))
}

/// No core file of this process (its children inherit the limit): it holds secrets' values.
pub(crate) fn no_core_files() -> anyhow::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .context("turn core files off (this process holds secrets)")
}

/// `spawn secrets …` (local).
pub(crate) fn run(home: &Path, cmd: &crate::SecretsCmd, json_out: bool) -> anyhow::Result<()> {
    no_core_files()?;
    // A run's resolution with no store yet (only vault:// sources can be had): no store or
    // master key is made for it.
    if matches!(cmd, crate::SecretsCmd::Resolve) && !has_secrets(home) {
        return crate::local::block_on(async {
            spawn_secrets::helper::serve(
                None,
                NAMESPACE,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
                not_set,
            )
            .await
            .map_err(Into::into)
        });
    }
    let mut log = AuditLog::open(&home.join("audit")).context(
        "open the audit log (every change of a secret is audited: without the log, nothing is done)",
    )?;
    crate::local::block_on(async {
        let secrets = open_secrets(home).await?;
        let result = act(&secrets, &mut log, cmd, json_out).await;
        secrets.store().close().await;
        result
    })
}

async fn act(
    secrets: &Secrets,
    log: &mut AuditLog,
    cmd: &crate::SecretsCmd,
    json_out: bool,
) -> anyhow::Result<()> {
    use crate::SecretsCmd;
    match cmd {
        SecretsCmd::Set {
            name,
            from_file,
            from_stdin,
        } => {
            spawn_secrets::check_name(name)?;
            let value = read_value(from_file.as_deref(), *from_stdin)?;
            let done = secrets
                .set(NAMESPACE, name, &value, &crate::local::local_user())
                .await;
            audit(log, "set", name, done.as_ref().ok().copied(), done.is_ok())?;
            let version = done?;
            if json_out {
                println!("{}", json!({"name": name, "version": version}));
            } else {
                println!("secret {name} set (version {version})");
            }
        }
        SecretsCmd::List => {
            let list = secrets.list(NAMESPACE).await?;
            if json_out {
                for e in &list {
                    println!(
                        "{}",
                        json!({"name": e.name, "version": e.version, "createdMs": e.created_ms,
                               "updatedMs": e.updated_ms, "updatedBy": e.updated_by})
                    );
                }
            } else {
                println!(
                    "{:<32} {:>7}  {:<24}  UPDATED BY",
                    "NAME", "VERSION", "UPDATED"
                );
                for e in &list {
                    println!(
                        "{:<32} {:>7}  {:<24}  {}",
                        e.name,
                        e.version,
                        rfc3339(e.updated_ms),
                        e.updated_by
                    );
                }
            }
        }
        SecretsCmd::Delete { name } => {
            spawn_secrets::check_name(name)?;
            let done = secrets.delete(NAMESPACE, name).await;
            audit(log, "delete", name, None, done.is_ok())?;
            let versions = done?;
            println!("secret {name} deleted ({versions} version(s))");
        }
        SecretsCmd::Resolve => resolve_for_run(secrets).await?,
        SecretsCmd::RotateDataKey => {
            let done = secrets.rotate_data_key(NAMESPACE).await;
            audit(
                log,
                "rotate-data-key",
                "*",
                done.as_ref().ok().map(|d| d.0),
                done.is_ok(),
            )?;
            let (version, resealed) = done?;
            println!("data key rotated: version {version}, {resealed} value(s) resealed");
        }
        SecretsCmd::RotateMaster => {
            let done = secrets.rotate_master().await;
            audit(log, "rotate-master", "*", None, done.is_ok())?;
            let r = done?;
            println!(
                "master key rotated: {} data key(s) rewrapped, {} old master key(s) retired",
                r.rewrapped, r.retired
            );
        }
    }
    Ok(())
}

/// Why a granted store secret cannot be had, with the fix.
fn not_set(name: &str) -> String {
    format!("it is not set in $SPAWN_HOME's store (spawn secrets set {name} --from-stdin)")
}

/// `spawn secrets __resolve`, for [`LocalResolver`] (see `spawn_secrets::helper`).
async fn resolve_for_run(secrets: &Secrets) -> anyhow::Result<()> {
    spawn_secrets::helper::serve(
        Some(secrets),
        NAMESPACE,
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        not_set,
    )
    .await
    .map_err(Into::into)
}

/// Resolves a local run's granted secrets from `$SPAWN_HOME`'s store (namespace `local`),
/// in a helper process of its own (`spawn secrets __resolve`): the store's driver runs
/// threads, and the native runtime must start from a single-threaded process. The values
/// come back through a pipe, never argv, a file or an environment.
#[derive(Debug)]
pub(crate) struct LocalResolver {
    pub(crate) home: PathBuf,
}

impl spawn_run::SecretResolver for LocalResolver {
    fn resolve(
        &mut self,
        _namespace: &str,
        grants: &[spawn_policy::SecretGrant],
    ) -> Vec<Result<spawn_run::SecretValue, String>> {
        match self.resolve_all(grants) {
            Ok(v) => v,
            Err(e) => grants.iter().map(|_| Err(format!("{e:#}"))).collect(),
        }
    }
}

impl LocalResolver {
    fn resolve_all(
        &self,
        grants: &[spawn_policy::SecretGrant],
    ) -> anyhow::Result<Vec<Result<spawn_run::SecretValue, String>>> {
        let no_store = !has_secrets(&self.home);
        let only_store = grants
            .iter()
            .all(|g| matches!(g.source, spawn_policy::SecretSource::Store(_)));
        if no_store && only_store {
            return Ok(grants
                .iter()
                .map(|g| {
                    Err(format!(
                        "no secret is set in $SPAWN_HOME ({}): spawn secrets set {} --from-stdin",
                        self.home.display(),
                        g.env
                    ))
                })
                .collect());
        }
        let exe = std::env::current_exe().context("find spawn's own executable")?;
        let mut helper = std::process::Command::new(exe);
        helper
            .args(["secrets", "__resolve"])
            .env("SPAWN_HOME", &self.home);
        let sources: Vec<String> = grants.iter().map(|g| g.source.to_string()).collect();
        let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
        Ok(spawn_secrets::helper::resolve_with(helper, &sources)?)
    }
}

/// The value from a file (its bytes exactly) or stdin (one trailing newline dropped).
pub(crate) fn read_value(file: Option<&Path>, stdin: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut value = Zeroizing::new(Vec::new());
    match (file, stdin) {
        (Some(f), false) => {
            std::fs::File::open(f)
                .and_then(|mut r| {
                    r.by_ref()
                        .take(spawn_secrets::MAX_VALUE as u64 + 1)
                        .read_to_end(&mut value)
                })
                .with_context(|| format!("read the secret's value from {}", f.display()))?;
        }
        (None, true) => {
            std::io::stdin()
                .lock()
                .take(spawn_secrets::MAX_VALUE as u64 + 2)
                .read_to_end(&mut value)
                .context("read the secret's value from stdin")?;
            // Zeroizing wipes the whole buffer, what is cut off included.
            let keep = if value.ends_with(b"\r\n") {
                value.len() - 2
            } else if value.ends_with(b"\n") {
                value.len() - 1
            } else {
                value.len()
            };
            value.truncate(keep);
        }
        _ => anyhow::bail!(
            "give the value with --from-stdin or --from-file FILE (never as an argument: every user of the host can read a command's arguments)"
        ),
    }
    Ok(value)
}

/// One `agent.secret.access` event for a change of a secret, written durably.
fn audit(
    log: &mut AuditLog,
    action: &str,
    name: &str,
    version: Option<i64>,
    ok: bool,
) -> anyhow::Result<()> {
    let user = crate::local::local_user();
    let mut event = Event::new(
        EventType::AgentSecretAccess,
        Principal {
            kind: "User".into(),
            id: format!("uid:{}", nix::unistd::getuid()),
            name: Some(user.trim_start_matches("User/").to_owned()),
        },
        Resource {
            kind: "secret".into(),
            name: name.to_owned(),
        },
        action,
        if ok { Outcome::Success } else { Outcome::Error },
    );
    event.details.insert("namespace".into(), NAMESPACE.into());
    event.details.insert("source".into(), "store".into());
    if let Some(v) = version {
        event.details.insert("version".into(), v.into());
    }
    log.append(&[event])
        .and_then(|_| log.sync())
        .context("write the audit event of the secret's change")
        .map(drop)
}

/// `ms` as an RFC 3339 time (UTC, seconds).
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The data keys of `$SPAWN_HOME`'s store due for rotation (every `days`), for `spawn
/// doctor`: `None` when there is no store or master key yet (nothing to rotate).
pub(crate) fn rotation_due(
    home: &Path,
    days: f64,
) -> anyhow::Result<Option<Vec<spawn_secrets::DueKey>>> {
    if !has_secrets(home) || !home.join("spawn.db").exists() {
        return Ok(None);
    }
    crate::local::block_on(async {
        let secrets = open_secrets(home).await?;
        let due = secrets
            .data_keys_due(
                spawn_store::now_ms(),
                std::time::Duration::from_secs_f64(days * 86_400.0),
            )
            .await;
        secrets.store().close().await;
        Ok(Some(due?))
    })
}
