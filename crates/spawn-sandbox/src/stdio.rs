//! The agent's standard streams: pipes spawn owns, relayed to and from spawn's own
//! descriptors, on every runtime.
//!
//! The agent never gets spawn's own descriptors. A runtime handed them would write to
//! them directly, and not all do that the way the caller expects: gVisor imports a
//! regular file as a host file of its own and writes at its own offset (output written
//! over what the shell wrote before, or over by spawn's `--json` line after), and changes
//! the owner of the files it is given. Through pipes, spawn writes every byte itself with
//! `write(2)` on its own descriptor, whatever that is (terminal, pipe, socket, regular file
//! with or without `O_APPEND`, `/dev/null`), so the output lands where and in the order the
//! caller's file description says, and nothing of the caller's is touched. It is also the
//! one place where the agent's output passes through spawn: with secrets granted, every
//! output copy goes through a redaction stream (`spawn-redact`), so a value or any of its
//! forms reaches spawn's descriptors as `[REDACTED:NAME]`, however the agent cuts its
//! writes. The stream holds back only an end that could still begin a form, until the
//! next bytes say it does not, or the output ends: an interactive run may see the last
//! bytes of a line late, never a part of a value.
//!
//! - When spawn's stdout and stderr are the same open file description (`2>&1`, a
//!   terminal), the agent gets one pipe for both, so their interleaving is exactly the
//!   agent's. Otherwise each has its own pipe and keeps its own order.
//! - stdin is copied from spawn's descriptor into a pipe as the agent reads it; at spawn's
//!   EOF the agent sees EOF.
//! - A descriptor spawn does not have open becomes `/dev/null` for the agent.
//! - When spawn's descriptor refuses the output (the reader of a pipe is gone, a full
//!   disk), the relay stops, the pipe's read end is closed (the agent gets `EPIPE`/SIGPIPE
//!   on its next write, as it would have written there directly) and the error (other
//!   than a reader that went away) is reported in [`Relayed`].
//!
//! The relay runs on threads of its own, started once the sandbox exists (the native
//! runtime must create it from a single-threaded process), so a slow reader of spawn's
//! output never delays the supervision of the run (its timeout, signals, seccomp
//! notifications). [`Relay::finish`] waits, after the run has ended, until everything the
//! agent wrote has been written out.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use spawn_redact::Redactor;

use crate::error::SandboxError;
use crate::sys;

/// The descriptors the agent gets as its stdin, stdout and stderr.
#[derive(Debug)]
pub(crate) struct AgentStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    /// A second descriptor of the same pipe as `stdout` when spawn's own are one.
    pub(crate) stderr: OwnedFd,
    /// The three are the slave of a pty of the run's own (an interactive run): the agent's
    /// session makes it its controlling terminal.
    pub(crate) terminal: bool,
}

/// What each relayed stream went through, for the caller to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes of the agent's output written to spawn's stdout and stderr (together).
    pub output_bytes: u64,
    /// Why some of the agent's output could not be written, if it could not (which of
    /// spawn's descriptors, and the error).
    pub output_error: Option<String>,
}

/// One direction: from `src` to `dst`.
#[derive(Debug)]
struct Copy {
    name: &'static str,
    src: Fd,
    dst: Fd,
    /// Output (agent → spawn): its pipe is drained once the run has ended. Input (spawn →
    /// agent) is simply abandoned then.
    output: bool,
    /// The granted secrets, redacted from output.
    redactor: Option<Arc<Redactor>>,
}

/// A descriptor a relay reads or writes: a pipe end the relay owns, or one of spawn's own
/// standard descriptors (borrowed for the life of the process).
#[derive(Debug)]
enum Fd {
    Owned(OwnedFd),
    Std(BorrowedFd<'static>),
}

impl Fd {
    fn borrow(&self) -> BorrowedFd<'_> {
        match self {
            Fd::Owned(fd) => fd.as_fd(),
            Fd::Std(fd) => *fd,
        }
    }
}

