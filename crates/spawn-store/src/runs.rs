//! Runs: queued by the API, claimed by exactly one daemon under a lease, finished by it;
//! their output stored as numbered chunks any daemon can read.

use crate::{new_id, now_ms, on_pool, Backend, Page, Pool, Store, StoreError};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for a daemon to claim it.
    Queued,
    /// Claimed and started by its holder.
    Running,
    /// Ended with exit code 0.
    Succeeded,
    /// Ended otherwise (a non-zero code, a signal, a failure to start).
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
    /// Its holder stopped renewing its lease: what became of it is unknown, and it is
    /// never started again.
    Interrupted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "interrupted" => RunState::Interrupted,
            _ => return None,
        })
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// A run to queue.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub namespace: String,
    pub agent_id: Option<String>,
    /// The run's resolved specification, JSON.
    pub spec: String,
    pub created_by: String,
    pub request_id: Option<String>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunRecord {
    pub id: String,
    pub namespace: String,
    pub agent_id: Option<String>,
    pub spec: String,
    pub state: String,
    pub holder: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub cancel_requested: bool,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_by: String,
    pub request_id: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl RunRecord {
    /// The run's state (a state this version does not know reads as an error).
    pub fn state(&self) -> Result<RunState, StoreError> {
        RunState::parse(&self.state).ok_or_else(|| StoreError::Corrupt {
            what: "run state",
            reason: format!("{:?}", self.state),
        })
    }
}

/// One stored piece of a run's output.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutputChunk {
    /// 1, 2, … in the order written (the SSE event id).
    pub seq: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub data: Vec<u8>,
    pub at_ms: i64,
}

const RUN_COLUMNS: &str = "id, namespace, agent_id, spec, state, holder, lease_until_ms, \
                           cancel_requested, exit_code, error, created_by, request_id, \
                           created_ms, started_ms, finished_ms";

/// The PostgreSQL advisory lock key capped claims take turns on (an arbitrary constant:
/// "spawnclm" in ASCII).
pub const CLAIM_LOCK: i64 = 0x7370_6177_6e63_6c6d;

impl Store {
    /// Queues a run; returns it with its id (`tr_…`).
    pub async fn create_run(&self, run: &NewRun) -> Result<RunRecord, StoreError> {
        self.create_run_as(&new_id("tr")?, run).await
    }

