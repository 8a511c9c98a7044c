//! Shared helpers: running `spawn` with a deadline, reading its `--json` result and audit
//! log, and looking at the host (processes by uid, cgroup directories, mounts).
// Test helpers fail the test by panicking, with a message; clippy's test exemption only
// covers `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const SPAWN: &str = env!("CARGO_BIN_EXE_spawn");

/// How long one `spawn` invocation may take before the test kills it and fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// After spawn exits, how long its stdout/stderr may stay open. Only a process of the
/// sandbox that outlived the run could hold them longer.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Host uids of sandbox users: `HOST_ID_BASE + 2·(spawn pid mod 2^22)` for the sandbox's
/// root (its init), plus one for the agent (uid 1000 inside).
const HOST_ID_BASE: u32 = 0x7000_0000;
const HOST_ID_SLOTS: u32 = 1 << 22;

/// Fails the test (never skips it) when not running as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("these tests need root: run `make test` as root");
    }
}

/// A fresh `$SPAWN_HOME` for one test.
pub struct Home {
    dir: TempDir,
    runtime: &'static str,
}

impl Home {
    /// Checks for root, then creates the directory.
    pub fn new() -> Home {
        Home::with_runtime("native")
    }

    /// A home whose `native*` helpers run with `--runtime RUNTIME` instead.
    pub fn with_runtime(runtime: &'static str) -> Home {
        require_root();
        Home {
            dir: tempdir("spawn-home-"),
            runtime,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `spawn ARGS` with this home.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Cmd::new(args);
        cmd.env("SPAWN_HOME", self.path());
        cmd
    }

    /// `spawn run --runtime native --json FLAGS -- COMMAND`.
    pub fn native_cmd(&self, flags: &[&str], command: &[&str]) -> Cmd {
        let mut args = vec!["run", "--runtime", self.runtime, "--json"];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(command);
        self.cmd(args)
    }

    /// Runs `spawn run --runtime native --json FLAGS -- COMMAND` to the end.
    pub fn native(&self, flags: &[&str], command: &[&str]) -> Output {
        self.native_cmd(flags, command).run()
    }

    /// Runs `python3 -c SCRIPT ARGS...` in a native sandbox.
    pub fn python(&self, flags: &[&str], script: &str, args: &[&str]) -> Output {
        let mut command = vec!["python3", "-c", script];
        command.extend_from_slice(args);
        self.native(flags, &command)
    }

    /// Runs `sh -c SCRIPT` in a native sandbox.
    pub fn sh(&self, flags: &[&str], script: &str) -> Output {
        self.native(flags, &["sh", "-c", script])
    }

    /// `spawn run --runtime RUNTIME FLAGS -- sh -c SCRIPT`.
    pub fn sh_on(&self, runtime: &str, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--runtime", runtime];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.cmd(args).run()
    }

    /// The audit log as text ("" when it does not exist).
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.path().join("audit").join("audit.jsonl")).unwrap_or_default()
    }

    /// Every audit record, parsed (a line that is not JSON fails the test).
    pub fn audit(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The audit records of one run.
    pub fn audit_of(&self, trace_id: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["traceId"].as_str() == Some(trace_id))
            .collect()
    }

    /// spawn still works: a trivial run exits 0.
    pub fn assert_healthy(&self) {
        let out = self.native(&[], &["true"]);
        assert_eq!(
            out.code,
            Some(0),
            "spawn is no longer healthy after the attempt:\n{out}"
        );
    }
}

/// A temporary directory on the host.
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory")
}

