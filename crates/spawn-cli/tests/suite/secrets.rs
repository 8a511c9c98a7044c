//! Secrets end to end: `spawn secrets` keeps them sealed in `$SPAWN_HOME`; a run granted one
//! (`--secret NAME`, or the manifest's `capabilities.secrets`) gets it in its agent's
//! environment on every runtime, and nothing else holds it: not argv, not the runtimes'
//! bundles, arguments or environments, not any file spawn writes, not the audit log
//! (which records each access); a secret that cannot be had stops the run (125).

use serde_json::Value;

use super::helpers::{tempdir, Home};

const VALUE: &str = "tok-S3CR3T-9f8e7d6c5b4a";

/// The value and the forms it could be written in.
fn forms() -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        VALUE.as_bytes().to_vec(),
        b64.into_bytes(),
        hex.into_bytes(),
    ]
}

fn set(home: &Home, name: &str, value: &[u8]) {
    let dir = tempdir("spawn-secret-value");
    let file = dir.path().join("v");
    std::fs::write(&file, value).unwrap_or_else(|e| panic!("write the value: {e}"));
    home.cmd(["secrets", "set", name, "--from-file"])
        .arg_path(&file)
        .run()
        .assert_code(0);
}

/// Every regular file under `dir` that holds one of `forms` (FIFOs and sockets are not
/// opened).
fn files_holding(dir: &std::path::Path, forms: &[Vec<u8>]) -> Vec<String> {
    files_holding_since(dir, forms, std::time::SystemTime::UNIX_EPOCH)
}

/// [`files_holding`], among the files modified at or after `since` (places shared with
/// the rest of the machine: a source tree or a shell's script there may quote the test's
/// own value).
fn files_holding_since(
    dir: &std::path::Path,
    forms: &[Vec<u8>],
    since: std::time::SystemTime,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && meta.modified().is_ok_and(|m| m >= since) {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if forms
                        .iter()
                        .any(|f| bytes.windows(f.len()).any(|w| w == f.as_slice()))
                    {
                        found.push(e.path().display().to_string());
                    }
                }
            }
        }
    }
    found
}

/// The host processes of spawn and its runtimes (not the sandboxed agent's own) whose
/// argv or environment holds the value.
fn runtime_processes_holding(value: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let procs = std::fs::read_dir("/proc").unwrap_or_else(|e| panic!("/proc: {e}"));
    for e in procs.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if ![
            "spawn",
            "runc",
            "runsc",
            "runsc-gofer",
            "runsc-sandbox",
            "exe",
        ]
        .contains(&comm)
        {
            continue;
        }
        for f in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(p.join(f)) {
                if bytes.windows(value.len()).any(|w| w == value) {
                    found.push(format!("{} ({comm}) {f}", p.display()));
                }
            }
        }
    }
    found
}

