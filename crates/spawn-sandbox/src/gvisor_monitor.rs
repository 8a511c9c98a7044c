//! Counting and auditing the calls spawn's seccomp filter denies inside gVisor.
//!
//! Inside gVisor, spawn's init gives the agent the native filter in its deny-only form
//! (blocked calls fail `EPERM`; gVisor's kernel has no seccomp user notifications). What
//! runsc 0.0~20240729 can tell spawn about those denials, measured against the real
//! binary:
//!
//! - **Its runtime monitoring does not see them.** The trace points (`syscall/sysno/N/enter`
//!   and `/exit`, the named `syscall/socket/...` and so on, reported through the `remote`
//!   sink, see [`sink`]) fire inside the Sentry's syscall execution, and the Sentry checks
//!   the task's seccomp filters *before* that: a call the filter answers with an errno
//!   returns straight to the task (the Sentry logs `Syscall N: denied by seccomp` from
//!   `task_syscall.go` and goes to syscall exit) without reaching any point. With spawn's
//!   filter installed, `mount`, `unshare(CLONE_NEWUSER)` and `socket(AF_PACKET, …)` gave the
//!   sink no message at all, enter or exit, raw or named; without the filter the same calls
//!   gave one each. The other non-allow answers skip the points too (checked: trap, which
//!   raises `SIGSYS`, and trace without a tracer, which fails `ENOSYS`; this gVisor kills
//!   a task whose filter answers "log"). No point exists for seccomp decisions (`runsc
//!   trace metadata`: 991 points, `container/start`, five `sentry/*`, syscall enter/exit).
//!   So the sink can only report calls that *passed* the filter.
//! - **Its debug log does.** That `denied by seccomp` line carries the syscall number and
//!   the thread, once per denied call, and nothing the agent controls. runsc writes the
//!   Sentry's debug log to the path of `--debug-log`, which may be a FIFO: spawn makes one in
//!   the run's private directory, keeps both ends open and reads it while the run lasts
//!   ([`DenialLog`]); the lines are never stored. `--debug-command=boot` limits debug
//!   logging to the Sentry (not `runsc run` or the gofer), and the JSON format escapes
//!   every string, so a line can only be a denial when the Sentry's own `task_syscall.go`
//!   wrote it ([`parse_line`]).
//!
//! The denial line has the number but not the arguments. That is all spawn counts and audits
//! on the other runtimes too (`blockedByName` and the first-of-a-kind event are per
//! syscall name), and the filter itself has judged the arguments: a line exists only when
//! it answered with an errno. The only calls it answers with an errno that are not blocked
//! calls are `clone3` and `openat2` (`ENOSYS`, so libc falls back to `clone` and `openat`,
//! which the filter can inspect), and a filter installed beside it (such as one answering
//! `lgetxattr` with `ENODATA`) is logged alike: [`blocked_name`] counts only numbers the
//! main filter can block ([`may_block`]), as the native runtime counts only what reaches
//! its listener.
//!
//! Cost (2-core VM busy with other builds, systrap, medians of 9 interleaved runs, wall /
//! CPU of runsc and its processes): `python3 -c pass` 0.35 s / 0.18 s → 0.40 s / 0.21 s
//! with the Sentry's debug log on (it logs its set-up at debug level, ~500 lines); 100k
//! allowed `ioctl`: no difference above the noise; 100k denied `mount`: 2.3 s / 1.1 s →
//! 5.3 s / 2.5 s, about 14 µs of CPU per denial, paid only by an agent that hammers a
//! blocked call. The Sentry's log writes block while the FIFO is full (checked: an unread
//! FIFO holds the sandbox still, and reading it then delivers all 100,000 denials), so a
//! stalled reader stalls the sandbox and never loses a denial; [`DenialLog`] asks for a
//! 1 MiB pipe. spawn reads it on a timer ([`READ_PERIOD`]), not whenever it is readable:
//! the Sentry writes a line at a time (~500 as it starts, two per gofer call after), and
//! waking spawn for each cost a `true` run ~9 ms of the two cores here (30 interleaved
//! runs: 178.6 ms read as written, 169.7 ms with the log going to a file instead, 163.4
//! ms without the debug log); read every 50 ms, 172.2 against 167.5 without the log.

