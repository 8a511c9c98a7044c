use super::*;
use crate::encode::MAX_EVENT_BYTES;
use crate::event::{EventType, Outcome, Principal, Resource};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::time::Instant;

fn event(n: u64) -> Event {
    Event::new(
        EventType::AgentNetConnect,
        Principal {
            kind: "agent".into(),
            id: "ag_test".into(),
            name: Some("tester".into()),
        },
        Resource {
            kind: "host".into(),
            name: "example.com:443".into(),
        },
        "connect",
        Outcome::Success,
    )
    .with_detail("n", n)
}

fn raw_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines().map(str::to_owned).collect()
}

fn seqs(path: &Path) -> Vec<u64> {
    read_records(path).unwrap().iter().map(|r| r.seq).collect()
}

#[test]
fn stored_line_has_spec_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let mut e = event(1);
    e.source_ip = Some("10.0.0.5".into());
    e.request_id = Some("req_xyz789".into());
    e.trace_id = Some("tr_abc".into());
    assert_eq!(log.append(&[e]).unwrap(), vec![1]);

    let lines = raw_lines(log.path());
    assert_eq!(lines.len(), 1);
    let value: Value = serde_json::from_str(&lines[0]).unwrap();
    let timestamp = value["timestamp"].as_str().unwrap().to_owned();
    let hash = value["hash"].as_str().unwrap().to_owned();
    assert_eq!(
        value,
        json!({"seq": 1, "timestamp": timestamp, "eventType": "agent.net.connect",
         "principal": {"type": "agent", "id": "ag_test", "name": "tester"},
         "resource": {"type": "host", "name": "example.com:443"}, "action": "connect",
         "outcome": "success", "details": {"n": 1},
         "sourceIP": "10.0.0.5", "requestId": "req_xyz789", "traceId": "tr_abc",
         "prevHash": crate::chain::GENESIS, "hash": hash})
    );
    // The line is the RFC 8785 form of the whole record (members sorted by name)...
    assert_eq!(
        lines[0],
        serde_json_canonicalizer::to_string(&value).unwrap()
    );
    assert!(lines[0].starts_with(&format!(
        r#"{{"action":"connect","details":{{"n":1}},"eventType":"agent.net.connect","hash":"{hash}","outcome":"success","prevHash":"{}","#,
        crate::chain::GENESIS
    )));
    // ... so without its hash member it is what the hash is over: SHA-256 in lowercase hex.
    let hashed = lines[0].replacen(&format!(r#","hash":"{hash}""#), "", 1);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(hashed.as_bytes());
    assert_eq!(hash, format!("sha256:{}", crate::chain::hex(&digest)));
    let hex = hash.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(
        crate::clock::is_rfc3339_utc_millis(&timestamp),
        "{timestamp}"
    );
}

#[test]
fn append_returns_consecutive_seqs_and_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let batch: Vec<Event> = (0..3).map(event).collect();
    assert_eq!(log.append(&batch).unwrap(), vec![1, 2, 3]);
    assert_eq!(log.append(&[event(3)]).unwrap(), vec![4]);
    assert_eq!(log.append(&[]).unwrap(), Vec::<u64>::new());
    log.sync().unwrap();

    let records = read_records(log.path()).unwrap();
    let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, (0..4).map(event).collect::<Vec<_>>());
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // One timestamp per batch.
    assert_eq!(records[0].timestamp, records[2].timestamp);
    // Each record chained to the one before, across batches.
    assert_eq!(records[0].prev_hash.as_deref(), Some(crate::chain::GENESIS));
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
}

#[test]
fn seq_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let mut log = AuditLog::open(dir.path()).unwrap();
        log.append(&[event(0), event(1)]).unwrap();
        log.path().to_owned()
    };
    for round in 0..3 {
        let mut log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.path(), path);
        assert_eq!(log.append(&[event(round)]).unwrap(), vec![3 + round]);
    }
    assert_eq!(seqs(&path), [1, 2, 3, 4, 5]);
}

fn assert_complete(path: &Path, writers: u64, per_writer: u64) {
    let records = read_records(path).unwrap();
    let total = writers * per_writer;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let tags: HashSet<(u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r.event.details["writer"].as_u64().unwrap(),
                r.event.details["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tags.len() as u64, total, "an event was lost or duplicated");
    assert_eq!(raw_lines(path).len() as u64, total);
    assert_chain_intact(path, total);
}

/// The log's hash chain verifies whole, with `records` records.
fn assert_chain_intact(path: &Path, records: u64) -> crate::chain::Verified {
    let v = crate::chain::verify(std::io::BufReader::new(File::open(path).unwrap()), true).unwrap();
    assert!(v.intact(), "{v:?}");
    assert_eq!(v.records, records, "{v:?}");
    v
}

/// Appends `per_writer` events in batches of 1..=3, each tagged with `writer`.
fn append_tagged(dir: &Path, writer: u64, per_writer: u64) {
    let mut log = AuditLog::open(dir).unwrap();
    let mut n = 0;
    while n < per_writer {
        let size = (n % 3 + 1).min(per_writer - n);
        let batch: Vec<Event> = (n..n + size)
            .map(|i| event(i).with_detail("writer", writer))
            .collect();
        let got = log.append(&batch).unwrap();
        assert_eq!(got.len() as u64, size);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
        n += size;
    }
}

#[test]
fn concurrent_threads_get_unique_consecutive_seqs() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for writer in 0..THREADS {
            let dir = dir.path();
            s.spawn(move || append_tagged(dir, writer, PER_THREAD));
        }
    });
    assert_complete(&dir.path().join(LOG_FILE_NAME), THREADS, PER_THREAD);
}