#[test]
fn a_granted_secret_reaches_the_agent_and_nothing_else_on_every_runtime() {
    let home = Home::new();
    set(&home, "GH_TOKEN", VALUE.as_bytes());
    for runtime in ["native", "container", "gvisor"] {
        // The agent sees the value; no descriptor of spawn's is left open in it; its argv
        // does not hold it. While it runs, neither spawn nor its runtime's processes hold
        // it in their argv or environment, and no file of the run's does.
        let running = home
            .cmd([
                "run",
                "--runtime",
                runtime,
                "--json",
                "--secret",
                "GH_TOKEN",
                "--",
                "sh",
                "-c",
                "printf %s \"$GH_TOKEN\" | sha256sum | cut -c1-64; ls /proc/self/fd | wc -l; \
                 tr '\\0' ' ' < /proc/self/cmdline; echo; sleep 2",
            ])
            .start();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let during = runtime_processes_holding(VALUE.as_bytes());
        let shm = files_holding(std::path::Path::new("/dev/shm/spawn"), &forms());
        let out = running.wait();
        out.assert_code(0);
        assert!(during.is_empty(), "{runtime}: {during:?}");
        assert!(shm.is_empty(), "{runtime}: {shm:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        // The agent has the value (its digest: the value itself would be redacted).
        assert_eq!(lines[0], sha256_hex(VALUE.as_bytes()), "{runtime}: {out}");
        // stdin, stdout, stderr and ls's own directory.
        assert_eq!(
            lines[1].trim(),
            "4",
            "{runtime}: a descriptor leaked into the agent: {out}"
        );
        assert!(!lines[2].contains(VALUE), "{runtime}");
        // The access is on record, without the value.
        let access: Vec<Value> = home
            .audit_of(&out.run_id())
            .into_iter()
            .filter(|e| e["eventType"] == "agent.secret.access")
            .collect();
        assert_eq!(access.len(), 1, "{runtime}: {}", home.audit_text());
        assert_eq!(access[0]["outcome"], "success");
        assert_eq!(access[0]["resource"]["name"], "GH_TOKEN");
        assert_eq!(access[0]["details"]["env"], "GH_TOKEN");
        assert_eq!(access[0]["details"]["source"], "store://GH_TOKEN");
    }
    // Nothing spawn keeps holds it: the store's files, the audit log, the run records, the
    // keys, the runtimes' state.
    let kept = files_holding(home.path(), &forms());
    assert!(kept.is_empty(), "{kept:?}");
    for dir in ["/dev/shm/spawn", "/run/runc", "/var/run/runsc"] {
        let found = files_holding(std::path::Path::new(dir), &forms());
        assert!(found.is_empty(), "{dir}: {found:?}");
    }
}

/// Every file where spawn, its runtimes or its runs could leave something: spawn's home
/// (store, keys, audit log, run records), its runtime directory on tmpfs (bundles, control
/// sockets' directory), the runtimes' state, and the host's temporary directories.
fn places_of(home: &Home) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![home.path().to_owned()];
    for d in [
        "/dev/shm",
        "/run/runc",
        "/run/runsc",
        "/var/run/runsc",
        "/run/spawn",
        "/tmp",
        "/var/tmp",
        "/var/log",
    ] {
        dirs.push(d.into());
    }
    dirs
}

/// After runs that print a secret raw and encoded, write it to files of their own, crash,
/// time out, and whose spawn is SIGKILLed mid-run, on every runtime: no file anywhere
/// spawn, its runtimes or the host keep holds the value or any encoding of it; what spawn
/// relayed holds only markers.
#[test]
fn a_secret_leaves_no_trace_after_crashes_timeouts_and_kills() {
    use base64::Engine as _;
    // A value of its own (other tests' runs may hold theirs meanwhile).
    const LEAK: &str = "Lk-7Hq2Vw9-only-in-this-test-4c1e";
    let mut leak_forms = vec![
        LEAK.as_bytes().to_vec(),
        LEAK.to_ascii_lowercase().into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(LEAK)
            .into_bytes(),
        LEAK.bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    ];
    leak_forms.dedup();
    let began = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let home = Home::new();
    set(&home, "LEAK", LEAK.as_bytes());
    // Prints it, writes it (and its encodings) to files in the sandbox's own temporary
    // places and its working directory, then ends as told.
    let writes = "printf 'out %s\\n' \"$LEAK\"; printf %s \"$LEAK\" | base64 >&2; \
                  for d in /tmp /dev/shm .; do printf %s \"$LEAK\" > $d/leak 2>/dev/null; \
                  printf %s \"$LEAK\" | od -An -tx1 > $d/leak.hex 2>/dev/null; done; ";
    for runtime in ["native", "container", "gvisor"] {
        let run = |flags: &[&str], end: &str| {
            let script = format!("{writes}{end}");
            let mut args = vec!["run", "--runtime", runtime, "--secret", "LEAK"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["--", "sh", "-c", &script]);
            home.cmd(args).run()
        };
        // A crash: the shell kills itself with SIGSEGV (a core would be the classic leak).
        let out = run(&[], "kill -SEGV $$");
        assert_eq!(out.code, Some(139), "{runtime}: crash: {out}");
        let relayed = format!("{}{}", out.stdout, out.stderr);
        assert!(
            relayed.contains("out [REDACTED:LEAK]"),
            "{runtime}: {relayed}"
        );
        // A timeout.
        let out = run(&["--timeout", "1s"], "sleep 30");
        assert_ne!(out.code, Some(0), "{runtime}: timeout: {out}");
        // spawn itself SIGKILLed while the agent runs.
        let mut args = vec!["run", "--runtime", runtime, "--secret", "LEAK", "--"];
        let script = format!("{writes}echo ready; sleep 30");
        args.extend_from_slice(&["sh", "-c", &script]);
        let running = home.cmd(args).start();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        running.signal(nix::sys::signal::Signal::SIGKILL);
        let out = running.wait();
        assert!(
            !out.stdout.contains(LEAK) && !out.stderr.contains(LEAK),
            "{out}"
        );
    }
    // Whatever a killed run left is gone once the runtimes reap it; give them a moment.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // The search finds what is there (a file of the test's own, written now).
    let control = tempdir("spawn-secret-control");
    std::fs::write(control.path().join("f"), &leak_forms[3]).unwrap();
    assert_eq!(
        files_holding_since(control.path(), &leak_forms, began).len(),
        1
    );
    drop(control);
    for dir in places_of(&home) {
        let found = files_holding_since(&dir, &leak_forms, began);
        assert!(found.is_empty(), "{}: {found:?}", dir.display());
    }
    // Nor does any process's environment or argv outside the sandboxes.
    let during = runtime_processes_holding(LEAK.as_bytes());
    assert!(during.is_empty(), "{during:?}");
}

