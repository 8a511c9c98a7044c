//! A real `spawnd` for the tests: `spawnd init`, then `spawnd --listen 127.0.0.1:0`, on
//! SQLite in its home or on a given database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use spawn_auth::{ApiKey, KeyEnv};
use spawn_store::{NewKey, Store};

/// The agent most tests store: `team/bot`, running `true` on native.
pub const AGENT: &str = "apiVersion: spawn.dev/v1
kind: Agent
metadata:
  name: bot
  namespace: team
spec:
  command: [\"true\"]
  sandbox:
    runtime: native
";

/// The `spawnd` binary: this package's, or the one beside `spawn` (for spawn-cli's tests,
/// which `cargo test --workspace` builds too).
pub fn spawnd() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_spawnd") {
        return p.into();
    }
    let Some(spawn) = option_env!("CARGO_BIN_EXE_spawn") else {
        panic!("spawnd is found only from the tests of spawn-server or spawn-cli");
    };
    let p = Path::new(spawn).with_file_name("spawnd");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p spawn-server; make test does)",
        p.display()
    );
    p
}

/// A running daemon and what it needs.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub home: PathBuf,
    pub config: PathBuf,
    pub db_url: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `spawnd init` then `spawnd` on a database: SQLite in the home, or `db_url`.
    pub fn start(db_url: Option<String>) -> Daemon {
        Daemon::start_with(db_url, None)
    }

    /// A daemon on `db_url`; with `admin`, one more daemon of a state made already (no
    /// init: its home is its own, its database shared).
    pub fn start_with(db_url: Option<String>, admin: Option<&str>) -> Daemon {
        // Limits generous enough for the scenarios' bursts of requests and deliberate
        // failures; the abuse limits are tested with their own.
        Daemon::start_limits(
            db_url,
            admin,
            "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n",
        )
    }

    /// A daemon whose `limits:` block holds `limits` (YAML lines, indented) besides the
    /// body size the tests rely on.
    pub fn start_limits(db_url: Option<String>, admin: Option<&str>, limits: &str) -> Daemon {
        Daemon::start_full(db_url, admin, limits, "")
    }

    /// As `start_limits`, with `extra` top-level configuration (e.g. `tls:`).
    pub fn start_full(
        db_url: Option<String>,
        admin: Option<&str>,
        limits: &str,
        extra: &str,
    ) -> Daemon {
        Daemon::start_prepared(db_url, admin, limits, extra, |_| {})
    }

    /// As `start_full`, with `prepare` called on the home (not made yet) before anything
    /// else: to put its audit directory on a file system of its own, say.
    pub fn start_prepared(
        db_url: Option<String>,
        admin: Option<&str>,
        limits: &str,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        prepare(&home);
        let config = dir.path().join("spawn.yaml");
        let mut yaml = format!("listen: 127.0.0.1:0\nhome: {}\n", home.display());
        if let Some(url) = &db_url {
            yaml.push_str(&format!("database:\n  url: {url}\n"));
        }
        yaml.push_str(extra);
        yaml.push_str("limits:\n  maxBodyBytes: 65536\n");
        yaml.push_str(limits);
        std::fs::write(&config, yaml).unwrap();
        if let Some(admin) = admin {
            let db_url = db_url.unwrap_or_else(|| home.join("spawn.db").display().to_string());
            let (child, addr) = spawn(&config);
            return Daemon {
                child,
                addr,
                home,
                config,
                db_url,
                admin: admin.to_owned(),
                _dir: dir,
            };
        }
        let init = Command::new(spawnd())
            .arg("--config")
            .arg(&config)
            .arg("init")
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let stdout = String::from_utf8(init.stdout).unwrap();
        // The key, alone on its line, and nothing else on stdout.
        let admin = stdout.trim_end().to_owned();
        assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
        ApiKey::parse(&admin).expect("init prints a valid key");
        let db_url = db_url.unwrap_or_else(|| home.join("spawn.db").display().to_string());
        let (child, addr) = spawn(&config);
        Daemon {
            child,
            addr,
            home,
            config,
            db_url,
            admin,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the daemon with SIGTERM (graceful) and starts it again on the same state.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        let (child, addr) = spawn(&self.config);
        self.child = child;
        self.addr = addr;
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.home.join("audit/audit.jsonl")).unwrap_or_default()
    }

    /// A key of principal `name` (a User) holding built-in `role` in `ns`.
    pub async fn key_for(&self, name: &str, role: &str, ns: &str, test: bool) -> String {
        let store = Store::open(&self.db_url).await.unwrap();
        let key = ApiKey::generate(if test { KeyEnv::Test } else { KeyEnv::Live }).unwrap();
        store
            .insert_key(&NewKey {
                hash: key.hash().0,
                hint: key.hint(),
                test,
                principal_kind: "User".into(),
                principal_name: name.into(),
                created_by: "test".into(),
                namespace: ns.into(),
            })
            .await
            .unwrap();
        let subject = ("User".to_owned(), name.to_owned());
        store
            .put_binding(ns, &format!("{role}-{name}"), role, "[]", &[subject], None)
            .await
            .unwrap();
        store.close().await;
        key.expose().to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(config: &Path) -> (Child, String) {
    let mut child = Command::new(spawnd())
        .arg("--config")
        .arg(config)
        .env("SPAWND_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("spawnd said {line:?}"))
        .to_owned();
    (child, addr)
}

pub fn stop(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "spawnd stopped with {status:?}");
}

/// Starts `spawnd` on a configuration of `extra` (top-level YAML) in `dir`, expecting it to
/// refuse it: asserts it stopped with a failure, and returns what it said on stderr.
pub fn refused(dir: &Path, extra: &str) -> String {
    let config = dir.join("spawn.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nhome: {}\n{extra}",
        dir.join("home").display()
    );
    std::fs::write(&config, yaml).unwrap_or_else(|e| panic!("write the configuration: {e}"));
    let mut child = Command::new(spawnd())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start spawnd: {e}"));
    // A daemon that accepted it serves on: stopped after a while, and the test fails
    // instead of waiting for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child
        .try_wait()
        .unwrap_or_else(|e| panic!("wait for spawnd: {e}"))
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spawnd accepted (it was still serving after 60 s):\n{extra}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("spawnd's output: {e}"));
    assert!(!out.status.success(), "spawnd accepted:\n{extra}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