const CHILD_DIR_ENV: &str = "SPAWN_AUDIT_TEST_CHILD_DIR";
const CHILD_WRITER_ENV: &str = "SPAWN_AUDIT_TEST_CHILD_WRITER";
const PER_PROCESS: u64 = 200;

/// Body of the child processes of `concurrent_processes_get_unique_consecutive_seqs`;
/// does nothing when run as an ordinary test.
#[test]
fn child_appender() {
    let (Ok(dir), Ok(writer)) = (
        std::env::var(CHILD_DIR_ENV),
        std::env::var(CHILD_WRITER_ENV),
    ) else {
        return;
    };
    append_tagged(Path::new(&dir), writer.parse().unwrap(), PER_PROCESS);
}

#[test]
fn concurrent_processes_get_unique_consecutive_seqs() {
    const PROCESSES: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|writer| {
            Command::new(&exe)
                .args(["--exact", "log::tests::child_appender", "--test-threads=1"])
                .env(CHILD_DIR_ENV, dir.path())
                .env(CHILD_WRITER_ENV, writer.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Append from this process too, while the children run.
    append_tagged(dir.path(), PROCESSES, PER_PROCESS);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_complete(&dir.path().join(LOG_FILE_NAME), PROCESSES + 1, PER_PROCESS);
}

#[test]
fn torn_last_line_is_left_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append(&[event(0), event(1), event(2)]).unwrap();
    // A crash mid-write leaves the start of seq 4 without its end.
    let full = fs::read(log.path()).unwrap();
    let first_line_len = full.iter().position(|&b| b == b'\n').unwrap();
    let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
    f.write_all(&full[..first_line_len / 2]).unwrap();

    let mut log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.append(&[event(3), event(4)]).unwrap(), vec![4, 5]);

    let lines = raw_lines(log.path());
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[3].as_bytes(), &full[..first_line_len / 2]);
    let good: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .map(|r| r.seq)
        .collect();
    assert_eq!(good, [1, 2, 3, 4, 5]);
    // The fragment is kept as evidence, and reading reports where it is.
    assert!(matches!(
        read_records(log.path()),
        Err(AuditError::Malformed { line: 4, .. })
    ));
    // Later appends skip it, and the chain runs across it.
    assert_eq!(log.append(&[event(5)]).unwrap(), vec![6]);
    assert_eq!(assert_chain_intact(log.path(), 6).torn_lines, 1);
}

#[test]
fn record_missing_only_its_newline_keeps_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append(&[event(0), event(1)]).unwrap();
    let len = fs::metadata(log.path()).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(log.path())
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_eq!(log.append(&[event(2)]).unwrap(), vec![3]);
    assert_eq!(seqs(log.path()), [1, 2, 3]);
    assert_chain_intact(log.path(), 3);
}

const KILLED_DIR_ENV: &str = "SPAWN_AUDIT_TEST_KILLED_DIR";

/// Body of the children of `a_writer_killed_at_any_moment_leaves_a_verifiable_log`:
/// appends batches of 1–5 events for ever, printing the last seq of each once it is durable
/// (acknowledged). Does nothing when run as an ordinary test.
#[test]
fn killed_appender() {
    let Ok(dir) = std::env::var(KILLED_DIR_ENV) else {
        return;
    };
    let mut log = AuditLog::open(Path::new(&dir)).unwrap();
    let mut stdout = std::io::stdout();
    for n in 0u64.. {
        let batch: Vec<Event> = (0..n % 5 + 1).map(event).collect();
        let seqs = log.append(&batch).unwrap();
        log.sync().unwrap();
        writeln!(stdout, "{}", seqs[seqs.len() - 1]).unwrap();
        stdout.flush().unwrap();
    }
}