    /// Queues a run with the id `id` (`tr_…`), made by the caller beforehand (to record it,
    /// say, before the run exists).
    pub async fn create_run_as(&self, id: &str, run: &NewRun) -> Result<RunRecord, StoreError> {
        let sql = format!(
            "INSERT INTO runs (id, namespace, agent_id, spec, state, created_by, request_id, \
             created_ms) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7) RETURNING {RUN_COLUMNS}"
        );
        on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
            .bind(id)
            .bind(&run.namespace)
            .bind(&run.agent_id)
            .bind(&run.spec)
            .bind(&run.created_by)
            .bind(&run.request_id)
            .bind(now_ms())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("queue a run"))
    }

    /// The run `id`.
    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
            .bind(id).fetch_optional(p).await)
        .map_err(StoreError::db("read a run"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "run",
            name: id.to_owned(),
        })
    }

    /// Runs of `namespace`, newest first, `limit` after the id `after` (from a previous
    /// page); of one agent if given.
    pub async fn list_runs(
        &self,
        namespace: &str,
        agent_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Page<RunRecord>, StoreError> {
        // Keyset pagination on (created_ms, id), newest first: the page after `after` is
        // the runs strictly older than it.
        let (after_ms, after_id) = match after {
            Some(id) => {
                let r = self.run(id).await?;
                (r.created_ms, r.id)
            }
            None => (i64::MAX, String::new()),
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE namespace = $1 \
             AND ($2 = '' OR agent_id = $2) \
             AND (created_ms < $3 OR (created_ms = $3 AND id < $4)) \
             ORDER BY created_ms DESC, id DESC LIMIT $5"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
            .bind(namespace)
            .bind(agent_id.unwrap_or(""))
            .bind(after_ms)
            .bind(&after_id)
            .bind(limit.saturating_add(1))
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("list runs"))?;
        Ok(Page::of(rows, limit, |r| r.id.clone()))
    }

    /// Claims up to `limit` queued runs, oldest first, for the daemon `holder` with a lease
    /// until `lease_until_ms`; each is `running` from now on and claimed by no one else.
    pub async fn claim_runs(
        &self,
        holder: &str,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.claim_runs_capped(holder, lease_until_ms, limit, i64::MAX)
            .await
    }

    /// As [`Store::claim_runs`], skipping the runs of namespaces that have `per_namespace`
    /// runs running already. Claimed one at a time (each claim counts the ones before).
    /// On PostgreSQL each capped claim holds a transaction-level advisory lock
    /// ([`CLAIM_LOCK`]) while it counts and claims, so daemons claiming at the same moment
    /// take turns and the cap holds across them exactly.
    pub async fn claim_runs_capped(
        &self,
        holder: &str,
        lease_until_ms: i64,
        limit: i64,
        per_namespace: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // PostgreSQL: rows another daemon is claiming are skipped, not waited for. SQLite
        // runs one write at a time, so the statement alone is enough.
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The pick is a CTE, evaluated once: as an `IN (subquery)`, PostgreSQL may run the
        // subquery again per row and claim more than `limit`.
        let sql = format!(
            "WITH picked AS (SELECT id AS pick FROM runs r WHERE state = 'queued' \
                             AND (SELECT COUNT(*) FROM runs x WHERE x.namespace = r.namespace \
                                  AND x.state = 'running') < $5 \
                             ORDER BY created_ms, id LIMIT $4 {lock}) \
             UPDATE runs SET state = 'running', holder = $1, lease_until_ms = $2, \
             started_ms = $3 FROM picked \
             WHERE runs.id = picked.pick AND runs.state = 'queued' RETURNING {RUN_COLUMNS}"
        );
        let capped = per_namespace < i64::MAX;
        let (batch, rounds) = if capped {
            (1, limit.max(0))
        } else {
            (limit, 1)
        };
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let got = match &self.pool {
                Pool::Postgres(p) if capped => {
                    // Read committed: the claim, a statement after the lock is held, counts
                    // every claim committed before it by any daemon.
                    let mut tx = p.begin().await.map_err(StoreError::db("claim runs"))?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(CLAIM_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db("claim runs"))?;
                    let got = sqlx::query_as::<_, RunRecord>(&sql)
                        .bind(holder)
                        .bind(lease_until_ms)
                        .bind(now_ms())
                        .bind(batch)
                        .bind(per_namespace)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::db("claim runs"))?;
                    tx.commit().await.map_err(StoreError::db("claim runs"))?;
                    got
                }
                _ => on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
                    .bind(holder)
                    .bind(lease_until_ms)
                    .bind(now_ms())
                    .bind(batch)
                    .bind(per_namespace)
                    .fetch_all(p)
                    .await)
                .map_err(StoreError::db("claim runs"))?,
            };
            let done = got.is_empty();
            runs.extend(got);
            if done {
                break;
            }
        }
        runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(runs)
    }

    /// Extends the lease of every run `holder` still holds; returns how many.
    pub async fn renew_leases(&self, holder: &str, lease_until_ms: i64) -> Result<u64, StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE runs SET lease_until_ms = $2 WHERE holder = $1 AND state = 'running'")
            .bind(holder)
            .bind(lease_until_ms)
            .execute(p)
            .await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("renew leases"))
    }

    /// Extends the lease of run `id` if `holder` still holds it; `false`: it does not (the
    /// run was interrupted meanwhile, or ended).
    pub async fn renew_lease(
        &self,
        id: &str,
        holder: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE runs SET lease_until_ms = $3 \
             WHERE id = $1 AND holder = $2 AND state = 'running'")
            .bind(id)
            .bind(holder)
            .bind(lease_until_ms)
            .execute(p)
            .await.map(|r| r.rows_affected()))
        .map(|n| n == 1)
        .map_err(StoreError::db("renew a lease"))
    }

    /// How many runs are in each state (states without runs are absent).
    pub async fn count_runs_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self, p => sqlx::query_as::<_, (String, i64)>(
            "SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state")
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("count runs"))
    }

    /// Marks `interrupted` every running run whose lease ended before `now_ms`; returns
    /// their ids.
    pub async fn interrupt_expired(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "UPDATE runs SET state = 'interrupted', finished_ms = $1, \
             error = 'the daemon running it stopped renewing its lease' \
             WHERE state = 'running' AND lease_until_ms < $1 RETURNING id")
            .bind(now_ms)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("interrupt runs"))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records the end of run `id`, held by `holder`: `Succeeded`, `Failed` or
    /// `Cancelled`, with its exit code or error. A run no longer held by `holder` (its lease
    /// ran out and it was interrupted) is [`StoreError::LeaseLost`] and stays as it is.
    pub async fn finish_run(
        &self,
        id: &str,
        holder: &str,
        state: RunState,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<RunRecord, StoreError> {
        if !state.is_final() || state == RunState::Interrupted {
            return Err(StoreError::Corrupt {
                what: "run end",
                reason: format!("{} is not how a run ends", state.as_str()),
            });
        }
        let sql = format!(
            "UPDATE runs SET state = $3, exit_code = $4, error = $5, finished_ms = $6, \
             lease_until_ms = NULL WHERE id = $1 AND holder = $2 AND state = 'running' \
             RETURNING {RUN_COLUMNS}"
        );
        on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
            .bind(id)
            .bind(holder)
            .bind(state.as_str())
            .bind(exit_code)
            .bind(error)
            .bind(now_ms())
            .fetch_optional(p)
            .await)
        .map_err(StoreError::db("finish a run"))?
        .ok_or_else(|| StoreError::LeaseLost(id.to_owned()))
    }

    /// Cancels run `id`: a queued run is `cancelled` at once; a running one is asked to
    /// stop (its holder sees `cancel_requested`); a finished one is left as it is.
    pub async fn cancel_run(&self, id: &str) -> Result<RunRecord, StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE runs SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
             finished_ms = CASE WHEN state = 'queued' THEN $2 ELSE finished_ms END, \
             cancel_requested = TRUE \
             WHERE id = $1 AND state IN ('queued', 'running')")
            .bind(id)
            .bind(now_ms())
            .execute(p)
            .await.map(|r| r.rows_affected()))
        .map_err(StoreError::db("cancel a run"))?;
        self.run(id).await
    }

    /// Cancels every queued or running run of agent `agent_id` in `namespace`, as
    /// [`Store::cancel_run`] does one; returns the runs it asked to stop, oldest first.
    pub async fn cancel_agent_runs(
        &self,
        namespace: &str,
        agent_id: &str,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "UPDATE runs SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
             finished_ms = CASE WHEN state = 'queued' THEN $3 ELSE finished_ms END, \
             cancel_requested = TRUE \
             WHERE namespace = $1 AND agent_id = $2 AND state IN ('queued', 'running') \
             RETURNING {RUN_COLUMNS}"
        );
        let mut rows = on_pool!(self, p => sqlx::query_as::<_, RunRecord>(&sql)
            .bind(namespace)
            .bind(agent_id)
            .bind(now_ms())
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("cancel an agent's runs"))?;
        rows.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(rows)
    }

    /// Appends `data` to run `id`'s `stream`; returns its sequence number. Only the run's
    /// holder writes a run's output, so numbers follow one another without gaps.
    pub async fn append_output(
        &self,
        id: &str,
        stream: &str,
        data: &[u8],
    ) -> Result<i64, StoreError> {
        let row: (i64,) = on_pool!(self, p => sqlx::query_as(
            "INSERT INTO run_output (run_id, seq, stream, data, at_ms) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM run_output WHERE run_id = $1), \
             $2, $3, $4) RETURNING seq")
            .bind(id)
            .bind(stream)
            .bind(data)
            .bind(now_ms())
            .fetch_one(p)
            .await)
        .map_err(StoreError::db("store a run's output"))?;
        Ok(row.0)
    }

    /// Run `id`'s output after sequence number `after` (0: from the start), at most
    /// `limit` chunks, in order.
    pub async fn output(
        &self,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        on_pool!(self, p => sqlx::query_as::<_, OutputChunk>(
            "SELECT seq, stream, data, at_ms FROM run_output \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(id)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await)
        .map_err(StoreError::db("read a run's output"))
    }
}

/// A run that ran elsewhere than under a daemon (a local `spawn run`), recorded once it
/// ended: it is never queued, claimed or held.
#[derive(Debug, Clone)]
pub struct EndedRun {
    /// The run's id (`tr_…`), assigned by whoever ran it.
    pub id: String,
    pub namespace: String,
    pub agent_id: Option<String>,
    /// What ran, JSON (no environment values, no secrets: the caller's choice of fields).
    pub spec: String,
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
}

impl Store {
    /// Retention of traces: deletes the runs that ended before `before_ms` (ms since the
    /// epoch), with their output; runs not ended are kept whatever their age. Returns how
    /// many runs went.
    pub async fn delete_runs_ended_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < $1";
        on_pool!(self, p => sqlx::query(sql).bind(before_ms).execute(p).await.map(|r| r.rows_affected()))
            .map_err(StoreError::db("delete old runs"))
    }
}