//! A gVisor run uses it so: [`DenialLog::create`] in the run's private bundle directory
//! before runsc starts; [`runsc_flags`] of its path on `runsc run` (global flags, before
//! the subcommand; not needed on `kill` or `delete`); [`DenialLog::read_available`] every
//! [`READ_PERIOD`] while the run lasts, with each
//! denial passed to [`record`] (and what that returns to `Observer::denied`); after runsc
//! has exited, [`DenialLog::drain`]. The debug log also holds what the Sentry logs at
//! start, the OCI spec with the agent's environment among it: it must only ever go to this
//! FIFO, never to a file.

pub mod sink;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bpf::Action;
use crate::error::SandboxError;
use crate::seccomp::{policy, syscall_name};

/// The FIFO's name in the run's private directory.
pub const FIFO_NAME: &str = "sentry-debug.fifo";
/// The longest debug-log line looked at. A denial line is about 130 bytes; longer lines
/// (the Sentry logs its whole OCI spec at start) are skipped without being buffered.
pub const MAX_LINE: usize = 4096;
/// The pipe capacity asked for (the kernel's default limit for unprivileged pipes).
const PIPE_SIZE: i32 = 1 << 20;
/// At most this many bytes are read per [`DenialLog::read_available`] call, so that a
/// flood of log lines cannot keep the supervisor from its other descriptors.
const READ_BUDGET: usize = 1 << 20;
/// How often a run reads its FIFO while it lasts (and once more after runsc has exited).
/// At the Sentry's cost of ~14 µs of CPU per denial, 1 MiB of ~130-byte lines is about
/// 0.1 s of denials: a flood fills the FIFO no faster than it is read.
pub const READ_PERIOD: std::time::Duration = std::time::Duration::from_millis(50);

/// The runsc flags (before the subcommand) that send the Sentry's debug log, as JSON, to
/// `fifo`. Refused for paths runsc would rewrite (`%` starts one of its templates, a
/// trailing `/` makes it a directory) or that are not absolute.
pub fn runsc_flags(fifo: &Path) -> Result<Vec<String>, SandboxError> {
    let path = fifo
        .to_str()
        .filter(|p| p.starts_with('/') && !p.ends_with('/') && !p.contains('%'))
        .ok_or_else(|| {
            SandboxError::Unsupported(format!(
                "{} cannot be given to runsc as a debug log path",
                fifo.display()
            ))
        })?;
    Ok(vec![
        "--debug".into(),
        format!("--debug-log={path}"),
        "--debug-log-format=json".into(),
        "--debug-command=boot".into(),
    ])
}

/// One call spawn's filter denied, as the Sentry reported it. The ids are the thread's and
/// its thread group's in the sandbox's root PID namespace (spawn's init is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The syscall number.
    pub sysno: u32,
    /// The thread group (process).
    pub tgid: u32,
    /// The thread.
    pub tid: u32,
}

/// The run's debug-log FIFO, read while the run lasts.
#[derive(Debug)]
pub struct DenialLog {
    path: PathBuf,
    reader: File,
    /// spawn's own write end: the FIFO never reads as end-of-file (neither before runsc
    /// opens it nor after the Sentry exits), so reading is always "what is there now", and
    /// runsc's open for writing never waits.
    _writer: File,
    lines: Lines,
    buf: Vec<u8>,
}

impl DenialLog {
    /// Makes the FIFO [`FIFO_NAME`] (mode 0600) in `dir`, which must be private to spawn
    /// (the run's bundle directory), and opens both ends. Pass [`DenialLog::path`] to
    /// [`runsc_flags`].
    pub fn create(dir: &Path) -> Result<DenialLog, SandboxError> {
        let path = dir.join(FIFO_NAME);
        let fail =
            |what: &str, e: io::Error| SandboxError::setup(format!("{what} {}", path.display()), e);
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(|e| fail("mkfifo", e.into()))?;
        // The read end first: opening a FIFO's write end without a reader fails (ENXIO)
        // with O_NONBLOCK. std opens with O_CLOEXEC.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        let is_fifo = reader
            .metadata()
            .map_err(|e| fail("inspect", e))?
            .file_type()
            .is_fifo();
        if !is_fifo {
            return Err(fail("open", io::Error::other("not a FIFO")));
        }
        // Best effort: a smaller pipe only means the Sentry waits for spawn more often.
        let _ = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        Ok(DenialLog {
            path,
            reader,
            _writer: writer,
            lines: Lines::default(),
            buf: vec![0; 64 << 10],
        })
    }