/// One `spawn` invocation being prepared.
pub struct Cmd {
    cmd: Command,
    deadline: Duration,
    what: String,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    fn new<I, S>(args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(SPAWN);
        let mut what = String::from("spawn");
        for a in args {
            what.push(' ');
            what.push_str(&a.as_ref().to_string_lossy());
            cmd.arg(a);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Cmd {
            cmd,
            deadline: RUN_DEADLINE,
            what,
            stdin: None,
        }
    }

    /// One more argument.
    pub fn arg_path(&mut self, arg: impl AsRef<Path>) -> &mut Cmd {
        self.what.push(' ');
        self.what.push_str(&arg.as_ref().to_string_lossy());
        self.cmd.arg(arg.as_ref());
        self
    }

    /// Sets a variable in spawn's own environment.
    pub fn env(
        &mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> &mut Cmd {
        self.cmd.env(key, value);
        self
    }

    /// Removes a variable from spawn's own environment.
    pub fn env_remove(&mut self, key: impl AsRef<std::ffi::OsStr>) -> &mut Cmd {
        self.cmd.env_remove(key);
        self
    }

    /// Gives spawn `text` on its stdin (then its end).
    pub fn stdin_text(&mut self, text: &str) -> &mut Cmd {
        self.stdin = Some(text.as_bytes().to_vec());
        self.cmd.stdin(Stdio::piped());
        self
    }

    /// Runs spawn from this directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Starts spawn; its output is collected in the background.
    pub fn start(&mut self) -> Running {
        let started = Instant::now();
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.what));
        if let (Some(text), Some(mut input)) = (self.stdin.take(), child.stdin.take()) {
            thread::spawn(move || {
                use std::io::Write as _;
                let _ = input.write_all(&text);
            });
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout_pipe = {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(format!("/proc/self/fd/{}", stdout.as_raw_fd()))
                .map(|m| m.ino())
                .unwrap_or(0)
        };
        let stderr = child.stderr.take().expect("stderr is piped");
        let (out_tx, out_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lines.push((
                        started.elapsed(),
                        String::from_utf8_lossy(&line).into_owned(),
                    )),
                }
            }
            let _ = out_tx.send(lines);
        });
        let (err_tx, err_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut buf);
            let _ = err_tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        Running {
            child,
            started,
            deadline: self.deadline,
            what: self.what.clone(),
            out_rx,
            stdout_pipe,
            err_rx,
        }
    }

    /// Runs spawn to the end (or fails the test at the deadline).
    pub fn run(&mut self) -> Output {
        self.start().wait()
    }
}

/// A running `spawn`.
pub struct Running {
    child: Child,
    started: Instant,
    deadline: Duration,
    what: String,
    out_rx: mpsc::Receiver<Vec<(Duration, String)>>,
    err_rx: mpsc::Receiver<String>,
    /// Inode of the stdout pipe, to name the processes still holding it.
    stdout_pipe: u64,
}

/// `pid command` of every process holding pipe `inode` open (for failure messages).
fn pipe_holders(inode: u64) -> String {
    let target = format!("pipe:[{inode}]");
    let mut found = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = proc_entry.path();
        let holds = std::fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
            });
        if holds {
            let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push(format!("{} {cmd}", dir.display()));
        }
    }
    found.join("\n")
}

impl Running {
    /// spawn's host pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host uids this run's sandbox uses.
    pub fn uids(&self) -> SandboxUids {
        sandbox_uids(self.pid())
    }

