//! The audit log in the database, on SQLite and on a real PostgreSQL server: stored byte for
//! byte from a real log file, append-only, exported bit for bit, and every way of changing
//! it behind the store's back — edits, deletions, insertions, reordering, truncation, a
//! whole history rewritten with a fresh chain — found by `audit_verify` and named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Db;
use spawn_audit::checkpoint::{self, Opened, SigningKey};
use spawn_audit::cut::Cut;
use spawn_audit::query::Filter;
use spawn_audit::{AuditLog, Event, EventType, Outcome, Principal, Resource};
use spawn_store::{Backend, Ingest, Retained, Store, StoreError, StoredRecord};

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::common::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::common::postgres().await).await
                }
            )*
        }
    };
}

on_both!(
    a_log_is_stored_as_written_append_only_and_exported_bit_for_bit,
    only_a_continuation_of_the_stored_chain_is_taken,
    every_change_behind_the_stores_back_is_found_and_named,
    queries_narrow_in_the_database_and_decide_by_the_filter,
    retention_cuts_under_a_signed_cut_and_verification_goes_on,
    a_log_of_many_chunks_is_caught_up_whole_and_in_order,
);

const LOG: &str = "spawn.audit/log_test";
const RECORDS: usize = 40;

/// Event `i` of the test log; some carry hostile strings.
fn event(i: usize) -> Event {
    let hostile = [
        "plain",
        "line\nbreak\r\n{\"seq\":1}",
        "\u{1b}[31mred\u{1b}[0m \u{7}",
        "quote \" backslash \\ nul \u{0} del \u{7f}",
        "non-BMP 😀 and \u{e000}\u{ffff}",
        "'; DROP TABLE audit_records; --",
    ];
    let (kind, outcome) = match i % 4 {
        0 => (EventType::AgentStart, Outcome::Success),
        1 => (EventType::AgentCapabilityDenied, Outcome::Denied),
        2 => (EventType::AgentNetConnect, Outcome::Success),
        _ => (EventType::AuthFailure, Outcome::Error),
    };
    let mut e = Event::new(
        kind,
        Principal {
            kind: "agent".into(),
            id: format!("ag_{}", i % 3),
            name: Some(format!("agent-{}", i % 3)),
        },
        Resource {
            kind: "capability".into(),
            name: "exec".into(),
        },
        "execute",
        outcome,
    )
    .with_detail("argv", hostile[i % hostile.len()]);
    e.trace_id = Some(format!("tr_{}", i % 5));
    e
}

/// A real log of `RECORDS` records in `dir`, written in a few batches, with a checkpoint
/// signed at 30 records and one at the end. Returns the log file, the key and the notes.
fn write_log(dir: &Path, events: &[Event]) -> (PathBuf, SigningKey) {
    let key = SigningKey::generate(LOG).unwrap();
    let mut log = AuditLog::open(dir).unwrap();
    for chunk in events[..30].chunks(7) {
        log.append(chunk).unwrap();
        // Each batch at a later millisecond (retention cuts by time).
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    log.sync().unwrap();
    checkpoint::sign_log(log.path(), &key).unwrap();
    log.append(&events[30..]).unwrap();
    log.sync().unwrap();
    checkpoint::sign_log(log.path(), &key).unwrap();
    (log.path().to_owned(), key)
}

fn opened(dir: &Path, key: &SigningKey) -> Vec<Opened> {
    let verifier = key.verifier();
    checkpoint::notes(dir)
        .unwrap()
        .into_iter()
        .map(|(path, note)| (path, verifier.open(&note)))
        .collect()
}

/// The test log written and stored; returns its directory (kept alive) and key.
async fn stored(db: &Db) -> (tempfile::TempDir, PathBuf, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..RECORDS).map(event).collect();
    let (path, key) = write_log(dir.path(), &events);
    let mut ingest = Ingest::new(&db.store, LOG, &path).await.unwrap();
    let mut n = 0;
    loop {
        let got = ingest.step(&db.store).await.unwrap();
        if got == 0 {
            break;
        }
        n += got;
    }
    assert_eq!(n, RECORDS);
    assert_eq!(ingest.skipped, 0);
    (dir, path, key)
}

