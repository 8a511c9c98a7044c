//! spawn's durable state: API keys, Roles and RoleBindings, agents, runs and their output.
//!
//! One API over two databases: SQLite embedded in `$SPAWN_HOME` (the default, one host) and
//! PostgreSQL (`postgres://…`), where several `spawnd` share one control plane. Each has its
//! own versioned migrations (`migrations/sqlite`, `migrations/postgres`, kept in step); every
//! query is written once, in the SQL both accept, and runs on whichever pool the store
//! holds. The store knows rows, versions, leases and time; what a manifest or a rule means
//! is for its callers (`spawn-auth`, the run lifecycle).
//!
//! Several daemons, one database: a queued run is claimed by exactly one of them
//! ([`Store::claim_runs`]: `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer at
//! a time), under a lease its holder renews ([`Store::renew_leases`]); runs whose lease ran
//! out are marked `interrupted` ([`Store::interrupt_expired`]), never run again (a run has
//! side effects).

#![forbid(unsafe_code)]

mod audit;
mod error;
mod keys;
mod objects;
mod runs;
mod secrets;

pub use audit::{AuditLine, Ingest, Retained, StoredRecord, INGEST_BYTES};
pub use error::StoreError;
pub use keys::{KeyRecord, NewKey, LAST_USED_RESOLUTION_MS};
pub use objects::{AgentRecord, BindingRecord, Page, RoleRecord};
pub use runs::{EndedRun, NewRun, OutputChunk, RunRecord, RunState};
pub use secrets::{SealedSecret, SecretEntry, WrappedKey};

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression (usually one query) on whichever pool the store holds; `$p` is
/// the pool inside. The expression is type-checked once per database.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A connection to spawn's state.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Bumped after every write of this store (this process) to keys, roles, bindings or
    /// agents: what a cache of them compares against (see [`Store::config_epoch`]).
    config_epoch: Arc<AtomicU64>,
    /// A brief store's WAL file (see [`Store::open_home_brief`]).
    brief_wal: Option<PathBuf>,
}

/// See [`Store::config_write`].
pub(crate) struct ConfigWrite<'a>(&'a AtomicU64);