#[test]
fn the_manifest_grants_a_secret_under_a_variable_of_its_choice() {
    let home = Home::new();
    set(&home, "STORED_NAME", VALUE.as_bytes());
    let dir = tempdir("spawn-secret-manifest");
    let manifest = dir.path().join("agent.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: with-secret}\nspec:\n  command: [sh, -c, 'printf %s \"$API_KEY\"']\n  sandbox: {runtime: native}\n  capabilities:\n    secrets:\n      - {name: API_KEY, from: \"store://STORED_NAME\"}\n",
    )
    .unwrap();
    let out = home.cmd(["run", "-f"]).arg_path(&manifest).run();
    out.assert_code(0);
    // Redacted under the variable's name.
    assert_eq!(out.stdout, "[REDACTED:API_KEY]", "{out}");
}

/// A native run granted `name` that prints its value's digest (the value itself would
/// be redacted).
fn digest_of(home: &Home, name: &str) -> super::helpers::Output {
    home.native(
        &["--secret", name],
        &[
            "sh",
            "-c",
            &format!("printf %s \"${name}\" | sha256sum | cut -c1-64"),
        ],
    )
}

/// The `agent.secret.access` events of `home`'s log.
fn secret_events(home: &Home) -> Vec<Value> {
    home.audit()
        .into_iter()
        .filter(|e| e["eventType"] == "agent.secret.access")
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the agent writes with the value in it, in the forms programs write it, cut
/// across writes, on stdout and stderr.
const WRITES_THE_VALUE: &str = r#"
T="$GH_TOKEN"
printf 'raw %s\n' "$T"
printf 'b64 %s\n' "$(printf %s "$T" | base64 -w0)"
printf 'hex %s\n' "$(printf %s "$T" | od -An -tx1 | tr -d ' \n')"
printf 'basic %s\n' "$(printf 'user:%s' "$T" | base64 -w0)"
printf 'json {"token":"%s"}\n' "$T"
printf 'err %s\n' "$T" >&2
printf 'split '; printf %s "$T" | head -c 9; sleep 0.3; printf %s "$T" | tail -c +10; echo
printf 'end '; printf %s "$T" | head -c 5
"#;

/// The lines [`WRITES_THE_VALUE`] gives once redacted (stdout and stderr together).
fn redacted_lines() -> Vec<String> {
    let m = "[REDACTED:GH_TOKEN]";
    let mut lines: Vec<String> = [
        format!("raw {m}"),
        format!("b64 {m}"),
        format!("hex {m}"),
        format!("json {{\"token\":\"{m}\"}}"),
        format!("err {m}"),
        format!("split {m}"),
        // A prefix of the value at the very end is no value: written as it was.
        format!("end {}", &VALUE[..5]),
    ]
    .into();
    lines.sort();
    lines
}

/// The agent's output reaches spawn's stdout and stderr with the value, and each form
/// of it, replaced by the marker, on every runtime, whatever spawn's descriptors are: a
/// pipe, a regular file, a terminal (an interactive run's relay).
#[test]
fn a_granted_secret_is_redacted_from_the_output_on_every_runtime() {
    use std::process::Stdio;
    let home = Home::new();
    set(&home, "GH_TOKEN", VALUE.as_bytes());
    let args = |runtime: &'static str| {
        vec![
            "run",
            "--runtime",
            runtime,
            "--secret",
            "GH_TOKEN",
            "--",
            "sh",
            "-c",
            WRITES_THE_VALUE,
        ]
    };
    let check = |runtime: &str, what: &str, text: &str| {
        for f in forms() {
            assert!(
                !text.as_bytes().windows(f.len()).any(|w| w == f.as_slice()),
                "{runtime}, {what}: a form of the value passed: {text}"
            );
        }
        let mut lines: Vec<String> = text
            .replace("\r\n", "\n")
            .lines()
            .filter(|l| {
                !l.is_empty() && !l.starts_with("spawn: warning") && !l.starts_with("basic ")
            })
            .map(str::to_owned)
            .collect();
        lines.sort();
        assert_eq!(lines, redacted_lines(), "{runtime}, {what}: {text}");
        // `user:TOKEN` in base64: the value's own characters at their alignment.
        let basic = text
            .lines()
            .find(|l| l.starts_with("basic "))
            .unwrap_or_default();
        assert!(
            basic.contains("[REDACTED:GH_TOKEN]"),
            "{runtime}, {what}: {basic}"
        );
    };
    for runtime in ["native", "container", "gvisor"] {
        // A pipe (stdout and stderr apart).
        let out = home.cmd(args(runtime)).run();
        out.assert_code(0);
        check(runtime, "pipes", &format!("{}\n{}", out.stdout, out.stderr));

        // A regular file, stdout and stderr one description.
        let dir = tempdir("spawn-secret-out");
        let path = dir.path().join("out");
        let file = std::fs::File::create(&path).unwrap();
        let status = super::stdio::run_with(
            &home,
            &args(runtime),
            Stdio::null(),
            Stdio::from(file.try_clone().unwrap()),
            Stdio::from(file),
        );
        assert_eq!(status.code(), Some(0), "{runtime}: file");
        check(runtime, "a file", &std::fs::read_to_string(&path).unwrap());

        // A terminal: stdin and stdout a pty, so the run is interactive (a pty of its own).
        let pty = nix::pty::openpty(None, None).unwrap();
        let reader = {
            let mut master = std::fs::File::from(pty.master);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match std::io::Read::read(&mut master, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                out
            })
        };
        let slave = pty.slave;
        let status = super::stdio::run_with(
            &home,
            &args(runtime),
            Stdio::from(slave.try_clone().unwrap()),
            Stdio::from(slave.try_clone().unwrap()),
            Stdio::from(slave),
        );
        assert_eq!(status.code(), Some(0), "{runtime}: terminal");
        let text = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
        check(runtime, "a terminal", &text);
    }
}

