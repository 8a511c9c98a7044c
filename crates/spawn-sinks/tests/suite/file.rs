//! The file sink through a forwarder: rotation, modes, the cursor; OCSF; a torn last line
//! of the log is not forwarded until it is whole.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spawn_sinks::{cursor, Forwarders};

use super::common::{append, cursor as cursor_file, lines, plans, seq_of, until, FAST};

fn numbered(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The lines of `path` and its rotated files, oldest first.
fn delivered(path: &Path, keep: u32) -> Vec<String> {
    let mut out = Vec::new();
    for n in (1..=keep).rev() {
        if let Ok(t) = std::fs::read_to_string(numbered(path, n)) {
            out.extend(t.lines().map(str::to_owned));
        }
    }
    if let Ok(t) = std::fs::read_to_string(path) {
        out.extend(t.lines().map(str::to_owned));
    }
    out
}

#[tokio::test]
async fn rotated_files_hold_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let out = dir.path().join("out").join("audit.jsonl");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    let yaml = format!(
        "- name: local\n  type: file\n  path: {}\n  maxBytes: 16384\n  keep: 50\n  batchSize: 9\n",
        out.display()
    );
    let all = append(&log_dir, 60);
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(10, "the file sink caught up", || {
        fw.status()[0].backlog == 0
    })
    .await;
    fw.shutdown(Duration::from_secs(5)).await;
    assert_eq!(delivered(&out, 50), all, "complete, in order, verbatim");
    assert!(numbered(&out, 2).exists(), "rotated at least twice");
    for n in 1..=50 {
        let p = numbered(&out, n);
        if let Ok(meta) = std::fs::metadata(&p) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert!(meta.len() <= 16384, "{}: {}", p.display(), meta.len());
        }
    }
    let c = cursor::load(&cursor_file(&log_dir, "local")).unwrap();
    assert_eq!(c.seq, 60);
    let mode = std::fs::metadata(cursor_file(&log_dir, "local"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn keep_bounds_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let out = dir.path().join("audit-copy.jsonl");
    let yaml = format!(
        "- name: small\n  type: file\n  path: {}\n  maxBytes: 4096\n  keep: 2\n",
        out.display()
    );
    let all = append(&log_dir, 40);
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(10, "caught up", || fw.status()[0].backlog == 0).await;
    fw.shutdown(Duration::from_secs(5)).await;
    assert!(numbered(&out, 2).exists());
    assert!(!numbered(&out, 3).exists(), "only keep=2 old files");
    // What is kept is the end of the log, whole and in order.
    let kept = delivered(&out, 2);
    assert_eq!(kept[..], all[all.len() - kept.len()..]);
}

#[tokio::test]
async fn a_torn_last_line_waits_until_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let out = dir.path().join("copy.jsonl");
    let all = append(&log_dir, 5);
    // A record being written: its first half now.
    let next = all[4].replace(&format!("\"seq\":{}", seq_of(&all[4])), "\"seq\":6");
    let (head, tail) = next.split_at(next.len() / 2);
    let log = log_dir.join(spawn_audit::LOG_FILE_NAME);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    let yaml = format!("- name: t\n  type: file\n  path: {}\n", out.display());
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(10, "the whole records", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            == 5
    })
    .await;
    // Several polls later, still not forwarded.
    tokio::time::sleep(FAST.poll * 10).await;
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 5);
    f.write_all(format!("{tail}\n").as_bytes()).unwrap();
    until(10, "the completed record", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            == 6
    })
    .await;
    fw.shutdown(Duration::from_secs(5)).await;
    let got: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got[5], next);
    assert_eq!(got, lines(&log_dir));
}

#[tokio::test]
async fn ocsf_events_carry_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("audit");
    let out = dir.path().join("ocsf.jsonl");
    let all = append(&log_dir, 4);
    let yaml = format!(
        "- name: o\n  type: file\n  format: ocsf\n  path: {}\n",
        out.display()
    );
    let fw = Forwarders::start(&log_dir, plans(&yaml, &log_dir), FAST).unwrap();
    until(10, "caught up", || fw.status()[0].backlog == 0).await;
    fw.shutdown(Duration::from_secs(5)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<u64> = events
        .iter()
        .map(|e| e["class_uid"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [3002, 4001, 1007, 6003]);
    for (e, line) in events.iter().zip(&all) {
        assert_eq!(e["raw_data"], line.as_str());
        assert_eq!(e["metadata"]["version"], "1.1.0");
        assert_eq!(
            e["type_uid"].as_u64().unwrap(),
            e["class_uid"].as_u64().unwrap() * 100 + e["activity_id"].as_u64().unwrap()
        );
    }
}
