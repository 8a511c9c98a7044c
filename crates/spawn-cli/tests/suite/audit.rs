//! The audit trail of a run (SPEC §7).

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::helpers::Home;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

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

/// The chain's canonical form, computed by a verifier that shares no code with spawn:
/// Python's `json` with sorted keys, no whitespace and no ASCII escaping is RFC 8785 for
/// what spawn writes (integers, and decimals such as durations, which Python and
/// ECMAScript print alike), then SHA-256.
const INDEPENDENT_VERIFIER: &str = r#"
import hashlib, json, sys
prev, seq, n = "sha256:" + "0" * 64, 0, 0
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.strip():
        continue
    rec = json.loads(line)
    h = rec.pop("hash")
    canon = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert h == "sha256:" + hashlib.sha256(canon.encode()).hexdigest(), rec["seq"]
    assert rec["prevHash"] == prev, rec["seq"]
    assert rec["seq"] == seq + 1, rec["seq"]
    prev, seq, n = h, rec["seq"], n + 1
print("verified", n)
"#;

/// SPEC §7: every record carries `prevHash` and `hash` (SHA-256 of its canonical form), each
/// `prevHash` is the record before's `hash`; `spawn audit verify` checks it, and names the
/// first record where the log was changed; an export verifies on its own.
#[test]
fn the_log_is_a_hash_chain_anyone_can_verify() {
    let home = Home::new();
    two_runs(&home);
    // Untrusted text in the events (the command's name): newlines, a forged record,
    // terminal escapes, non-ASCII.
    let hostile = "no}\n{\"seq\":1,\"hash\":\"x\"}\u{1b}[2J\u{7}\u{7f}é\u{2028}";
    home.native(&[], &[hostile]).assert_code(127);
    assert!(
        home.audit_text()
            .contains(r#"no}\n{\"seq\":1,\"hash\":\"x\"}\u001b[2J\u0007"#),
        "{}",
        home.audit_text()
    );
    let records = home.audit();
    let log = home.path().join("audit").join("audit.jsonl");

    let out = home.cmd(["audit", "verify"]).run();
    out.assert_code(0);
    assert!(out.stdout.contains(": intact: "), "{out}");
    let out = home.cmd(["audit", "verify", "--json"]).run();
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["intact"], true, "{out}");
    assert_eq!(v["records"], records.len(), "{out}");
    assert_eq!(v["lastHash"], records[records.len() - 1]["hash"], "{out}");

    let independent = std::process::Command::new("python3")
        .args(["-c", INDEPENDENT_VERIFIER])
        .arg(&log)
        .output()
        .expect("python3");
    assert!(
        independent.status.success(),
        "{}",
        String::from_utf8_lossy(&independent.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&independent.stdout).trim(),
        format!("verified {}", records.len())
    );

    // The export is the log as stored, and verifies by itself.
    let out = home.cmd(["audit", "export"]).run();
    out.assert_code(0);
    assert_eq!(out.stdout, home.audit_text());
    let dir = super::helpers::tempdir("spawn-audit-export");
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, &out.stdout).unwrap();
    home.cmd(["audit", "verify", "--file"])
        .arg_path(&export)
        .run()
        .assert_code(0);

    // Changed: a detail of the fourth record, in the export; a record removed from the log.
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    lines[3] = lines[3].replacen("\"outcome\":\"", "\"outcome\":\"x", 1);
    std::fs::write(&export, lines.join("\n") + "\n").unwrap();
    let out = home
        .cmd(["audit", "verify", "--file"])
        .arg_path(&export)
        .run();
    out.assert_code(1);
    assert!(
        out.stdout.contains("broken at seq 4 ") && out.stdout.contains("was changed"),
        "{out}"
    );
    let mut lines: Vec<String> = home.audit_text().lines().map(str::to_owned).collect();
    lines.remove(2);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = home.cmd(["audit", "verify", "--json"]).run();
    out.assert_code(1);
    let v = out.json();
    assert_eq!(v["intact"], false, "{out}");
    assert_eq!(v["broken"]["seq"], 4, "{out}");
    assert_eq!(v["records"], 2, "{out}");

    // Not a log: a clear error, exit 2.
    for (path, says) in [
        (dir.path().to_owned(), "not a regular file"),
        (dir.path().join("missing"), "No such file"),
        ("/dev/null".into(), "not a regular file"),
    ] {
        let out = home
            .cmd(["audit", "verify", "--file"])
            .arg_path(&path)
            .run();
        out.assert_code(2);
        assert!(out.stderr.contains(says), "{}: {out}", path.display());
    }
}