/// The relay prepared before the sandbox starts: the agent's ends, and the copies to run
/// once it exists.
#[derive(Debug)]
pub(crate) struct Plumbing {
    pub(crate) agent: AgentStdio,
    copies: Vec<Copy>,
    /// Spawn's terminal and its settings, put in raw mode while the relay runs.
    raw: Option<(BorrowedFd<'static>, nix::sys::termios::Termios)>,
    /// Spawn's terminal and the run's pty master: the pty follows the terminal's size.
    resize: Option<(BorrowedFd<'static>, OwnedFd)>,
}

impl Plumbing {
    /// The agent's streams, relayed to and from spawn's own descriptors 0, 1, 2: a pty of
    /// the run's own when spawn's stdin and stdout are terminals (an interactive run),
    /// else pipes. The caller's terminal never reaches the agent.
    /// With `redactor`, the output is redacted on its way. Without `stdin`, the agent's is
    /// `/dev/null` and spawn's is left alone (the built-in loop's tool runner reads none,
    /// and `spawn replay --step-by-step` reads spawn's).
    pub(crate) fn for_process(
        redactor: Option<Arc<Redactor>>,
        stdin: bool,
    ) -> Result<Plumbing, SandboxError> {
        let redactor = redactor.filter(|r| !r.is_empty());
        if !stdin {
            return Plumbing::pipes(redactor, false);
        }
        match (sys::borrow_std_fd(0), sys::borrow_std_fd(1)) {
            (Some(input), Some(output))
                if nix::unistd::isatty(input).unwrap_or(false)
                    && nix::unistd::isatty(output).unwrap_or(false) =>
            {
                Plumbing::terminal(input, output, redactor)
            }
            _ => Plumbing::pipes(redactor, true),
        }
    }

    /// An interactive run: the agent's stdin, stdout and stderr are the slave of a new pty
    /// (with the size and settings of spawn's terminal); spawn copies its stdin to the
    /// master and the master to its stdout, with its own terminal in raw mode meanwhile
    /// (keys such as ^C reach the agent's terminal, which signals the agent).
    fn terminal(
        input: BorrowedFd<'static>,
        output: BorrowedFd<'static>,
        redactor: Option<Arc<Redactor>>,
    ) -> Result<Plumbing, SandboxError> {
        let settings = nix::sys::termios::tcgetattr(input).ok();
        let size = sys::window_size(output);
        let pty = nix::pty::openpty(size.as_ref(), settings.as_ref())
            .map_err(|e| SandboxError::setup("open the run's terminal", e))?;
        let master = pty.master;
        let slave = pty.slave;
        for fd in [&master, &slave] {
            fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(|e| SandboxError::setup("make the terminal close-on-exec", e))?;
        }
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| SandboxError::setup("duplicate the run's terminal", e))
        };
        let master_out = dup(&master)?;
        let master_size = dup(&master)?;
        fcntl(&master_out, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| SandboxError::setup("make the terminal non-blocking", e))?;
        let copies = vec![
            Copy {
                name: "stdin",
                src: Fd::Std(input),
                dst: Fd::Owned(master),
                output: false,
                redactor: None,
            },
            Copy {
                name: "stdout",
                src: Fd::Owned(master_out),
                dst: Fd::Std(output),
                output: true,
                redactor,
            },
        ];
        let resize = Some((output, master_size));
        // Three opens of the slave, not `dup`s of one (see the same pipe in `pipes`), and
        // never spawn's controlling terminal.
        let reopen = || {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(format!("/proc/self/fd/{}", slave.as_raw_fd()))
                .map(OwnedFd::from)
                .map_err(|e| SandboxError::setup("open the run's terminal again", e))
        };
        Ok(Plumbing {
            agent: AgentStdio {
                stdin: reopen()?,
                stdout: reopen()?,
                stderr: slave,
                terminal: true,
            },
            copies,
            raw: settings.map(|s| (input, s)),
            resize,
        })
    }