impl Drop for ConfigWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a connection attempt may take before the store is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens the database `url` and brings its schema up to date: `postgres://…` (or
    /// `postgresql://…`), or `sqlite://PATH` / a plain path for SQLite (created, mode
    /// 0600, if missing).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, true).await
    }

    /// Opens the database `url` as [`Store::open`] does, but leaves its schema alone: for
    /// the processes a daemon starts (its runs' supervisors), whose daemon opened — and
    /// brought up to date — the same database before.
    pub async fn attach(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, false).await
    }

    async fn open_with(url: &str, migrate: bool) -> Result<Store, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Config {
                what: "database.url".into(),
                // The URL may hold a password: only the parser's reason is shown.
                reason: redact_url_error(&e),
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(StoreError::db("connect to PostgreSQL"))?;
            if migrate {
                POSTGRES_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(StoreError::migrate)?;
            }
            Pool::Postgres(pool)
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Pool::Sqlite(open_sqlite_with(Path::new(path), 8, false, migrate).await?)
        };
        Ok(Store {
            pool,
            config_epoch: Arc::default(),
            brief_wal: None,
        })
    }

    /// The SQLite database `spawn.db` in `home` (`$SPAWN_HOME`).
    pub async fn open_home(home: &Path) -> Result<Store, StoreError> {
        Store::open(&home.join("spawn.db").to_string_lossy()).await
    }

    /// How many writes to keys, roles, bindings and agents (the configuration: who a key is,
    /// what it may do, what an agent runs) this process's store has made. Counted after
    /// each write is over, so an answer read while the count was unchanged is still the
    /// database's. Writes by other processes are not counted.
    pub fn config_epoch(&self) -> u64 {
        self.config_epoch.load(Ordering::SeqCst)
    }

    /// Held by a write to keys, roles, bindings or agents; counts it when dropped, once the write
    /// is over (committed, failed, or of unknown outcome alike).
    pub(crate) fn config_write(&self) -> ConfigWrite<'_> {
        ConfigWrite(&self.config_epoch)
    }

    /// As [`Store::open_home`], for a short-lived process that reads or writes a few rows
    /// and exits (a local `spawn run`, `spawn runs list`): one connection, and commits
    /// that reach the disk at the next checkpoint (`synchronous=NORMAL`: a power loss may
    /// drop the last commits, never corrupt the file) instead of each paying an fsync.
    ///
    /// Such a process may end without closing the store (see spawn-cli's run records):
    /// SQLite's close checkpoints the WAL and deletes it, paying fsyncs and an unlink. It
    /// calls [`Store::settle_brief`] after its writes instead.
    pub async fn open_home_brief(home: &Path) -> Result<Store, StoreError> {
        let path = home.join("spawn.db");
        Ok(Store {
            pool: Pool::Sqlite(open_sqlite_with(&path, 1, true, true).await?),
            config_epoch: Arc::default(),
            brief_wal: Some(home.join("spawn.db-wal")),
        })
    }

    /// For a brief store that will not be closed: once its WAL has grown past
    /// [`BRIEF_WAL_LIMIT_BYTES`], checkpoints it into the database and truncates it.
    /// Every opener of the database reads the whole WAL to rebuild its index (the index
    /// left in shared memory by a process that ended is not trusted), and cannot tell
    /// frames already checkpointed from new ones: SQLite's own auto-checkpoint would copy
    /// the whole WAL again on every commit, and the WAL never restart. A truncated WAL
    /// bounds both, at a checkpoint every few runs. Nothing for other stores. Call it
    /// last: it never waits for another process's readers, and the store does not wait
    /// for locks after it.
    pub async fn settle_brief(&self) -> Result<(), StoreError> {
        let (Some(wal), Pool::Sqlite(pool)) = (&self.brief_wal, &self.pool) else {
            return Ok(());
        };
        let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if len <= BRIEF_WAL_LIMIT_BYTES {
            return Ok(());
        }
        // Without waiting: a truncating checkpoint waits for every reader of the WAL (a
        // daemon's, on the same database) to move on; one that would have to wait is left
        // to a later process. The store's last call (its connection keeps the setting).
        sqlx::raw_sql("PRAGMA busy_timeout = 0; PRAGMA wal_checkpoint(TRUNCATE);")
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::db("checkpoint the database's WAL"))
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))
            .map_err(StoreError::db("reach the database"))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// The WAL size past which a brief store checkpoints and truncates it
/// ([`Store::settle_brief`]): 32 pages and their frame headers, a few runs' records.
pub const BRIEF_WAL_LIMIT_BYTES: u64 = 32 * (4096 + 24) + 32;

/// `brief`: one short-lived process's connection (see [`Store::open_home_brief`]).
async fn open_sqlite_with(
    path: &Path,
    max_connections: u32,
    brief: bool,
    migrate: bool,
) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
    }
    // Created by hand first, so that it is the owner's only from its first byte.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Io {
                what: format!("create {}", path.display()),
                source: e,
            })?;
    }
    let mut opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    if brief {
        opts = opts
            .synchronous(SqliteSynchronous::Normal)
            // See `Store::settle_brief`.
            .pragma("wal_autocheckpoint", "0");
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(StoreError::db("open the SQLite database"))?;
    if migrate {
        migrate_sqlite(&pool, brief).await?;
    }
    Ok(pool)
}

/// The version of the last SQLite migration, which `PRAGMA user_version` holds once every
/// migration is applied (`None` if it does not fit SQLite's 32-bit field).
fn sqlite_schema_version() -> Option<i64> {
    SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .filter(|v| (1..=i64::from(i32::MAX)).contains(v))
}

