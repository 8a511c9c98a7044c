//! The agent's output reaches spawn's own descriptors complete and in order on every
//! runtime, whatever they are: a regular file (written at the shell's offset, with and
//! without `O_APPEND`, beside other writers), a pipe, a terminal, `/dev/null`; and nothing
//! of what the caller gave spawn changes owner or mode.
// Helpers outside `#[test]` functions fail the test by panicking, with a message.
#![allow(clippy::expect_used)]

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::helpers::{tempdir, Home, RUN_DEADLINE, SPAWN};

const RUNTIMES: [&str; 3] = ["native", "container", "gvisor"];

/// Runs `spawn ARGS` with the given descriptors as its stdin, stdout and stderr.
pub(super) fn run_with(
    home: &Home,
    args: &[&str],
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> ExitStatus {
    let mut child = Command::new(SPAWN)
        .env("SPAWN_HOME", home.path())
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start spawn");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for spawn") {
            return status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("spawn {args:?} did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn file_stdio(f: &std::fs::File) -> Stdio {
    Stdio::from(f.try_clone().expect("dup"))
}

fn read_all(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("read the output file")
}

/// What the agent prints: numbered lines on stdout and stderr, interleaved, with one large
/// block so that the pipe fills more than once.
const AGENT: &str = "i=0; while [ $i -lt 50 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; \
                     head -c 300000 /dev/zero | tr '\\0' x; echo; echo last";

fn expected_interleaved() -> String {
    let mut s = String::new();
    for i in 0..50 {
        s.push_str(&format!("out{i}\nerr{i}\n"));
    }
    s.push_str(&"x".repeat(300_000));
    s.push_str("\nlast\n");
    s
}

#[test]
fn output_to_a_regular_file_lands_at_the_callers_offset_on_every_runtime() {
    let home = Home::new();
    let dir = tempdir("spawn-stdio-");
    for runtime in RUNTIMES {
        for json in [false, true] {
            for append in [false, true] {
                let path = dir.path().join(format!("{runtime}-{json}-{append}.txt"));
                // `(echo pre; spawn run …; echo post) > file` (or `>> file`): the shell's
                // one open file description, written before and after spawn.
                let mut opts = std::fs::OpenOptions::new();
                opts.create(true).mode(0o600);
                if append {
                    std::fs::write(&path, "old\n").expect("seed");
                    opts.append(true);
                } else {
                    opts.write(true).truncate(true);
                }
                let mut f = opts.open(&path).expect("open the output file");
                f.write_all(b"pre\n").expect("write pre");
                let mut args = vec!["run", "--runtime", runtime];
                if json {
                    args.push("--json");
                }
                args.extend(["--", "sh", "-c", AGENT]);
                let status = run_with(&home, &args, Stdio::null(), file_stdio(&f), file_stdio(&f));
                f.write_all(b"post\n").expect("write post");
                drop(f);
                assert_eq!(
                    status.code(),
                    Some(0),
                    "{runtime} json={json} append={append}"
                );
                let text = read_all(&path);
                let mut expected = String::new();
                if append {
                    expected.push_str("old\n");
                }
                expected.push_str("pre\n");
                assert_output(&without_warnings(&text), &expected, json, runtime, append);
            }
        }
    }
}

fn assert_output(text: &str, prefix: &str, json: bool, runtime: &str, append: bool) {
    let what = format!("{runtime} json={json} append={append}");
    let rest = text.strip_prefix(prefix).unwrap_or_else(|| {
        panic!(
            "{what}: the file does not start with {prefix:?}:\n{}",
            head(text)
        )
    });
    let rest = rest
        .strip_prefix(expected_interleaved().as_str())
        .unwrap_or_else(|| {
            panic!(
                "{what}: the agent's output is not complete and in order:\n{}",
                head(rest)
            )
        });
    let rest = if json {
        let (line, after) = rest
            .split_once('\n')
            .unwrap_or_else(|| panic!("{what}: no --json line after the output:\n{rest}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("{what}: the line after the output is not the result ({e}): {line}")
        });
        assert_eq!(v["exitCode"], 0, "{what}");
        after
    } else {
        rest
    };
    assert_eq!(rest, "post\n", "{what}: what follows the run");
}

/// `text` without spawn's own warnings (the container runtime announces itself on stderr
/// before the run starts).
fn without_warnings(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| !l.starts_with("spawn: warning:"))
        .collect()
}

fn head(s: &str) -> String {
    s.chars().take(400).collect()
}

#[test]
fn appends_interleave_whole_with_another_writer_on_every_runtime() {
    let home = Home::new();
    let dir = tempdir("spawn-stdio-");
    for runtime in RUNTIMES {
        let path = dir.path().join(format!("{runtime}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the log");
        // Another writer appends to the same file (its own open) while the agent runs.
        let other_path = path.clone();
        let other = std::thread::spawn(move || {
            let mut g = std::fs::OpenOptions::new()
                .append(true)
                .open(&other_path)
                .expect("open");
            for i in 0..200 {
                g.write_all(format!("other{i}\n").as_bytes())
                    .expect("append");
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        let script = "i=0; while [ $i -lt 200 ]; do echo agent$i; i=$((i+1)); done";
        let args = ["run", "--runtime", runtime, "--", "sh", "-c", script];
        let status = run_with(&home, &args, Stdio::null(), file_stdio(&f), Stdio::null());
        other.join().expect("the other writer");
        assert_eq!(status.code(), Some(0), "{runtime}");
        let text = read_all(&path);
        let agent: Vec<&str> = text.lines().filter(|l| l.starts_with("agent")).collect();
        let other: Vec<&str> = text.lines().filter(|l| l.starts_with("other")).collect();
        let want: Vec<String> = (0..200).map(|i| format!("agent{i}")).collect();
        assert_eq!(
            agent, want,
            "{runtime}: the agent's lines, in order, none lost"
        );
        assert_eq!(
            other.len(),
            200,
            "{runtime}: the other writer's lines survive"
        );
        assert_eq!(
            text.lines().count(),
            400,
            "{runtime}: nothing overwritten or torn:\n{}",
            head(&text)
        );
    }
}

#[test]
fn output_to_dev_null_a_pipe_and_a_terminal_on_every_runtime() {
    let home = Home::new();
    for runtime in RUNTIMES {
        // /dev/null: the agent can write (no EBADF, no error), spawn exits with its code.
        let status = run_with(
            &home,
            &[
                "run",
                "--runtime",
                runtime,
                "--",
                "sh",
                "-c",
                "echo x; echo y >&2; exit 3",
            ],
            Stdio::null(),
            Stdio::null(),
            Stdio::null(),
        );
        assert_eq!(status.code(), Some(3), "{runtime}: /dev/null");

        // A terminal (spawn's stdout and stderr are the pty's one description).
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let reader = {
            let master = std::fs::File::from(pty.master);
            std::thread::spawn(move || {
                let mut master = master;
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the slave side is closed (EIO) or nothing comes for a while.
                loop {
                    match master.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                out
            })
        };
        let slave: OwnedFd = pty.slave;
        let status = run_with(
            &home,
            &[
                "run",
                "--runtime",
                runtime,
                "--",
                "sh",
                "-c",
                "echo tty-out; echo tty-err >&2; echo tty-end",
            ],
            Stdio::null(),
            Stdio::from(slave.try_clone().expect("dup")),
            Stdio::from(slave),
        );
        assert_eq!(status.code(), Some(0), "{runtime}: terminal");
        let out =
            String::from_utf8_lossy(&reader.join().expect("pty reader")).replace("\r\n", "\n");
        let body: String = out
            .lines()
            .filter(|l| l.starts_with("tty-"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            body, "tty-out\ntty-err\ntty-end\n",
            "{runtime}: terminal output:\n{out}"
        );
    }
}

#[test]
fn stdin_reaches_the_agent_and_the_callers_files_keep_their_owner_and_mode() {
    let home = Home::new();
    let dir = tempdir("spawn-stdio-");
    for runtime in RUNTIMES {
        let input = dir.path().join(format!("{runtime}.in"));
        std::fs::write(&input, "line1\nline2\n").expect("write input");
        let output = dir.path().join(format!("{runtime}.out"));
        let errors = dir.path().join(format!("{runtime}.err"));
        std::fs::set_permissions(&input, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let open = |p: &std::path::Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(p)
                .expect("open")
        };
        let (out_f, err_f) = (open(&output), open(&errors));
        let mut in_f = std::fs::File::open(&input).expect("open input");
        let status = run_with(
            &home,
            &[
                "run",
                "--runtime",
                runtime,
                "--",
                "sh",
                "-c",
                "read a; read b; echo \"$b $a\"; cat",
            ],
            file_stdio(&in_f),
            file_stdio(&out_f),
            file_stdio(&err_f),
        );
        assert_eq!(status.code(), Some(0), "{runtime}");
        assert_eq!(read_all(&output), "line2 line1\n", "{runtime}");
        // The caller's input was consumed through its own offset (the relay read it).
        assert_eq!(in_f.stream_position().expect("tell"), 12, "{runtime}");
        for p in [&input, &output, &errors] {
            let m = std::fs::metadata(p).expect("stat");
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o7777),
                (0, 0, 0o600),
                "{runtime}: {} changed owner or mode",
                p.display()
            );
        }
    }
}

/// Whatever spawn is given as stdin, stdout and stderr keeps its owner and mode on every
/// runtime (gVisor used to chown what it was handed to `nobody`): files, `O_APPEND` files,
/// pipes, sockets, `/dev/null` and a terminal.
#[test]
fn nothing_spawn_is_given_changes_owner_or_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    let dir = tempdir("spawn-stdio-");
    for runtime in RUNTIMES {
        let file = dir.path().join(format!("{runtime}.out"));
        let appended = dir.path().join(format!("{runtime}.log"));
        for p in [&file, &appended] {
            std::fs::write(p, "").expect("create");
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let file_fd = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        let append_fd = std::fs::OpenOptions::new()
            .append(true)
            .open(&appended)
            .expect("open");
        let (pipe_r, pipe_w) = nix::unistd::pipe().expect("pipe");
        let (sock_a, sock_b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let pty = nix::pty::openpty(None, None).expect("openpty");
        // (what, the descriptor spawn gets, how it is passed: 0 stdin, 1 stdout, 2 stderr)
        let cases: Vec<(&str, OwnedFd, usize)> = vec![
            ("file", OwnedFd::from(file_fd), 1),
            ("O_APPEND file", OwnedFd::from(append_fd), 2),
            ("pipe", pipe_w, 1),
            ("pipe (stdin)", pipe_r, 0),
            ("socket", OwnedFd::from(sock_a), 1),
            ("/dev/null", OwnedFd::from(null), 0),
            ("terminal", pty.slave, 2),
        ];
        for (what, fd, slot) in cases {
            let before = nix::sys::stat::fstat(&fd).expect("fstat");
            let mut stdio = [Stdio::null(), Stdio::null(), Stdio::null()];
            stdio[slot] = Stdio::from(fd.try_clone().expect("dup"));
            let [i, o, e] = stdio;
            let status = run_with(
                &home,
                &[
                    "run",
                    "--runtime",
                    runtime,
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2",
                ],
                i,
                o,
                e,
            );
            assert_eq!(status.code(), Some(0), "{runtime}: {what}");
            let after = nix::sys::stat::fstat(&fd).expect("fstat");
            assert_eq!(
                (after.st_uid, after.st_gid, after.st_mode),
                (before.st_uid, before.st_gid, before.st_mode),
                "{runtime}: the {what} spawn was given changed owner or mode"
            );
        }
        drop(sock_b);
        drop(pty.master);
    }
}

/// The caller's terminal is never the agent's: a run whose stdin and stdout are not both
/// terminals gets none; an interactive one gets a pty of its own that spawn relays. On every
/// runtime, the ioctls that inject input, change the line discipline, take a controlling
/// terminal or redirect the console are refused (also in their 64-bit spellings) and
/// counted, and the caller's terminal is as it was after the run.
#[test]
fn the_callers_terminal_is_never_the_agents() {
    let script = r#"
import ctypes, fcntl, os, sys, termios
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
reqs = [("TIOCSTI", 0x5412), ("TIOCLINUX", 0x541C), ("TIOCSETD", 0x5423),
        ("TIOCSCTTY", 0x540E), ("TIOCCONS", 0x541D)]
print("isatty", int(os.isatty(0)), int(os.isatty(1)), int(os.isatty(2)))
try:
    os.open("/dev/tty", os.O_RDWR); print("devtty opened")
except OSError as e:
    print("devtty", e.errno)
arg = ctypes.c_int(0)
for name, req in reqs:
    for wide in (0, 1 << 32):
        for fd in (0, 1, 2):
            ctypes.set_errno(0)
            r = libc.syscall(16, fd, ctypes.c_ulong(req | wide), ctypes.byref(arg))
            print(f"{name} {fd} {'wide' if wide else 'plain'}", "ALLOWED" if r == 0 else ctypes.get_errno())
sys.stdout.flush()
"#;
    let home = Home::new();
    for runtime in RUNTIMES {
        for interactive in [false, true] {
            let pty = nix::pty::openpty(None, None).expect("openpty");
            let before_disc = line_discipline(&pty.slave);
            let before_settings = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
            let master = std::fs::File::from(pty.master);
            let reader = std::thread::spawn(move || {
                let mut master = master;
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match master.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                out
            });
            // Interactive: the terminal is spawn's stdin and stdout; else only its stdout.
            let stdin = if interactive {
                Stdio::from(pty.slave.try_clone().expect("dup"))
            } else {
                Stdio::null()
            };
            let args = [
                "run",
                "--runtime",
                runtime,
                "--json",
                "--",
                "python3",
                "-c",
                script,
            ];
            let status = run_with(
                &home,
                &args,
                stdin,
                Stdio::from(pty.slave.try_clone().expect("dup")),
                Stdio::null(),
            );
            let after_disc = line_discipline(&pty.slave);
            let after_settings = nix::sys::termios::tcgetattr(&pty.slave).expect("tcgetattr");
            drop(pty.slave);
            let out =
                String::from_utf8_lossy(&reader.join().expect("reader")).replace("\r\n", "\n");
            let what = format!("{runtime} interactive={interactive}");
            assert_eq!(status.code(), Some(0), "{what}:\n{out}");
            let want_tty = if interactive {
                "isatty 1 1 1"
            } else {
                "isatty 0 1 0"
            };
            let field = |key: &str| {
                out.lines()
                    .find(|l| l.starts_with(key))
                    .unwrap_or_else(|| panic!("{what}: no {key:?} in:\n{out}"))
                    .to_owned()
            };
            if interactive {
                assert_eq!(field("isatty"), want_tty, "{what}:\n{out}");
            } else {
                // stdout is spawn's terminal relayed through a pipe: not a terminal.
                assert_eq!(field("isatty"), "isatty 0 0 0", "{what}:\n{out}");
            }
            // /dev/tty is the controlling terminal: none without a terminal, the run's own
            // pty in an interactive run (gVisor cannot open a host terminal through
            // /dev/tty: EIO).
            assert_eq!(
                field("devtty").contains("opened"),
                interactive && runtime != "gvisor",
                "{what}: /dev/tty:\n{out}"
            );
            for (name, _) in [
                ("TIOCSTI", 0),
                ("TIOCLINUX", 0),
                ("TIOCSETD", 0),
                ("TIOCSCTTY", 0),
                ("TIOCCONS", 0),
            ] {
                for width in ["plain", "wide"] {
                    for fd in 0..3 {
                        assert_eq!(
                            field(&format!("{name} {fd} {width}")),
                            format!("{name} {fd} {width} {}", nix::libc::EPERM),
                            "{what}:\n{out}"
                        );
                    }
                }
            }
            let result: serde_json::Value = serde_json::from_str(
                out.lines()
                    .rev()
                    .find(|l| l.starts_with('{'))
                    .unwrap_or("{}"),
            )
            .expect("the --json result");
            assert!(
                result["blockedByName"]["ioctl"].as_u64().unwrap_or(0) >= 30,
                "{what}: the denied ioctls were not counted: {result}"
            );
            assert_eq!(
                after_disc, before_disc,
                "{what}: the line discipline changed"
            );
            assert_eq!(
                format!("{after_settings:?}"),
                format!("{before_settings:?}"),
                "{what}: the caller's terminal settings changed"
            );
        }
    }
}

/// The line discipline of terminal `fd` (`TIOCGETD`), as a program on the host reads it.
fn line_discipline(fd: &OwnedFd) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fcntl, struct, termios; \
             print(struct.unpack('i', fcntl.ioctl(0, termios.TIOCGETD, b'\\0' * 4))[0])",
        ])
        .stdin(Stdio::from(fd.try_clone().expect("dup")))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "TIOCGETD: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Sets the window size of terminal `fd` from a program on the host (no `unsafe` here).
fn set_window_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import fcntl, struct, termios; \
                 fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', {rows}, {cols}, 0, 0))"
            ),
        ])
        .stdin(Stdio::from(fd.try_clone().expect("dup")))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "TIOCSWINSZ: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An interactive run's terminal has the caller's size, and follows it when it changes
/// (spawn gets SIGWINCH; the agent's foreground group gets it from its own terminal).
#[test]
fn an_interactive_run_follows_the_terminal_size() {
    let home = Home::new();
    let script = "import os, signal, sys\n\
                  signal.signal(signal.SIGWINCH, lambda *a: print('resized', *os.get_terminal_size(0), flush=True))\n\
                  print('size', *os.get_terminal_size(0), flush=True)\n\
                  sys.stdin.readline()";
    for runtime in RUNTIMES {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        set_window_size(&pty.slave, 33, 99);
        let mut master = std::fs::File::from(pty.master);
        let mut child = Command::new(SPAWN)
            .env("SPAWN_HOME", home.path())
            .args(["run", "--runtime", runtime, "--", "python3", "-c", script])
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stderr(Stdio::null())
            .spawn()
            .expect("start spawn");
        // What the terminal shows, read on a thread so that a missing line fails the test
        // at its deadline instead of blocking it.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut reader = master.try_clone().expect("dup");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let mut read_until = |_: &mut std::fs::File, want: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !seen.contains(want) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(chunk) => seen.push_str(&chunk),
                    Err(_) => break,
                }
            }
            assert!(seen.contains(want), "{runtime}: no {want:?} in {seen:?}");
        };
        read_until(&mut master, "size 99 33");
        set_window_size(&pty.slave, 40, 120);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .expect("SIGWINCH");
        read_until(&mut master, "resized 120 40");
        master.write_all(b"\n").expect("write");
        assert!(child.wait().expect("wait").success(), "{runtime}");
    }
}