    /// Pipes for the agent's streams (a run that is not interactive has no terminal).
    fn pipes(redactor: Option<Arc<Redactor>>, stdin: bool) -> Result<Plumbing, SandboxError> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| SandboxError::setup("open /dev/null", e))
        };
        let mut copies = Vec::new();
        let stdin = if let Some(fd) = sys::borrow_std_fd(0).filter(|_| stdin) {
            let (read, write) = pipe()?;
            copies.push(Copy {
                name: "stdin",
                src: Fd::Std(fd),
                dst: Fd::Owned(write),
                output: false,
                redactor: None,
            });
            read
        } else {
            null()?
        };
        let mut output = |fd: RawFd, name: &'static str| -> Result<OwnedFd, SandboxError> {
            let Some(fd) = sys::borrow_std_fd(fd) else {
                return null();
            };
            let (read, write) = pipe()?;
            // Drained without blocking once the run has ended.
            fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| SandboxError::setup("make the output pipe non-blocking", e))?;
            copies.push(Copy {
                name,
                src: Fd::Owned(read),
                dst: Fd::Std(fd),
                output: true,
                redactor: redactor.clone(),
            });
            Ok(write)
        };
        let stdout = output(1, "stdout")?;
        let both_open = sys::fd_is_open(1) && sys::fd_is_open(2);
        let stderr = if both_open && sys::same_open_file(1, 2) {
            // The same pipe, but an open file description of its own (not a `dup`): gVisor
            // makes the descriptions it is given non-blocking and would take the second of
            // two that share one as the agent's own non-blocking choice (EAGAIN reached
            // the agent when the pipe was full).
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", stdout.as_raw_fd()))
                .map(OwnedFd::from)
                .map_err(|e| SandboxError::setup("open the output pipe again", e))?
        } else {
            output(2, "stderr")?
        };
        Ok(Plumbing {
            agent: AgentStdio {
                stdin,
                stdout,
                stderr,
                terminal: false,
            },
            copies,
            raw: None,
            resize: None,
        })
    }

    /// Starts copying. Call once the sandbox has its own copies of the agent's ends (they
    /// are closed here, so that the agent's exit is the pipes' end).
    pub(crate) fn start(self) -> Result<Relay, SandboxError> {
        self.start_with(None)
    }

    /// [`Plumbing::start`], with `on_resize` called after the run's terminal took a new
    /// size (gVisor does not see the host terminal's size change: its SIGWINCH has to be
    /// sent through the runtime).
    pub(crate) fn start_with(
        self,
        on_resize: Option<Box<dyn Fn() + Send>>,
    ) -> Result<Relay, SandboxError> {
        let Plumbing {
            agent,
            copies,
            raw,
            resize,
        } = self;
        drop(agent);
        // The caller's terminal passes every key to the run's own (restored by `Relay`).
        let restore = raw.and_then(|(fd, settings)| {
            let mut raw = settings.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSANOW, &raw)
                .ok()
                .map(|()| (fd, settings))
        });
        let (stop_rx, stop_tx) = pipe()?;
        let stop_rx = std::sync::Arc::new(stop_rx);
        // In an interactive run SIGWINCH is taken from a signalfd on a thread of its own,
        // so it must reach no other thread: blocked here, before any relay thread exists
        // (threads inherit the mask). It stays blocked in this one until spawn exits.
        let winch = nix::sys::signal::SigSet::from_iter([nix::sys::signal::Signal::SIGWINCH]);
        if resize.is_some() {
            winch
                .thread_block()
                .map_err(|e| SandboxError::setup("block SIGWINCH", e))?;
        }
        let mut threads = Vec::new();
        for copy in copies {
            let stop = stop_rx.clone();
            let output = copy.output;
            let handle = std::thread::Builder::new()
                .name(format!("relay-{}", copy.name))
                .stack_size(64 << 10)
                .spawn(move || run_copy(&copy, &stop))
                .map_err(|e| SandboxError::setup("start the output relay", e))?;
            threads.push((output, handle));
        }
        if let Some((terminal, master)) = resize {
            let stop = stop_rx.clone();
            let handle = std::thread::Builder::new()
                .name("relay-winch".into())
                .stack_size(64 << 10)
                .spawn(move || {
                    follow_window_size(terminal, &master, &winch, &stop, on_resize.as_deref())
                })
                .map_err(|e| SandboxError::setup("start the terminal relay", e))?;
            threads.push((false, handle));
        }
        Ok(Relay {
            threads,
            stop: Some(stop_tx),
            restore,
        })
    }
}