/// RFC 9162 §2.1.3.2 and the signed-note format, written from the documents, sharing no
/// code with spawn: checks `spawn audit prove`'s output (argv[1]) and writes the note's
/// signed text, the signature and the public key (DER) for openssl to check.
const INDEPENDENT_PROOF_VERIFIER: &str = r#"
import base64, hashlib, json, sys
p = json.loads(open(sys.argv[1]).read())
H = lambda b: hashlib.sha256(b).digest()
leaf = H(b"\x00" + bytes.fromhex(p["hash"][len("sha256:"):]))
fn, sn, r = p["leafIndex"], p["treeSize"] - 1, leaf
for s in map(base64.b64decode, p["proof"]):
    assert sn > 0
    if fn & 1 or fn == sn:
        r = H(b"\x01" + s + r)
        while not fn & 1 and fn:
            fn >>= 1; sn >>= 1
    else:
        r = H(b"\x01" + r + s)
    fn >>= 1; sn >>= 1
assert sn == 0 and r == base64.b64decode(p["rootHash"]), "inclusion"
body, sigs = p["checkpoint"].split("\n\n", 1)
body += "\n"
origin, size, root = body.splitlines()
assert int(size) == p["treeSize"] and base64.b64decode(root) == r, "checkpoint"
name, keyid, key = p["verifierKey"].split("+", 2)
key = base64.b64decode(key)
assert key[0] == 1 and keyid == H(name.encode() + b"\n" + key)[:4].hex()
blob = base64.b64decode(sigs.strip().split(" ")[2])
assert blob[:4].hex() == keyid
d = sys.argv[2]
open(d + "/body", "wb").write(body.encode())
open(d + "/sig", "wb").write(blob[4:])
open(d + "/pub.der", "wb").write(bytes.fromhex("302a300506032b6570032100") + key[1:])
print("proven", p["seq"], "in", p["treeSize"])
"#;

/// The cut, signed by `key`, of the log whose records are `lines` after record `k` (as
/// spawnd's retention makes one).
fn cut_of(
    key: &spawn_audit::checkpoint::SigningKey,
    lines: &[impl AsRef<str>],
    k: usize,
) -> spawn_audit::cut::Cut {
    let hash = |l: &str| {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a record: {e}"))["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("a record without a hash: {l}"))
            .to_owned()
    };
    let mut tree = spawn_audit::checkpoint::Frontier::default();
    for l in &lines[..k] {
        let leaf = spawn_audit::checkpoint::leaf_of(&hash(l.as_ref()))
            .unwrap_or_else(|| panic!("not a record hash: {}", l.as_ref()));
        tree.push(leaf);
    }
    spawn_audit::cut::Cut::new(key.name(), &hash(lines[k - 1].as_ref()), tree)
        .unwrap_or_else(|e| panic!("a cut: {e}"))
}