/// When spawn's stdout and stderr are one file, a large output is never refused to the
/// agent (gVisor took the second of two descriptors sharing one description as the agent's
/// own non-blocking choice, and a full pipe gave it EAGAIN), on every runtime.
#[test]
fn a_large_output_to_one_file_is_never_refused() {
    let home = Home::new();
    let dir = tempdir("spawn-stdio-");
    let script = "i=0; while [ $i -lt 20 ]; do echo err$i >&2; i=$((i+1)); done; \
                  head -c 1000000 /dev/zero | tr '\\0' x; echo; echo end >&2";
    let expected = {
        let mut s: String = (0..20).map(|i| format!("err{i}\n")).collect();
        s.push_str(&"x".repeat(1_000_000));
        s.push_str("\nend\n");
        s
    };
    for runtime in RUNTIMES {
        // The race it guards against is with gVisor's start-up: many rounds.
        for round in 0..20 {
            let path = dir.path().join(format!("{runtime}-{round}"));
            let f = std::fs::File::create(&path).expect("create");
            let status = run_with(
                &home,
                &["run", "--runtime", runtime, "--", "sh", "-c", script],
                Stdio::null(),
                file_stdio(&f),
                file_stdio(&f),
            );
            let text = without_warnings(&read_all(&path));
            assert_eq!(
                status.code(),
                Some(0),
                "{runtime} round {round}: {}",
                head(&text)
            );
            assert!(
                text == expected,
                "{runtime} round {round}: {} bytes instead of {}: {}",
                text.len(),
                expected.len(),
                head(&text.replace(&"x".repeat(1000), "x…"))
            );
        }
    }
}