/// Applies the SQLite migrations, and records in `PRAGMA user_version` that they are.
/// A `brief` store (one run's record, on the path of every run's start) trusts that record
/// and skips the migrator's own checks (its table created if missing, read and compared
/// with the embedded migrations: as long as opening the database); a database whose
/// record is older or newer than this build, or absent, goes through the migrator, which
/// applies what is missing or refuses a database a newer spawn migrated.
async fn migrate_sqlite(pool: &SqlitePool, brief: bool) -> Result<(), StoreError> {
    let want = sqlite_schema_version();
    if brief {
        let have: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(pool)
            .await
            .map_err(StoreError::db("read the database's schema version"))?;
        if want == Some(have) {
            return Ok(());
        }
    }
    SQLITE_MIGRATIONS
        .run(pool)
        .await
        .map_err(StoreError::migrate)?;
    if let Some(version) = want {
        sqlx::raw_sql(&format!("PRAGMA user_version = {version}"))
            .execute(pool)
            .await
            .map_err(StoreError::db("record the database's schema version"))?;
    }
    Ok(())
}

/// The reason a database URL did not parse, without the URL (it may hold a password).
fn redact_url_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => {
            let text = inner.to_string();
            if text.contains('@') || text.contains("://") {
                "it is not a valid PostgreSQL URL".into()
            } else {
                text
            }
        }
        _ => "it is not a valid PostgreSQL URL".into(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new random identifier (`spawn_audit::new_id`: `PREFIX_` and 128 random bits in
/// base32), as a store error if the OS has no randomness.
pub(crate) fn new_id(prefix: &str) -> Result<String, StoreError> {
    spawn_audit::new_id(prefix).map_err(|e| StoreError::Io {
        what: "draw a random identifier".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One integer PRAGMA of a SQLite store's connection.
    async fn pragma(store: &Store, name: &str) -> i64 {
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("a home store is SQLite")
        };
        let (value,): (i64,) = sqlx::query_as(&format!("PRAGMA {name}"))
            .fetch_one(pool)
            .await
            .unwrap();
        value
    }

    fn sqlite(store: &Store) -> &SqlitePool {
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("a home store is SQLite")
        };
        pool
    }

    /// A brief store of `home`, after the daemon's store made it and ran `sql` on it.
    async fn brief_after(home: &Path, sql: &str) -> Store {
        let store = Store::open_home(home).await.unwrap();
        sqlx::raw_sql(sql).execute(sqlite(&store)).await.unwrap();
        store.close().await;
        Store::open_home_brief(home).await.unwrap()
    }

    /// The migrator runs wherever `user_version` does not say this build's schema: on a
    /// new database, one migrated by an older build (a migration missing), and one that
    /// says nothing; a brief store skips it only where it says exactly this schema. The
    /// daemon's (full) open always runs it.
    #[test]
    fn a_brief_store_skips_the_migrator_only_on_a_database_of_this_schema() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let latest = sqlite_schema_version().unwrap();
        assert_eq!(
            latest,
            SQLITE_MIGRATIONS.iter().count() as i64,
            "versions are 1, 2, …"
        );
        rt.block_on(async {
            let applied = |store: Store| async move {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
                    .fetch_one(sqlite(&store))
                    .await
                    .unwrap();
                (n, pragma(&store, "user_version").await)
            };
            // New, by a brief store and by the full open.
            for brief in [true, false] {
                let home = tempfile::tempdir().unwrap();
                let store = if brief {
                    Store::open_home_brief(home.path()).await.unwrap()
                } else {
                    Store::open_home(home.path()).await.unwrap()
                };
                assert_eq!(applied(store).await, (latest, latest), "brief: {brief}");
            }
            // Migrated by an older build (its last migration missing), with or without
            // the record: the brief store applies what is missing.
            // (What the latest migration, 0005_secrets, made: update with the next one.)
            let undo_latest = "DROP TABLE secrets; DROP TABLE secret_keys";
            let older = format!("PRAGMA user_version = {}", latest - 1);
            for record in ["PRAGMA user_version = 0", older.as_str()] {
                let home = tempfile::tempdir().unwrap();
                let last = format!("DELETE FROM _sqlx_migrations WHERE version = {latest}");
                let brief =
                    brief_after(home.path(), &format!("{undo_latest}; {last}; {record}")).await;
                sqlx::query("SELECT count(*) FROM secret_keys")
                    .fetch_one(sqlite(&brief))
                    .await
                    .unwrap_or_else(|e| panic!("{record}: the migration was not applied: {e}"));
                assert_eq!(applied(brief).await, (latest, latest), "{record}");
            }
            // Where the record says this schema, the migrator is not asked: a table it
            // would have made is not made again.
            let home = tempfile::tempdir().unwrap();
            let brief = brief_after(home.path(), "DROP TABLE _sqlx_migrations").await;
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE name = '_sqlx_migrations'",
            )
            .fetch_one(sqlite(&brief))
            .await
            .unwrap();
            assert_eq!(tables, 0, "the brief store ran the migrator");
        });
    }

    #[test]
    fn a_brief_store_checkpoints_its_wal_itself_and_only_past_the_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let home = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let brief = Store::open_home_brief(home.path()).await.unwrap();
            assert_eq!(
                pragma(&brief, "wal_autocheckpoint").await,
                0,
                "the brief store checkpoints by itself (settle_brief)"
            );
            assert_eq!(pragma(&brief, "synchronous").await, 1, "NORMAL");
            let Pool::Sqlite(pool) = &brief.pool else {
                panic!("a home store is SQLite")
            };
            let wal = home.path().join("spawn.db-wal");
            let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            let write = |sql: &'static str| sqlx::query(sql).execute(pool);
            write("CREATE TABLE filler (b BLOB)").await.unwrap();
            // A new database's schema fills more than the limit.
            assert!(wal_len() > BRIEF_WAL_LIMIT_BYTES);
            brief.settle_brief().await.unwrap();
            assert_eq!(wal_len(), 0);
            // Under the limit, the WAL is left as it is.
            write("INSERT INTO filler VALUES (zeroblob(100))")
                .await
                .unwrap();
            let small = wal_len();
            assert!(small > 0 && small <= BRIEF_WAL_LIMIT_BYTES, "{small}");
            brief.settle_brief().await.unwrap();
            assert_eq!(wal_len(), small);
            // Past it, checkpointed into the database and truncated, nothing lost.
            for _ in 0..40 {
                write("INSERT INTO filler VALUES (zeroblob(4000))")
                    .await
                    .unwrap();
            }
            assert!(wal_len() > BRIEF_WAL_LIMIT_BYTES);
            // Another process's reader in the WAL (a daemon's): not waited for, the WAL
            // left to a later process.
            let daemon = Store::open_home(home.path()).await.unwrap();
            let Pool::Sqlite(daemon_pool) = &daemon.pool else {
                panic!("a home store is SQLite")
            };
            let mut reading = daemon_pool.begin().await.unwrap();
            sqlx::query("SELECT count(*) FROM filler")
                .fetch_one(&mut *reading)
                .await
                .unwrap();
            let t = std::time::Instant::now();
            brief.settle_brief().await.unwrap();
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            assert!(wal_len() > BRIEF_WAL_LIMIT_BYTES);
            reading.rollback().await.unwrap();
            daemon.close().await;
            brief.settle_brief().await.unwrap();
            assert_eq!(wal_len(), 0);
            let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM filler")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(rows, 41);
            brief.close().await;
            // The daemon's store keeps SQLite's default, and settling it does nothing.
            let full = Store::open_home(home.path()).await.unwrap();
            assert_eq!(pragma(&full, "wal_autocheckpoint").await, 1000);
            full.settle_brief().await.unwrap();
            full.close().await;
        });
    }

    #[test]
    fn a_bad_postgres_url_is_reported_without_its_password() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for url in [
            "postgres://user:hunter2@host:notaport/db",
            "postgres://user:hunter2@[::1/db",
            "postgresql://user:hunter2@host:99999/db",
        ] {
            let err = rt.block_on(Store::open(url)).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{url}: {err}");
            assert!(err.contains("database.url"), "{url}: {err}");
        }
    }
}