#[test]
fn a_secret_that_cannot_be_had_stops_the_run() {
    let home = Home::new();
    // No secret set at all, then one set and another missing, then a value an environment
    // cannot hold: each refused with 125, the reason and the fix, the access on record.
    let out = home.native(&["--secret", "MISSING"], &["true"]);
    out.assert_code(125);
    assert!(
        out.stderr
            .contains("secret MISSING (store://MISSING) could not be resolved"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("spawn secrets set MISSING --from-stdin"),
        "{out}"
    );
    set(&home, "PRESENT", VALUE.as_bytes());
    let out = home.native(&["--secret", "PRESENT", "--secret", "MISSING"], &["true"]);
    out.assert_code(125);
    assert!(out.stderr.contains("MISSING"), "{out}");
    assert!(
        !out.stderr.contains(VALUE) && !out.stdout.contains(VALUE),
        "{out}"
    );
    set(&home, "WITH_NUL", b"ab\0cd");
    let out = home.native(&["--secret", "WITH_NUL"], &["true"]);
    out.assert_code(125);
    assert!(out.stderr.contains("NUL"), "{out}");
    let access: Vec<Value> = home
        .audit()
        .into_iter()
        .filter(|e| e["eventType"] == "agent.secret.access" && e["action"] == "resolve")
        .collect();
    let outcomes: Vec<(String, String)> = access
        .iter()
        .map(|e| {
            (
                e["resource"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("MISSING", "error"),
            ("PRESENT", "success"),
            ("MISSING", "error"),
            ("WITH_NUL", "error")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(!home.audit_text().contains(VALUE));
    // Hostile --secret names are refused before anything runs.
    for name in ["1X", "A-B", "A=B", "LD_PRELOAD", ""] {
        let out = home.native(&["--secret", name], &["true"]);
        assert_ne!(out.code, Some(0), "{name:?}");
        assert!(out.stderr.contains("--secret"), "{name:?}: {out}");
    }
}

/// `spawn secrets`: set from stdin or a file only, listed without values, deleted; the
/// store's files and the audit log never hold a value; hostile names refused.
#[test]
fn secrets_are_set_listed_and_deleted_without_showing_a_value() {
    let home = Home::new();
    set(&home, "ONE", VALUE.as_bytes());
    set(&home, "ONE", b"second-value-xyz");
    let out = home.cmd(["secrets", "list", "--json"]).run();
    out.assert_code(0);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["version"].as_i64()),
        (Some("ONE"), Some(2))
    );
    assert!(!out.stdout.contains(VALUE) && !out.stdout.contains("second-value"));
    // No value given: refused with the way to give one.
    let out = home.cmd(["secrets", "set", "TWO"]).run();
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--from-stdin or --from-file"), "{out}");
    for name in ["1X", "A-B", "A=B", "A B", "ÄÖ"] {
        let dir = tempdir("spawn-secret-bad");
        let f = dir.path().join("v");
        std::fs::write(&f, "v").unwrap();
        let out = home
            .cmd(["secrets", "set", name, "--from-file"])
            .arg_path(&f)
            .run();
        assert_ne!(out.code, Some(0), "{name}");
        assert!(
            out.stderr.contains("not a valid secret name"),
            "{name}: {out}"
        );
    }
    home.cmd(["secrets", "delete", "ONE"]).run().assert_code(0);
    let out = home.cmd(["secrets", "delete", "ONE"]).run();
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("not found"), "{out}");
    home.cmd(["secrets", "rotate-master"]).run().assert_code(0);
    let audit: Vec<String> = home
        .audit()
        .into_iter()
        .filter(|e| e["eventType"] == "agent.secret.access")
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            "set success",
            "set success",
            "delete success",
            "delete error",
            "rotate-master success"
        ]
    );
    let mut forms = forms();
    forms.push(b"second-value-xyz".to_vec());
    let kept = files_holding(home.path(), &forms);
    assert!(kept.is_empty(), "{kept:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.path().join("keys/secrets-master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// The data key's rotation schedule: `spawn doctor` names an overdue key and the fix;
/// `spawn secrets rotate-data-key` reseals the values (audited) and the values still open.
#[test]
fn doctor_reports_an_overdue_data_key_and_rotation_fixes_it() {
    let home = Home::new();
    let rotation = |days: Option<&str>| -> Value {
        let mut cmd = home.cmd(["doctor", "--json"]);
        if let Some(d) = days {
            cmd.env("SPAWN_SECRETS_ROTATION_DAYS", d);
        }
        let out = cmd.run();
        let all: Vec<Value> = serde_json::from_str(out.stdout.trim()).unwrap();
        all.into_iter()
            .find(|c| c["name"] == "secrets rotation")
            .unwrap_or_else(|| panic!("no rotation check: {out}"))
    };
    // No secrets yet: nothing to rotate.
    let c = rotation(None);
    assert_eq!(c["ok"], true, "{c}");
    set(&home, "ROTATED", VALUE.as_bytes());
    assert_eq!(rotation(None)["ok"], true);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // A period of ~0.9 s: overdue, named, with the fix.
    let c = rotation(Some("0.00001"));
    assert_eq!(c["ok"], false, "{c}");
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("namespace local data key v1") && detail.contains("rotate-data-key"),
        "{detail}"
    );
    for bad in ["0", "-3", "x", "nan", "1e9"] {
        let c = rotation(Some(bad));
        assert_eq!(c["ok"], false, "{bad}: {c}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("SPAWN_SECRETS_ROTATION_DAYS"),
            "{bad}: {c}"
        );
    }
    let out = home.cmd(["secrets", "rotate-data-key"]).run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("version 2, 1 value(s) resealed"),
        "{out}"
    );
    assert_eq!(rotation(Some("1"))["ok"], true);
    let done: Vec<Value> = home
        .audit()
        .into_iter()
        .filter(|e| e["action"] == "rotate-data-key")
        .collect();
    assert_eq!(done.len(), 1, "{}", home.audit_text());
    assert_eq!(done[0]["outcome"], "success");
    assert_eq!(done[0]["details"]["version"], 2);
    // The value opens under the new key.
    let out = home.native(
        &["--secret", "ROTATED"],
        &[
            "sh",
            "-c",
            "printf %s \"$ROTATED\" | sha256sum | cut -c1-64",
        ],
    );
    out.assert_code(0);
    assert_eq!(
        out.stdout.lines().next(),
        Some(sha256_hex(VALUE.as_bytes()).as_str()),
        "{out}"
    );
    assert!(files_holding(home.path(), &forms()).is_empty());
}