impl Store {
    /// Records `run`, which ended already, in one statement, committed as it completes (no
    /// `RETURNING`: SQLite commits such a statement outside a transaction only when it is
    /// reset, and a transaction of its own would cost two more round trips to the
    /// connection's thread on the way out of every local run; read it back with
    /// [`Store::run`]).
    pub async fn record_ended_run(&self, run: &EndedRun) -> Result<(), StoreError> {
        if !run.state.is_final() || run.state == RunState::Interrupted {
            return Err(StoreError::Corrupt {
                what: "run end",
                reason: format!("{} is not how a run ends", run.state.as_str()),
            });
        }
        let sql = "INSERT INTO runs (id, namespace, agent_id, spec, state, exit_code, error, \
             created_by, created_ms, started_ms, finished_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        on_pool!(self, p => sqlx::query(sql)
            .bind(&run.id)
            .bind(&run.namespace)
            .bind(&run.agent_id)
            .bind(&run.spec)
            .bind(run.state.as_str())
            .bind(run.exit_code)
            .bind(&run.error)
            .bind(&run.created_by)
            .bind(run.created_ms)
            .bind(run.started_ms)
            .bind(run.finished_ms)
            .execute(p)
            .await
            .map(drop))
        .map_err(StoreError::db("record a run"))
    }
}