/// `spawn audit prove SEQ`, its output checked by [`INDEPENDENT_PROOF_VERIFIER`] (which
/// leaves the note's body, signature and key in `dir` for openssl).
fn prove_independently(home: &Home, seq: usize, dir: &std::path::Path) {
    let out = home.cmd(["audit", "prove", &seq.to_string()]).run();
    out.assert_code(0);
    let proof = dir.join("proof.json");
    std::fs::write(&proof, &out.stdout).unwrap_or_else(|e| panic!("write the proof: {e}"));
    let checked = std::process::Command::new("python3")
        .args(["-c", INDEPENDENT_PROOF_VERIFIER])
        .arg(&proof)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        checked.status.success(),
        "seq {seq}: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Signed checkpoints: `spawn audit checkpoint` signs the head of the log's Merkle tree;
/// `prove` gives an inclusion proof that a verifier written from the RFC (and openssl for
/// the Ed25519 signature) accepts; `verify` catches what the chain alone cannot — the
/// newest records cut off, and the whole log rewritten with a fresh, consistent chain.
#[test]
fn checkpoints_catch_a_cut_and_a_rewritten_history() {
    let home = Home::new();
    two_runs(&home);
    let out = home.cmd(["audit", "checkpoint"]).run();
    out.assert_code(0);
    let n = home.audit().len();
    assert!(out.stdout.contains(&format!("\n{n}\n")), "{out}");
    home.native(&[], &["true"]).assert_code(0);
    home.cmd(["audit", "checkpoint"]).run().assert_code(0);
    let out = home.cmd(["audit", "verify", "--json"]).run();
    out.assert_code(0);
    assert_eq!(out.json()["checkpoints"], 2, "{out}");
    // With the published verifier key instead of the signing key.
    let vkey = home.cmd(["audit", "key"]).run();
    vkey.assert_code(0);
    let vkey = vkey.stdout.trim().to_owned();
    let out = home.cmd(["audit", "verify", "--key", &vkey]).run();
    out.assert_code(0);
    let stranger = "spawn.audit/x+00000000+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = home.cmd(["audit", "verify", "--key", stranger]).run();
    out.assert_code(2);

    // An inclusion proof, checked independently.
    let dir = super::helpers::tempdir("spawn-audit-proof");
    prove_independently(&home, 3, dir.path());
    let sig = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-rawin"])
        .arg("-inkey")
        .arg(dir.path().join("pub.der"))
        .arg("-in")
        .arg(dir.path().join("body"))
        .arg("-sigfile")
        .arg(dir.path().join("sig"))
        .output()
        .expect("openssl");
    assert!(
        sig.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&sig.stdout),
        String::from_utf8_lossy(&sig.stderr)
    );
    home.cmd(["audit", "prove", "99999"]).run().assert_code(2);

    // An export with a copy of the checkpoints, checked elsewhere with the verifier key:
    // whole, it verifies; cut, its chain alone would pass, the checkpoints do not.
    let export = home.cmd(["audit", "export"]).run();
    export.assert_code(0);
    let copied = dir.path().join("checkpoints");
    std::fs::create_dir(&copied).unwrap();
    for e in std::fs::read_dir(home.path().join("audit/checkpoints")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copied.join(e.file_name())).unwrap();
    }
    let whole = dir.path().join("export.jsonl");
    std::fs::write(&whole, &export.stdout).unwrap();
    let lines: Vec<&str> = export.stdout.lines().collect();
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let elsewhere = Home::new();
    let held = |file: &std::path::Path| {
        elsewhere
            .cmd(["audit", "verify", "--key", &vkey, "--checkpoints"])
            .arg_path(&copied)
            .arg_path("--file")
            .arg_path(file)
            .run()
    };
    held(&whole).assert_code(0);
    let out = held(&cut);
    out.assert_code(1);
    assert!(out.stdout.contains("were removed"), "{out}");
    elsewhere
        .cmd(["audit", "verify", "--file"])
        .arg_path(&cut)
        .run()
        .assert_code(0);

    // Retention: an export whose first records were deleted under a signed cut (as spawnd
    // makes them) verifies with the cut among the checkpoints, and not without it.
    let key =
        spawn_audit::checkpoint::load_or_create_key(&home.path().join("keys/audit-signing.key"))
            .unwrap();
    let k = 3;
    let retained = cut_of(&key, &lines, k);
    let after_cut = dir.path().join("after-cut.jsonl");
    std::fs::write(&after_cut, lines[k..].join("\n") + "\n").unwrap();
    let out = held(&after_cut);
    out.assert_code(1);
    assert!(out.stdout.contains("not 1"), "{out}");
    std::fs::write(
        copied.join(format!("{k:020}.cut.note")),
        retained.sign(&key),
    )
    .unwrap();
    held(&after_cut).assert_code(0);
    held(&whole).assert_code(0);
    // One record more gone than the cut covers: refused.
    let past_cut = dir.path().join("past-cut.jsonl");
    std::fs::write(&past_cut, lines[k + 1..].join("\n") + "\n").unwrap();
    held(&past_cut).assert_code(1);

    let log = home.path().join("audit").join("audit.jsonl");
    let original = home.audit_text();
    // The newest records cut off: the chain that is left is whole, the checkpoint is not.
    let lines: Vec<&str> = original.lines().collect();
    std::fs::write(&log, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let out = home.cmd(["audit", "verify"]).run();
    out.assert_code(1);
    assert!(out.stdout.contains("were removed"), "{out}");

    // The whole history rewritten with a fresh chain (one outcome changed, every record
    // re-sealed): the chain verifies, the signed checkpoints do not.
    let mut prev = "sha256:".to_owned() + &"0".repeat(64);
    let mut rewritten = String::new();
    for (i, line) in original.lines().enumerate() {
        let mut rec: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        rec.remove("hash");
        if i == 1 {
            rec.insert("outcome".into(), Value::from("denied"));
        }
        rec.insert("prevHash".into(), Value::from(prev.clone()));
        let canonical = serde_json_canonicalizer::to_vec(&rec).unwrap();
        let hash = format!(
            "sha256:{}",
            hex(&<sha2::Sha256 as sha2::Digest>::digest(&canonical))
        );
        rec.insert("hash".into(), Value::from(hash.clone()));
        rewritten.push_str(&serde_json::to_string(&rec).unwrap());
        rewritten.push('\n');
        prev = hash;
    }
    std::fs::write(&log, &rewritten).unwrap();
    let export = dir.path().join("rewritten.jsonl");
    std::fs::write(&export, &rewritten).unwrap();
    home.cmd(["audit", "verify", "--file"])
        .arg_path(&export)
        .run()
        .assert_code(0);
    let out = home.cmd(["audit", "verify"]).run();
    out.assert_code(1);
    assert!(out.stdout.contains("the log was rewritten"), "{out}");
    // Refused to sign over a broken log.
    std::fs::write(
        &log,
        original.replacen("\"outcome\":\"", "\"outcome\":\"x", 1),
    )
    .unwrap();
    home.cmd(["audit", "checkpoint"]).run().assert_code(1);
}