/// A secret granted as a file (`as: file`): `/run/secrets/NAME` on every runtime, any
/// bytes (NUL included), mode 0400 and the agent's, in a directory the agent cannot add to;
/// not in the environment; its hosts on record; and no file outside the sandbox holds it.
#[test]
fn a_secret_granted_as_a_file_is_on_the_runs_tmpfs_only() {
    let began = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let home = Home::new();
    let value: Vec<u8> = b"-----BEGIN KEY-----\n\0\xffbinary-tail-9c2e\n".to_vec();
    set(&home, "KEY_PEM", &value);
    set(&home, "PLAIN", VALUE.as_bytes());
    let dir = tempdir("spawn-secret-file");
    let manifest = dir.path().join("agent.yaml");
    let script = "sha256sum < /run/secrets/KEY_PEM | cut -c1-64; \
                  stat -c '%a %u' /run/secrets/KEY_PEM; stat -c '%a %u' /run/secrets; \
                  env | grep -c KEY_PEM; printf %s \"$PLAIN\" | sha256sum | cut -c1-64; \
                  (echo x > /run/secrets/NEW) 2>/dev/null && echo wrote || echo refused; \
                  ls /run/secrets";
    for runtime in ["native", "container", "gvisor"] {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: files}}\nspec:\n  command: [sh, -c, {script:?}]\n  sandbox: {{runtime: {runtime}}}\n  capabilities:\n    secrets:\n      - {{name: KEY_PEM, from: \"store://KEY_PEM\", as: file, hosts: [api.example.com]}}\n      - {{name: PLAIN, from: \"store://PLAIN\", as: env}}\n"
            ),
        )
        .unwrap();
        let out = home.cmd(["run", "--json", "-f"]).arg_path(&manifest).run();
        out.assert_code(0);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], sha256_hex(&value), "{runtime}: {out}");
        assert_eq!(lines[1], "400 1000", "{runtime}: {out}");
        assert_eq!(lines[2], "500 1000", "{runtime}: {out}");
        assert_eq!(
            lines[3], "0",
            "{runtime}: the file's secret is in the environment: {out}"
        );
        assert_eq!(lines[4], sha256_hex(VALUE.as_bytes()), "{runtime}: {out}");
        assert_eq!(lines[5], "refused", "{runtime}: {out}");
        assert_eq!(lines[6], "KEY_PEM", "{runtime}: {out}");
        let access: Vec<Value> = home
            .audit_of(&out.run_id())
            .into_iter()
            .filter(|e| e["eventType"] == "agent.secret.access")
            .collect();
        assert_eq!(access.len(), 2, "{runtime}");
        assert_eq!(access[0]["details"]["as"], "file");
        assert_eq!(access[0]["details"]["hosts"][0], "api.example.com");
        assert_eq!(access[1]["details"]["as"], "env");
    }
    let tail = b"binary-tail-9c2e".to_vec();
    for d in places_of(&home) {
        let found = files_holding_since(&d, std::slice::from_ref(&tail), began)
            .into_iter()
            .filter(|p| !p.contains("spawn-secret-value"))
            .collect::<Vec<_>>();
        assert!(found.is_empty(), "{}: {found:?}", d.display());
    }
}

