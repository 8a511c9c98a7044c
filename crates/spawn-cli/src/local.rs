//! Local mode's run records: a local `spawn run` is recorded, once it has ended, in the
//! same store `spawnd` uses (the SQLite database `spawn.db` in `$SPAWN_HOME`), in the
//! namespace [`NAMESPACE`]; `spawn runs list|get` without `--server` read them.
//!
//! The record is written once, after the run: the native runtime must start from a
//! single-threaded process, and SQLite's driver runs a thread per connection, so the store
//! is opened only when the sandbox is gone (and nothing is added to the start-up path).
//! A run killed outright (SIGKILL of `spawn`) therefore leaves no record. Only what ran is
//! stored (name, runtime, command, timeout, verdict, times): never the environment, the
//! secrets or the output.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use spawn_run::Finished;
use spawn_sandbox::{ExecFailure, KillReason};
use spawn_store::{EndedRun, RunRecord, RunState, Store};

/// The namespace of local runs.
pub(crate) const NAMESPACE: &str = "local";

/// How many runs `spawn runs list` shows locally (the newest).
const LIST_LIMIT: i64 = 100;

/// A current-thread runtime for one store call.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the store's runtime")?
        .block_on(f)
}

/// Who runs this process: `User/NAME`, or `User/UID` without a name.
fn local_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!("User/{}", u.name),
        _ => format!("User/{uid}"),
    }
}

/// The store's row for `finished`, which was created at `created_ms`.
fn ended(finished: &Finished, created_ms: i64) -> EndedRun {
    let spec = &finished.spec;
    let finished_ms = spawn_store::now_ms();
    let (state, exit_code, error, started_ms) = match &finished.result {
        Err(e) => (RunState::Failed, None, Some(e.to_string()), None),
        Ok(r) => {
            let ran_ms = i64::try_from(r.duration.as_millis()).unwrap_or(i64::MAX);
            let started = Some(finished_ms.saturating_sub(ran_ms).max(created_ms));
            let error = match (r.kill_reason, r.exec_failure) {
                (Some(KillReason::Timeout), _) => Some("the run exceeded its timeout".into()),
                (Some(KillReason::OutOfMemory), _) => {
                    Some("the run exceeded its memory limit".into())
                }
                (_, Some(ExecFailure::NotFound)) => {
                    Some("the command was not found in the sandbox".into())
                }
                (_, Some(ExecFailure::NotExecutable(errno))) => Some(format!(
                    "the command cannot be executed in the sandbox ({})",
                    std::io::Error::from_raw_os_error(errno)
                )),
                _ => None,
            };
            let state = match r.kill_reason {
                Some(KillReason::Cancelled(_)) => RunState::Cancelled,
                _ if r.exit_code == 0 => RunState::Succeeded,
                _ => RunState::Failed,
            };
            (state, Some(r.exit_code), error, started)
        }
    };
    // What ran, without the environment (values may be secrets) or the mounts.
    let spec_json = json!({
        "name": spec.name,
        "runtime": spec.runtime.as_str(),
        "command": spec.command,
        "timeoutMs": spec.timeout.map(|t| t.as_millis()),
    });
    EndedRun {
        id: finished.run_id.clone(),
        namespace: NAMESPACE.to_owned(),
        agent_id: None,
        spec: spec_json.to_string(),
        state,
        exit_code,
        error,
        created_by: local_user(),
        created_ms,
        started_ms,
        finished_ms,
    }
}

/// Records `finished` in the store under `home`; a store that cannot be written is a
/// warning on stderr, never a change of the run's outcome.
pub(crate) fn record(home: &Path, finished: &Finished, created_ms: i64) {
    let run = ended(finished, created_ms);
    let result = block_on(async {
        let store = Store::open_home_brief(home).await?;
        store.record_ended_run(&run).await?;
        // Not closed, not even dropped (the process exits next): closing the last
        // connection checkpoints the whole WAL into the database, with its fsyncs, on
        // the way out of every run. The commit is in the WAL already; SQLite checkpoints
        // it when the WAL grows past its limit, or the next closer does.
        std::mem::forget(store);
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("spawn: could not record the run: {e:#}");
    }
}

/// A run as the API shows it (`RunView`, camelCase).
pub(crate) fn run_json(r: &RunRecord) -> Value {
    json!({
        "agentId": r.agent_id,
        "cancelRequested": r.cancel_requested,
        "createdBy": r.created_by,
        "createdMs": r.created_ms,
        "error": r.error,
        "exitCode": r.exit_code,
        "finishedMs": r.finished_ms,
        "id": r.id,
        "namespace": r.namespace,
        "requestId": r.request_id,
        "startedMs": r.started_ms,
        "state": r.state,
    })
}

/// `spawn runs …` without `--server`: the local store.
pub(crate) fn runs(home: &Path, cmd: &crate::RunsCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        crate::RunsCmd::List => {
            let page = block_on(async {
                let store = Store::open_home_brief(home).await?;
                let page = store.list_runs(NAMESPACE, None, None, LIST_LIMIT).await;
                store.close().await;
                Ok(page?)
            })?;
            let items: Vec<Value> = page.items.iter().map(run_json).collect();
            crate::remote::print_runs(&json!({"items": items, "next": page.next}), json_out);
        }
        crate::RunsCmd::Get { id } => {
            let run = block_on(async {
                let store = Store::open_home_brief(home).await?;
                let run = store.run(id).await;
                store.close().await;
                Ok(run?)
            })?;
            if run.namespace != NAMESPACE {
                bail!("run {id} is not a local run: ask its server (--server URL)");
            }
            println!("{}", run_json(&run));
        }
        crate::RunsCmd::Logs { .. } => bail!(
            "the output of local runs is not kept (it went to the terminal): \
             only runs of a server (--server URL) have logs"
        ),
        crate::RunsCmd::Cancel { .. } => bail!(
            "a local run is cancelled with Ctrl-C in its terminal (or a signal to its spawn \
             process); `runs cancel` is for runs of a server (--server URL)"
        ),
    }
    Ok(())
}
