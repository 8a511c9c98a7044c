//! Starting a runtime (`runc`, `runsc`) as `posix_spawn` starts a program: the child shares
//! spawn's memory (`clone(CLONE_VM | CLONE_VFORK)`) instead of getting a copy of it, makes
//! the few system calls of its [`Step`]s on a stack of its own, places its descriptors and
//! executes the program, while spawn's thread waits (the kernel resumes it once the child
//! has executed or exited).
//!
//! `std::process::Command` with `pre_exec` steps forks: the kernel copies the page tables of
//! spawn's whole address space (an 18 MB binary, its heap, its threads' stacks), the child
//! faults in a copy of each page it writes before its `execve`, and the exec then tears that
//! copy down. Measured on 2026-12-06 (spawn's own timestamps, 40–60 runs, medians): from
//! the call to its return 0.36 ms (p90 0.87) with `std`, 0.12–0.31 ms (p90 0.13–0.75) this
//! way, the rest being the wait for a core to resume on (the scratch filesystem's thread
//! and the child share the two); whole `spawn run --runtime container -- true` runs, 400
//! interleaved with the old build's: 17.70 → 17.43 ms, CPU 18.48 → 18.14 ms.
//!
//! What the child may do, sharing memory with a process whose other threads go on running:
//! only raw system calls, on data the parent prepared and does not touch until the child
//! is done (its own stack, NUL-terminated strings, pointer arrays); no allocation, no
//! lock, no `errno` (it would be the parent thread's), no return into Rust code that would
//! unwind. The parent blocks every signal around the clone, so that no handler of spawn's
//! runs in the child; the child sets every caught signal to its default and unblocks all
//! before it executes the program (as `std` does: ignored ones stay ignored, `SIGPIPE`
//! becomes default). A step that fails leaves its stage and `errno` where the parent reads
//! them once the child has exited: the error is the parent's to report, the child reaped.
// Kernel ABI values (syscall numbers, flags, fds, signal numbers) are converted bit for bit
// between C integer types here; the casts are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

use super::{raw, Stack};

/// One thing the child does before it executes the program, in the order given.
#[derive(Debug)]
pub(crate) enum Step {
    /// Moves into a cgroup by writing `0` to each of these `cgroup.procs` files (from
    /// `Cgroup::join_files`), so that everything the program starts is in the group from
    /// its first instruction on.
    JoinCgroup(Vec<OwnedFd>),
    /// A mount namespace of its own (a slave of the host's: host mounts still reach it, its
    /// own never reach the host) in which each detached tree (from `open_tree`) is attached
    /// at its path. The mounts exist only for the program and what it starts, and vanish
    /// with them: nothing to unmount, nothing left on the host if spawn is killed.
    AttachMounts(Vec<(OwnedFd, CString)>),
    /// Enters this network namespace (an open `/proc/PID/ns/net`).
    EnterNetns(OwnedFd),
    /// A mount namespace of its own in which `/proc/sys/net/core` is an empty read-only
    /// tmpfs (runsc 2024-07-29 takes that directory's presence as the sign of the host's
    /// network namespace, which Linux 6.x shows in every namespace). Comes after the step
    /// that enters the run's network namespace, whose `/proc/sys/net` it hides.
    MaskNetCore,
    /// Leaves this descriptor (read-only `/dev/null`) open in the program at number `at`,
    /// without close-on-exec, after the others are placed: a descriptor table that large
    /// from the start, which the program's children inherit. (A multi-threaded process
    /// that outgrows its table waits for an RCU grace period, 10–20 ms on our hosts; runsc
    /// forks its gofer and its sandbox with tables sized by its own highest open
    /// descriptor, and each grew its 64 slots once per `spawn run`, see
    /// [`FD_TABLE_RESERVE`].) Not done, and not an error, where the descriptor limit is
    /// lower.
    SizeFdTable {
        /// `/dev/null`, opened read-only.
        null: OwnedFd,
        /// Its number in the program: above every placed descriptor.
        at: RawFd,
    },
}