#[path = "../../../spawn-secrets/tests/common/vault.rs"]
mod vault;

/// `vault://MOUNT/data/PATH#KEY` (HashiCorp Vault KV v2, here the stand-in written from
/// Vault's API: see spawn-secrets' README): resolved at the run's start over TLS with the
/// CA given, into the agent only (redacted from its output; Vault's own credentials never
/// reach it); a missing key, no Vault configured, or Vault unreachable stop the run (125)
/// with the reason.
#[test]
fn vault_kv2_secrets_reach_the_agent_and_failures_stop_the_run() {
    const VAULT_VALUE: &str = "from-vault-Zt5q-7e21";
    let mut app = std::collections::HashMap::new();
    app.insert("token".to_owned(), VAULT_VALUE.to_owned());
    let mut secrets = std::collections::HashMap::new();
    secrets.insert("secret/data/app".to_owned(), app);
    let v = vault::Vault::start(
        true,
        vault::State {
            secrets,
            tokens: vec!["hvs.cli-token".into()],
            ..vault::State::default()
        },
    );
    let home = Home::new();
    let dir = tempdir("spawn-vault");
    let manifest = dir.path().join("agent.yaml");
    let write = |from: &str, runtime: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: v}}\nspec:\n  command: [sh, -c, 'printf %s \"$API\" | sha256sum | cut -c1-64; echo \"api=$API\"; env | grep -c VAULT_ || true']\n  sandbox: {{runtime: {runtime}}}\n  capabilities:\n    secrets:\n      - {{name: API, from: \"{from}\"}}\n"
            ),
        )
        .unwrap();
    };
    let ca = v.ca.clone().unwrap();
    let run = |addr: Option<&str>| {
        let mut cmd = home.cmd(["run", "-f"]);
        cmd.arg_path(&manifest);
        if let Some(a) = addr {
            cmd.env("VAULT_ADDR", a)
                .env("VAULT_TOKEN", "hvs.cli-token")
                .env("VAULT_CACERT", &ca);
        }
        cmd.run()
    };
    for runtime in ["native", "gvisor"] {
        write("vault://secret/data/app#token", runtime);
        let out = run(Some(&v.addr));
        out.assert_code(0);
        assert_eq!(
            out.stdout,
            format!(
                "{}\napi=[REDACTED:API]\n0\n",
                sha256_hex(VAULT_VALUE.as_bytes())
            ),
            "{runtime}: {out}"
        );
    }
    write("vault://secret/data/app#nokey", "native");
    let out = run(Some(&v.addr));
    out.assert_code(125);
    assert!(out.stderr.contains("no such key"), "{out}");
    write("vault://secret/data/app#token", "native");
    let out = run(None);
    out.assert_code(125);
    assert!(out.stderr.contains("VAULT_ADDR"), "{out}");
    let out = run(Some("https://127.0.0.1:9"));
    out.assert_code(125);
    assert!(out.stderr.contains("cannot be reached"), "{out}");
    let access: Vec<Value> = secret_events(&home);
    assert_eq!(access.len(), 5, "{}", home.audit_text());
    assert_eq!(
        access[0]["details"]["source"],
        "vault://secret/data/app#token"
    );
    assert_eq!(access[0]["outcome"], "success");
    assert_eq!(access[2]["outcome"], "error");
    let text = home.audit_text();
    assert!(!text.contains(VAULT_VALUE) && !text.contains("hvs.cli-token"));
    assert!(files_holding(home.path(), &[VAULT_VALUE.as_bytes().to_vec()]).is_empty());
    // The helper made no store for these runs (Vault's only).
    assert!(!home.path().join("keys/secrets-master.key").exists());
}

