//! Server mode: the `spawn` binary against a real `spawnd` on loopback (SPEC §2, §4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../spawn-server/tests/common/mod.rs"]
mod daemon;

use std::process::{Command, Output, Stdio};

use daemon::Daemon;

const SPAWN: &str = env!("CARGO_BIN_EXE_spawn");

/// `spawn --server … ARGS` with `key` in SPAWN_API_KEY (none: unset).
fn spawn(d: &Daemon, key: Option<&str>, ns: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(SPAWN);
    cmd.args(["--server", &format!("http://{}", d.addr), "--namespace", ns])
        .args(args)
        .env_remove("SPAWN_API_KEY")
        .env_remove("SPAWN_SERVER")
        .stdin(Stdio::null());
    if let Some(k) = key {
        cmd.env("SPAWN_API_KEY", k);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const DOCS: &str = "apiVersion: spawn.dev/v1
kind: Agent
metadata:
  name: bot
  namespace: team
spec:
  command: [\"sh\", \"-c\", \"echo from-agent\"]
  sandbox:
    runtime: native
---
apiVersion: spawn.dev/v1
kind: Role
metadata: {name: readers, namespace: team}
rules:
  - {resources: [agents, runs], verbs: [get, list]}
---
apiVersion: spawn.dev/v1
kind: RoleBinding
metadata: {name: readers, namespace: team}
subjects: [{kind: User, name: bob}]
roleRef: {kind: Role, name: readers}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_applies_lists_and_manages_keys_through_spawnd() {
    let d = Daemon::start(None);
    let key = Some(d.admin.as_str());

    // A remote run: the agent's output on our stdout and stderr, its exit code ours.
    let out = spawn(
        &d,
        key,
        "team",
        &[
            "run",
            "--runtime",
            "native",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    // To a regular file as well (output is data, whatever stdout is).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    std::fs::write(&file, "pre\n").unwrap();
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    let status = Command::new(SPAWN)
        .args([
            "--server",
            &format!("http://{}", d.addr),
            "--namespace",
            "team",
            "run",
            "--runtime",
            "native",
            "--",
            "sh",
            "-c",
            "seq 1 2000",
        ])
        .env("SPAWN_API_KEY", &d.admin)
        .stdout(f)
        .status()
        .unwrap();
    assert!(status.success());
    let expected: String = std::iter::once("pre\n".to_owned())
        .chain((1..=2000).map(|i| format!("{i}\n")))
        .collect();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);

    // apply: created, then configured.
    let docs = dir.path().join("docs.yaml");
    std::fs::write(&docs, DOCS).unwrap();
    let out = spawn(&d, key, "team", &["apply", "-f", docs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "agent/bot created\nrole/readers created\nrolebinding/readers created\n"
    );
    let out = spawn(&d, key, "team", &["apply", "-f", docs.to_str().unwrap()]);
    assert_eq!(
        text(&out.stdout),
        "agent/bot configured\nrole/readers configured\nrolebinding/readers configured\n"
    );
    let out = spawn(&d, key, "team", &["agents", "list"]);
    assert!(text(&out.stdout).contains("bot"), "{}", text(&out.stdout));

    // A run of the applied agent, its logs and the list.
    let agent_file = dir.path().join("agent.yaml");
    std::fs::write(&agent_file, DOCS.split("---").next().unwrap()).unwrap();
    let out = spawn(
        &d,
        key,
        "team",
        &["run", "-f", agent_file.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("from-agent"));
    let result: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(result["state"], "succeeded");
    let id = result["runId"].as_str().unwrap();
    let out = spawn(&d, key, "team", &["runs", "logs", id]);
    assert_eq!(text(&out.stdout), "from-agent\n");
    let out = spawn(&d, key, "team", &["runs", "list"]);
    assert!(text(&out.stdout).contains(id));

    // agents start prints the new run's id; agents stop the runs it stops.
    let out = spawn(&d, key, "team", &["agents", "start", "bot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = text(&out.stdout).trim().to_owned();
    assert!(
        started.starts_with("tr_") && !started.contains('\n'),
        "{started}"
    );
    let out = spawn(&d, key, "team", &["agents", "stop", "bot", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(stopped["agent"], "bot", "{stopped}");
    let out = spawn(&d, key, "team", &["agents", "stop", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    // Keys: printed once, alone on stdout; never listed; revoked.
    let out = spawn(
        &d,
        key,
        "team",
        &["keys", "create", "--role", "readers", "--name", "ci"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_key = text(&out.stdout).trim().to_owned();
    assert!(new_key.starts_with("spawn_sk_live_") && !new_key.contains('\n'));
    let out = spawn(&d, Some(&new_key), "team", &["agents", "list"]);
    assert!(
        out.status.success(),
        "the new key reads: {}",
        text(&out.stderr)
    );
    let out = spawn(&d, Some(&new_key), "team", &["agents", "delete", "bot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = spawn(&d, key, "team", &["keys", "list"]);
    assert!(!text(&out.stdout).contains(&new_key[14..]));
    let key_id = text(&out.stdout)
        .lines()
        .find(|l| l.contains("/ci"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(spawn(&d, key, "team", &["keys", "revoke", &key_id])
        .status
        .success());
    let out = spawn(&d, Some(&new_key), "team", &["agents", "list"]);
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );

    // Clear refusals: no key, a key on the command line, flags only local runs take, a
    // server that does not answer.
    let out = spawn(&d, None, "team", &["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("SPAWN_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    let out = spawn(&d, key, "team", &["--api-key", "x", "agents", "list"]);
    assert!(!out.status.success());
    let out = spawn(&d, key, "team", &["run", "--memory", "1Gi", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--memory"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(SPAWN)
        .args(["--server", "http://127.0.0.1:9", "run", "--", "true"])
        .env("SPAWN_API_KEY", &d.admin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("could not be reached"),
        "{}",
        text(&out.stderr)
    );
    let out = spawn(&d, key, "Team!", &["agents", "list"]);
    assert!(
        text(&out.stderr).contains("--namespace"),
        "{}",
        text(&out.stderr)
    );
}

/// `spawn secrets` through spawnd: set from stdin (never argv), listed without the value,
/// used by a remote run (its output redacted), deleted; rotation is refused with where it
/// is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_lists_and_deletes_secrets_through_spawnd() {
    const VALUE: &str = "remote-Secret-value-5d1c";
    let d = Daemon::start(None);
    let key = Some(d.admin.as_str());
    let mut set = Command::new(SPAWN)
        .args([
            "--server",
            &format!("http://{}", d.addr),
            "--namespace",
            "team",
        ])
        .args(["secrets", "set", "REMOTE_TOKEN", "--from-stdin"])
        .env("SPAWN_API_KEY", &d.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut set.stdin.take().unwrap(),
        format!("{VALUE}\n").as_bytes(),
    )
    .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("version 1"),
        "{}",
        text(&out.stdout)
    );
    let out = spawn(&d, key, "team", &["secrets", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.contains("REMOTE_TOKEN") && !listed.contains(VALUE),
        "{listed}"
    );
    // A remote run granted it: the agent has it, the output shows the marker.
    let out = spawn(
        &d,
        key,
        "team",
        &[
            "run",
            "--secret",
            "REMOTE_TOKEN",
            "--",
            "sh",
            "-c",
            "echo \"t=$REMOTE_TOKEN\"; test \"$REMOTE_TOKEN\" = remote-Secret-value-5d1c && echo same",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "t=[REDACTED:REMOTE_TOKEN]\nsame\n");
    let out = spawn(&d, key, "team", &["secrets", "rotate-data-key"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rotationDays"),
        "{}",
        text(&out.stderr)
    );
    let out = spawn(&d, key, "team", &["secrets", "delete", "REMOTE_TOKEN"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = spawn(&d, key, "team", &["secrets", "delete", "REMOTE_TOKEN"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    assert!(!d.audit().contains(VALUE));
}