/// Runs SQL on the database directly, as someone holding it would.
async fn raw(db: &Db, statements: &[&str]) -> Result<(), String> {
    use sqlx::Connection as _;
    match db.store.backend() {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .map_err(|e| e.to_string())?;
            for s in statements {
                sqlx::query(s)
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url)
                .await
                .map_err(|e| e.to_string())?;
            for s in statements {
                sqlx::query(s)
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

async fn drop_triggers(db: &Db) {
    let statements: &[&str] = match db.store.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_records_no_update",
            "DROP TRIGGER audit_records_no_delete",
        ],
        Backend::Postgres => &[
            "DROP TRIGGER audit_records_no_update ON audit_records",
            "DROP TRIGGER audit_records_no_delete ON audit_records",
            "DROP TRIGGER audit_records_no_truncate ON audit_records",
        ],
    };
    raw(db, statements).await.unwrap();
}

async fn export(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    store.audit_export(LOG, &mut out).await.unwrap();
    out
}

async fn a_log_is_stored_as_written_append_only_and_exported_bit_for_bit(db: Db) {
    let (dir, path, key) = stored(&db).await;
    // Byte for byte: the export is the file.
    assert_eq!(export(&db.store).await, std::fs::read(&path).unwrap());
    assert_eq!(db.store.audit_logs().await.unwrap(), vec![LOG.to_owned()]);
    let head = db.store.audit_head(LOG).await.unwrap().unwrap();
    assert_eq!(head.0, RECORDS as i64);

    // It verifies, checkpoints included, and the export verifies as the file does.
    let v = db
        .store
        .audit_verify(LOG, opened(dir.path(), &key), Vec::new())
        .await
        .unwrap();
    assert!(v.broken.is_none(), "{:?}", v.broken);
    assert_eq!(v.records, RECORDS as u64);

    // Nobody changes or removes a record through SQL while the schema stands.
    let mut refused = vec![
        "UPDATE audit_records SET outcome = 'success' WHERE seq = 2",
        "UPDATE audit_records SET line = 'x'",
        "DELETE FROM audit_records WHERE seq = 40",
        "DELETE FROM audit_records",
    ];
    if db.store.backend() == Backend::Postgres {
        refused.push("TRUNCATE audit_records");
    }
    for sql in refused {
        let err = raw(&db, &[sql]).await.unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(export(&db.store).await, std::fs::read(&path).unwrap());

    // Records appended to the file later are taken by a new ingest, which resumes.
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append(&[event(99)]).unwrap();
    let mut ingest = Ingest::new(&db.store, LOG, &path).await.unwrap();
    assert_eq!(ingest.stored(), Some(RECORDS as i64));
    assert_eq!(ingest.step(&db.store).await.unwrap(), 1);
    assert_eq!(export(&db.store).await, std::fs::read(&path).unwrap());
}

async fn only_a_continuation_of_the_stored_chain_is_taken(db: Db) {
    let (_dir, path, _key) = stored(&db).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<StoredRecord> = text
        .lines()
        .map(|l| StoredRecord::from_line(l).unwrap())
        .collect();
    let last = records.last().unwrap().clone();
    let forged = |seq: i64, prev: &str| StoredRecord {
        seq,
        prev_hash: prev.to_owned(),
        ..last.clone()
    };
    let cases: Vec<(&str, Vec<StoredRecord>)> = vec![
        ("a stored seq again", vec![records[10].clone()]),
        ("the last record again", vec![last.clone()]),
        ("a gap", vec![forged(last.seq + 2, &last.hash)]),
        (
            "a wrong prevHash",
            vec![forged(last.seq + 1, &records[3].hash)],
        ),
        (
            "a good first and a bad second",
            vec![
                forged(last.seq + 1, &last.hash),
                forged(last.seq + 2, "sha256:00"),
            ],
        ),
        ("seq 0", vec![forged(0, &last.hash)]),
        ("a negative seq", vec![forged(-1, &last.hash)]),
        ("i64::MAX", vec![forged(i64::MAX, &last.hash)]),
    ];
    let before = export(&db.store).await;
    for (what, batch) in cases {
        let err = db.store.audit_append(LOG, &batch).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AuditChain { .. }),
            "{what}: {err}"
        );
        assert_eq!(
            export(&db.store).await,
            before,
            "{what}: something was written"
        );
    }
    // Lines that are not chained records are refused by the reader.
    for line in [
        "",
        "{}",
        "not json",
        "{\"seq\":1}",
        "{\"seq\":18446744073709551615,\"timestamp\":\"t\",\"eventType\":\"e\",\"principal\":{\"id\":\"p\"},\"outcome\":\"o\",\"prevHash\":\"p\",\"hash\":\"h\"}",
        "{\"seq\":1,\"seq\":2,\"timestamp\":\"t\",\"eventType\":\"e\",\"principal\":{\"id\":\"p\"},\"outcome\":\"o\",\"prevHash\":\"p\",\"hash\":\"h\"}",
        "{\"seq\":1,\"timestamp\":\"t\",\"eventType\":\"e\",\"principal\":{\"id\":\"p\"},\"outcome\":\"o\",\"prevHash\":\"p\",\"hash\":\"h\"}\n{}",
    ] {
        assert!(StoredRecord::from_line(line).is_err(), "{line:?}");
    }
}

