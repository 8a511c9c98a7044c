//! Ordinary programs run inside the sandbox without tripping the seccomp policy: a blocked
//! syscall here would mean the allowlist misses something real programs need.

use super::helpers::Home;

fn assert_no_blocked(out: &super::helpers::Output) {
    out.assert_code(0);
    assert_eq!(
        out.json()["blockedSyscalls"],
        0,
        "an ordinary program had syscalls blocked:\n{out}"
    );
}

#[test]
fn python_standard_library_needs_nothing_blocked() {
    let home = Home::new();
    let script = r#"
import asyncio, hashlib, json, multiprocessing as mp, os, select, socket, sqlite3, ssl
import subprocess, tempfile, threading
def square(x): return x * x
with mp.Pool(2) as pool:
    assert sum(pool.map(square, range(10))) == 285
assert subprocess.run(["ls", "/usr"], capture_output=True).returncode == 0
db = sqlite3.connect("/tmp/x.db"); db.execute("create table t(x)"); db.commit()
async def main():
    await asyncio.sleep(0.01)
    return 1
assert asyncio.run(main()) == 1
t = threading.Thread(target=lambda: None); t.start(); t.join()
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); conn, _ = s.accept(); c.send(b"x"); assert conn.recv(1) == b"x"
ssl.create_default_context()
with tempfile.NamedTemporaryFile() as f: f.write(b"x")
print("ok")
"#;
    let out = home.python(&[], script, &[]);
    assert_no_blocked(&out);
    assert!(out.body().contains("ok"), "\n{out}");
}

#[test]
fn shell_and_coreutils_need_nothing_blocked() {
    let home = Home::new();
    let out = home.sh(
        &[],
        "for i in 1 2 3; do echo $i | sed s/1/x/ | sort | uniq | wc -l > /dev/null; done; \
         tar czf /tmp/a.tgz /etc 2>/dev/null; cp -a /etc /tmp/e; stat / > /dev/null; \
         date > /dev/null; ps > /dev/null; find /usr/bin -name 'ls*' > /dev/null; \
         mkdir -p /workspace/a/b && mv /workspace/a /workspace/c && rm -r /workspace/c; \
         sleep 0.01 & wait",
    );
    assert_no_blocked(&out);
}

#[test]
fn node_needs_nothing_blocked_when_installed() {
    if !std::path::Path::new("/usr/bin/node").exists() {
        // Node is optional on the host (SPEC: "node if present"); nothing to check.
        eprintln!("/usr/bin/node is not installed: node compatibility not exercised");
        return;
    }
    let home = Home::new();
    let out = home.native(
        &[],
        &[
            "node",
            "-e",
            "const cp=require('child_process'),fs=require('fs'),http=require('http'),{Worker}=require('worker_threads');\
             fs.writeFileSync('/tmp/n','x'); cp.execSync('true');\
             new Worker('process.exit(0)',{eval:true}).on('exit',()=>{\
             const s=http.createServer((q,r)=>r.end('ok')).listen(0,'127.0.0.1',()=>{\
             http.get('http://127.0.0.1:'+s.address().port,r=>r.on('data',()=>s.close()))})});",
        ],
    );
    assert_no_blocked(&out);
}

#[test]
fn landlock_enforcement_is_reported() {
    let home = Home::new();
    // This kernel family has Landlock ABI 7: everything spawn asks for (ABI 6) is enforced.
    let abi = std::process::Command::new(env!("CARGO_BIN_EXE_spawn"))
        .args(["doctor", "--json"])
        .output()
        .expect("spawn doctor");
    let doctor: serde_json::Value = serde_json::from_slice(&abi.stdout).expect("doctor json");
    let landlock = doctor
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "landlock"))
        .cloned()
        .expect("a landlock line");
    let expected = match landlock["detail"]
        .as_str()
        .and_then(|d| d.strip_prefix("ABI "))
    {
        Some(abi) if abi.parse::<u32>().unwrap_or(0) >= 6 => "full",
        Some(_) => "partial",
        None => "none",
    };
    // The same rules on the host kernel through runc; gVisor's kernel has no Landlock.
    for (runtime, want) in [
        ("native", serde_json::json!(expected)),
        ("container", serde_json::json!(expected)),
        ("gvisor", serde_json::Value::Null),
    ] {
        let out = home
            .cmd(["run", "--json", "--runtime", runtime, "--", "true"])
            .run();
        out.assert_code(0);
        assert_eq!(out.json()["landlock"], want, "{runtime}\n{out}");
    }
}

/// The agent starts like a program started from a shell: every signal at its default
/// disposition and none blocked, on every runtime (spawn-init blocks and ignores some for
/// itself, and resets in the command only what it knows it changed). Python changes
/// SIGINT, SIGPIPE and SIGXFSZ itself, so SIGPIPE is checked through a pipeline instead:
/// with SIGPIPE ignored, `yes` would complain of a broken pipe.
#[test]
fn the_agent_starts_with_default_signals_on_every_runtime() {
    let home = Home::new();
    let script = r#"
import signal
own = {signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ}
changed = [int(s) for s in signal.valid_signals() if s not in own and signal.getsignal(s) != signal.SIG_DFL]
print("changed", changed)
print("blocked", sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
"#;
    for runtime in ["native", "container", "gvisor"] {
        let out = home
            .cmd(["run", "--runtime", runtime, "--", "python3", "-c", script])
            .run();
        out.assert_code(0);
        assert!(
            out.body().contains("changed []\nblocked []"),
            "{runtime}: the agent's signals are not all at their defaults:\n{out}"
        );
        let out = home.sh_on(runtime, &[], "yes | head -n 1; echo end");
        out.assert_code(0);
        assert_eq!(out.body(), "y\nend", "{runtime}: SIGPIPE\n{out}");
        assert!(
            !out.stderr.contains("Broken pipe"),
            "{runtime}: the agent ignores SIGPIPE:\n{out}"
        );
    }
}
