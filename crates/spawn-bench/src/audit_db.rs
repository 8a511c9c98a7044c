//! The audit log in the state database at scale (issue 10): a million chained records
//! copied from a log file into SQLite by `spawn_store::Ingest` (each step one durable
//! transaction), against SQLite's own insert rate for the same rows without the chain —
//! the same columns but `hash` and `prevHash`, the same indexes, the same transactions, the
//! same driver — measured in the same run.

use std::time::Instant;

use anyhow::{Context as _, Result};
use spawn_audit::AuditLog;
use spawn_store::{Ingest, Store, StoredRecord};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::audit::{event, CHAIN_BATCH, CHAIN_EVENTS};

/// What one run of the bench measured.
pub struct Figures {
    /// Records stored per second by the chained path (parse, chain check, insert, commit).
    pub chained: f64,
    /// Rows inserted per second, the same rows without the chain.
    pub bare: f64,
    /// Records per transaction (the same for both).
    pub per_commit: usize,
}

const BARE_SCHEMA: &str = "CREATE TABLE bare (
    log TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, event_type TEXT NOT NULL,
    principal TEXT NOT NULL, outcome TEXT NOT NULL, trace_id TEXT, line TEXT NOT NULL,
    PRIMARY KEY (log, seq)) WITHOUT ROWID;
CREATE INDEX bare_type ON bare (log, event_type, seq);
CREATE INDEX bare_principal ON bare (log, principal, seq);
CREATE INDEX bare_trace ON bare (trace_id) WHERE trace_id IS NOT NULL;";

pub fn run() -> Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir().context("create a directory for the database bench")?;
        // The log file, written as spawn writes it.
        let mut log = AuditLog::open(&dir.path().join("audit"))?;
        let batch: Vec<_> = (0..CHAIN_BATCH)
            .map(|i| event(&format!("h{}.denied.test", i % 64)))
            .collect();
        for _ in 0..CHAIN_EVENTS / CHAIN_BATCH {
            log.append(&batch)?;
        }
        log.sync()?;

        // Chained: the store's ingest, durable commits (synchronous=FULL, WAL).
        let store = Store::open(&dir.path().join("spawn.db").display().to_string()).await?;
        let mut ingest = Ingest::new(&store, "spawn.audit/bench", log.path()).await?;
        let start = Instant::now();
        let stored = ingest.catch_up(&store).await?;
        let chained = stored as f64 / start.elapsed().as_secs_f64();
        anyhow::ensure!(stored == CHAIN_EVENTS, "stored {stored} of {CHAIN_EVENTS}");
        // Each transaction holds one chunk of the file (INGEST_BYTES of whole lines).
        let file_bytes = usize::try_from(std::fs::metadata(log.path())?.len())?;
        let line_bytes = file_bytes / stored.max(1);
        let per_commit = usize::try_from(spawn_store::INGEST_BYTES)? / line_bytes.max(1);
        store.close().await;

        // Bare: the same rows, already in memory, without hash and prevHash.
        let rows: Vec<StoredRecord> = std::fs::read_to_string(log.path())?
            .lines()
            .map(StoredRecord::from_line)
            .collect::<Result<_, _>>()?;
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("bare.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::raw_sql(BARE_SCHEMA).execute(&pool).await?;
        let start = Instant::now();
        for commit in rows.chunks(per_commit) {
            let mut tx = pool.begin().await?;
            for chunk in commit.chunks(500) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO bare (log, seq, at, event_type, principal, outcome, trace_id, line) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind("spawn.audit/bench")
                        .push_bind(r.seq)
                        .push_bind(&r.timestamp)
                        .push_bind(&r.event_type)
                        .push_bind(&r.principal)
                        .push_bind(&r.outcome)
                        .push_bind(&r.trace_id)
                        .push_bind(&r.line);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        let bare = rows.len() as f64 / start.elapsed().as_secs_f64();
        pool.close().await;
        Ok(Figures {
            chained,
            bare,
            per_commit,
        })
    })
}