/// The descriptor number [`Step::SizeFdTable`] is given for runsc: 1024 slots, which a
/// `python3 -c pass` run's gofer and Sentry stay well within (measured on 2026-12-06, with
/// `perf record -e sched:sched_switch -g`: both grew their tables, each waiting for a
/// grace period in `expand_files`, ~13 ms and ~10 ms of a gVisor run's start).
pub(crate) const FD_TABLE_RESERVE: RawFd = 1023;

impl Step {
    /// [`Step::SizeFdTable`] at [`FD_TABLE_RESERVE`], or below it where the soft descriptor
    /// limit is lower (none when that leaves no room above the placed descriptors).
    pub(crate) fn size_fd_table() -> io::Result<Option<Step>> {
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_err(io::Error::from)?;
        let Some(at) = fd_table_reserve(soft) else {
            return Ok(None);
        };
        let null = std::fs::File::open("/dev/null")?;
        Ok(Some(Step::SizeFdTable {
            null: null.into(),
            at,
        }))
    }
}

impl Step {
    fn what(&self) -> &'static str {
        match self {
            Step::JoinCgroup(_) => "join the run's cgroup",
            Step::AttachMounts(_) => "attach the run's mounts in a mount namespace of its own",
            Step::EnterNetns(_) => "enter the run's network namespace",
            Step::MaskNetCore => "hide /proc/sys/net/core",
            Step::SizeFdTable { .. } => "size its descriptor table",
        }
    }
}

/// The number [`Step::SizeFdTable`] takes under a soft descriptor limit of `soft`: the
/// highest allowed, up to [`FD_TABLE_RESERVE`]; none where that is within the 64 slots every
/// table has.
fn fd_table_reserve(soft: u64) -> Option<RawFd> {
    let at = RawFd::try_from(soft.saturating_sub(1))
        .unwrap_or(RawFd::MAX)
        .min(FD_TABLE_RESERVE);
    (at >= 64).then_some(at)
}

/// A program started by [`launch`], not yet waited for: its pid stays its own until then.
#[derive(Debug)]
pub(crate) struct Launched {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl Launched {
    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILL, unless it has been waited for (its pid may be another's by then).
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(io::Error::from)
    }

    /// Waits for it to end (once; later calls return the same status).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = reap(self.pid)?;
        self.status = Some(status);
        Ok(status)
    }
}

/// Waits for `pid`, retrying when interrupted.
fn reap(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into the live local `status`.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The most descriptors the child can be given (stdio included).
const MAX_FDS: usize = 16;

/// Where the child failed: a step's index, or one of these.
const STAGE_NONE: i32 = -1;
const STAGE_SIGNALS: i32 = -2;
const STAGE_PARENT: i32 = -3;
const STAGE_FDS: i32 = -4;
const STAGE_EXEC: i32 = -5;

/// Everything the child uses, prepared by the parent: raw values and pointers into
/// `Launch`'s owned strings, which outlive the child's use of them (the parent is
/// suspended until the child has executed or exited).
struct ChildPlan<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Descriptors to place at 0, 1, 2, … in order.
    fds: &'a [RawFd],
    /// A descriptor to leave open at a number (see [`Step::SizeFdTable`]).
    reserve: Option<(RawFd, RawFd)>,
    steps: &'a [Step],
    parent: libc::pid_t,
    /// Set by the child on failure: the stage, and the errno.
    stage: AtomicI32,
    errno: AtomicI32,
}