    /// The FIFO, for [`runsc_flags`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The read end (for a caller that polls it instead of reading on a timer).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Reads what the Sentry has written so far (at most 1 MiB per call; call again for
    /// more) and calls `on_denial` for each denial in it. After runsc has exited, call it
    /// until it returns `Ok(false)` to take the rest.
    ///
    /// Returns whether it stopped at the budget (more may be waiting).
    pub fn read_available(&mut self, mut on_denial: impl FnMut(Denial)) -> io::Result<bool> {
        let mut total = 0;
        while total < READ_BUDGET {
            match self.reader.read(&mut self.buf) {
                // Only when every writer, spawn's own included, is gone.
                Ok(0) => return Ok(false),
                Ok(n) => {
                    total += n;
                    self.lines.push(&self.buf[..n], |line| {
                        if let Some(d) = parse_line(line) {
                            on_denial(d);
                        }
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads everything that is waiting (for after runsc has exited).
    pub fn drain(&mut self, mut on_denial: impl FnMut(Denial)) -> io::Result<()> {
        while self.read_available(&mut on_denial)? {}
        Ok(())
    }
}

impl Drop for DenialLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes; longer lines are
/// dropped whole, without being buffered.
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
    /// The current line has grown past the limit: skip to the next newline.
    overlong: bool,
}

impl Lines {
    fn push(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            let (line, rest) = data.split_at(i);
            data = &rest[1..];
            if self.overlong || self.pending.len() + line.len() > MAX_LINE {
                self.overlong = false;
                self.pending.clear();
            } else if self.pending.is_empty() {
                on_line(line);
            } else {
                self.pending.extend_from_slice(line);
                on_line(&self.pending);
                self.pending.clear();
            }
        }
        if self.overlong || self.pending.len() + data.len() > MAX_LINE {
            self.overlong = true;
            self.pending.clear();
        } else {
            self.pending.extend_from_slice(data);
        }
    }
}

/// The denial in one line of the Sentry's JSON debug log, if it is one:
/// `{"msg":"task_syscall.go:241] [   2:   2] Syscall 165: denied by seccomp","level":"debug",…}`.
///
/// Strict: the message must come from `task_syscall.go` (the file that writes the
/// denial; any string the agent can get into the log follows the file and line of the
/// code that logged it, so it cannot start a message), and every part must be exactly as
/// the Sentry writes it. Anything else is not a denial.
pub fn parse_line(line: &[u8]) -> Option<Denial> {
    if line.len() > MAX_LINE {
        return None;
    }
    // Most lines are not denials: only those that say so are parsed (and then strictly).
    // The Sentry's JSON encoder (Go's) escapes only `<`, `>`, `&`, control characters and
    // invalid UTF-8, none of which are in the message: a denial it wrote holds these bytes.
    memchr::memmem::find(line, DENIED.as_bytes())?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    if value.get("level")?.as_str()? != "debug" {
        return None;
    }
    parse_message(value.get("msg")?.as_str()?)
}

/// How the Sentry's denial message ends.
const DENIED: &str = ": denied by seccomp";

/// `task_syscall.go:LINE] [TGID:TID] Syscall N: denied by seccomp` (ids padded with spaces).
fn parse_message(msg: &str) -> Option<Denial> {
    let rest = msg.strip_prefix("task_syscall.go:")?;
    let (line, rest) = rest.split_once("] [")?;
    number(line)?;
    let (ids, rest) = rest.split_once("] ")?;
    let (tgid, tid) = ids.split_once(':')?;
    let sysno = rest.strip_prefix("Syscall ")?.strip_suffix(DENIED)?;
    Some(Denial {
        sysno: number(sysno)?,
        tgid: number(tgid.trim_start_matches(' '))?,
        tid: number(tid.trim_start_matches(' '))?,
    })
}

/// A decimal `u32` with nothing around it, as Go's `%d` writes it (no leading zero).
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// The numbers spawn's main filter can block (answer with a user notification, `EPERM` in
/// its deny-only form): those without an entry (the default), and those allowed only on
/// conditions. Not: the unconditionally allowed ones, and `clone3` and `openat2`, which it
/// answers `ENOSYS` so that libc falls back to calls it can inspect.
pub fn may_block(sysno: u32) -> bool {
    static NEVER: OnceLock<(BTreeSet<u32>, bool)> = OnceLock::new();
    let (never, default_blocks) = NEVER.get_or_init(|| {
        let p = policy();
        let never = p
            .entries
            .into_iter()
            .filter(|(_, e)| {
                e.action != Action::Notify && (e.any_of.is_empty() || p.default != Action::Notify)
            })
            .map(|(n, _)| n)
            .collect();
        (never, p.default == Action::Notify)
    });
    *default_blocks && !never.contains(&sysno)
}

/// The name a denied syscall is counted and audited under, as on the other runtimes; `None`
/// when the main filter cannot have blocked it: the denial was an `ENOSYS` answer
/// (`clone3`, `openat2`) or came from another filter installed beside it (e.g. one that
/// answers `lgetxattr` with `ENODATA` for older gVisor releases), which the Sentry logs
/// the same way. A number the main filter blocks on some arguments and another filter
/// answers on others would be counted either way; no such pair exists.
pub fn blocked_name(sysno: u32) -> Option<String> {
    may_block(sysno).then(|| syscall_name(i64::from(sysno)))
}

/// Counts `denial` into `blocked` (the run's `blockedByName`) and returns the name with
/// whether it is the first of its kind in the run, for `Observer::denied`; `None` when it
/// is not a blocked call.
pub fn record(denial: &Denial, blocked: &mut BTreeMap<String, u64>) -> Option<(String, bool)> {
    let name = blocked_name(denial.sysno)?;
    let count = blocked.entry(name.clone()).or_insert(0);
    *count += 1;
    Some((name, *count == 1))
}

#[cfg(test)]
// Kernel ABI constants and test bytes are converted bit for bit; the casts are intended.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;

    fn line(tgid: &str, tid: &str, sysno: &str) -> String {
        format!(
            r#"{{"msg":"task_syscall.go:241] [{tgid}:{tid}] Syscall {sysno}: denied by seccomp","level":"debug","time":"2026-12-03T07:58:29.654030886Z"}}"#
        )
    }

    #[test]
    fn parses_the_sentrys_denial_lines() {
        // As runsc 0.0~20240729 wrote them for spawn's init's agent.
        let real = br#"{"msg":"task_syscall.go:241] [   2:   2] Syscall 165: denied by seccomp","level":"debug","time":"2026-12-03T07:58:29.654030886Z"}"#;
        assert_eq!(
            parse_line(real),
            Some(Denial {
                sysno: 165,
                tgid: 2,
                tid: 2
            })
        );
        assert_eq!(
            parse_line(line("1234", "1240", "41").as_bytes()),
            Some(Denial {
                sysno: 41,
                tgid: 1234,
                tid: 1240
            })
        );
        // Another line number (another runsc build) is still the same message.
        let other = String::from_utf8(real.to_vec())
            .unwrap()
            .replace(":241]", ":250]");
        assert_eq!(parse_line(other.as_bytes()).map(|d| d.sysno), Some(165));
    }

    #[test]
    fn anything_else_is_not_a_denial() {
        let bad = [
            String::new(),
            "{}".into(),
            "null".into(),
            "not json".into(),
            // The text format, never asked for.
            "D1203 07:57:06.799259   26149 task_syscall.go:241] [   1:   1] Syscall 165: denied by seccomp".into(),
            // Another file's message quoting the text (a path the agent chose, say).
            r#"{"msg":"vfs.go:10] open task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp","level":"debug"}"#.into(),
            r#"{"msg":"x task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp","level":"debug"}"#.into(),
            // Not debug level.
            line("1", "1", "165").replace("\"debug\"", "\"info\""),
            r#"{"msg":"task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp"}"#.into(),
            // The neighbouring messages of the same file.
            r#"{"msg":"task_syscall.go:250] [ 1: 1] Syscall 165: killed by seccomp","level":"debug"}"#.into(),
            r#"{"msg":"task_syscall.go:256] [ 1: 1] Syscall 165: stopping for PTRACE_EVENT_SECCOMP","level":"debug"}"#.into(),
            // Numbers out of range, signed, empty, padded wrongly, trailing text.
            line("1", "1", "4294967296"),
            line("1", "1", "-1"),
            line("1", "1", "+1"),
            line("1", "1", ""),
            line("1", "1", " 165"),
            line("1", "", "165"),
            line("x", "1", "165"),
            line("1", "99999999999", "165"),
            line("1", "1", "165: denied by seccomp\\nSyscall 1"),
            r#"{"msg":"task_syscall.go:] [ 1: 1] Syscall 165: denied by seccomp","level":"debug"}"#.into(),
            r#"{"msg":"task_syscall.go:241] [ 1 1] Syscall 165: denied by seccomp","level":"debug"}"#.into(),
            r#"{"msg":"task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp ","level":"debug"}"#.into(),
            // Not strings.
            r#"{"msg":165,"level":"debug"}"#.into(),
            r#"{"msg":["task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp"],"level":"debug"}"#.into(),
            r#"["task_syscall.go:241] [ 1: 1] Syscall 165: denied by seccomp"]"#.into(),
        ];
        for b in &bad {
            assert_eq!(parse_line(b.as_bytes()), None, "{b}");
        }
        // Truncated anywhere, and invalid UTF-8 anywhere.
        let good = line("2", "2", "165");
        for cut in 0..good.len() {
            assert_eq!(parse_line(&good.as_bytes()[..cut]), None, "cut at {cut}");
            let mut broken = good.as_bytes().to_vec();
            broken[cut] = 0xff;
            assert_eq!(parse_line(&broken), None, "0xff at {cut}");
        }
        // Too long to be one.
        let long = good.replace(
            "\"time\"",
            &format!("\"pad\":\"{}\",\"time\"", "x".repeat(MAX_LINE)),
        );
        assert_eq!(parse_line(long.as_bytes()), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let template = line("2", "2", "165").into_bytes();
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = template.clone();
            // Flip a few bytes of a real line, or make a random one.
            if round % 2 == 0 {
                for k in 0..(x % 4 + 1) {
                    let i = ((x >> (8 * k)) as usize) % bytes.len();
                    bytes[i] = (x >> (3 * k)) as u8;
                }
            } else {
                bytes = (0..(x % 200)).map(|i| (x >> (i % 57)) as u8).collect();
            }
            if let Some(d) = parse_line(&bytes) {
                // A mutation can only yield a denial that is still a well-formed line.
                assert!(
                    std::str::from_utf8(&bytes)
                        .unwrap()
                        .contains("denied by seccomp"),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn lines_are_split_across_reads_and_bounded() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        let one = line("2", "2", "165");
        let two = line("2", "3", "272");
        let stream = format!("{one}\n{two}\n");
        // Byte by byte: the same lines come out.
        for b in stream.as_bytes() {
            l.push(std::slice::from_ref(b), |x| {
                got.push(parse_line(x));
            });
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].map(|d| d.sysno), Some(165));
        assert_eq!(got[1].map(|d| (d.sysno, d.tid)), Some((272, 3)));

        // A line past the limit is dropped whole, however it arrives, and the next one is
        // read; nothing past the limit is ever buffered.
        for chunk in [1usize, 7, 4096, 5000, 1 << 16] {
            let mut l = Lines::default();
            let mut got = Vec::new();
            let stream = format!(
                "{}\n{one}\n{}",
                "y".repeat(3 * MAX_LINE),
                "z".repeat(2 * MAX_LINE)
            );
            for c in stream.as_bytes().chunks(chunk) {
                l.push(c, |x| got.push(x.to_vec()));
                assert!(l.pending.len() <= MAX_LINE);
            }
            assert_eq!(got, vec![one.as_bytes().to_vec()], "chunk {chunk}");
        }
        // Exactly the limit is kept.
        let mut l = Lines::default();
        let mut got = Vec::new();
        l.push(format!("{}\n", "a".repeat(MAX_LINE)).as_bytes(), |x| {
            got.push(x.len())
        });
        assert_eq!(got, vec![MAX_LINE]);
    }

    #[test]
    fn only_calls_the_main_filter_can_block_are_counted() {
        assert_eq!(blocked_name(libc::SYS_clone3 as u32), None);
        assert_eq!(blocked_name(libc::SYS_openat2 as u32), None);
        // Allowed by the main filter: a denial can only come from another filter.
        assert_eq!(blocked_name(libc::SYS_lgetxattr as u32), None);
        assert_eq!(blocked_name(libc::SYS_read as u32), None);
        // Conditional: blocked on some arguments.
        assert_eq!(
            blocked_name(libc::SYS_ioctl as u32).as_deref(),
            Some("ioctl")
        );
        assert_eq!(
            blocked_name(libc::SYS_clone as u32).as_deref(),
            Some("clone")
        );
        assert_eq!(
            blocked_name(libc::SYS_mount as u32).as_deref(),
            Some("mount")
        );
        assert_eq!(
            blocked_name(libc::SYS_socket as u32).as_deref(),
            Some("socket")
        );
        assert_eq!(blocked_name(9999).as_deref(), Some("syscall_9999"));
        let mut blocked = BTreeMap::new();
        let d = |sysno| Denial {
            sysno,
            tgid: 2,
            tid: 2,
        };
        assert_eq!(
            record(&d(libc::SYS_mount as u32), &mut blocked),
            Some(("mount".into(), true))
        );
        assert_eq!(
            record(&d(libc::SYS_mount as u32), &mut blocked),
            Some(("mount".into(), false))
        );
        assert_eq!(record(&d(libc::SYS_clone3 as u32), &mut blocked), None);
        assert_eq!(blocked, BTreeMap::from([("mount".to_owned(), 2)]));
    }

    #[test]
    fn flags_name_the_fifo_and_refuse_rewritten_paths() {
        let f = runsc_flags(Path::new("/dev/shm/spawn/bundles/1-x/sentry-debug.fifo")).unwrap();
        assert_eq!(
            f,
            [
                "--debug",
                "--debug-log=/dev/shm/spawn/bundles/1-x/sentry-debug.fifo",
                "--debug-log-format=json",
                "--debug-command=boot"
            ]
        );
        for bad in ["relative", "/dir/", "/a/%ID%/f", "/a/%COMMAND%"] {
            assert!(runsc_flags(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fifo_reads_what_is_written_and_never_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DenialLog::create(dir.path()).unwrap();
        let mut got = Vec::new();
        // Nothing written yet: not an end.
        assert!(!log.read_available(|d| got.push(d)).unwrap());
        {
            use std::io::Write as _;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(log.path())
                .unwrap();
            let noise =
                r#"{"msg":"main.go:196] **************** gVisor ****************","level":"info"}"#;
            write!(
                w,
                "{noise}\n{}\n{}",
                line("2", "2", "165"),
                line("2", "2", "435")
            )
            .unwrap();
        }
        log.drain(|d| got.push(d)).unwrap();
        // The writer is gone but spawn's own end keeps the FIFO open; the half line waits.
        assert_eq!(got.iter().map(|d| d.sysno).collect::<Vec<_>>(), [165]);
        {
            use std::io::Write as _;
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(log.path())
                .unwrap();
            writeln!(w).unwrap();
        }
        log.drain(|d| got.push(d)).unwrap();
        assert_eq!(got.iter().map(|d| d.sysno).collect::<Vec<_>>(), [165, 435]);
        let path = log.path().to_path_buf();
        drop(log);
        assert!(!path.exists());
        // A planted file is not taken over.
        std::fs::write(dir.path().join(FIFO_NAME), "").unwrap();
        assert!(DenialLog::create(dir.path()).is_err());
    }
}

/// The fuzz targets' properties (`fuzz/properties/sentry_*.rs`), checked on stable on their
/// seeds and on every input they ever failed on (`fuzz/regressions/sentry_*`).
#[cfg(test)]
mod fuzz_properties {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    mod log {
        use crate as spawn_sandbox;
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/properties/sentry_log.rs"
        ));
    }

    mod record {
        use crate as spawn_sandbox;
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/properties/sentry_record.rs"
        ));
    }

    fn inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut found = Vec::new();
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                found.push((e.path(), data));
            }
        }
        found
    }

    #[test]
    fn sentry_log_property_holds_on_kept_inputs() {
        let kept = inputs("sentry_log");
        assert!(!kept.is_empty(), "no sentry_log seeds");
        for (path, data) in &kept {
            eprintln!("{}", path.display());
            log::check(data);
            // Each seed line as the FIFO delivers it (without the newline).
            log::check(data.strip_suffix(b"\n").unwrap_or(data));
        }
        // The seeds say what they are: a real denial, and a forged one inside a path.
        let denial = super::parse_line(
            br#"{"msg":"task_syscall.go:241] [   2:   2] Syscall 165: denied by seccomp","level":"debug"}"#,
        );
        assert_eq!(denial.map(|d| d.sysno), Some(165));
    }

    #[test]
    fn sentry_record_property_holds_on_kept_inputs() {
        for (path, data) in inputs("sentry_record") {
            eprintln!("{}", path.display());
            record::check(&data);
        }
        record::check(&[]);
        record::check(&[0xff; 64]);
    }
}