/// One way of changing the stored log behind the store's back, and what `verify` must say.
struct Tamper {
    what: &'static str,
    /// Statements (`{L}` is replaced by a record's line, `{Lk}` by seq k's).
    sql: Vec<String>,
    seq: u64,
    reason: &'static str,
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The SQL that stores `line` as record `seq` of the test log, its columns read from it
/// (as someone holding the database would write it).
fn insert_sql(seq: usize, line: &str) -> String {
    let r = StoredRecord::from_line(line).unwrap();
    format!(
        "INSERT INTO audit_records (log, seq, hash, prev_hash, at, event_type, principal, outcome, trace_id, line) \
         VALUES ('{LOG}', {seq}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        r.hash, r.prev_hash, r.timestamp, r.event_type, quote(&r.principal), r.outcome,
        r.trace_id.unwrap_or_default(), quote(line)
    )
}

async fn every_change_behind_the_stores_back_is_found_and_named(db: Db) {
    let (dir, path, key) = stored(&db).await;
    drop_triggers(&db).await;
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let line = |seq: usize| lines[seq - 1].clone();
    let edited = line(7).replace("\"execute\"", "\"exfiltrate\"");
    assert_ne!(edited, line(7));

    // A whole history rewritten consistently: the same events with one changed, a fresh
    // chain from the genesis hash (no key needed for that; the checkpoints need one).
    let rewritten_dir = tempfile::tempdir().unwrap();
    let mut events: Vec<Event> = (0..RECORDS).map(event).collect();
    events[4].outcome = Outcome::Success;
    let mut fresh = AuditLog::open(rewritten_dir.path()).unwrap();
    fresh.append(&events).unwrap();
    let fresh_lines: Vec<String> = std::fs::read_to_string(fresh.path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut rewrite = vec![format!("DELETE FROM audit_records WHERE log = '{LOG}'")];
    for (i, l) in fresh_lines.iter().enumerate() {
        rewrite.push(insert_sql(i + 1, l));
    }

    let cases = vec![
        Tamper {
            what: "a record's content edited, its hash kept",
            sql: vec![format!(
                "UPDATE audit_records SET line = '{}' WHERE seq = 7",
                quote(&edited)
            )],
            seq: 7,
            reason: "was changed",
        },
        Tamper {
            what: "only a queried column edited (the line kept)",
            sql: vec!["UPDATE audit_records SET outcome = 'success' WHERE seq = 6".into()],
            seq: 6,
            reason: "outcome is not the record's",
        },
        Tamper {
            what: "only the principal column edited",
            sql: vec!["UPDATE audit_records SET principal = 'ag_other' WHERE seq = 9".into()],
            seq: 9,
            reason: "principal is not the record's",
        },
        Tamper {
            what: "a record in the middle deleted",
            sql: vec!["DELETE FROM audit_records WHERE seq = 12".into()],
            seq: 13,
            reason: "missing",
        },
        Tamper {
            what: "a forged record inserted, the later ones renumbered",
            sql: {
                let mut s = vec!["DELETE FROM audit_records WHERE seq >= 20".to_owned()];
                let forged = line(19).replace("\"seq\":19", "\"seq\":20");
                let mut all = vec![forged];
                all.extend((20..=RECORDS).map(|k| {
                    line(k).replace(&format!("\"seq\":{k},"), &format!("\"seq\":{},", k + 1))
                }));
                for (i, l) in all.iter().enumerate() {
                    s.push(insert_sql(20 + i, l));
                }
                s
            },
            seq: 20,
            reason: "prevHash is not seq 19's hash",
        },
        Tamper {
            what: "two records swapped (lines and seqs)",
            sql: vec![
                format!(
                    "UPDATE audit_records SET line = '{}' WHERE seq = 15",
                    quote(&line(16).replace("\"seq\":16,", "\"seq\":15,"))
                ),
                format!(
                    "UPDATE audit_records SET line = '{}' WHERE seq = 16",
                    quote(&line(15).replace("\"seq\":15,", "\"seq\":16,"))
                ),
            ],
            seq: 15,
            reason: "prevHash is not seq 14's hash",
        },
        Tamper {
            what: "the newest records cut off",
            sql: vec!["DELETE FROM audit_records WHERE seq > 35".into()],
            seq: 36,
            reason: "were removed",
        },
        Tamper {
            what: "the newest records cut off below a checkpoint",
            sql: vec!["DELETE FROM audit_records WHERE seq > 25".into()],
            seq: 26,
            reason: "were removed",
        },
        Tamper {
            what: "the first records cut off",
            sql: vec!["DELETE FROM audit_records WHERE seq < 3".into()],
            seq: 3,
            reason: "not 1",
        },
        Tamper {
            what: "everything deleted",
            sql: vec!["DELETE FROM audit_records".into()],
            seq: 1,
            reason: "were removed",
        },
        Tamper {
            what: "the whole history rewritten with a fresh, consistent chain",
            sql: rewrite,
            seq: 30,
            reason: "another history",
        },
    ];

    let original = export(&db.store).await;
    for case in cases {
        let statements: Vec<&str> = case.sql.iter().map(String::as_str).collect();
        raw(&db, &statements)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        let v = db
            .store
            .audit_verify(LOG, opened(dir.path(), &key), Vec::new())
            .await
            .unwrap();
        let b = v
            .broken
            .unwrap_or_else(|| panic!("{}: not found", case.what));
        assert_eq!(b.seq, case.seq, "{}: {b:?}", case.what);
        assert!(b.reason.contains(case.reason), "{}: {b:?}", case.what);

        // Put the original back for the next case.
        let mut restore = vec![format!("DELETE FROM audit_records WHERE log = '{LOG}'")];
        for (i, l) in String::from_utf8(original.clone())
            .unwrap()
            .lines()
            .enumerate()
        {
            restore.push(insert_sql(i + 1, l));
        }
        let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
        raw(&db, &restore).await.unwrap();
        let v = db
            .store
            .audit_verify(LOG, opened(dir.path(), &key), Vec::new())
            .await
            .unwrap();
        assert!(
            v.broken.is_none(),
            "restored after {}: {:?}",
            case.what,
            v.broken
        );
    }
}

async fn queries_narrow_in_the_database_and_decide_by_the_filter(db: Db) {
    let (_dir, path, _key) = stored(&db).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let all: Vec<(serde_json::Value, &str)> = text
        .lines()
        .map(|l| (serde_json::from_str(l).unwrap(), l))
        .collect();
    let filters = vec![
        Filter::default(),
        Filter {
            types: vec!["agent.capability.denied".into(), "auth.failure".into()],
            ..Filter::default()
        },
        Filter {
            outcome: Some("denied".into()),
            ..Filter::default()
        },
        Filter {
            agent: Some("agent-1".into()),
            ..Filter::default()
        },
        Filter {
            principal: Some("agent/ag_2".into()),
            trace: Some("tr_3".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("DROP TABLE".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("%".into()),
            ..Filter::default()
        },
        Filter {
            types: vec!["'; DROP TABLE audit_records; --".into()],
            ..Filter::default()
        },
        Filter {
            since: Some("9999-01-01T00:00:00.000Z".into()),
            ..Filter::default()
        },
    ];
    for f in filters {
        let want: Vec<i64> = all
            .iter()
            .filter(|(r, l)| f.matches(r, l))
            .map(|(r, _)| r["seq"].as_i64().unwrap())
            .collect();
        let got: Vec<i64> = db
            .store
            .audit_query(LOG, &f, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(got, want, "{f:?}");
        // Paged: a limit and a cursor give the same records.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = db.store.audit_query(LOG, &f, after, 3).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            paged.extend(page.iter().map(|l| l.seq));
        }
        assert_eq!(paged, want, "{f:?} paged");
    }
    assert!(db.store.audit_head(LOG).await.unwrap().is_some());
}

fn cuts(key: &SigningKey, stored: Vec<(i64, String)>) -> Vec<Cut> {
    stored
        .into_iter()
        .map(|(_, note)| Cut::open(&key.verifier(), &note).unwrap())
        .collect()
}

async fn retention_cuts_under_a_signed_cut_and_verification_goes_on(db: Db) {
    let (dir, path, key) = stored(&db).await;
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let at = |seq: usize| StoredRecord::from_line(&lines[seq - 1]).unwrap().timestamp;
    assert!(at(14) < at(15), "batches at distinct times");

    // Nothing older than the first record: nothing cut.
    let r = db
        .store
        .audit_retain(LOG, &key, opened(dir.path(), &key), dir.path(), &at(1))
        .await
        .unwrap();
    assert_eq!(r, Retained::Nothing);

    // Records before record 15's time: 1..14 cut, under a signed cut kept with the
    // checkpoints and in the database.
    let r = db
        .store
        .audit_retain(LOG, &key, opened(dir.path(), &key), dir.path(), &at(15))
        .await
        .unwrap();
    assert_eq!(
        r,
        Retained::Cut {
            seq: 14,
            deleted: 14
        }
    );
    let note_file = dir.path().join("checkpoints/00000000000000000014.cut.note");
    let note = std::fs::read_to_string(&note_file).unwrap();
    let stored_cuts = db.store.audit_cuts(LOG).await.unwrap();
    assert_eq!(stored_cuts, vec![(14, note.clone())]);
    let export_after = export(&db.store).await;
    assert_eq!(export_after, text_of(&lines[14..]));

    // It verifies across the cut (checkpoints after it checked), in the database and as an
    // export; without the cut it is a log whose first records were removed.
    let v = db
        .store
        .audit_verify(
            LOG,
            opened(dir.path(), &key),
            cuts(&key, stored_cuts.clone()),
        )
        .await
        .unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.records, 26);
    let v = spawn_audit::cut::verify_log(
        export_after.as_slice(),
        &opened(dir.path(), &key),
        &cuts(&key, stored_cuts.clone()),
    )
    .unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    let v = db
        .store
        .audit_verify(LOG, opened(dir.path(), &key), Vec::new())
        .await
        .unwrap();
    assert!(v.broken.unwrap().reason.contains("not 1"));

    // Only what a cut covers may be deleted; a cut's row is kept for good.
    for sql in [
        "DELETE FROM audit_records WHERE seq = 20",
        "DELETE FROM audit_records",
        "DELETE FROM audit_cuts",
        "UPDATE audit_cuts SET seq = 40",
    ] {
        let err = raw(&db, &[sql]).await.unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    // A cut where the database holds no such record is refused.
    let err = db
        .store
        .audit_cut(LOG, 20, "sha256:00", "note")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AuditChain { .. }), "{err}");

    // The file cut at the same seq: the records up to it are a hole; a new copy of it
    // reads from past the hole, passing nothing over.
    let file_cut = spawn_audit::cut::cut_file(&path, &cuts(&key, stored_cuts.clone())[0]).unwrap();
    assert!(
        matches!(file_cut, spawn_audit::cut::FileCut::Cut { seq: 14, .. }),
        "{file_cut:?}"
    );
    assert_eq!(spawn_audit::read_records(&path).unwrap()[0].seq, 15);
    let mut fresh = Ingest::new(&db.store, LOG, &path).await.unwrap();
    assert_eq!(fresh.catch_up(&db.store).await.unwrap(), 0);
    assert_eq!(fresh.skipped, 0);

    // The log goes on after the cut; a second cut takes everything; the copy goes on from
    // the cut when no record is left.
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append(&[event(98)]).unwrap();
    let mut ingest = Ingest::new(&db.store, LOG, &path).await.unwrap();
    assert_eq!(ingest.step(&db.store).await.unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(3));
    let r = db
        .store
        .audit_retain(
            LOG,
            &key,
            opened(dir.path(), &key),
            dir.path(),
            "9999-01-01T00:00:00.000Z",
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        Retained::Cut {
            seq: 41,
            deleted: 27
        }
    );
    assert!(export(&db.store).await.is_empty());
    assert_eq!(
        db.store.audit_head(LOG).await.unwrap().map(|h| h.0),
        Some(41)
    );
    log.append(&[event(99)]).unwrap();
    let all_cuts = cuts(&key, db.store.audit_cuts(LOG).await.unwrap());
    assert_eq!(all_cuts.len(), 2);
    // The file's second cut, over the hole of the first.
    let file_cut = spawn_audit::cut::cut_file(&path, &all_cuts[1]).unwrap();
    assert!(
        matches!(file_cut, spawn_audit::cut::FileCut::Cut { seq: 41, .. }),
        "{file_cut:?}"
    );
    let mut ingest = Ingest::new(&db.store, LOG, &path).await.unwrap();
    assert_eq!(ingest.step(&db.store).await.unwrap(), 1);
    assert_eq!(ingest.skipped, 0);
    let v = db
        .store
        .audit_verify(LOG, opened(dir.path(), &key), all_cuts.clone())
        .await
        .unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.first_seq, Some(42));

    // The file log itself, cut, verifies with the cut notes among its checkpoints.
    let (file, len) = spawn_audit::snapshot(&path).unwrap();
    let v = spawn_audit::cut::verify_log(
        std::io::BufReader::new(std::io::Read::take(file, len)),
        &opened(dir.path(), &key),
        &all_cuts,
    )
    .unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.first_seq, Some(42));