    /// Sends a signal to spawn.
    pub fn signal(&self, sig: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits in i32");
        kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("cannot send {sig} to spawn: {e}"));
    }

    /// Whether spawn is still running (its exit status is kept for [`Running::wait`]).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for spawn to exit; kills it and fails the test after the deadline.
    pub fn wait(mut self) -> Output {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if self.started.elapsed() > self.deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stdout = self.out_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
                    let stderr = self.err_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
                    panic!(
                        "{} did not finish within {:?} and was killed\nstdout:\n{}\nstderr:\n{stderr}",
                        self.what,
                        self.deadline,
                        stdout.iter().map(|(_, l)| l.as_str()).collect::<String>()
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        };
        let elapsed = self.started.elapsed();
        let lines = self.out_rx.recv_timeout(PIPE_GRACE).unwrap_or_else(|_| {
            panic!(
                "{} exited ({status}) but its stdout stayed open for {PIPE_GRACE:?}: \
                 a process of the sandbox outlived the run; holders:\n{}",
                self.what,
                pipe_holders(self.stdout_pipe)
            )
        });
        let stderr = self.err_rx.recv_timeout(PIPE_GRACE).unwrap_or_else(|_| {
            panic!(
                "{} exited ({status}) but its stderr stayed open for {PIPE_GRACE:?}: \
                 a process of the sandbox outlived the run",
                self.what
            )
        });
        let stdout = lines.iter().map(|(_, l)| l.as_str()).collect();
        Output {
            status,
            code: status.code(),
            stdout,
            stderr,
            lines,
            elapsed,
            what: self.what,
        }
    }
}

/// What a finished `spawn` produced.
pub struct Output {
    /// Exit status of spawn.
    pub status: ExitStatus,
    /// Exit code, `None` if spawn was killed by a signal.
    pub code: Option<i32>,
    /// All of stdout.
    pub stdout: String,
    /// All of stderr.
    pub stderr: String,
    /// stdout lines with the time each was read, from spawn's start.
    pub lines: Vec<(Duration, String)>,
    /// Start to exit.
    pub elapsed: Duration,
    what: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n  exit: {} after {:?}\n  stdout:\n{}\n  stderr:\n{}",
            self.what, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// The `--json` result: the last line of stdout, parsed.
    pub fn json(&self) -> Value {
        let last = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        match serde_json::from_str::<Value>(last) {
            Ok(v) if v.is_object() => v,
            _ => panic!("the last line of stdout is not a JSON object:\n{self}"),
        }
    }

    /// stdout without the `--json` line: what the sandboxed command printed.
    pub fn body(&self) -> String {
        let mut lines: Vec<&str> = self.stdout.lines().collect();
        if lines
            .last()
            .is_some_and(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
        {
            lines.pop();
        }
        lines.join("\n")
    }

    /// Fails unless spawn exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }

    /// How many times the sandbox's seccomp policy blocked `syscall` (from `--json`).
    pub fn blocked(&self, syscall: &str) -> u64 {
        self.json()["blockedByName"][syscall].as_u64().unwrap_or(0)
    }

    /// Fails unless `syscall` was blocked at least once.
    pub fn assert_blocked(&self, syscall: &str) -> &Output {
        assert!(
            self.blocked(syscall) > 0,
            "no blocked {syscall:?} in blockedByName:\n{self}"
        );
        self
    }

    /// The run id from `--json`.
    pub fn run_id(&self) -> String {
        self.json()["runId"]
            .as_str()
            .unwrap_or_else(|| panic!("no runId:\n{self}"))
            .to_owned()
    }

    /// The `key value...` lines the command printed, as a map from the first word to the rest.
    pub fn fields(&self) -> BTreeMap<String, String> {
        self.body()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (!k.is_empty()).then(|| (k.to_owned(), v.trim().to_owned()))
            })
            .collect()
    }

    /// The value printed after `key` (see [`Output::fields`]); fails when missing.
    pub fn field(&self, key: &str) -> String {
        self.fields()
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("the command printed no {key:?} line:\n{self}"))
    }
}

/// Host uids of one run's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUids {
    /// The sandbox init (root inside).
    pub init: u32,
    /// The agent (uid 1000 inside).
    pub agent: u32,
}

/// The uids a sandbox of the spawn process `spawn_pid` runs as.
pub fn sandbox_uids(spawn_pid: u32) -> SandboxUids {
    let init = HOST_ID_BASE + 2 * (spawn_pid % HOST_ID_SLOTS);
    SandboxUids {
        init,
        agent: init + 1,
    }
}