/// Starts `cmd`'s program (its path must name a file: no `PATH` search) with its arguments
/// and spawn's environment with `cmd`'s changes (`cmd`'s working directory and stdio
/// settings are not used: give none), after `steps`; `stdio` becomes its descriptors 0–2,
/// `fds` its 3, 4, … in order, and no other descriptor is open in it. The child receives
/// SIGKILL when the calling thread exits. The error says which step failed.
///
/// `cmd`'s arguments must hold no NUL byte: `std` replaces such an argument with a
/// placeholder this cannot tell from an argument (spawn's are its own paths and names).
pub(crate) fn launch(
    cmd: &Command,
    stdio: [BorrowedFd<'_>; 3],
    fds: &[BorrowedFd<'_>],
    steps: &[Step],
) -> io::Result<Launched> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    if cmd.get_current_dir().is_some() {
        return Err(invalid("a launched program starts in spawn's directory"));
    }
    let program = cmd.get_program();
    if !program.as_bytes().contains(&b'/') {
        return Err(invalid("a launched program is named by its path"));
    }
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| invalid("a NUL byte"));
    let program_c = cstr(program)?;
    let argv: Vec<CString> = std::iter::once(program)
        .chain(cmd.get_args())
        .map(cstr)
        .collect::<io::Result<_>>()?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in cmd.get_envs() {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| invalid("a NUL byte in the environment"))
        })
        .collect::<io::Result<_>>()?;
    let placed: Vec<RawFd> = stdio.iter().chain(fds).map(AsRawFd::as_raw_fd).collect();
    if placed.len() > MAX_FDS {
        return Err(invalid("too many descriptors for a launched program"));
    }
    let mut reserve = None;
    for step in steps {
        if let Step::SizeFdTable { null, at } = step {
            if reserve.is_some() || usize::try_from(*at).map_or(true, |at| at <= MAX_FDS) {
                return Err(invalid(
                    "one descriptor table size, above the placed descriptors",
                ));
            }
            reserve = Some((null.as_raw_fd(), *at));
        }
    }
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_p, envp_p) = (pointers(&argv), pointers(&envp));
    let plan = ChildPlan {
        program: program_c.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: envp_p.as_ptr(),
        fds: &placed,
        reserve,
        steps,
        parent: std::process::id() as libc::pid_t,
        stage: AtomicI32::new(STAGE_NONE),
        errno: AtomicI32::new(0),
    };
    let stack = Stack::new()?;
    let (pid, clone_error) = {
        // No handler of spawn's may run in the child: every signal stays blocked from
        // before the clone until the child has reset its handlers (and, in the parent,
        // until the child is done).
        let _blocked = BlockAll::new()?;
        // SAFETY: glibc's clone runs `child_main` on `stack` in a child that shares our
        // memory (CLONE_VM) and suspends this thread until the child has executed or
        // exited (CLONE_VFORK). The child reads `plan` (alive on this suspended thread's
        // stack, with everything it points to), writes only its atomics, and makes raw
        // system calls on its own stack; it never returns into code that could unwind.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&plan).cast_mut().cast::<libc::c_void>(),
            )
        };
        // Read before the mask is restored.
        (pid, io::Error::last_os_error())
    };
    drop(stack);
    if pid == -1 {
        return Err(clone_error);
    }
    let stage = plan.stage.load(Ordering::Acquire);
    if stage == STAGE_NONE {
        return Ok(Launched { pid, status: None });
    }
    // The child has exited (it failed before its exec): it is reaped here.
    let _ = reap(pid);
    let err = io::Error::from_raw_os_error(plan.errno.load(Ordering::Acquire));
    let what = match stage {
        STAGE_SIGNALS => "reset its signals",
        STAGE_PARENT => "stay tied to spawn",
        STAGE_FDS => "take its descriptors",
        STAGE_EXEC => "execute the program",
        i => usize::try_from(i)
            .ok()
            .and_then(|i| steps.get(i))
            .map_or("prepare", Step::what),
    };
    Err(io::Error::new(err.kind(), format!("{what}: {err}")))
}

/// Every signal blocked on the calling thread until dropped (the previous mask restored).
struct BlockAll(nix::sys::signal::SigSet);