    // After a cut, the newest records deleted behind the store's back are still found
    // (the checkpoint after the cut holds them).
    log.append(&[event(100)]).unwrap();
    assert_eq!(ingest.step(&db.store).await.unwrap(), 1);
    checkpoint::sign_log(&path, &key).unwrap();
    drop_triggers(&db).await;
    raw(&db, &["DELETE FROM audit_records WHERE seq = 43"])
        .await
        .unwrap();
    let v = db
        .store
        .audit_verify(LOG, opened(dir.path(), &key), all_cuts.clone())
        .await
        .unwrap();
    let b = v.broken.unwrap();
    assert_eq!(b.seq, 43, "{b:?}");
    assert!(b.reason.contains("were removed"), "{b:?}");

    // A log changed behind the store's back is not cut (a cut would vouch for the change).
    raw(
        &db,
        &["UPDATE audit_records SET outcome = 'success' WHERE seq = 42"],
    )
    .await
    .unwrap();
    let r = db
        .store
        .audit_retain(
            LOG,
            &key,
            opened(dir.path(), &key),
            dir.path(),
            "9999-01-01T00:00:00.000Z",
        )
        .await
        .unwrap();
    assert!(matches!(r, Retained::Broken(_)), "{r:?}");
    assert_eq!(db.store.audit_cuts(LOG).await.unwrap().len(), 2);
}