/// Vault's Transit engine as the master key provider (`SPAWN_SECRETS_MASTER=transit://…`):
/// `spawn secrets set` seals under a data key Transit wraps (no local key file is made), a
/// run gets the value, `rotate-master` rotates Transit's key and rewraps online, and the
/// value still opens; Vault gone, nothing opens (125, the reason).
#[test]
fn transit_is_the_master_key_provider_when_named() {
    let v = vault::Vault::start(
        true,
        vault::State {
            tokens: vec!["hvs.transit".into()],
            transit: Some(("transit".into(), "spawn".into(), 1)),
            ..vault::State::default()
        },
    );
    let home = Home::new();
    let ca = v.ca.clone().unwrap();
    let with_vault = |cmd: &mut super::helpers::Cmd, addr: &str| {
        cmd.env("SPAWN_SECRETS_MASTER", "transit://transit/spawn")
            .env("VAULT_ADDR", addr)
            .env("VAULT_TOKEN", "hvs.transit")
            .env("VAULT_CACERT", &ca);
    };
    let dir = tempdir("spawn-transit");
    let file = dir.path().join("v");
    std::fs::write(&file, VALUE).unwrap();
    let mut cmd = home.cmd(["secrets", "set", "T_TOKEN", "--from-file"]);
    cmd.arg_path(&file);
    with_vault(&mut cmd, &v.addr);
    cmd.run().assert_code(0);
    assert!(!home.path().join("keys/secrets-master.key").exists());
    let digest = |addr: &str| {
        let mut cmd = home.cmd([
            "run",
            "--runtime",
            "native",
            "--secret",
            "T_TOKEN",
            "--",
            "sh",
            "-c",
            "printf %s \"$T_TOKEN\" | sha256sum | cut -c1-64",
        ]);
        with_vault(&mut cmd, addr);
        cmd.run()
    };
    let out = digest(&v.addr);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), sha256_hex(VALUE.as_bytes()), "{out}");
    let mut cmd = home.cmd(["secrets", "rotate-master"]);
    with_vault(&mut cmd, &v.addr);
    let out = cmd.run();
    out.assert_code(0);
    assert!(out.stdout.contains("1 data key(s) rewrapped"), "{out}");
    let out = digest(&v.addr);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), sha256_hex(VALUE.as_bytes()), "{out}");
    let out = digest("https://127.0.0.1:9");
    out.assert_code(125);
    assert!(out.stderr.contains("cannot be reached"), "{out}");
    assert!(files_holding(home.path(), &forms()).is_empty());
}