/// `spawn audit query` and `capabilities`: the records matching every condition, as a
/// table whose untrusted text cannot drive the terminal, or as stored (--json); per
/// capability an agent's uses and denials; bad conditions refused with the reason.
#[test]
fn the_log_answers_queries() {
    let home = Home::new();
    two_runs(&home);
    let hostile = "x\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}evil";
    home.native(&[], &[hostile]).assert_code(127);
    let records = home.audit();
    let denied_run = records
        .iter()
        .find(|r| r["eventType"] == "agent.capability.denied")
        .unwrap_or_else(|| panic!("no denial:\n{}", home.audit_text()));
    let agent = denied_run["principal"]["id"].as_str().unwrap().to_owned();

    let out = home
        .cmd([
            "audit",
            "query",
            "--type",
            "agent.capability.denied",
            "--json",
        ])
        .run();
    out.assert_code(0);
    let text = home.audit_text();
    let want: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"eventType\":\"agent.capability.denied\""))
        .collect::<Vec<_>>();
    assert!(!want.is_empty());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{out}");

    let out = home
        .cmd([
            "audit",
            "query",
            "--agent",
            &agent,
            "--outcome",
            "success",
            "--since",
            "1h",
        ])
        .run();
    out.assert_code(0);
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{out}");
    assert!(
        rows.iter()
            .all(|r| r.contains(&agent) && r.contains(" success ")),
        "{out}"
    );
    // Nothing of the future; nothing of another trace.
    let out = home
        .cmd(["audit", "query", "--since", "2999-01-01T00:00:00.000Z"])
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    let out = home
        .cmd(["audit", "query", "--trace", "tr_nosuch", "--json"])
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout, "", "{out}");

    // The hostile command name: escaped in the table, as stored in --json.
    let out = home.cmd(["audit", "query", "--text", "owned"]).run();
    out.assert_code(0);
    assert!(out.stdout.contains("owned"), "{out}");
    for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!out.stdout.contains(c), "{c:?} reached the terminal: {out}");
    }

    let out = home
        .cmd([
            "audit",
            "capabilities",
            "--agent",
            &agent,
            "--since",
            "24h",
            "--json",
        ])
        .run();
    out.assert_code(0);
    let uses: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let by = |name: &str| {
        uses.as_array()
            .unwrap()
            .iter()
            .find(|u| u["capability"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {uses}"))
    };
    assert_eq!(by("exec")["count"], 1, "{uses}");
    assert_eq!(by("exec")["denied"], 0, "{uses}");
    assert!(by("mount")["denied"].as_u64().unwrap() >= 1, "{uses}");

    for bad in [
        vec!["audit", "query", "--outcome", "maybe"],
        vec!["audit", "query", "--type", "agent.sneeze"],
        vec!["audit", "query", "--since", "yesterday"],
        vec!["audit", "query", "--since", "2026-01-15 10:30:00"],
        vec!["audit", "capabilities"],
    ] {
        let out = home.cmd(&bad).run();
        out.assert_code(2);
        assert!(out.stderr.starts_with("spawn: "), "{out}");
    }
}

/// No audit, no action: once the log's disk is full, a run whose start cannot be put on
/// record does not run — spawn exits 125 saying why — and every record written before is
/// still there, the chain intact. On every runtime (runc is started before the run's start
/// is on record, and is stopped before it reads the command), and nothing of the refused
/// run is left on the host.
#[test]
fn a_full_audit_disk_refuses_the_run() {
    for runtime in ["native", "container", "gvisor"] {
        full_audit_disk_refuses_the_run(runtime);
    }
}

#[allow(clippy::unwrap_used)] // the test's body, once per runtime
fn full_audit_disk_refuses_the_run(runtime: &str) {
    let home = Home::new();
    // The audit directory alone on a small tmpfs, filled but for the log's last page.
    let audit = home.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k,mode=0700",
            "spawn-test-audit",
        ])
        .arg(&audit)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {}", audit.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(audit.clone());
    home.native(&[], &["true"]).assert_code(0);
    let fill = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat /dev/zero > {}/fill 2>/dev/null; true",
            audit.display()
        ))
        .status()
        .unwrap();
    assert!(fill.success());
    let out_dir = super::helpers::tempdir("spawn-audit-full");
    std::fs::set_permissions(out_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!("{}:/out:rw", out_dir.path().display());
    // Runs go on while the log's last page has room; then one is refused.
    let mut refused = None;
    for n in 0..20 {
        let before = home.audit_text();
        let running = home
            .cmd([
                "run",
                "--runtime",
                runtime,
                "--mount",
                &mount,
                "--",
                "touch",
                &format!("/out/ran-{n}"),
            ])
            .start();
        let pid = running.pid();
        let out = running.wait();
        let ran = out_dir.path().join(format!("ran-{n}")).exists();
        if out.code == Some(125) {
            assert!(
                out.stderr.contains("audit log") && out.stderr.contains("No space left"),
                "{runtime}: {out}"
            );
            assert!(!ran, "{runtime}: run {n} was refused, yet its agent ran");
            assert!(
                home.audit_text().starts_with(&before),
                "{runtime}: run {n}: what the log held changed"
            );
            let clean = super::helpers::wait_until(Duration::from_secs(5), || {
                super::cleanup::leftovers_of(pid).is_empty()
            });
            assert!(
                clean,
                "{runtime}: the refused run left {:?}",
                super::cleanup::leftovers_of(pid)
            );
            refused = Some(n);
            break;
        }
        out.assert_code(0);
        assert!(ran, "{runtime}: {out}");
    }
    let refused = refused.unwrap_or_else(|| panic!("{runtime}: no run was refused on a full disk"));
    let v = home.cmd(["audit", "verify", "--json"]).run();
    v.assert_code(0);
    let v = v.json();
    assert!(
        v["records"].as_u64().unwrap() >= 3 * (refused + 1),
        "{runtime}: {v}"
    );
}

