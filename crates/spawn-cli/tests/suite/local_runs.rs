//! Local mode's run records: a local `spawn run` is recorded in the store of
//! `$SPAWN_HOME` once it ended, and `spawn runs list|get` (no `--server`) read it.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::helpers::Home;

/// `spawn runs ARGS --json` in `home`, parsed.
fn runs_json(home: &Home, args: &[&str]) -> Value {
    let mut all = vec!["runs"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = home.cmd(all).run();
    out.assert_code(0);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`spawn runs` --json is not JSON ({e}):\n{out}"))
}

#[test]
fn local_runs_are_listed_with_their_state_and_exit_code() {
    let home = Home::new();
    let ok = home.sh(&[], "echo RAN");
    ok.assert_code(0);
    let bad = home.sh(&[], "exit 3");
    bad.assert_code(3);
    let (ok_id, bad_id) = (ok.json()["runId"].clone(), bad.json()["runId"].clone());
    assert!(ok_id.as_str().is_some_and(|i| i.starts_with("tr_")), "{ok}");

    let page = runs_json(&home, &["list"]);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    // Newest first.
    assert_eq!(items[0]["id"], bad_id);
    assert_eq!(items[0]["state"], "failed");
    assert_eq!(items[0]["exitCode"], 3);
    assert_eq!(items[1]["id"], ok_id);
    assert_eq!(items[1]["state"], "succeeded");
    assert_eq!(items[1]["exitCode"], 0);
    for r in items {
        assert_eq!(r["namespace"], "local");
        assert!(r["createdBy"]
            .as_str()
            .is_some_and(|c| c.starts_with("User/")));
        let (c, s, f) = (&r["createdMs"], &r["startedMs"], &r["finishedMs"]);
        assert!(c.as_i64() <= s.as_i64() && s.as_i64() <= f.as_i64(), "{r}");
    }

    // The run's id is its audit events' traceId.
    let id = ok_id.as_str().unwrap_or_default();
    assert!(
        !home.audit_of(id).is_empty(),
        "no audit event has traceId {id}"
    );

    let one = runs_json(&home, &["get", id]);
    assert_eq!(one, items[1]);

    let table = home.cmd(["runs", "list"]).run();
    table.assert_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].contains("failed") && lines[1].trim_end().ends_with('3'),
        "{table}"
    );
    assert!(lines[2].contains("succeeded"), "{table}");

    let missing = home.cmd(["runs", "get", "tr_nosuchrun"]).run();
    missing.assert_code(1);
    assert!(missing.stderr.contains("tr_nosuchrun"), "{missing}");
}

#[test]
fn a_run_interrupted_with_ctrl_c_is_recorded_cancelled() {
    let home = Home::new();
    let running = home.native_cmd(&[], &["sleep", "30"]).start();
    std::thread::sleep(Duration::from_millis(500));
    running.signal(nix::sys::signal::Signal::SIGINT);
    let out = running.wait();
    let id = out.json()["runId"].clone();
    let page = runs_json(&home, &["list"]);
    assert_eq!(page["items"][0]["id"], id, "{page}\n{out}");
    assert_eq!(page["items"][0]["state"], "cancelled", "{page}\n{out}");
}

#[test]
fn the_store_keeps_no_environment_value() {
    let home = Home::new();
    let out = home.native(
        &["--env", "SECRET=hunter2"],
        // The command names the variable, not its value (the command is recorded).
        &["sh", "-c", "test ${#SECRET} = 7"],
    );
    out.assert_code(0);
    let mut seen = 0;
    for file in ["spawn.db", "spawn.db-wal", "spawn.db-shm"] {
        let Ok(bytes) = std::fs::read(home.path().join(file)) else {
            continue;
        };
        seen += 1;
        let mode = std::fs::metadata(home.path().join(file))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600, "{file} is not the owner's alone");
        assert!(
            !bytes.windows(7).any(|w| w == b"hunter2"),
            "{file} holds the environment's value"
        );
    }
    assert!(seen > 0, "no database was written");
    let page = runs_json(&home, &["list"]);
    assert_eq!(page["items"][0]["state"], "succeeded", "{page}");
}

#[test]
fn a_store_that_cannot_be_written_changes_nothing_but_a_warning() {
    let home = Home::new();
    // A directory where the database should be.
    std::fs::create_dir(home.path().join("spawn.db")).expect("mkdir");
    let out = home.sh(&[], "echo RAN; echo ERR >&2; exit 5");
    out.assert_code(5);
    assert_eq!(out.body(), "RAN");
    assert!(out.stderr.contains("ERR"), "{out}");
    assert_eq!(
        out.stderr
            .matches("spawn: could not record the run:")
            .count(),
        1,
        "{out}"
    );
}

#[test]
fn logs_and_cancel_of_local_runs_say_why_not() {
    let home = Home::new();
    let logs = home.cmd(["runs", "logs", "tr_x"]).run();
    logs.assert_code(1);
    assert!(logs.stderr.contains("not kept"), "{logs}");
    let cancel = home.cmd(["runs", "cancel", "tr_x"]).run();
    cancel.assert_code(1);
    assert!(cancel.stderr.contains("Ctrl-C"), "{cancel}");
}

/// Runs the spawn binary with `args` in `home`, its stdout a pipe whose reader is gone.
fn with_reader_gone(home: &Home, args: &[&str]) -> std::process::Output {
    let (reader, writer) = nix::unistd::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
    drop(reader);
    std::process::Command::new(super::helpers::SPAWN)
        .args(args)
        .env("SPAWN_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .output()
        .unwrap_or_else(|e| panic!("start spawn: {e}"))
}

/// A reader that went away (`spawn runs list | head -1`) ends `spawn runs` quietly, as
/// other Unix tools end (SIGPIPE), never with a panic; a run's `--json` result that stdout
/// refuses leaves the run's exit status and says so on stderr.
#[test]
fn a_stdout_whose_reader_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let home = Home::new();
    for _ in 0..3 {
        home.sh(&[], "true").assert_code(0);
    }
    for args in [&["runs", "list"][..], &["runs", "list", "--json"][..]] {
        let out = with_reader_gone(&home, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.signal(),
            Some(nix::libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
    }
    let out = with_reader_gone(
        &home,
        &[
            "run",
            "--runtime",
            "native",
            "--json",
            "--",
            "sh",
            "-c",
            "exit 4",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("could not write the result to stdout"),
        "{stderr}"
    );
}

#[test]
fn records_of_runs_that_end_without_closing_the_store_all_stay() {
    // A run's end does not close the store (closing checkpoints the WAL into the database
    // and deletes it: two fsyncs and an unlink on every run's end); its record stays in
    // the WAL until SQLite checkpoints it at its size limit, and the next process reads
    // it from there. More runs than one brief checkpoint's worth of WAL pages (about 7
    // pages a run), so that at least one checkpoint happens along the way.
    let home = Home::new();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let out = home.sh(&[], "true");
        out.assert_code(0);
        ids.push(out.json()["runId"].clone());
    }
    let page = runs_json(&home, &["list"]);
    let listed: Vec<Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids, "{page}");
}
