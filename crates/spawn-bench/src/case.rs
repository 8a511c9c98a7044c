//! A benchmark case: a named command line, timed from start to exit.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One argument of a case's command line.
#[derive(Debug, Clone)]
pub enum Arg {
    /// Passed as is.
    Str(OsString),
    /// The file is opened afresh for every run, its descriptor is inherited by the child and
    /// its number passed as the argument (for fds the child reads to EOF, such as
    /// `bwrap --seccomp FD`).
    FreshFd(PathBuf),
}

/// A named command line and the environment variables added for it.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub argv: Vec<Arg>,
    pub env: Vec<(OsString, OsString)>,
    /// Start `spawn_sandbox::cgroups::prime_migrations` as the clock starts, as spawn's
    /// container runtime does.
    pub primed: bool,
}

impl Case {
    pub fn new(name: &str, program: impl AsRef<OsStr>) -> Self {
        Self {
            name: name.to_owned(),
            argv: vec![Arg::Str(program.as_ref().to_owned())],
            env: Vec::new(),
            primed: false,
        }
    }

    /// The command line as a shell would take it (arguments quoted; for printing only).
    pub fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| match a {
                Arg::Str(s) => {
                    let s = s.to_string_lossy();
                    if s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/-_.:=".contains(c))
                    {
                        s.into_owned()
                    } else {
                        format!("'{}'", s.replace('\'', "'\\''"))
                    }
                }
                Arg::FreshFd(p) => format!("<fd of {}>", p.display()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.argv
            .extend(args.into_iter().map(|a| Arg::Str(a.as_ref().to_owned())));
        self
    }

    pub fn fd_of(mut self, path: &Path) -> Self {
        self.argv.push(Arg::FreshFd(path.to_owned()));
        self
    }

    /// The case with the kernel's cgroup migration lock primed as the clock starts (see
    /// `spawn_sandbox::cgroups::prime_migrations`): a baseline that waits for it no more than
    /// spawn does.
    pub fn primed(mut self) -> Self {
        self.primed = true;
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the case once and returns its start-to-exit wall time. A non-zero exit is an
    /// error carrying the child's stderr.
    pub fn run_once(&self) -> Result<Duration> {
        // Opened before the clock starts; kept open until the child has exited. The bench
        // starts one child at a time, so no other child can inherit these descriptors.
        let mut open = Vec::new();
        let mut argv = Vec::with_capacity(self.argv.len());
        for arg in &self.argv {
            match arg {
                Arg::Str(s) => argv.push(s.clone()),
                Arg::FreshFd(path) => {
                    let file =
                        File::open(path).with_context(|| format!("open {}", path.display()))?;
                    clear_cloexec(&file)?;
                    argv.push(file.as_raw_fd().to_string().into());
                    open.push(file);
                }
            }
        }
        let (program, rest) = argv.split_first().context("case has an empty argv")?;
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());

        let layout = if self.primed {
            Some(spawn_sandbox::cgroups::Layout::detect().context("the cgroup layout")?)
        } else {
            None
        };
        let start = Instant::now();
        if let Some(layout) = &layout {
            drop(spawn_sandbox::cgroups::prime_migrations(layout));
        }
        let out = cmd
            .output()
            .with_context(|| format!("start case {:?} ({})", self.name, self.cmdline()))?;
        let elapsed = start.elapsed();
        drop(open);

        if !out.status.success() {
            bail!(
                "case {:?} ({}) failed with {}; stderr:\n{}",
                self.name,
                self.cmdline(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(elapsed)
    }

    /// The command line for messages (fd arguments shown as `<fd:PATH>`).
    pub fn cmdline(&self) -> String {
        self.argv
            .iter()
            .map(|a| match a {
                Arg::Str(s) => s.to_string_lossy().into_owned(),
                Arg::FreshFd(p) => format!("<fd:{}>", p.display()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Lets the child inherit `file` (std opens everything close-on-exec).
fn clear_cloexec(file: &File) -> Result<()> {
    // SAFETY: F_SETFD only changes the descriptor flags of a descriptor that `file` owns and
    // keeps open for the duration of the call; no memory is passed to the kernel.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
    if rc == -1 {
        return Err(io::Error::last_os_error()).context("clear FD_CLOEXEC");
    }
    Ok(())
}

/// The baseline binary `name` from `$PATH`, or an error naming the Debian package to
/// install (`make bench` installs them all).
pub fn require(name: &str, package: &str) -> Result<PathBuf> {
    find_in_path(name).with_context(|| {
        format!(
            "{name} not found in PATH: install it (`apt-get install -y {package}`; the \
             Makefile's setup target installs it)"
        )
    })
}

/// The first executable named `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_fd_is_readable_by_the_child_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "hello").unwrap();
        // The child reads the inherited fd to EOF and fails if the content is not there.
        let case = Case::new("cat fd", "/bin/sh")
            .args(["-c", "test \"$(cat <&$0)\" = hello"])
            .fd_of(&file);
        case.run_once().unwrap();
        case.run_once().unwrap();
    }

    #[test]
    fn failure_reports_stderr() {
        let case = Case::new("fails", "/bin/sh").args(["-c", "echo boom >&2; exit 3"]);
        let err = format!("{:#}", case.run_once().unwrap_err());
        assert!(err.contains("boom"), "{err}");
        assert!(err.contains("fails"), "{err}");
    }
}