/// `spawn trace export`: a run's steps in order with their timings (JSON), and the same as
/// an OpenTelemetry trace (OTLP/JSON) whose trace id is the run id's 128 bits.
#[test]
fn a_run_exports_as_a_trace() {
    let home = Home::new();
    let out = home.sh(&[], "mount -t tmpfs none /tmp 2>/dev/null; exit 3");
    out.assert_code(3);
    let run_id = out.run_id();
    home.native(&[], &["true"]).assert_code(0);

    let t = home.cmd(["trace", "export", &run_id]).run();
    t.assert_code(0);
    let t: Value = serde_json::from_str(t.stdout.trim()).unwrap();
    let steps = t["steps"].as_array().unwrap();
    let mine = home.audit_of(&run_id);
    assert_eq!(steps.len(), mine.len(), "{t}");
    assert_eq!(steps[0]["eventType"], "agent.start");
    assert_eq!(steps[steps.len() - 1]["eventType"], "agent.stop");
    let seqs: Vec<u64> = steps.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let offsets: Vec<i64> = steps
        .iter()
        .map(|s| s["offsetMs"].as_i64().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]) && offsets[0] == 0,
        "{offsets:?}"
    );
    assert!(steps
        .iter()
        .all(|s| s["hash"].as_str().unwrap().starts_with("sha256:")));

    let o = home
        .cmd(["trace", "export", &run_id, "--format", "otlp"])
        .run();
    o.assert_code(0);
    let o: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let spans = o["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), steps.len() + 1);
    let bits = spawn_audit::parse_id("tr", &run_id).unwrap();
    assert!(spans.iter().all(|s| s["traceId"] == hex(&bits)), "{o}");
    assert!(spans
        .iter()
        .any(|s| s["name"] == "sandbox.escape.attempt mount" && s["status"]["code"] == 2));

    for bad in [
        vec!["trace", "export", "tr_nosuchtraceaaaaaaaaaaaaaa"],
        vec!["trace", "export", "not-a-trace"],
        vec!["trace", "export", &run_id, "--format", "xml"],
    ] {
        let out = home.cmd(&bad).run();
        out.assert_code(2);
        assert!(out.stderr.starts_with("spawn: "), "{out}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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
    // Only a way out needs mount: it is also an escape attempt.
    let escapes: Vec<Value> = home
        .audit_of(&run_id)
        .into_iter()
        .filter(|r| r["eventType"] == "sandbox.escape.attempt")
        .collect();
    assert_eq!(escapes.len(), 1, "\n{}", home.audit_text());
    assert_eq!(escapes[0]["resource"]["name"], "mount");
    assert_eq!(escapes[0]["outcome"], "denied");
    assert_eq!(escapes[0]["details"]["technique"], "change the mount table");
}

/// Each call only an escape needs is a `sandbox.escape.attempt` beside its denial; a
/// denied call that is no way out (sysfs, an obsolete query) is only a denial.
#[test]
fn escape_only_calls_are_escape_attempts() {
    let home = Home::new();
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
# unshare(CLONE_NEWUSER), ptrace(PTRACE_TRACEME), keyctl(KEYCTL_GET_KEYRING_ID), bpf(0), sysfs(3)
for nr, args in [(272, (0x10000000,)), (101, (0, 0, 0, 0)), (250, (0, -1, 0)), (321, (0, 0, 0)), (139, (3,))]:
    r = libc.syscall(nr, *args)
    print(nr, r, ctypes.get_errno())
"#;
    let out = home.python(&[], script, &[]);
    out.assert_code(0);
    let run_id = out.run_id();
    let records = home.audit_of(&run_id);
    let names = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .filter(|r| r["eventType"] == t)
            .map(|r| r["resource"]["name"].as_str().unwrap_or("").to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("sandbox.escape.attempt"),
        ["bpf", "keyctl", "ptrace", "unshare"],
        "\n{out}\n{}",
        home.audit_text()
    );
    // (sysfs is not in spawn's table of names: it is named by number.)
    let denied = names("agent.capability.denied");
    assert!(
        denied.contains(&"sysfs".to_owned()) || denied.contains(&"syscall_139".to_owned()),
        "\n{}",
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

/// Retention's cut of the log file itself (spawnd punches the records up to a signed cut
/// out of the file): every local command reads on from the cut — `verify` passes,
/// `checkpoint` signs over it, `prove` proves a record kept (checked by the independent
/// verifier) and refuses a record cut with the reason, `export` and `query` hold only the
/// records kept, and runs go on appending to a chain that verifies.
#[test]
fn a_log_file_cut_by_retention_reads_verifies_signs_and_proves() {
    let home = Home::new();
    two_runs(&home);
    home.cmd(["audit", "checkpoint"]).run().assert_code(0);
    let log = home.path().join("audit").join("audit.jsonl");
    let lines: Vec<String> = home.audit_text().lines().map(str::to_owned).collect();
    let key =
        spawn_audit::checkpoint::load_or_create_key(&home.path().join("keys/audit-signing.key"))
            .unwrap();
    let k = 4;
    let cut = cut_of(&key, &lines, k);
    spawn_audit::cut::keep(&home.path().join("audit"), &key, &cut).unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    let done = spawn_audit::cut::cut_file(&log, &cut).unwrap();
    assert!(
        matches!(done, spawn_audit::cut::FileCut::Cut { seq: 4, .. }),
        "{done:?}"
    );
    assert_eq!(std::fs::metadata(&log).unwrap().len(), size);

    let out = home.cmd(["audit", "verify", "--json"]).run();
    out.assert_code(0);
    assert_eq!(out.json()["records"], lines.len() - k, "{out}");
    let export = home.cmd(["audit", "export"]).run();
    export.assert_code(0);
    assert_eq!(
        export.stdout.lines().collect::<Vec<_>>(),
        lines[k..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let out = home.cmd(["audit", "query", "--json"]).run();
    out.assert_code(0);
    let seqs: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        ((k as u64 + 1)..=lines.len() as u64).collect::<Vec<_>>()
    );

    // Runs go on; a checkpoint after the cut; a record kept proven, one cut refused.
    home.native(&[], &["true"]).assert_code(0);
    home.cmd(["audit", "checkpoint"]).run().assert_code(0);
    home.cmd(["audit", "verify"]).run().assert_code(0);
    let dir = super::helpers::tempdir("spawn-audit-cut-proof");
    for seq in [k + 1, lines.len()] {
        prove_independently(&home, seq, dir.path());
    }
    let out = home.cmd(["audit", "prove", "2"]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("deleted by retention"), "{out}");
}
