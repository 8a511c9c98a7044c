//! Every exit code of `spawn run` (SPEC §4).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::helpers::{tempdir, write_file, Home, Output};

/// spawn failed before the command ran: exit 125, a message naming `problem` on stderr,
/// and no sign in the audit log that the command was executed.
fn assert_failed_before_running(home: &Home, out: &Output, problem: &str) {
    out.assert_code(125);
    assert!(
        out.stderr.to_lowercase().contains(&problem.to_lowercase()),
        "stderr does not name the problem ({problem:?}):\n{out}"
    );
    assert!(!out.stdout.contains("RAN"), "the command ran:\n{out}");
    let invoked: Vec<Value> = home
        .audit()
        .into_iter()
        .filter(|r| r["eventType"] == "agent.capability.invoke")
        .collect();
    assert!(
        invoked.is_empty(),
        "the audit log says the command was executed: {invoked:?}\n{out}"
    );
}

#[test]
fn the_commands_own_exit_code_is_returned() {
    let home = Home::new();
    let out = home.sh(&[], "echo RAN; exit 7");
    out.assert_code(7);
    let json = out.json();
    assert_eq!(json["exitCode"], 7, "\n{out}");
    assert_eq!(json["signal"], Value::Null, "\n{out}");
    assert_eq!(json["killReason"], Value::Null, "\n{out}");
    assert_eq!(json["execError"], Value::Null, "\n{out}");
    assert_eq!(out.body(), "RAN");
    home.native(&[], &["true"]).assert_code(0);
    home.native(&[], &["false"]).assert_code(1);
}

#[test]
fn timeout_exits_124_promptly() {
    let home = Home::new();
    let out = home.native(&["--timeout", "1s"], &["sleep", "30"]);
    out.assert_code(124);
    let json = out.json();
    assert_eq!(json["killReason"], "timeout", "\n{out}");
    assert_eq!(json["exitCode"], 124, "\n{out}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?} to enforce a 1 s timeout:\n{out}",
        out.elapsed
    );
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "killed before its timeout:\n{out}"
    );
}

#[test]
fn malformed_manifest_exits_125() {
    let home = Home::new();
    let dir = tempdir("spawn-badyaml-");
    let file = write_file(
        dir.path(),
        "agent.yaml",
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: [unclosed\n",
    );
    let file = file.to_string_lossy().into_owned();
    let out = home
        .cmd([
            "run",
            "-f",
            &file,
            "--runtime",
            "native",
            "--",
            "echo",
            "RAN",
        ])
        .run();
    assert_failed_before_running(&home, &out, "agent.yaml");
}

#[test]
fn unknown_manifest_field_exits_125() {
    let home = Home::new();
    let dir = tempdir("spawn-unknown-");
    let file = write_file(
        dir.path(),
        "agent.yaml",
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata:\n  name: demo\nspec:\n  command: [\"echo\", \"RAN\"]\n  \
         sandbox:\n    runtime: native\n    privileged: true\n",
    );
    let file = file.to_string_lossy().into_owned();
    let out = home.cmd(["run", "-f", &file]).run();
    assert_failed_before_running(&home, &out, "privileged");
    assert!(
        out.stderr.contains("line 9"),
        "the error does not give the line:\n{out}"
    );
}

#[test]
fn unsupported_runtime_exits_125_without_falling_back() {
    let home = Home::new();
    let out = home
        .cmd(["run", "--runtime", "firecracker", "--", "echo", "RAN"])
        .run();
    assert_failed_before_running(&home, &out, "firecracker");
    assert!(out.stderr.contains("not supported"), "\n{out}");
}

#[test]
fn the_default_runtime_is_gvisor_and_a_missing_runsc_is_125() {
    let home = Home::new();
    // Without --runtime the command runs in gVisor: the kernel it sees is gVisor's.
    let out = home
        .cmd([
            "run",
            "--json",
            "--",
            "python3",
            "-c",
            "import os; print('kernel', os.uname().release); print('uid', os.getuid())",
        ])
        .run();
    out.assert_code(0);
    assert_eq!(out.json()["runtime"], "gvisor", "\n{out}");
    assert_eq!(out.field("uid"), "1000", "\n{out}");
    let host_release = nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned();
    assert_ne!(
        out.field("kernel"),
        host_release,
        "the agent saw the host's kernel:\n{out}"
    );
    // gVisor unavailable: 125 with the fix, never another runtime.
    let home = Home::new();
    let empty = tempdir("spawn-nopath-");
    let out = home
        .cmd(["run", "--", "echo", "RAN"])
        .env("PATH", empty.path())
        .run();
    assert_failed_before_running(&home, &out, "runsc is not installed");
    assert!(out.stderr.contains("apt-get install runsc"), "\n{out}");
}

#[test]
fn missing_mount_source_exits_125() {
    let home = Home::new();
    let dir = tempdir("spawn-missing-");
    let missing = dir.path().join("no-such-dir");
    let mount = format!("{}:/data", missing.display());
    let out = home
        .cmd([
            "run",
            "--runtime",
            "native",
            "--mount",
            &mount,
            "--",
            "echo",
            "RAN",
        ])
        .run();
    assert_failed_before_running(&home, &out, "does not exist");
    assert!(
        out.stderr.contains("no-such-dir"),
        "stderr does not name the path:\n{out}"
    );
}

#[test]
fn non_executable_file_exits_126() {
    let home = Home::new();
    let dir = tempdir("spawn-noexec-");
    let file = write_file(dir.path(), "f", "#!/bin/sh\necho RAN\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let mount = format!("{}:/x/f", file.display());
    let out = home.native(&["--mount", &mount], &["/x/f"]);
    out.assert_code(126);
    assert!(!out.body().contains("RAN"), "\n{out}");
    let error = out.json()["execError"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("Permission denied"),
        "execError is {error:?}:\n{out}"
    );
    assert!(
        out.stderr.contains("/x/f"),
        "stderr does not name the command:\n{out}"
    );
    // A directory is not executable either.
    home.native(&[], &["/tmp"]).assert_code(126);
}

#[test]
fn missing_command_exits_127() {
    let home = Home::new();
    let out = home.native(&[], &["no-such-command-xyz"]);
    out.assert_code(127);
    assert_eq!(out.json()["execError"], "not found", "\n{out}");
    assert!(
        out.stderr.contains("no-such-command-xyz"),
        "stderr does not name the command:\n{out}"
    );
    home.native(&[], &["/no/such/path/cmd"]).assert_code(127);
}

#[test]
fn death_by_signal_exits_128_plus_n() {
    let home = Home::new();
    let out = home.sh(&[], "kill -TERM $$");
    out.assert_code(143);
    assert_eq!(out.json()["signal"], 15, "\n{out}");
    assert_eq!(out.json()["killReason"], Value::Null, "\n{out}");

    let out = home.sh(&[], "kill -KILL $$");
    out.assert_code(137);
    let json = out.json();
    assert_eq!(json["signal"], 9, "\n{out}");
    assert_eq!(json["killReason"], Value::Null, "not an OOM kill:\n{out}");
}