impl BlockAll {
    fn new() -> io::Result<BlockAll> {
        nix::sys::signal::SigSet::all()
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_SETMASK)
            .map(BlockAll)
            .map_err(io::Error::from)
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        let _ = self.0.thread_set_mask();
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction` (x86_64 and aarch64 alike).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `SIG_DFL` and `SIG_IGN` as the kernel sees them.
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
/// Signals are 1..=64 (the kernel's `_NSIG`).
const NSIG: usize = 64;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` on the stack of the parent thread, which is
    // suspended until this child has executed or exited.
    let plan = unsafe { &*arg.cast::<ChildPlan<'_>>() };
    let fail = |stage: i32, ret: isize| -> ! {
        plan.errno.store((-ret) as i32, Ordering::Release);
        plan.stage.store(stage, Ordering::Release);
        // SAFETY: exit_group ends this child at once; nothing of it runs after.
        unsafe { raw(libc::SYS_exit_group, [127, 0, 0, 0, 0]) };
        #[allow(clippy::empty_loop)]
        loop {}
    };
    // SAFETY: every raw call below takes integers, or pointers to this function's stack
    // (the sigaction records) and to the plan's NUL-terminated strings and NULL-terminated
    // arrays, all live for each call.
    unsafe {
        // Caught signals back to their default (a handler of spawn's would run on spawn's
        // memory); SIGPIPE too, which Rust's runtime ignores; other ignored ones stay.
        for sig in 1..=NSIG {
            if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
                continue;
            }
            let mut old = KernelSigaction {
                handler: SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            let act = std::ptr::null::<KernelSigaction>() as usize;
            let got = raw(
                libc::SYS_rt_sigaction,
                [sig, act, std::ptr::from_mut(&mut old) as usize, 8, 0],
            );
            if got < 0 {
                // Numbers the kernel does not know (or reserves) are left alone.
                continue;
            }
            let reset = sig == libc::SIGPIPE as usize || old.handler != SIG_IGN;
            if reset && old.handler != SIG_DFL {
                let dfl = KernelSigaction {
                    handler: SIG_DFL,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                let ret = raw(
                    libc::SYS_rt_sigaction,
                    [sig, std::ptr::from_ref(&dfl) as usize, 0, 8, 0],
                );
                if ret < 0 {
                    fail(STAGE_SIGNALS, ret);
                }
            }
        }
        // Killed with spawn's thread; if that thread is already gone, not at all.
        let ret = raw(
            libc::SYS_prctl,
            [
                libc::PR_SET_PDEATHSIG as usize,
                libc::SIGKILL as usize,
                0,
                0,
                0,
            ],
        );
        if ret < 0 {
            fail(STAGE_PARENT, ret);
        }
        if raw(libc::SYS_getppid, [0; 5]) != plan.parent as isize {
            fail(STAGE_PARENT, -(libc::ESRCH as isize));
        }
        for (i, step) in plan.steps.iter().enumerate() {
            let ret = run_step(step);
            if ret < 0 {
                fail(i as i32, ret);
            }
        }
        // Each descriptor first above every target, so that placing one cannot close
        // another's source (or one that is its own target keep its close-on-exec flag).
        let floor = plan.fds.len();
        let mut high = [0 as RawFd; MAX_FDS];
        for (slot, fd) in high.iter_mut().zip(plan.fds) {
            let ret = raw(
                libc::SYS_fcntl,
                [*fd as usize, libc::F_DUPFD_CLOEXEC as usize, floor, 0, 0],
            );
            if ret < 0 {
                fail(STAGE_FDS, ret);
            }
            *slot = ret as RawFd;
        }
        // The table's size, while every source is where it was: `at` is above every target
        // (checked by `launch`), and the copy is not close-on-exec. Where it cannot be made
        // (a lower limit than when the step was made, or spawn's own descriptors reaching
        // that far), the program starts with the table it would have had.
        let reserved = plan.reserve.and_then(|(null, at)| {
            let free = !high.iter().take(floor).any(|h| *h == at);
            (free && raw(libc::SYS_dup3, [null as usize, at as usize, 0, 0, 0]) >= 0).then_some(at)
        });
        for (target, fd) in high.iter().take(floor).enumerate() {
            let ret = raw(libc::SYS_dup3, [*fd as usize, target, 0, 0, 0]);
            if ret < 0 {
                fail(STAGE_FDS, ret);
            }
        }
        // Nothing else: not the copies above, and no descriptor spawn's caller left open
        // without close-on-exec (a runtime holds only what the run gives it).
        let ranges = match reserved {
            Some(at) => [
                (floor, at as usize - 1),
                (at as usize + 1, u32::MAX as usize),
            ],
            None => [(floor, u32::MAX as usize), (0, 0)],
        };
        for (first, last) in ranges.into_iter().filter(|(_, last)| *last > 0) {
            let ret = raw(libc::SYS_close_range, [first, last, 0, 0, 0]);
            if ret < 0 {
                fail(STAGE_FDS, ret);
            }
        }
        // Nothing blocked in the program (spawn blocked everything around the clone).
        let none: u64 = 0;
        let ret = raw(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                std::ptr::from_ref(&none) as usize,
                0,
                8,
                0,
            ],
        );
        if ret < 0 {
            fail(STAGE_SIGNALS, ret);
        }
        let ret = raw(
            libc::SYS_execve,
            [
                plan.program as usize,
                plan.argv as usize,
                plan.envp as usize,
                0,
                0,
            ],
        );
        fail(STAGE_EXEC, ret)
    }
}

/// One step's system calls; the kernel's result of the first that failed (`-errno`), else 0.
///
/// # Safety
/// Runs in the launched child only (see [`child_main`]).
unsafe fn run_step(step: &Step) -> isize {
    // SAFETY: raw calls with integers, the step's own descriptors and NUL-terminated
    // strings (static, or owned by the step), all live for each call.
    unsafe {
        match step {
            Step::JoinCgroup(files) => {
                for fd in files {
                    let ret = raw(
                        libc::SYS_write,
                        [fd.as_raw_fd() as usize, b"0".as_ptr() as usize, 1, 0, 0],
                    );
                    if ret < 0 {
                        return ret;
                    }
                }
                0
            }
            Step::AttachMounts(trees) => {
                let ret = private_mounts();
                if ret < 0 {
                    return ret;
                }
                for (tree, at) in trees {
                    let ret = raw(
                        libc::SYS_move_mount,
                        [
                            tree.as_raw_fd() as usize,
                            c"".as_ptr() as usize,
                            libc::AT_FDCWD as usize,
                            at.as_ptr() as usize,
                            libc::MOVE_MOUNT_F_EMPTY_PATH as usize,
                        ],
                    );
                    if ret < 0 {
                        return ret;
                    }
                }
                0
            }
            Step::EnterNetns(ns) => raw(
                libc::SYS_setns,
                [
                    ns.as_raw_fd() as usize,
                    libc::CLONE_NEWNET as usize,
                    0,
                    0,
                    0,
                ],
            ),
            // Made with the descriptors (see `child_main`).
            Step::SizeFdTable { .. } => 0,
            Step::MaskNetCore => {
                let ret = private_mounts();
                if ret < 0 {
                    return ret;
                }
                let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                raw(
                    libc::SYS_mount,
                    [
                        c"none".as_ptr() as usize,
                        c"/proc/sys/net/core".as_ptr() as usize,
                        c"tmpfs".as_ptr() as usize,
                        ro as usize,
                        0,
                    ],
                )
            }
        }
    }
}

/// A mount namespace of the caller's own, a slave of the one it was in.
///
/// # Safety
/// Runs in the launched child only (see [`child_main`]).
unsafe fn private_mounts() -> isize {
    // SAFETY: unshare takes an integer; mount a static NUL-terminated path and nulls.
    unsafe {
        let ret = raw(libc::SYS_unshare, [libc::CLONE_NEWNS as usize, 0, 0, 0, 0]);
        if ret < 0 {
            return ret;
        }
        raw(
            libc::SYS_mount,
            [
                0,
                c"/".as_ptr() as usize,
                0,
                (libc::MS_REC | libc::MS_SLAVE) as usize,
                0,
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    //! Real processes (root: the mount step).
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut out = String::new();
        std::fs::File::from(fd).read_to_string(&mut out).unwrap();
        out
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        cmd
    }

    /// Runs `cmd` with stdin `input`, and `extra` more pipes as fds 3…; returns the exit
    /// status, stdout, stderr and what was written to each extra pipe.
    fn run(
        cmd: &Command,
        input: &str,
        extra: usize,
        steps: &[Step],
    ) -> (ExitStatus, String, String, Vec<String>) {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let pipes: Vec<_> = (0..extra).map(|_| pipe()).collect();
        let fds: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
        let mut child = launch(
            cmd,
            [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()],
            &fds,
            steps,
        )
        .unwrap();
        drop((in_r, out_w, err_w, fds));
        std::fs::File::from(in_w)
            .write_all(input.as_bytes())
            .unwrap();
        let extra: Vec<String> = pipes
            .into_iter()
            .map(|(r, w)| {
                drop(w);
                read_all(r)
            })
            .collect();
        let (out, err) = (read_all(out_r), read_all(err_r));
        (child.wait().unwrap(), out, err, extra)
    }

    #[test]
    fn stdio_and_descriptors_arrive_in_order_and_nothing_else_is_open() {
        // A descriptor left open across exec, as a caller of spawn's may leave one: it does
        // not reach the program.
        let (_open_r, _open_w) = nix::unistd::pipe().unwrap();
        // `ls` lists its own directory's descriptor (the lowest free: 6) besides.
        let script = "cat; echo err >&2; echo three >&3; echo four >&4; echo five >&5; \
                      exec ls /proc/self/fd";
        let (status, out, err, extra) = run(&sh(script), "in\n", 3, &[]);
        assert!(status.success(), "{err}");
        assert_eq!(out, "in\n0\n1\n2\n3\n4\n5\n6\n");
        assert_eq!(err, "err\n");
        assert_eq!(extra, ["three\n", "four\n", "five\n"]);
    }

    /// The program's `FDSize` (its descriptor table's slots), the descriptors it has open,
    /// whether 1023 is `/dev/null` and its flags, and the `FDSize` of a child of it (`grep`,
    /// whose table is a copy of the program's, sized by what the program has open).
    const FD_REPORT: &str = "grep FDSize /proc/$$/status; \
        for f in /proc/$$/fd/*; do echo \"fd ${f##*/}\"; done; \
        [ /proc/$$/fd/1023 -ef /dev/null ] && echo null; \
        grep flags /proc/$$/fdinfo/1023 2>/dev/null; grep FDSize /proc/self/status";

    /// What [`FD_REPORT`] printed: the program's table size, its descriptors (sorted),
    /// whether 1023 is `/dev/null`, that descriptor's flags, its child's table size.
    fn fd_report(out: &str) -> (u32, Vec<u32>, bool, Option<u32>, u32) {
        let size = |l: &str| l.strip_prefix("FDSize:").unwrap().trim().parse().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let mut fds: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("fd "))
            .map(|n| n.parse().unwrap())
            .collect();
        fds.sort_unstable();
        let flags = lines
            .iter()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap());
        (
            size(lines[0]),
            fds,
            lines.contains(&"null"),
            flags,
            size(lines[lines.len() - 1]),
        )
    }

    #[test]
    fn a_sized_descriptor_table_is_inherited_and_holds_only_dev_null_above_the_others() {
        let Some(step) = Step::size_fd_table().unwrap() else {
            panic!("the test's descriptor limit leaves no room for the step");
        };
        let Step::SizeFdTable { at, .. } = &step else {
            unreachable!()
        };
        assert_eq!(
            *at, FD_TABLE_RESERVE,
            "the tests run with a soft limit of 1024 or more"
        );
        let (status, out, err, _) = run(&sh(FD_REPORT), "", 1, &[step]);
        assert!(status.success(), "{err}");
        let (size, fds, null, flags, child) = fd_report(&out);
        assert_eq!((size, child), (1024, 1024), "{out}");
        // (4: the directory the shell's glob reads, open while it lists it.)
        assert_eq!(fds, [0, 1, 2, 3, 4, 1023], "{out}");
        assert!(null, "{out}");
        // Read-only, and not close-on-exec (the octal flags: O_CLOEXEC is 02000000).
        let flags = flags.unwrap();
        assert_eq!(flags & 0o3, 0, "{out}");
        assert_eq!(flags & 0o2_000_000, 0, "{out}");
    }

    #[test]
    fn without_the_step_a_child_of_the_program_has_the_kernels_smallest_table() {
        // (The program's own table is a copy of the test process's, which may be larger.)
        let (status, out, err, _) = run(&sh(FD_REPORT), "", 0, &[]);
        assert!(status.success(), "{err}");
        let (_, fds, null, flags, child) = fd_report(&out);
        assert_eq!(child, 64, "{out}");
        // (3: the directory the shell's glob reads, open while it lists it.)
        assert_eq!(fds, [0, 1, 2, 3], "{out}");
        assert!(!null && flags.is_none(), "{out}");
    }

    #[test]
    fn the_reserved_number_follows_the_descriptor_limit() {
        for (soft, want) in [
            (0, None),
            (1, None),
            (64, None),
            (65, Some(64)),
            (256, Some(255)),
            (1024, Some(1023)),
            (1025, Some(1023)),
            (1 << 20, Some(1023)),
            (u64::from(u32::MAX) + 7, Some(1023)),
            (u64::MAX, Some(1023)),
        ] {
            assert_eq!(fd_table_reserve(soft), want, "soft limit {soft}");
        }
    }

    #[test]
    fn a_table_size_among_the_placed_descriptors_or_twice_is_refused() {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let (_r, w) = pipe();
        for steps in [
            vec![Step::SizeFdTable {
                null: null(),
                at: 2,
            }],
            vec![Step::SizeFdTable {
                null: null(),
                at: MAX_FDS as RawFd,
            }],
            vec![
                Step::SizeFdTable {
                    null: null(),
                    at: 500,
                },
                Step::SizeFdTable {
                    null: null(),
                    at: 600,
                },
            ],
        ] {
            let err = launch(
                &sh("exit 0"),
                [w.as_fd(), w.as_fd(), w.as_fd()],
                &[],
                &steps,
            )
            .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
    }

    #[test]
    fn a_descriptor_given_where_it_already_is_stays_open_across_exec() {
        // The parent's stdin given as the child's stdin: the target is its own source.
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let stdin = std::io::stdin();
        let mut child = launch(
            &sh("[ -e /proc/$$/fd/0 ] && echo open; [ -e /proc/$$/fd/3 ] && echo three"),
            [stdin.as_fd(), out_w.as_fd(), out_w.as_fd()],
            &[in_r.as_fd()],
            &[],
        )
        .unwrap();
        drop((in_r, in_w, out_w));
        assert_eq!(read_all(out_r), "open\nthree\n");
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn the_program_starts_with_no_signal_blocked_and_sigpipe_default() {
        // Blocked on this thread (and SIGPIPE ignored by Rust's runtime) when it launches.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        set.add(nix::sys::signal::Signal::SIGUSR1);
        let old = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .unwrap();
        let (_, out, _, _) = run(&sh("grep -E '^Sig(Blk|Ign)' /proc/self/status"), "", 0, &[]);
        old.thread_set_mask().unwrap();
        let field = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{out}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
        // And this thread's mask is as it was.
        let now = nix::sys::signal::SigSet::thread_get_mask().unwrap();
        assert!(!now.contains(nix::sys::signal::Signal::SIGTERM));
    }

    #[test]
    fn the_environment_is_spawns_with_the_commands_changes() {
        let mut cmd =
            sh("echo \"${SPAWN_LAUNCH_SET-unset} ${SPAWN_LAUNCH_GONE-unset} ${PATH:+path}\"");
        std::env::set_var("SPAWN_LAUNCH_GONE", "here");
        cmd.env("SPAWN_LAUNCH_SET", "a b=c")
            .env_remove("SPAWN_LAUNCH_GONE");
        let (_, out, _, _) = run(&cmd, "", 0, &[]);
        assert_eq!(out, "a b=c unset path\n");
    }

    #[test]
    fn a_program_that_cannot_be_executed_is_an_error_naming_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, garbage) = (dir.path().join("plain"), dir.path().join("garbage"));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::write(&garbage, [0u8; 64]).unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (program, errno) in [
            (Path::new("/nonexistent/runc"), libc::ENOENT),
            (&plain, libc::EACCES),
            (&garbage, libc::ENOEXEC),
            (Path::new("/"), libc::EACCES),
        ] {
            let (out_r, out_w) = pipe();
            let stdio = [out_w.as_fd(), out_w.as_fd(), out_w.as_fd()];
            let err = launch(&Command::new(program), stdio, &[], &[]).unwrap_err();
            assert_eq!(err.raw_os_error(), None, "the error has its stage: {err}");
            let expected = io::Error::from_raw_os_error(errno);
            assert_eq!(
                err.to_string(),
                format!("execute the program: {expected}"),
                "{}",
                program.display()
            );
            assert_eq!(err.kind(), expected.kind());
            drop(out_w);
            assert_eq!(read_all(out_r), "", "{}", program.display());
        }
    }

    #[test]
    fn what_cannot_be_launched_is_refused_before_any_process() {
        let (_, w) = pipe();
        let stdio = [w.as_fd(), w.as_fd(), w.as_fd()];
        let mut in_dir = Command::new("/bin/true");
        in_dir.current_dir("/");
        let many = [w.as_fd(); MAX_FDS];
        for (cmd, fds) in [
            (Command::new("true"), &[][..]),
            (in_dir, &[][..]),
            (Command::new("/bin/true"), &many[..]),
        ] {
            let err = launch(&cmd, stdio, fds, &[]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
    }

    #[test]
    fn a_step_that_fails_is_named_and_the_program_never_runs() {
        let not_a_namespace = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let marker = tempfile::tempdir().unwrap();
        let ran = marker.path().join("ran");
        let cmd = sh(&format!("touch {}", ran.display()));
        let (_, w) = pipe();
        let err = launch(
            &cmd,
            [w.as_fd(), w.as_fd(), w.as_fd()],
            &[],
            &[Step::EnterNetns(not_a_namespace)],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("enter the run's network namespace: "),
            "{err}"
        );
        assert!(!ran.exists());
    }

    #[test]
    fn mounts_are_attached_for_the_program_only() {
        let dir = tempfile::tempdir().unwrap();
        let (src, at) = (dir.path().join("src"), dir.path().join("at"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&at).unwrap();
        std::fs::write(src.join("file"), "granted").unwrap();
        let path = CString::new(src.as_os_str().as_bytes()).unwrap();
        let tree =
            crate::sys::open_tree_clone_fd(crate::sys::open_path_nofollow(&path).unwrap().as_fd())
                .unwrap();
        let at_c = CString::new(at.as_os_str().as_bytes()).unwrap();
        let cmd = sh(&format!("cat {}/file", at.display()));
        let (status, out, err, _) = run(&cmd, "", 0, &[Step::AttachMounts(vec![(tree, at_c)])]);
        assert!(status.success(), "{err}");
        assert_eq!(out, "granted");
        assert!(
            !at.join("file").exists(),
            "the mount reached spawn's namespace"
        );
    }

    #[test]
    fn the_program_dies_with_the_thread_that_launched_it() {
        let (out_r, out_w) = pipe();
        let mut child = std::thread::spawn(move || {
            launch(
                &sh("sleep 30"),
                [out_w.as_fd(), out_w.as_fd(), out_w.as_fd()],
                &[],
                &[],
            )
            .unwrap()
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        drop(out_r);
    }

    #[test]
    fn kill_and_wait_are_safe_to_repeat() {
        let (_, w) = pipe();
        let mut child =
            launch(&sh("sleep 30"), [w.as_fd(), w.as_fd(), w.as_fd()], &[], &[]).unwrap();
        assert!(child.id() > 1);
        child.kill().unwrap();
        let first = child.wait().unwrap();
        assert_eq!(first.signal(), Some(libc::SIGKILL));
        // Waited for: its pid may be another's now, and is never signalled again.
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().into_raw(), first.into_raw());
    }
}
