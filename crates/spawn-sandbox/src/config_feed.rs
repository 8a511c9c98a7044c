//! runc started before its bundle is complete: the run's scratch filesystem takes a few
//! milliseconds to make (see `scratch`), the root and the configuration a millisecond more,
//! and runc as long to start (its Go runtime, its state) before it reads the bundle's
//! `config.json`. Rather than one after the other, spawn starts runc first, with
//! `config.json` a FIFO, and a thread of spawn's ([`ConfigFeed`]) attaches the scratch
//! filesystem in runc's own mount namespace once it exists, waits for the configuration
//! (given once the root is made and the run's start is on record) and only then writes it
//! into the FIFO. runc reads its configuration once, at its start, before it makes any
//! part of the container: whatever it reads, the scratch filesystem is already where the
//! configuration binds it from, and the root is complete.
//!
//! Should anything of it fail, or the configuration never come (its sender dropped), the
//! feed kills runc (through a pidfd: never another process) and its error is the run's;
//! should runc end before it read the FIFO, the feed is released (`finish` and `Drop` open
//! the FIFO's other end) and ends.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use crate::error::SandboxError;
use crate::sys;

/// The thread writing the configuration to runc.
#[derive(Debug)]
pub(crate) struct ConfigFeed {
    fifo: PathBuf,
    thread: Option<JoinHandle<Result<Option<OwnedFd>, SandboxError>>>,
}

/// What the feed attaches before it writes: the scratch filesystem's detached mount, when
/// it arrives, at the path the configuration binds it from.
pub(crate) struct Attach {
    pub mount: Receiver<Result<OwnedFd, SandboxError>>,
    pub at: CString,
}

/// Makes the FIFO runc will read its configuration from (`config.json`, 0600).
pub(crate) fn make_fifo(path: &Path) -> Result<(), SandboxError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| SandboxError::setup("make the configuration's FIFO", e))
}

impl ConfigFeed {
    /// Starts the feed for runc (`pid`, spawn's own child, not yet waited for): attaches
    /// `attach` in runc's mount namespace, then writes the configuration that comes from
    /// `config` into `fifo`. A sender dropped without sending stops runc.
    pub(crate) fn start(
        pid: i32,
        fifo: &Path,
        config: Receiver<Vec<u8>>,
        attach: Option<Attach>,
    ) -> Result<ConfigFeed, SandboxError> {
        // Opened now, while the child cannot have been reaped: it refers to runc.
        let pidfd = sys::pidfd_open(pid).map_err(|e| SandboxError::setup("pidfd", e))?;
        let path = fifo.to_owned();
        let thread = std::thread::Builder::new()
            .name("spawn-config".into())
            .spawn(move || match feed(pid, &path, config, attach) {
                // runc ended first (its namespace, its FIFO gone with it): its own exit
                // status and message say why.
                Err(_) if ended(&pidfd) => Ok(None),
                Err(e) => {
                    let _ = sys::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
                    Err(e)
                }
                Ok(attached) => Ok(attached),
            })
            .map_err(|e| SandboxError::setup("start the configuration's thread", e))?;
        Ok(ConfigFeed {
            fifo: fifo.to_owned(),
            thread: Some(thread),
        })
    }

    /// Once runc has ended: the feed's outcome (releasing it first, should runc have ended
    /// without reading), with the scratch filesystem's mount it attached, if it did.
    /// Holding that mount keeps the filesystem alive past runc's end, so that its teardown
    /// (writing it out, detaching its loop device, freeing its image: milliseconds) is not
    /// part of runc's exit but left to the caller, to make when it costs the run nothing.
    pub(crate) fn finish(mut self) -> Result<Option<OwnedFd>, SandboxError> {
        self.release();
        match self.thread.take() {
            Some(t) if t.is_finished() => t.join().unwrap_or_else(|_| {
                Err(SandboxError::setup(
                    "write the runtime's configuration",
                    std::io::Error::other("its thread panicked"),
                ))
            }),
            Some(_) => Err(SandboxError::setup(
                "write the runtime's configuration",
                std::io::Error::other("its thread did not end"),
            )),
            None => Ok(None),
        }
    }