fn text_of(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// `catch_up` reads and parses the next chunk of the file while the one before is stored:
/// a log of several chunks (each at most `INGEST_BYTES`), with a torn fragment in the
/// middle and a line still being written at the end, is stored whole and in order.
async fn a_log_of_many_chunks_is_caught_up_whole_and_in_order(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let events: Vec<Event> = (0..1000).map(event).collect();
    for _ in 0..6 {
        log.append(&events).unwrap();
    }
    // A fragment a crash tore, closed by the next append's newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"seq\":999999,\"torn"))
        .unwrap();
    for _ in 0..6 {
        log.append(&events).unwrap();
    }
    let len = std::fs::metadata(log.path()).unwrap().len();
    assert!(len > spawn_store::INGEST_BYTES, "{len}");
    // A line still being written: not taken until it ends.
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"seq\":12001,"))
        .unwrap();
    let mut ingest = Ingest::new(&db.store, LOG, log.path()).await.unwrap();
    // A second copier of the same log, made before the first stored anything.
    let mut late = Ingest::new(&db.store, LOG, log.path()).await.unwrap();
    assert_eq!(ingest.catch_up(&db.store).await.unwrap(), 12_000);
    assert_eq!(ingest.skipped, 1);
    assert_eq!(ingest.catch_up(&db.store).await.unwrap(), 0);
    // It loses the race once (nothing written), then resumes after what the database
    // holds, and takes what comes next.
    let err = late.catch_up(&db.store).await.unwrap_err();
    assert!(matches!(err, StoreError::AuditChain { .. }), "{err}");
    assert_eq!(late.catch_up(&db.store).await.unwrap(), 0);
    assert_eq!(late.stored(), Some(12_000));
    let text = std::fs::read_to_string(log.path()).unwrap();
    let records: Vec<&str> = text
        .lines()
        .filter(|l| StoredRecord::from_line(l).is_ok())
        .collect();
    assert_eq!(records.len(), 12_000);
    let stored = String::from_utf8(export(&db.store).await).unwrap();
    assert_eq!(stored.lines().collect::<Vec<_>>(), records);
    log.append(&events[..3]).unwrap();
    assert_eq!(late.catch_up(&db.store).await.unwrap(), 3);
    // Now the first is the one behind: it loses once, then resumes.
    assert!(ingest.catch_up(&db.store).await.is_err());
    assert_eq!(ingest.catch_up(&db.store).await.unwrap(), 0);
    assert_eq!(ingest.stored(), Some(12_003));
    assert_eq!(
        db.store.audit_head(LOG).await.unwrap().map(|h| h.0),
        Some(12_003)
    );
}
