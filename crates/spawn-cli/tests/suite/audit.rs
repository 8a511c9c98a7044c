//! The audit trail of a run (SPEC §7).

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::helpers::Home;

fn event_types(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["eventType"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn a_run_is_audited_from_start_to_stop() {
    let home = Home::new();
    let out = home.native(&[], &["true"]);
    out.assert_code(0);
    let run_id = out.run_id();
    assert!(run_id.starts_with("tr_"), "run id {run_id:?}");
    let records = home.audit_of(&run_id);
    assert_eq!(
        event_types(&records),
        ["agent.start", "agent.capability.invoke", "agent.stop"],
        "\n{}",
        home.audit_text()
    );
    let invoke = &records[1];
    assert_eq!(invoke["resource"]["name"], "exec");
    assert_eq!(invoke["outcome"], "success");
    let principal = &records[0]["principal"];
    assert_eq!(principal["type"], "agent");
    assert!(
        principal["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ag_")),
        "{principal}"
    );
    for r in &records {
        assert_eq!(&r["principal"], principal, "one principal per run: {r}");
        assert!(r["timestamp"].is_string(), "{r}");
    }
    assert_eq!(records[2]["details"]["exitCode"], 0);
    assert_eq!(records[2]["outcome"], "success");
}

/// Two runs in one home: a short one and one with a denied call.
fn two_runs(home: &Home) -> Vec<Value> {
    home.native(&[], &["true"]).assert_code(0);
    home.sh(&[], "mount -t tmpfs none /tmp 2>/dev/null; exit 3")
        .assert_code(3);
    let records = home.audit();
    assert!(records.len() >= 7, "\n{}", home.audit_text());
    records
}

#[test]
fn seq_strictly_increases_across_runs() {
    let home = Home::new();
    let records = two_runs(&home);
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq is a number"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq is not strictly increasing: {seqs:?}"
    );
}

/// SPEC §7: every record carries `prevHash` and `hash`, and each `prevHash` is the
/// previous record's `hash`.
#[test]
fn denied_mount_is_audited() {
    let home = Home::new();
    let out = home.sh(&[], "mount -t tmpfs none /tmp");
    assert_ne!(out.code, Some(0), "\n{out}");
    let run_id = out.run_id();
    let denied: Vec<Value> = home
        .audit_of(&run_id)
        .into_iter()
        .filter(|r| r["eventType"] == "agent.capability.denied")
        .collect();
    assert!(
        denied
            .iter()
            .any(|r| r["resource"]["name"] == "mount" && r["outcome"] == "denied"),
        "no agent.capability.denied event for mount:\n{}",
        home.audit_text()
    );
}

#[test]
fn secrets_passed_with_env_never_reach_the_audit_log() {
    let home = Home::new();
    let out = home.sh(
        &["--env", "TOKEN=supersecretvalue123"],
        "test \"$TOKEN\" = supersecretvalue123",
    );
    out.assert_code(0);
    let text = home.audit_text();
    assert!(!text.is_empty(), "nothing was audited");
    let leaks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("supersecretvalue123"))
        .collect();
    assert!(
        leaks.is_empty(),
        "the secret value is in the audit log: {leaks:?}"
    );
}

/// SPEC §5: a blocked attempt is counted and audited. A fork refused at the PIDs limit is
/// one, like a timeout or an OOM kill (which are audited as `resource.exhausted`).
#[test]
fn pids_limit_hit_is_audited_as_resource_exhausted() {
    let home = Home::new();
    let script = r#"
import os
r, w = os.pipe()
err = None
for _ in range(200):
    try:
        if os.fork() == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
    except OSError as e:
        err = e.errno
        break
print('errno', err)
"#;
    let out = home.python(&["--pids", "16"], script, &[]);
    out.assert_code(0);
    assert_eq!(
        out.field("errno"),
        "11",
        "fork did not fail at the limit:\n{out}"
    );
    let records = home.audit_of(&out.run_id());
    assert!(
        records
            .iter()
            .any(|r| r["eventType"] == "resource.exhausted"),
        "forks refused at the PIDs limit left no resource.exhausted event:\n{}",
        home.audit_text()
    );
}
