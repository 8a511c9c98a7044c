//! The audit log's signed checkpoints from a real `spawnd`: signed every
//! `audit.checkpointIntervalSeconds` while the log grows, and once more at shutdown over
//! everything the daemon wrote; each one opens with the daemon's key and agrees with the
//! log. Bad `audit:` configurations are refused at start.

mod common;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use spawn_audit::checkpoint::{self, Checkpoint, SigningKey};

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every checkpoint of the log under `home`, opened with the daemon's key, each checked
/// against the head of the log's first records; the log's record count.
fn checkpoints(home: &Path) -> (Vec<Checkpoint>, u64) {
    let key_text = must(
        std::fs::read_to_string(home.join("keys/audit-signing.key")),
        "read the signing key",
    );
    let verifier = must(SigningKey::parse(&key_text), "parse the key").verifier();
    let log = home.join("audit").join(spawn_audit::LOG_FILE_NAME);
    let notes: Vec<checkpoint::Opened> = must(checkpoint::notes(&home.join("audit")), "notes")
        .into_iter()
        .map(|(file, note)| {
            let c = verifier.open(&note);
            (file, c)
        })
        .collect();
    let (file, len) = must(spawn_audit::snapshot(&log), "open the log");
    // The chain, and every checkpoint opened with the daemon's key and agreeing with it.
    let v = must(
        checkpoint::verify_log(std::io::BufReader::new(file.take(len)), true, &notes),
        "verify",
    );
    assert!(v.intact(), "{v:?}");
    let opened = notes
        .into_iter()
        .map(|(file, c)| c.unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .collect();
    (opened, v.records)
}

/// `n` unauthenticated requests: an `auth.failure` event each.
async fn fail(d: &Daemon, n: usize) {
    let c = reqwest::Client::new();
    let url = d.url("/v1/namespaces/default/agents");
    for _ in 0..n {
        let res = must(c.get(&url).send().await, "request");
        assert_eq!(res.status(), 401);
    }
}

#[tokio::test]
async fn checkpoints_are_signed_while_the_log_grows_and_at_shutdown() {
    let mut d = Daemon::start_full(
        None,
        None,
        "  requestsPerSecond: 100000\n  burst: 100000\n  authFailures: 100000\n",
        "audit:\n  checkpointIntervalSeconds: 1\n",
    );
    let key = d.home.join("keys/audit-signing.key");
    let mode = must(std::fs::metadata(&key), "the key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the signing key is owner-only");
    fail(&d, 3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (cs, _) = checkpoints(&d.home);
        if cs.iter().any(|c| c.size >= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail(&d, 4).await;
    common::stop(&mut d.child);
    let (cs, records) = checkpoints(&d.home);
    assert!(cs.len() >= 2, "{cs:?}");
    assert_eq!(
        cs.last().map(|c| c.size),
        Some(records),
        "the shutdown's checkpoint holds every record"
    );
    assert!(cs.iter().all(|c| c.origin.starts_with("spawn.audit/log_")));
    // Restarted on the same key: its checkpoints open with it too.
    let (child, addr) = common::spawn(&d.config);
    d.child = child;
    d.addr = addr;
    fail(&d, 1).await;
    common::stop(&mut d.child);
    let (cs2, records2) = checkpoints(&d.home);
    assert_eq!(cs2.last().map(|c| c.size), Some(records2));
    assert!(records2 > records);
}

#[test]
fn bad_audit_configurations_are_refused() {
    let dir = must(tempfile::tempdir(), "tempdir");
    for (extra, says) in [
        (
            "audit:\n  checkpointIntervalSeconds: 0\n",
            "checkpointIntervalSeconds",
        ),
        (
            "audit:\n  checkpointIntervalSeconds: 86401\n",
            "checkpointIntervalSeconds",
        ),
        ("audit:\n  checkpointIntervalSeconds: soon\n", "audit"),
        ("audit:\n  checkpointInterval: 5\n", "unknown field"),
        ("audit:\n  retentionDays: 0\n", "retentionDays"),
        ("audit:\n  retentionDays: 36501\n", "retentionDays"),
        ("audit:\n  retentionDays: -1\n", "audit"),
        ("audit:\n  retentionDays: forever\n", "audit"),
        ("audit:\n  retentionDays: 4294967296\n", "audit"),
    ] {
        let err = common::refused(dir.path(), extra);
        assert!(err.contains(says), "{extra}: {err}");
    }
    // A key that is not one, and a key others can read.
    let key = dir.path().join("audit.key");
    std::fs::write(&key, "not a key\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let extra = format!("audit:\n  signingKey: {}\n", key.display());
    let err = common::refused(dir.path(), &extra);
    assert!(err.contains("not a signing key"), "{err}");
    let good = must(SigningKey::generate("spawn.audit/t"), "key");
    std::fs::write(&key, good.to_text().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = common::refused(dir.path(), &extra);
    assert!(err.contains("readable by others"), "{err}");
    // Nothing of the key in what was said.
    assert!(!err.contains("PRIVATE"), "{err}");
}

/// A retention pass (`AuditCopy::retain`, what `spawnd` runs every hour with
/// `audit.retentionDays`) cuts the database's copy and then the log file itself at the
/// latest cut the file can take: the file's records up to it become a hole, and the log
/// still verifies, signs checkpoints and is read by a new copy. A cut of the file's last
/// record waits for one more, and an earlier cut is kept meanwhile.
#[tokio::test]
async fn retention_cuts_the_log_file_too() {
    use spawn_audit::cut::FileCut;
    use spawn_audit::{AuditLog, Event, EventType, Outcome, Principal, Resource};
    use spawn_store::Retained;
    let event = |i: usize| {
        Event::new(
            EventType::AgentStart,
            Principal {
                kind: "agent".into(),
                id: format!("ag_{i}"),
                name: None,
            },
            Resource {
                kind: "run".into(),
                name: "r".into(),
            },
            "start",
            Outcome::Success,
        )
    };
    let home = must(tempfile::tempdir(), "home");
    let dir = home.path().join("audit");
    let key = must(SigningKey::generate("spawn.audit/retention"), "key");
    let store = must(spawn_store::Store::open_home(home.path()).await, "store");
    let mut log = must(AuditLog::open(&dir), "log");
    let path = log.path().to_owned();
    must(
        log.append(&(0..10).map(event).collect::<Vec<_>>()),
        "append",
    );
    std::thread::sleep(Duration::from_millis(5));
    must(
        log.append(&(10..15).map(event).collect::<Vec<_>>()),
        "append",
    );
    let size = must(std::fs::metadata(&path), "stat").len();
    let eleventh = must(spawn_audit::read_records(&path), "read")[10]
        .timestamp
        .clone();
    let copy = must(
        spawn_server::audit_api::AuditCopy::new(&store, key.name(), &path, key.verifier()).await,
        "copy",
    );

    // Records 1..10 are older than record 11: cut in the database and in the file.
    let done = must(copy.retain(&store, &key, &eleventh).await, "retain");
    assert_eq!(
        done.stored,
        Retained::Cut {
            seq: 10,
            deleted: 10
        },
        "{done:?}"
    );
    assert!(
        matches!(done.file, Some(Ok(FileCut::Cut { seq: 10, .. }))),
        "{done:?}"
    );
    let raw = must(std::fs::read(&path), "read");
    assert_eq!(
        raw.len() as u64,
        size,
        "the file keeps its size and offsets"
    );
    assert_eq!(raw[0], 0);
    let seqs: Vec<u64> = must(spawn_audit::read_records(&path), "read")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (11..=15).collect::<Vec<_>>());

    // It signs and verifies from the cut on, and a copy made anew reads past the hole.
    assert!(matches!(
        must(checkpoint::sign_log(&path, &key), "sign"),
        checkpoint::Signed::Kept { size: 15, .. }
    ));
    let notes = must(checkpoint::notes(&dir), "notes");
    let cuts = spawn_audit::cut::cuts_in(&key.verifier(), &notes);
    let opened: Vec<checkpoint::Opened> = notes
        .iter()
        .map(|(p, n)| (p.clone(), key.verifier().open(n)))
        .collect();
    let (file, len) = must(spawn_audit::snapshot(&path), "snapshot");
    let v = must(
        spawn_audit::cut::verify_log(std::io::BufReader::new(file.take(len)), &opened, &cuts),
        "verify",
    );
    assert!(v.broken.is_none(), "{v:?}");

    // Everything is older than the far future: the database is cut at 15, the file's last
    // record, which the file keeps (its cut at 10 stands) until one more is written.
    let done = must(
        copy.retain(&store, &key, "9999-01-01T00:00:00.000Z").await,
        "retain",
    );
    assert_eq!(
        done.stored,
        Retained::Cut {
            seq: 15,
            deleted: 5
        },
        "{done:?}"
    );
    assert!(matches!(done.file, Some(Ok(FileCut::Already))), "{done:?}");
    must(log.append(&[event(15)]), "append");
    let done = must(copy.retain(&store, &key, &eleventh).await, "retain");
    assert_eq!(done.stored, Retained::Nothing, "{done:?}");
    assert!(
        matches!(done.file, Some(Ok(FileCut::Cut { seq: 15, .. }))),
        "{done:?}"
    );
    let seqs: Vec<u64> = must(spawn_audit::read_records(&path), "read")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, vec![16]);
    let fresh = must(
        spawn_server::audit_api::AuditCopy::new(&store, key.name(), &path, key.verifier()).await,
        "copy",
    );
    assert_eq!(must(fresh.catch_up(&store).await, "catch up"), Some(16));
    store.close().await;
}