/// One host process.
#[derive(Clone)]
pub struct Proc {
    /// Host pid.
    pub pid: i32,
    /// `comm`.
    pub name: String,
    /// Parent's host pid.
    pub ppid: i32,
    /// Real, effective, saved and filesystem uids.
    pub uids: Vec<u32>,
    /// A zombie: exited, not yet reaped.
    pub zombie: bool,
}

/// Every host process (those that exit while being read are skipped).
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let mut proc = Proc {
                pid,
                name: String::new(),
                ppid: 0,
                uids: Vec::new(),
                zombie: false,
            };
            for line in status.lines() {
                if let Some(n) = line.strip_prefix("Name:") {
                    proc.name = n.trim().to_owned();
                } else if let Some(u) = line.strip_prefix("Uid:") {
                    proc.uids = u
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                } else if let Some(p) = line.strip_prefix("PPid:") {
                    proc.ppid = p.trim().parse().unwrap_or(0);
                } else if let Some(s) = line.strip_prefix("State:") {
                    proc.zombie = s.trim().starts_with('Z');
                }
            }
            Some(proc)
        })
        .collect()
}

/// Live host processes running as either uid of a sandbox (any of real, effective, saved,
/// fs uid).
pub fn processes_of(uids: SandboxUids) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| !p.zombie && (p.uids.contains(&uids.init) || p.uids.contains(&uids.agent)))
        .collect()
}

/// Live host processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| !p.zombie && u32::try_from(p.ppid) == Ok(pid))
        .collect()
}

/// Whether host process `pid` still runs (a zombie does not).
pub fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("State:") && !l.contains("zombie"))
    })
}

/// A list of processes for failure messages.
pub fn describe(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("{} ({}, uids {:?})", p.pid, p.name, p.uids))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every run cgroup directory: `/sys/fs/cgroup/*/spawn/*` (v1) and `/sys/fs/cgroup/spawn/*` (v2).
pub fn spawn_cgroup_dirs() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join("spawn")];
    if let Ok(entries) = std::fs::read_dir(root) {
        parents.extend(entries.flatten().map(|e| e.path().join("spawn")));
    }
    let mut dirs = Vec::new();
    for parent in parents {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The cgroup directories of one run (`<spawn pid>-<run id>`).
pub fn cgroup_dirs_of_run(run_id: &str) -> Vec<PathBuf> {
    let suffix = format!("-{run_id}");
    spawn_cgroup_dirs()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .collect()
}

/// The cgroup directories of every run of one spawn process.
pub fn cgroup_dirs_of_spawn(spawn_pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{spawn_pid}-");
    spawn_cgroup_dirs()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect()
}

/// The host's mount table as seen by this process.
pub fn host_mountinfo() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// A host process that must survive whatever a test does in a sandbox.
pub struct Bystander {
    child: Child,
}

impl Bystander {
    /// Starts `sleep 120` on the host.
    pub fn start() -> Bystander {
        let child = Command::new("sleep")
            .arg("120")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a host process");
        Bystander { child }
    }

    /// Fails unless it is still running.
    pub fn assert_alive(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "a host process ({}) died during the sandboxed attempt",
            self.child.id()
        );
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A name no other test (or earlier run of the suite) uses, for files looked for afterwards.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// CPU time (user + system, in clock ticks, usually 1/100 s) process `pid` has used so
/// far, from `/proc/PID/stat`.
#[allow(clippy::expect_used)] // a test helper: an unreadable stat file is a failure
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Runs `sleep 3` under `runtime` and returns how much CPU spawn itself used meanwhile:
/// waiting for a sandbox must not spin.
pub fn spawn_cpu_ticks_while_agent_sleeps(home: &Home, runtime: &str) -> (u64, Output) {
    let running = home
        .cmd(["run", "--runtime", runtime, "--", "sleep", "3"])
        .start();
    std::thread::sleep(Duration::from_millis(2500));
    let ticks = cpu_ticks(running.pid());
    (ticks, running.wait())
}