/// Rotations while a run holds a secret: the master key and the data key rotate under it
/// (online, in other processes), the running agent keeps the value it was given, and the
/// next run opens the same value under the new keys.
#[test]
fn rotation_during_a_run_changes_no_value() {
    let home = Home::new();
    set(&home, "LIVE", VALUE.as_bytes());
    let running = home
        .cmd([
            "run",
            "--runtime",
            "native",
            "--secret",
            "LIVE",
            "--",
            "sh",
            "-c",
            "sleep 1.5; printf %s \"$LIVE\" | sha256sum | cut -c1-64",
        ])
        .start();
    std::thread::sleep(std::time::Duration::from_millis(300));
    home.cmd(["secrets", "rotate-master"]).run().assert_code(0);
    home.cmd(["secrets", "rotate-data-key"])
        .run()
        .assert_code(0);
    let out = running.wait();
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), sha256_hex(VALUE.as_bytes()), "{out}");
    let out = digest_of(&home, "LIVE");
    out.assert_code(0);
    assert_eq!(
        out.stdout.lines().next(),
        Some(sha256_hex(VALUE.as_bytes()).as_str()),
        "{out}"
    );
}

/// spawn holding a secret can leave no core file, even when started with core files
/// allowed (`prlimit --core=unlimited`): its own limit is 0 while the run goes on.
#[test]
fn spawn_holding_a_secret_leaves_no_core_file() {
    let home = Home::new();
    set(&home, "CORELESS", VALUE.as_bytes());
    let mut child = std::process::Command::new("prlimit")
        .arg("--core=unlimited:unlimited")
        .arg(super::helpers::SPAWN)
        .args([
            "run",
            "--runtime",
            "native",
            "--secret",
            "CORELESS",
            "--",
            "sleep",
            "2",
        ])
        .env("SPAWN_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("prlimit (util-linux, make test installs it): {e}"));
    // prlimit execs spawn: the same process.
    let pid = child.id();
    let core_limit = || {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(4)
            .take(2)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut seen = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        seen = core_limit();
        if seen == ["0", "0"] {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        seen,
        ["0", "0"],
        "spawn's core limit while it held the secret"
    );
}