/// A writer SIGKILLed at any moment, over and over: after each kill the log verifies whole,
/// and every event acknowledged (durable) before the kill is in it.
#[test]
fn a_writer_killed_at_any_moment_leaves_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    let mut acked_total = 0;
    let mut torn = 0;
    for round in 0..25u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "log::tests::killed_appender",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(KILLED_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it somewhere between its start and a few hundred appends in.
        std::thread::sleep(std::time::Duration::from_millis(5 + (round * 7919) % 60));
        // SIGKILL.
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let acked = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .max();
        if !path.exists() {
            assert_eq!(acked, None, "round {round}: acknowledged without a log");
            continue;
        }
        let v = crate::chain::verify(std::io::BufReader::new(File::open(&path).unwrap()), true)
            .unwrap();
        assert!(v.intact(), "round {round}: {v:?}");
        let last = v.last_seq.unwrap_or(0);
        if let Some(acked) = acked {
            assert!(
                acked <= last,
                "round {round}: seq {acked} acknowledged, log ends at {last}"
            );
            acked_total += 1;
        }
        // Every seq once, in order (a line torn by the kill — the last one too, without
        // its newline — is no record).
        let text = fs::read_to_string(&path).unwrap();
        let good: Vec<u64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Record>(l).ok())
            .map(|r| r.seq)
            .collect();
        assert_eq!(good, (1..=last).collect::<Vec<_>>(), "round {round}");
        torn = v.torn_lines + u64::from(!text.is_empty() && !text.ends_with('\n'));
    }
    assert!(
        acked_total >= 10,
        "only {acked_total} rounds acknowledged anything"
    );
    eprintln!("{acked_total} rounds acknowledged events; {torn} line(s) torn by the kills");
}

#[test]
fn newlines_and_injection_attempts_stay_inside_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let injected =
        "ok\n{\"seq\":999,\"timestamp\":\"2026-01-01T00:00:00Z\",\"eventType\":\"auth.login\"}\r\n";
    let mut e = event(0).with_detail("output", injected);
    e.action = "run\nfake".into();
    e.resource.name = "\u{2028}\u{0}\u{1b}[2J".into();
    log.append(&[e.clone()]).unwrap();
    assert_eq!(raw_lines(log.path()).len(), 1);
    assert_eq!(read_records(log.path()).unwrap()[0].event, e);
    // The injected seq is not taken for the last one.
    assert_eq!(log.append(&[event(1)]).unwrap(), vec![2]);
}

#[test]
fn oversized_details_are_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let big = event(0).with_detail("stdout", "z".repeat(2 * MAX_EVENT_BYTES));
    assert_eq!(log.append(&[event(1), big, event(2)]).unwrap(), [1, 2, 3]);
    let lines = raw_lines(log.path());
    assert!(lines.iter().all(|l| l.len() <= MAX_EVENT_BYTES));
    let records = read_records(log.path()).unwrap();
    assert_eq!(
        Value::Object(records[1].event.details.clone()),
        json!({"truncated": true})
    );
    assert_eq!(records[2].event, event(2));
}

#[test]
fn creates_private_dir_and_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home").join("audit");
    let log = AuditLog::open(&dir).unwrap();
    assert_eq!(log.path(), dir.join(LOG_FILE_NAME));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("home")), 0o700);
    assert_eq!(mode(log.path()), 0o600);
}

#[test]
fn existing_permissions_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
    AuditLog::open(dir.path()).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn refuses_symlinked_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let log_dir = dir.path().join("audit");
    fs::create_dir(&log_dir).unwrap();
    symlink(&victim, log_dir.join(LOG_FILE_NAME)).unwrap();
    assert!(matches!(
        AuditLog::open(&log_dir),
        Err(AuditError::Symlink { .. })
    ));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    // A dangling symlink is refused too, and its target is not created.
    let elsewhere = dir.path().join("elsewhere");
    fs::remove_file(log_dir.join(LOG_FILE_NAME)).unwrap();
    symlink(&elsewhere, log_dir.join(LOG_FILE_NAME)).unwrap();
    assert!(matches!(
        AuditLog::open(&log_dir),
        Err(AuditError::Symlink { .. })
    ));
    assert!(!elsewhere.exists());
}

#[test]
fn refuses_non_regular_log_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(LOG_FILE_NAME)).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path()),
        Err(AuditError::NotRegularFile { .. })
    ));
}

#[test]
fn malformed_line_is_reported_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append(&[event(0), event(1)]).unwrap();
    let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
    f.write_all(b"not json\n").unwrap();
    let err = read_records(log.path()).unwrap_err();
    assert!(
        matches!(err, AuditError::Malformed { line: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(matches!(
        read_records(&dir.path().join("missing")),
        Err(AuditError::Open { .. })
    ));
}

/// Appends must read only the tail: an append to a large log costs about the same as
/// one to a small log. The bound is loose (a loaded CI machine), the point is that it
/// does not grow with the file.
#[test]
fn append_cost_does_not_grow_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let batch: Vec<Event> = (0..1000).map(event).collect();
    for _ in 0..50 {
        log.append(&batch).unwrap();
    }
    let size = fs::metadata(log.path()).unwrap().len();
    assert!(size > 10 * 1024 * 1024, "{size}");
    // What one `spawn run` does: open, three small batches.
    let started = Instant::now();
    let mut log = AuditLog::open(dir.path()).unwrap();
    for n in 0..3 {
        assert_eq!(log.append(&[event(n)]).unwrap(), vec![50_001 + n]);
    }
    let took = started.elapsed();
    eprintln!("open + 3 appends to a {size}-byte log: {took:?}");
    assert!(
        took.as_millis() < 250,
        "open + 3 appends to a {size}-byte log took {took:?}"
    );
}
