//! A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a throwaway
//! cluster in a temporary directory, on a free loopback port, started once per test binary
//! and gone with it (the server's shell waits on a pipe only this process holds: when the
//! test binary exits, however it exits, the pipe closes and the shell stops the server and
//! removes the cluster). Each test gets a database of its own.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use spawn_store::Store;

struct Cluster {
    port: u16,
    // Holds the pipe the server's shell waits on.
    _stdin: std::process::ChildStdin,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (scripts/install-deps.sh installs it)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("spawn-store-pg")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    // The server refuses to run as root: the cluster belongs to `postgres`.
    let status = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("chown of the cluster's directory to postgres failed".into());
    }
    let data = dir.join("data");
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let script = format!(
        "{postgres} -D {data} -c listen_addresses=127.0.0.1 -p {port} -k {dir} \
         -c fsync=off -c max_connections=300 >{dir}/log 2>&1 & pg=$!; \
         read _; kill -QUIT $pg; wait $pg; rm -rf {dir}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let mut child = Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start postgres: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > until {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            return Err(format!("PostgreSQL did not start within 60 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Cluster {
        port,
        _stdin: stdin,
    })
}

/// The URL of a new, empty database on the tests' PostgreSQL server. A server that cannot
/// be started fails the test with the reason.
pub async fn postgres_url() -> String {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("PostgreSQL for the tests: {e}"),
    };
    let name = format!(
        "t_{}",
        spawn_audit::new_id("db").unwrap().replace("db_", "")
    );
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        // The port may be open before the server accepts queries.
        match create_db(&admin, &name).await {
            Ok(()) => break,
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create database {name}: {e}"),
        }
    }
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)
}

async fn create_db(admin: &str, name: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// A test's database: the store, its URL (to open it again, as another daemon would) and,
/// for SQLite, the directory it lives in (removed with it).
pub struct Db {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    /// Another connection to the same database (another daemon's).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// A store on a new PostgreSQL database.
pub async fn postgres() -> Db {
    let url = postgres_url().await;
    Db {
        store: Store::open(&url).await.unwrap(),
        url,
        _dir: None,
    }
}

/// A store on a new SQLite database.
pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("spawn.db").display());
    Db {
        store: Store::open(&url).await.unwrap(),
        url,
        _dir: Some(dir),
    }
}

/// Writes to stderr what a test is doing (shown for failing tests).
pub fn note(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}
