//! Local mode's run records: a local `spawn run` is recorded, once it has ended, in the
//! same store `spawnd` uses (the SQLite database `spawn.db` in `$SPAWN_HOME`), in the
//! namespace [`NAMESPACE`]; `spawn runs list|get` without `--server` read them.
//!
//! The record is written once, after the run ([`Recorder`]). The native runtime must start
//! from a single-threaded process, and SQLite's driver runs a thread per connection, so the
//! store is opened only once the sandbox exists, on a thread of its own while the run goes
//! on (nothing is added to the start-up path, and little to the end: one insert). A run
//! killed outright (SIGKILL of `spawn`) therefore leaves no record. Only what ran is stored
//! (name, runtime, command, timeout, verdict, times): never the environment, the secrets or
//! the output.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use spawn_run::Finished;
use spawn_sandbox::{ExecFailure, KillReason};
use spawn_store::{EndedRun, RunRecord, RunState, Store};

/// The namespace of local runs.
pub(crate) const NAMESPACE: &str = "local";

/// How many runs `spawn runs list` shows locally (the newest).
const LIST_LIMIT: i64 = 100;

/// A current-thread runtime for store calls.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the store's runtime")
}

/// One store call on a runtime of its own.
pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    runtime()?.block_on(f)
}

/// As [`block_on`], for the recorder's writer: the runtime is never dropped. Dropping it
/// would drop the pool's task returning the connection, and with it the connection:
/// SQLite's close checkpoints the WAL into the database and deletes it (two fsyncs, an
/// unlink) on the way out of every run.
fn block_on_kept<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = runtime()?;
    let out = rt.block_on(f);
    std::mem::forget(rt);
    out
}

/// Who runs this process: `User/NAME`, or `User/UID` without a name.
pub(crate) fn local_user() -> String {
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
                (Some(KillReason::Limit), _) => Some(
                    finished
                        .stopped
                        .clone()
                        .unwrap_or_else(|| "the run reached a limit of its own".into()),
                ),
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

/// Writes a local run's record into the store under `home`: opened while the run goes on
/// when [`Recorder::opener`] was called (the sandbox exists), else at the end. The record
/// goes to the store as soon as the run has ended ([`Recorder::ender`]), while the run's
/// last audit events are made durable.
pub(crate) struct Recorder {
    home: PathBuf,
    state: Arc<Mutex<Recording>>,
}

#[derive(Default)]
struct Recording {
    /// Where the record goes to the writer thread, once the writer was started.
    tx: Option<tokio::sync::oneshot::Sender<EndedRun>>,
    writer: Option<JoinHandle<anyhow::Result<()>>>,
    /// The record, made at the run's end, when no writer took it.
    unsent: Option<EndedRun>,
    /// The record was made (sent to the writer, or kept in `unsent`).
    made: bool,
}

impl Recorder {
    pub(crate) fn new(home: &Path) -> Recorder {
        Recorder {
            home: home.to_owned(),
            state: Arc::default(),
        }
    }

    /// What to call once the sandbox exists (`spawn_run::Run::on_started`): starts the
    /// writer, a thread that opens the store and waits for the record.
    pub(crate) fn opener(&mut self) -> impl FnOnce() + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel::<EndedRun>();
        let (home, state) = (self.home.clone(), Arc::clone(&self.state));
        move || {
            let started = std::thread::Builder::new()
                .name("spawn-record".into())
                .spawn(move || {
                    block_on_kept(async move {
                        let store = Store::open_home_brief(&home).await?;
                        // No record comes when spawn ends otherwise (its error said why).
                        let Ok(run) = rx.await else { return Ok(()) };
                        write(store, &run).await
                    })
                });
            if let (Ok(handle), Ok(mut state)) = (started, state.lock()) {
                state.writer = Some(handle);
                state.tx = Some(tx);
            }
        }
    }

    /// What to call at the run's end (`spawn_run::Run::on_ended`) for a run created at
    /// `created_ms`: the record goes to the writer, which writes it while the run's audit
    /// trail is made durable.
    pub(crate) fn ender(&self, created_ms: i64) -> impl FnOnce(&Finished) + Send + 'static {
        let state = Arc::clone(&self.state);
        move |finished| {
            let run = ended(finished, created_ms);
            let Ok(mut state) = state.lock() else { return };
            state.made = true;
            let unsent = match state.tx.take() {
                Some(tx) => tx.send(run).err(),
                None => Some(run),
            };
            state.unsent = unsent;
        }
    }

    /// Waits for the record of `finished` (created at `created_ms`) to be written, or
    /// writes it; a store that cannot be written is a warning on stderr, never a change of
    /// the run's outcome.
    pub(crate) fn record(self, finished: &Finished, created_ms: i64) {
        let state = self
            .state
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let Recording {
            tx,
            writer,
            unsent,
            made,
        } = state;
        let mut unsent = unsent.or_else(|| (!made).then(|| ended(finished, created_ms)));
        if let (Some(tx), Some(run)) = (tx, unsent.take()) {
            unsent = tx.send(run).err();
        }
        // A writer that got no record ends by itself once its sender is gone (above); one
        // that ended without waiting could not open the store (its error is the result).
        let result = writer
            .map_or(Ok(()), |w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the store's thread panicked")))
            })
            .and_then(|()| match unsent {
                Some(run) => block_on(write_to(&self.home, run)),
                None => Ok(()),
            });
        if let Err(e) = result {
            eprintln!("spawn: could not record the run: {e:#}");
        }
    }
}

async fn write_to(home: &Path, run: EndedRun) -> anyhow::Result<()> {
    write(Store::open_home_brief(home).await?, &run).await
}

async fn write(store: Store, run: &EndedRun) -> anyhow::Result<()> {
    store.record_ended_run(run).await?;
    // The record is written; a WAL left to a later process is no failure of it.
    let _ = store.settle_brief().await;
    // Not closed, not even dropped (the process exits next; the writer's runtime is kept
    // too, see `block_on_kept`): closing the last connection checkpoints the whole WAL
    // into the database, with its fsyncs, on the way out of every run. The commit is in
    // the WAL already; `settle_brief` checkpoints it once the WAL has grown past its
    // limit, or the next closer does.
    std::mem::forget(store);
    Ok(())
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