/// The running relay.
#[derive(Debug)]
pub(crate) struct Relay {
    threads: Vec<(bool, JoinHandle<Outcome>)>,
    /// Closed by [`Relay::finish`]: every thread polls the other end.
    stop: Option<OwnedFd>,
    /// The caller's terminal and the settings it had before the run.
    restore: Option<(BorrowedFd<'static>, nix::sys::termios::Termios)>,
}

impl Relay {
    /// After the run has ended: writes out everything the agent wrote and stops.
    pub(crate) fn finish(mut self) -> Relayed {
        drop(self.stop.take());
        let mut relayed = Relayed::default();
        for (output, handle) in std::mem::take(&mut self.threads) {
            if !output {
                // The stdin copy may be blocked reading spawn's stdin (a terminal); it ends
                // with spawn. Nothing of the run depends on it.
                continue;
            }
            if let Ok(outcome) = handle.join() {
                relayed.output_bytes += outcome.bytes;
                if relayed.output_error.is_none() {
                    relayed.output_error = outcome.error;
                }
            }
        }
        relayed
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some((fd, settings)) = self.restore.take() {
            let _ =
                nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSADRAIN, &settings);
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    bytes: u64,
    error: Option<String>,
}

/// Gives the run's pty `master` the size of spawn's `terminal` whenever it changes
/// (SIGWINCH), until the stop pipe closes; the kernel then signals the agent's foreground
/// group itself.
fn follow_window_size(
    terminal: BorrowedFd<'static>,
    master: &OwnedFd,
    winch: &nix::sys::signal::SigSet,
    stop: &OwnedFd,
    on_resize: Option<&(dyn Fn() + Send)>,
) -> Outcome {
    let Ok(signals) = nix::sys::signalfd::SignalFd::new(winch) else {
        return Outcome::default();
    };
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Outcome::default(),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Outcome::default();
        }
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let _ = signals.read_signal();
            if let Some(size) = sys::window_size(terminal) {
                if sys::set_window_size(master.as_fd(), &size).is_ok() {
                    if let Some(f) = on_resize {
                        f();
                    }
                }
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SandboxError::setup("create a pipe", e))
}

/// Copies `copy.src` to `copy.dst` until the source ends, the destination refuses, or (for
/// output) the stop pipe closes and the source has nothing more to read right now.
fn run_copy(copy: &Copy, stop: &OwnedFd) -> Outcome {
    let mut buf = vec![0u8; 64 << 10];
    let mut outcome = Outcome::default();
    let mut stopping = false;
    let mut redact = copy.redactor.as_deref().map(|r| (r.stream(), Vec::new()));
    // What the stream held back, written once the agent's output has ended.
    let finish = |redact: &mut Option<(spawn_redact::Stream<'_>, Vec<u8>)>,
                  outcome: &mut Outcome| {
        if let Some((stream, out)) = redact {
            out.clear();
            stream.finish(out);
            if let Err(e) = write_all(copy.dst.borrow(), out) {
                if e.raw_os_error() != Some(libc::EPIPE) {
                    outcome.error = Some(format!("spawn's {}: {e}", copy.name));
                }
            }
        }
    };
    loop {
        if !stopping {
            let mut fds = [
                PollFd::new(copy.src.borrow(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return outcome,
            }
            let stop_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
            let src_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            if stop_ready {
                if !copy.output {
                    return outcome;
                }
                // The run is over: what is in the pipe now is all there will be.
                stopping = true;
            } else if !src_ready {
                continue;
            }
        }
        match nix::unistd::read(copy.src.borrow(), &mut buf) {
            Ok(0) => {
                finish(&mut redact, &mut outcome);
                return outcome;
            }
            Ok(n) => {
                let written = match &mut redact {
                    Some((stream, out)) => {
                        out.clear();
                        stream.push(&buf[..n], out);
                        write_all(copy.dst.borrow(), out)
                    }
                    None => write_all(copy.dst.borrow(), &buf[..n]),
                };
                if let Err(e) = written {
                    // A reader that went away (`| head`) chose to stop reading: not an error
                    // of the run's.
                    if copy.output && e.raw_os_error() != Some(libc::EPIPE) {
                        outcome.error = Some(format!("spawn's {}: {e}", copy.name));
                    }
                    // Dropping the copy closes the pipe: the agent's next write fails as it
                    // would have on spawn's descriptor.
                    return outcome;
                }
                outcome.bytes += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) if stopping => {
                finish(&mut redact, &mut outcome);
                return outcome;
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            // A pty's master once every slave is closed: the end of the output.
            Err(nix::errno::Errno::EIO) if copy.output => {
                finish(&mut redact, &mut outcome);
                return outcome;
            }
            Err(e) => {
                if copy.output {
                    outcome.error = Some(format!("the agent's {}: {e}", copy.name));
                }
                finish(&mut redact, &mut outcome);
                return outcome;
            }
        }
    }
}

/// `write(2)` until all of `bytes` is written (a terminal or pipe may take part of it).
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                // spawn's descriptor is non-blocking (someone else's choice): wait for room.
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_destination_in_order_and_is_drained_after_stop() {
        let (src_r, src_w) = pipe().unwrap();
        fcntl(&src_r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let (dst_r, dst_w) = pipe().unwrap();
        let copy = Copy {
            name: "stdout",
            src: Fd::Owned(src_r),
            dst: Fd::Owned(dst_w),
            output: true,
            redactor: None,
        };
        let (stop_rx, stop_tx) = pipe().unwrap();
        let writer = std::thread::spawn(move || {
            for i in 0..1000 {
                nix::unistd::write(&src_w, format!("line {i}\n").as_bytes()).unwrap();
            }
            // The writer is still alive (holds the pipe) when the run is declared over.
            src_w
        });
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(dst_r), &mut out).unwrap();
            out
        });
        let handle = std::thread::spawn(move || run_copy(&copy, &stop_rx));
        let src_w = writer.join().unwrap();
        drop(stop_tx);
        let outcome = handle.join().unwrap();
        drop(src_w);
        let out = String::from_utf8(reader.join().unwrap()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, expected);
        assert_eq!(outcome.bytes, expected.len() as u64);
        assert_eq!(outcome.error, None);
    }

    /// With secrets granted, the copy writes their values as markers, however the agent
    /// cuts its writes (a value across three writes, the pipe read in between), and writes
    /// what it held once the output ends.
    #[test]
    fn granted_values_are_redacted_across_writes_and_the_end_is_written() {
        const VALUE: &[u8] = b"sk-live-Zq81nV0pT4";
        let redactor = Arc::new(Redactor::new([("API_KEY", VALUE)]).unwrap());
        let (src_r, src_w) = pipe().unwrap();
        let (dst_r, dst_w) = pipe().unwrap();
        let copy = Copy {
            name: "stdout",
            src: Fd::Owned(src_r),
            dst: Fd::Owned(dst_w),
            output: true,
            redactor: Some(redactor),
        };
        let (stop_rx, _stop_tx) = pipe().unwrap();
        let handle = std::thread::spawn(move || run_copy(&copy, &stop_rx));
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, VALUE);
        let writes: Vec<Vec<u8>> = vec![
            b"key=".to_vec(),
            VALUE[..5].to_vec(),
            VALUE[5..11].to_vec(),
            [&VALUE[11..], b"\nb64=".as_slice()].concat(),
            b64.into_bytes(),
            // The end could begin the value: held until the output ends, then written.
            b"\nend sk-".to_vec(),
        ];
        for w in &writes {
            nix::unistd::write(&src_w, w).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(src_w);
        let outcome = handle.join().unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(dst_r), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "key=[REDACTED:API_KEY]\nb64=[REDACTED:API_KEY]\nend sk-"
        );
        assert_eq!(
            outcome.bytes,
            writes.iter().map(Vec::len).sum::<usize>() as u64
        );
        assert_eq!(outcome.error, None);
    }

    #[test]
    fn a_destination_that_refuses_stops_the_copy_and_closes_the_pipe() {
        // (destination, the error reported): a reader that went away is its own choice, a
        // full disk is an error of the run's.
        let gone = || {
            let (r, w) = pipe().unwrap();
            drop(r);
            w
        };
        let full = || {
            OwnedFd::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
        };
        let cases: [(&str, OwnedFd, Option<&str>); 2] = [
            ("reader gone", gone(), None),
            (
                "disk full",
                full(),
                Some("spawn's stdout: No space left on device"),
            ),
        ];
        for (what, dst, expected) in cases {
            let (src_r, src_w) = pipe().unwrap();
            let copy = Copy {
                name: "stdout",
                src: Fd::Owned(src_r),
                dst: Fd::Owned(dst),
                output: true,
                redactor: None,
            };
            let (stop_rx, _stop_tx) = pipe().unwrap();
            nix::unistd::write(&src_w, b"x").unwrap();
            let outcome = run_copy(&copy, &stop_rx);
            drop(copy);
            assert_eq!(
                outcome
                    .error
                    .as_deref()
                    .map(|e| e.split(" (os error").next().unwrap_or(e)),
                expected,
                "{what}"
            );
            // The agent's side now fails as it would have on spawn's own descriptor.
            assert_eq!(
                nix::unistd::write(&src_w, b"y"),
                Err(nix::errno::Errno::EPIPE),
                "{what}"
            );
        }
    }
}
