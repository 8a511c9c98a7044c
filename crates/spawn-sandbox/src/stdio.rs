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
//! one place where the agent's output passes through spawn (where secrets will be
//! redacted).
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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::SandboxError;
use crate::sys;

/// The descriptors the agent gets as its stdin, stdout and stderr.
#[derive(Debug)]
pub(crate) struct AgentStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    /// A second descriptor of the same pipe as `stdout` when spawn's own are one.
    pub(crate) stderr: OwnedFd,
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
}

impl Plumbing {
    /// Pipes for the agent's streams, relayed to and from spawn's own descriptors 0, 1, 2.
    pub(crate) fn for_process() -> Result<Plumbing, SandboxError> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| SandboxError::setup("open /dev/null", e))
        };
        let mut copies = Vec::new();
        let stdin = if let Some(fd) = sys::borrow_std_fd(0) {
            let (read, write) = pipe()?;
            copies.push(Copy {
                name: "stdin",
                src: Fd::Std(fd),
                dst: Fd::Owned(write),
                output: false,
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
            });
            Ok(write)
        };
        let stdout = output(1, "stdout")?;
        let both_open = sys::fd_is_open(1) && sys::fd_is_open(2);
        let stderr = if both_open && sys::same_open_file(1, 2) {
            stdout
                .try_clone()
                .map_err(|e| SandboxError::setup("duplicate the output pipe", e))?
        } else {
            output(2, "stderr")?
        };
        Ok(Plumbing {
            agent: AgentStdio {
                stdin,
                stdout,
                stderr,
            },
            copies,
        })
    }

    /// Starts copying. Call once the sandbox has its own copies of the agent's ends (they
    /// are closed here, so that the agent's exit is the pipes' end).
    pub(crate) fn start(self) -> Result<Relay, SandboxError> {
        let Plumbing { agent, copies } = self;
        drop(agent);
        let (stop_rx, stop_tx) = pipe()?;
        let stop_rx = std::sync::Arc::new(stop_rx);
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
        Ok(Relay {
            threads,
            stop: Some(stop_tx),
        })
    }
}

/// The running relay.
#[derive(Debug)]
pub(crate) struct Relay {
    threads: Vec<(bool, JoinHandle<Outcome>)>,
    /// Closed by [`Relay::finish`]: every thread polls the other end.
    stop: Option<OwnedFd>,
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
    }
}

#[derive(Debug, Default)]
struct Outcome {
    bytes: u64,
    error: Option<String>,
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
            Ok(0) => return outcome,
            Ok(n) => {
                if let Err(e) = write_all(copy.dst.borrow(), &buf[..n]) {
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
            Err(nix::errno::Errno::EAGAIN) if stopping => return outcome,
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => {
                if copy.output {
                    outcome.error = Some(format!("the agent's {}: {e}", copy.name));
                }
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