    /// Once runc has ended, a feed still waiting (for the scratch filesystem, for a reader
    /// or for room in the pipe) is given a reader that drains what it writes, until it
    /// ends (a few seconds at most).
    fn release(&self) {
        let Some(thread) = self.thread.as_ref().filter(|t| !t.is_finished()) else {
            return;
        };
        let Ok(mut reader) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.fifo)
        else {
            return;
        };
        let until = std::time::Instant::now() + RELEASE_WITHIN;
        let mut sink = [0u8; 16 << 10];
        while !thread.is_finished() && std::time::Instant::now() < until {
            while matches!(std::io::Read::read(&mut reader, &mut sink), Ok(n) if n > 0) {}
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// How long a feed is given to end once runc has: the scratch filesystem it may still be
/// waiting for takes milliseconds.
const RELEASE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for ConfigFeed {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether the process of `pidfd` has ended.
fn ended(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

fn feed(
    pid: i32,
    fifo: &Path,
    config: Receiver<Vec<u8>>,
    attach: Option<Attach>,
) -> Result<Option<OwnedFd>, SandboxError> {
    let mut attached = None;
    if let Some(Attach { mount, at }) = attach {
        let mnt_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| SandboxError::setup("open the runtime's mount namespace", e))?;
        // The attach must never land in spawn's own (the host's) namespace.
        let ours = std::fs::metadata("/proc/self/ns/mnt")
            .map_err(|e| SandboxError::setup("read spawn's mount namespace", e))?;
        let theirs = mnt_ns
            .metadata()
            .map_err(|e| SandboxError::setup("read the runtime's mount namespace", e))?;
        if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
            return Err(SandboxError::setup(
                "attach the scratch filesystem",
                std::io::Error::other("the runtime shares spawn's mount namespace"),
            ));
        }
        let mount = mount.recv().map_err(|_| {
            SandboxError::setup(
                "make the scratch filesystem",
                std::io::Error::other("its thread ended without it"),
            )
        })??;
        // This thread alone enters runc's mount namespace (it ends right after): the
        // namespace of a thread sharing its filesystem context cannot change.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .and_then(|()| nix::sched::setns(&mnt_ns, nix::sched::CloneFlags::CLONE_NEWNS))
            .map_err(|e| SandboxError::setup("enter the runtime's mount namespace", e))?;
        sys::move_mount(mount.as_fd(), &at)
            .map_err(|e| SandboxError::setup("attach the scratch filesystem", e))?;
        attached = Some(mount);
    }
    let config = config.recv().map_err(|_| {
        SandboxError::setup(
            "write the runtime's configuration",
            std::io::Error::other("the run stopped before its configuration was complete"),
        )
    })?;
    // Blocks until runc opens it (or `release`).
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(fifo)
        .map_err(|e| SandboxError::setup("open the configuration's FIFO", e))?;
    out.write_all(&config)
        .map_err(|e| SandboxError::setup("write the runtime's configuration", e))?;
    Ok(attached)
}

#[cfg(test)]
mod tests {
    //! Against real processes standing in for runc (root: mount namespaces).
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    fn fifo_in(dir: &Path) -> PathBuf {
        let fifo = dir.join("config.json");
        make_fifo(&fifo).unwrap();
        fifo
    }

    /// A stand-in runtime in a mount namespace of its own (a slave of the host's): `sh`
    /// (`unshare` execs it), with nothing of the test's stdio, so that a process it leaves
    /// holds nothing of the harness.
    fn runtime(script: &str) -> Child {
        Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits until `child` has its own mount namespace (`unshare` has run).
    fn namespaced(child: &Child) {
        let ours = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(format!("/proc/{}/ns/mnt", child.id()))
            .unwrap()
            .ino()
            == ours
        {
            assert!(Instant::now() < until, "unshare never made its namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pid(child: &Child) -> i32 {
        i32::try_from(child.id()).unwrap()
    }

    /// A configuration already given.
    fn given(config: &[u8]) -> Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(config.to_vec()).unwrap();
        rx
    }

    #[test]
    fn the_runtime_reads_the_whole_configuration_from_the_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let out = dir.path().join("read");
        // Larger than a pipe's buffer: the feed must wait for the reader, not lose a part.
        let config: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut child = runtime(&format!("cat {} > {}", fifo.display(), out.display()));
        let feed = ConfigFeed::start(pid(&child), &fifo, given(&config), None).unwrap();
        assert!(child.wait().unwrap().success());
        feed.finish().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), config);
    }

    #[test]
    fn a_runtime_that_ends_without_reading_releases_the_feed() {
        // With a scratch filesystem to attach too (which never comes): what failed because
        // runc was gone is not the run's error; runc's own exit says why.
        for (script, attaching) in [
            ("true", false),
            ("exit 1", false),
            ("kill -9 $$", false),
            // (Long enough for the test to see `unshare`'s namespace: spawn starts runc in
            // its own before exec.)
            ("sleep 0.2", true),
            ("sleep 0.2; exit 1", true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let fifo = fifo_in(dir.path());
            let mut child = runtime(script);
            if attaching {
                namespaced(&child);
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let attach = attaching.then(|| Attach {
                mount: rx,
                at: c"/nonexistent".to_owned(),
            });
            let feed = ConfigFeed::start(pid(&child), &fifo, given(b"{}"), attach).unwrap();
            child.wait().unwrap();
            drop(tx);
            let t = Instant::now();
            if let Err(e) = feed.finish() {
                panic!("{script} {attaching}: {e}");
            }
            assert!(
                t.elapsed() < RELEASE_WITHIN,
                "{script}: the feed was not released"
            );
        }
    }

    #[test]
    fn the_scratch_filesystem_is_attached_in_the_runtimes_namespace_only() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let at = dir.path().join("scratch");
        std::fs::create_dir(&at).unwrap();
        let out = dir.path().join("seen");
        // A tmpfs holding one file, detached: where it is attached the file shows.
        let mount = sys::fsmount(c"tmpfs", c"spawn-test", &[], 0).unwrap();
        nix::fcntl::openat(
            mount.as_fd(),
            "marker",
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut child = runtime(&format!(
            "cat {} >/dev/null; ls {} > {}",
            fifo.display(),
            at.display(),
            out.display()
        ));
        namespaced(&child);
        let attach = Attach {
            mount: rx,
            at: CString::new(at.as_os_str().as_encoded_bytes()).unwrap(),
        };
        let feed = ConfigFeed::start(pid(&child), &fifo, given(b"{}"), Some(attach)).unwrap();
        // The runtime is already waiting on the FIFO when the filesystem arrives.
        std::thread::sleep(Duration::from_millis(50));
        tx.send(Ok(mount)).unwrap();
        assert!(child.wait().unwrap().success());
        // The runtime is gone with its namespace; the mount it was given is handed back,
        // still holding the filesystem (its file is there to read).
        let kept = feed.finish().unwrap();
        assert!(kept.is_some(), "no mount handed back");
        assert!(nix::sys::stat::fstatat(
            kept.as_ref().map(|m| m.as_fd()).unwrap(),
            "marker",
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
        )
        .is_ok());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "marker\n");
        assert_eq!(
            std::fs::read_dir(&at).unwrap().count(),
            0,
            "reached the host"
        );
    }

    #[test]
    fn a_scratch_filesystem_that_never_comes_kills_the_runtime_with_the_reason() {
        // Its thread ended without sending; it failed.
        let failures = [
            None,
            Some(SandboxError::setup(
                "make the scratch filesystem",
                std::io::Error::other("disk full"),
            )),
        ];
        for fail in failures {
            let dir = tempfile::tempdir().unwrap();
            let fifo = fifo_in(dir.path());
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            // The shell itself waits on the FIFO (a redirection, no child of its own).
            let mut child = runtime(&format!("read -r x < {}; exec sleep 30", fifo.display()));
            namespaced(&child);
            let attach = Attach {
                mount: rx,
                at: c"/nonexistent".to_owned(),
            };
            let feed = ConfigFeed::start(pid(&child), &fifo, given(b"{}"), Some(attach)).unwrap();
            if let Some(e) = fail {
                tx.send(Err(e)).unwrap();
            }
            drop(tx);
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
            let err = feed.finish().unwrap_err().to_string();
            assert!(err.contains("scratch filesystem"), "{err}");
        }
    }

    #[test]
    fn a_configuration_that_never_comes_kills_the_runtime_with_the_reason() {
        // With the scratch filesystem attached first, and without one.
        for with_scratch in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let fifo = fifo_in(dir.path());
            let at = dir.path().join("scratch");
            std::fs::create_dir(&at).unwrap();
            let mut child = runtime(&format!("read -r x < {}; exec sleep 30", fifo.display()));
            namespaced(&child);
            let (mount_tx, mount_rx) = std::sync::mpsc::sync_channel(1);
            let attach = with_scratch.then(|| Attach {
                mount: mount_rx,
                at: CString::new(at.as_os_str().as_encoded_bytes()).unwrap(),
            });
            if with_scratch {
                let mount = sys::fsmount(c"tmpfs", c"spawn-test", &[], 0).unwrap();
                mount_tx.send(Ok(mount)).unwrap();
            }
            let (config_tx, config_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let feed = ConfigFeed::start(pid(&child), &fifo, config_rx, attach).unwrap();
            // Set-up failed after runc started: the configuration is never sent.
            drop(config_tx);
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
            let err = feed.finish().unwrap_err().to_string();
            assert!(
                err.contains("before its configuration was complete"),
                "{with_scratch}: {err}"
            );
        }
    }

    #[test]
    fn a_runtime_in_spawns_own_mount_namespace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let (_tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut child = Command::new("sleep")
            .arg("30")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let attach = Attach {
            mount: rx,
            at: c"/tmp".to_owned(),
        };
        let feed = ConfigFeed::start(pid(&child), &fifo, given(b"{}"), Some(attach)).unwrap();
        // The check comes before the scratch filesystem is waited for.
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let err = feed.finish().unwrap_err().to_string();
        assert!(err.contains("shares spawn's mount namespace"), "{err}");
    }
}
