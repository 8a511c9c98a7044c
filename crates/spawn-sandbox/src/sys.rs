//! The raw system calls the native sandbox makes that `nix` does not wrap safely.
//!
//! Every `unsafe` block of this crate lives in this module. Each wrapper is tiny, takes
//! owned or borrowed Rust values and turns the C return convention into `io::Result`
//! through [`cvt`].
// Kernel ABI values (syscall numbers, flags, fds, BPF words) are converted bit for bit
// between C integer types here; the casts are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub(crate) mod launch;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc-style return value (`-1` + errno) into an `io::Result`.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Result of [`clone3_fork`] as seen by each side.
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the parent: the child's host pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// `clone3(2)` with fork semantics (no new stack: the child continues on a copy of the
/// caller's stack) plus the given namespace flags and a pidfd for the parent.
///
/// The caller must be single-threaded (checked by [`thread_count`] before calling): the
/// child only has the calling thread, so locks held by other threads would never be
/// released in it.
pub(crate) fn clone3_fork(ns_flags: u64) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: ns_flags | libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: `args` is a valid, fully initialised clone_args of the size we pass, and
    // `pidfd` outlives the call. With a zero stack the kernel duplicates the caller like
    // fork(2); the caller is single-threaded, so the child's copy of the address space is
    // consistent (no lock can be held by a thread that does not exist in the child).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let pid = cvt(ret)?;
    if pid == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: on success with CLONE_PIDFD the kernel stored a new, owned fd in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Forked::Parent {
        pid: pid as libc::pid_t,
        pidfd,
    })
}

/// [`clone3_fork`] with the child born in the network namespace `netns` instead of the
/// caller's: the calling thread enters it for the clone and returns to its own at once.
pub(crate) fn clone3_fork_in_netns(ns_flags: u64, netns: BorrowedFd<'_>) -> io::Result<Forked> {
    use nix::sched::{setns, CloneFlags};
    let ours = std::fs::File::open("/proc/thread-self/ns/net")?;
    setns(netns, CloneFlags::CLONE_NEWNET)?;
    let forked = clone3_fork(ns_flags);
    if matches!(forked, Ok(Forked::Child)) {
        return forked;
    }
    if let Err(e) = setns(&ours, CloneFlags::CLONE_NEWNET) {
        // spawn must not go on in the run's namespace: end the child and fail.
        if let Ok(Forked::Parent { pidfd, pid }) = &forked {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = pidfd;
        }
        return Err(e.into());
    }
    forked
}

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `fork(2)` for the sandbox's init, which is single-threaded.
pub(crate) fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: called only from the sandbox init, a single-threaded process, so the child
    // starts with a consistent copy of the address space.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Number of threads of the calling process, from `/proc/self/stat`.
pub(crate) fn thread_count() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    // procfs gives /proc/self/task a link count of 2 + the number of threads: one statx
    // instead of reading and parsing /proc/self/stat.
    let links = std::fs::metadata("/proc/self/task")?.nlink();
    links
        .checked_sub(2)
        .filter(|n| *n > 0)
        .ok_or_else(|| io::Error::other("unexpected link count of /proc/self/task"))
}

/// Immediately ends the calling process without running destructors or atexit handlers:
/// the only correct way to leave a forked child.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// `mount_setattr(2)` on the tree at `path` (recursively): set the `MOUNT_ATTR_*` bits in
/// `set`, clear those in `clear`, and optionally apply an id mapping from `userns`.
pub(crate) fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    set: u64,
    clear: u64,
    userns: Option<RawFd>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd as u64),
    };
    // SAFETY: `path` is NUL-terminated, `attr` is a valid mount_attr of the size passed,
    // and both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(ret).map(drop)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Opens `path` as an `O_PATH` descriptor without following any symlink in any of its
/// components (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`): what is
/// opened is exactly the object at that (canonical) path now, and later checks and mounts
/// use the descriptor, never the path again.
pub(crate) fn open_path_nofollow(path: &CStr) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: 0x04 | 0x02, // RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
    };
    // SAFETY: `path` is NUL-terminated, `how` is a valid open_how of the size passed, both
    // outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            std::ptr::addr_of!(how),
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = cvt(ret)?;
    // SAFETY: on success openat2 returns a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `open_tree(2)`: a detached recursive copy of the mount tree at the object `fd` refers to.
pub(crate) fn open_tree_clone_fd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: the empty path is NUL-terminated and static; `fd` is a live descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    let fd = cvt(ret)?;
    // SAFETY: on success open_tree returns a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `move_mount(2)` of the detached tree `from` onto `to` (a path).
pub(crate) fn move_mount(from: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both strings are NUL-terminated and outlive the call; `from` is a live fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    cvt(ret).map(drop)
}

const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_SET_DIRECT_IO: libc::Ioctl = 0x4C08;
/// Reads and writes go to the backing file with `O_DIRECT`: no second page cache.
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// The loop device detaches itself when its last user (the mounted filesystem) lets go.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Binds `backing` (an open regular file) to a free loop device with `LOOP_CONFIGURE`,
/// autoclear set (the device detaches itself once nothing holds it: after the filesystem
/// on it is unmounted, or at once if nothing ever mounted it) and, when `direct_io`,
/// direct I/O to the file (else see [`loop_set_direct_io`]). Returns the open device and its number. Another process may
/// take the free device first: then the next free one is tried.
pub(crate) fn loop_attach(
    backing: BorrowedFd<'_>,
    block_size: u32,
    direct_io: bool,
) -> io::Result<(OwnedFd, u32)> {
    let control = nix::fcntl::open(
        "/dev/loop-control",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if direct_io {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = cvt(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) }.into())?;
        let dev = nix::fcntl::open(
            format!("/dev/loop{n}").as_str(),
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a loop_config of exactly this layout, which lives
        // for the call; `backing` is a live descriptor.
        let ret =
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, std::ptr::addr_of!(config)) };
        match cvt(ret.into()) {
            Ok(_) => return Ok((dev, n as u32)),
            // Taken by someone else between GET_FREE and CONFIGURE.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Switches the loop device `dev` to direct I/O to its backing file (`LOOP_SET_DIRECT_IO`).
pub(crate) fn loop_set_direct_io(dev: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: LOOP_SET_DIRECT_IO takes its argument by value (1: on); `dev` is a live
    // descriptor of a loop device.
    let ret = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_DIRECT_IO, 1 as libc::c_ulong) };
    cvt(ret.into()).map(drop)
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// Mounts a filesystem of type `fstype` from the block device `source` as a detached mount
/// (`fsopen`, `fsconfig`, `fsmount`) with the boolean mount options `flags` and the
/// `MOUNT_ATTR_*` bits `attrs`. The mount is in no namespace: it exists only through the
/// returned descriptor (and where it is later attached with `move_mount`), and is
/// unmounted when the last of those goes.
pub(crate) fn fsmount(
    fstype: &CStr,
    source: &CStr,
    flags: &[&CStr],
    attrs: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is NUL-terminated and outlives the call.
    let fs = cvt(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a new fd that we now own.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let config = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        // SAFETY: the strings are NUL-terminated (or null where the command takes none)
        // and outlive the call; `fs` is a live fs context.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), CStr::as_ptr),
                value.map_or(std::ptr::null(), CStr::as_ptr),
                0,
            )
        })
    };
    config(FSCONFIG_SET_STRING, Some(c"source"), Some(source))?;
    for flag in flags {
        config(FSCONFIG_SET_FLAG, Some(flag), None)?;
    }
    config(FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: fsmount takes the fs context fd and integer flags.
    let mnt = cvt(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })?;
    // SAFETY: fsmount returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

/// Takes uid and gid `id` (real, effective and saved) and no supplementary groups, by raw
/// system calls, in a process of a single thread. The C libraries' wrappers change every
/// thread of the process (musl's with signals blocked around each call, three calls more
/// each, a trip through gVisor's kernel apiece); a raw call changes the calling thread,
/// which here is the process. Groups first, then the gid, then the uid (after which the
/// others would no longer be allowed).
pub(crate) fn set_ids_single_threaded(id: u32) -> Result<(), (&'static str, io::Error)> {
    let id = id as usize;
    let calls: [(&'static str, libc::c_long, [usize; 3]); 3] = [
        ("clear groups", libc::SYS_setgroups, [0, 0, 0]),
        ("set gid 1000", libc::SYS_setresgid, [id, id, id]),
        ("set uid 1000", libc::SYS_setresuid, [id, id, id]),
    ];
    for (what, nr, [a0, a1, a2]) in calls {
        // SAFETY: setgroups(0, NULL) reads no memory; setresgid/setresuid take ids by
        // value. The caller's process has one thread (the init's command side, forked from
        // the single-threaded init), so no other thread keeps the old credentials.
        let ret = unsafe { raw_syscall(nr, a0, a1, a2) };
        if ret < 0 {
            return Err((what, io::Error::from_raw_os_error(-ret as i32)));
        }
    }
    Ok(())
}

/// Clears the inheritable, permitted and effective capability sets of the calling thread.
pub(crate) fn capset_clear() -> io::Result<()> {
    let mut header = libc_cap_header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [libc_cap_data::default(); 2];
    // SAFETY: header and the two-element data array have the layout capset(2) expects for
    // version 3 and live across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    cvt(ret).map(drop)
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_cap_header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
#[allow(non_camel_case_types)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability from the bounding set and clears the ambient set. Every one of
/// the 64 is asked for: a forked child's bounding set is not its parent's to read (one in
/// a user namespace of its own has a set of its own) and the child must not allocate to
/// read its own; on the host's kernel the calls are cheap.
pub(crate) fn drop_bounding_and_ambient() -> io::Result<()> {
    drop_bounding(u64::MAX)?;
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    cvt(ret.into()).map(drop)
}

/// Drops every capability of `present` (bit N for capability N) from
/// the bounding set: one call per capability there (under gVisor each call is a trip
/// through its kernel; asking for all 64 cost ~80 of them per run). gVisor's kernel has
/// no ambient set to clear; there [`drop_bounding_and_ambient`] would fail.
pub(crate) fn drop_bounding(present: u64) -> io::Result<()> {
    for cap in 0..64 {
        if present & (1u64 << cap) == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(err);
        }
    }
    Ok(())
}

/// The signals this process ignores (`SIG_IGN`), as the bit mask of `/proc/self/status`
/// (bit N-1 for signal N). Handlers are reset by `execve`; ignored signals are not.
pub(crate) fn ignored_signals() -> u64 {
    use std::io::Read as _;
    // Read with room for the whole file at once (Linux's is ~1.5 KiB): a read into a
    // growing buffer costs a dozen calls.
    let mut status = Vec::with_capacity(8192);
    let read = std::fs::File::open("/proc/self/status")
        .and_then(|f| f.take(1 << 16).read_to_end(&mut status));
    read.ok()
        .and_then(|_| std::str::from_utf8(&status).ok())
        .and_then(|text| parse_status_mask(text, "SigIgn:"))
        // Unknown: reset every signal.
        .unwrap_or(u64::MAX)
}

/// [`ignored_signals`] of spawn-init as the init of a gVisor sandbox: gVisor starts it as a
/// new task of its own with every signal at its default (nothing inherited from the host;
/// its kernel shows no `SigIgn` line to read), so only what spawn-init changed is ignored:
/// SIGPIPE ([`ignore_sigpipe`], first thing in its `main`). Resetting all 64 instead cost
/// 59 calls through gVisor's kernel on every run.
pub(crate) const IGNORED_BY_SPAWN_INIT: u64 = 1 << (libc::SIGPIPE - 1);

fn parse_status_mask(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Ignores SIGPIPE, as Rust's runtime start-up does for a program with a Rust `main`: a
/// write to a pipe or socket whose reader went away then fails `EPIPE` instead of killing
/// the process. For spawn-init, whose `main` is the C library's (`no_main`).
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE is always sound; the process has no handler
    // of its own for it to lose.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Gives SIGPIPE its default action back (Rust's runtime ignores it): a command whose
/// reader went away (`spawn runs list | head -1`) then ends quietly, as other Unix tools
/// do, instead of failing on `EPIPE` mid-line. Not for `spawn run`, whose relay handles a
/// reader that went away itself (see `stdio`).
pub fn default_sigpipe() {
    // SAFETY: installing SIG_DFL for SIGPIPE is always sound; the process has no handler
    // of its own for it to lose.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Resets the ignored signals (`ignored`, as from [`ignored_signals`]) to their default
/// and unblocks every signal, so a program exec'ed next starts like it would from a shell.
pub(crate) fn reset_signals(ignored: u64) {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || ignored & (1u64 << (sig - 1)) == 0 {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound; failures for invalid numbers are
        // ignored on purpose.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: an empty, initialised sigset passed to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `execve(2)`; returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: all pointers refer to NUL-terminated strings owned by `argv`/`envp`, the
    // arrays are NULL-terminated, and everything outlives the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Installs a seccomp BPF program for the calling thread and returns the user-notification
/// listener fd (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), or installs it without a listener.
/// `no_new_privs` must already be set.
pub(crate) fn seccomp_install(
    program: &[libc::sock_filter],
    want_listener: bool,
) -> io::Result<Option<OwnedFd>> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::other("seccomp program longer than 65535 instructions"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    let flags: libc::c_ulong = if want_listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: `prog` points to `len` valid instructions that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::addr_of!(prog),
        )
    };
    let fd = cvt(ret)?;
    if want_listener {
        // SAFETY: with NEW_LISTENER the kernel returns a new fd that we now own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    } else {
        Ok(None)
    }
}

/// One pending seccomp user notification: the id to answer and the syscall number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notification {
    pub(crate) id: u64,
    pub(crate) syscall: i32,
}

/// Receives one notification from a seccomp listener (blocks if none is pending).
pub(crate) fn seccomp_notif_recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data; all-zero is the required initial state.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `req`, which is large enough.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            std::ptr::addr_of_mut!(req),
        )
    };
    cvt(ret.into())?;
    Ok(Notification {
        id: req.id,
        syscall: req.data.nr,
    })
}

/// Answers a notification: the syscall fails with `errno` in the sandboxed process.
pub(crate) fn seccomp_notif_deny(listener: BorrowedFd<'_>, id: u64, errno: i32) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp from `resp`, which lives across it.
    let ret = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            std::ptr::addr_of_mut!(resp),
        )
    };
    cvt(ret.into()).map(drop)
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the returned fd is owned immediately below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = cvt(fd.into())?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: ifreq is plain data; zero is a valid initial state.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags into `ifr`.
    cvt(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as libc::Ioctl,
            &mut ifr,
        )
    }
    .into())?;
    // SAFETY: the union member for SIOCGIFFLAGS/SIOCSIFFLAGS is ifru_flags.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `ifr`, which is initialised above.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &ifr) }.into())
        .map(drop)
}

/// The Landlock ABI version the running kernel supports, or `None`.
pub(crate) fn landlock_abi() -> Option<i64> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attr and size 0 only queries.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    (ret > 0).then_some(ret)
}

/// Closes every descriptor ≥ 3 except those in `keep`.
pub(crate) fn close_all_except(keep: &[RawFd]) {
    let mut keep: Vec<libc::c_uint> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .collect();
    keep.sort_unstable();
    let mut low: libc::c_uint = 3;
    for fd in keep {
        if fd >= low {
            if fd > low {
                // SAFETY: close_range only closes descriptors; none of those closed are
                // referenced by live Rust objects in the (single-threaded) child.
                unsafe { libc::syscall(libc::SYS_close_range, low, fd - 1, 0) };
            }
            low = fd + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, low, libc::c_uint::MAX, 0) };
}

/// Takes ownership of a descriptor received from the kernel (e.g. via SCM_RIGHTS).
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor that was just installed in this process by the
    // kernel and that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// [`raw`] with three arguments.
///
/// # Safety
/// As for [`raw`].
unsafe fn raw_syscall(nr: libc::c_long, a0: usize, a1: usize, a2: usize) -> isize {
    // SAFETY: the caller's arguments, and zeros for the two the call does not read.
    unsafe { raw(nr, [a0, a1, a2, 0, 0]) }
}

/// A raw system call with up to five arguments that never touches `errno` or any other
/// thread-local state: the cleanup guard and a launched runtime before its exec share
/// spawn's address space (and so its TLS) and must not write to it. Returns the kernel's
/// raw result (`-errno` on failure).
///
/// # Safety
/// The caller must pass arguments valid for syscall `nr` (pointers to live memory of the
/// right size for the call).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn raw(nr: libc::c_long, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the `syscall` instruction with the x86_64 Linux ABI: number in rax, arguments
    // in rdi, rsi, rdx, r10, r8; it clobbers rcx and r11. Validity of the arguments is the
    // caller's.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// See the x86_64 version.
///
/// # Safety
/// As for the x86_64 version.
#[cfg(target_arch = "aarch64")]
pub(crate) unsafe fn raw(nr: libc::c_long, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: `svc 0` with the aarch64 Linux ABI: number in x8, arguments in x0…x4, the
    // result in x0. Validity of the arguments is the caller's.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            options(nostack),
        );
    }
    ret
}

/// A stack for a child that shares spawn's memory (the guard, a launched runtime before its
/// exec, the init's command before its exec): an anonymous mapping with a guard page below
/// it, unmapped when dropped.
pub(crate) struct Stack {
    base: *mut libc::c_void,
    size: usize,
}

const STACK: usize = 64 << 10;
const PAGE: usize = 4096;

impl Stack {
    pub(crate) fn new() -> io::Result<Stack> {
        Stack::with_size(STACK)
    }

    /// A stack of `size` bytes (a multiple of the page size) above its guard page.
    pub(crate) fn with_size(size: usize) -> io::Result<Stack> {
        let size = size.next_multiple_of(PAGE);
        // SAFETY: an anonymous private mapping; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size + PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, size };
        // SAFETY: the lowest page of the mapping just made becomes a guard page.
        if unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Never unmapped: for a child that may outlive every owner (the guard).
    pub(crate) fn leak(self) -> *mut libc::c_void {
        let top = self.top();
        std::mem::forget(self);
        top
    }

    /// The top of the stack (page-aligned, so 16-byte aligned).
    pub(crate) fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping made in `with_size`.
        unsafe { self.base.cast::<u8>().add(self.size + PAGE) }.cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `with_size`; its owner drops it only once no child
        // uses it (a launch or `vfork`, after its CLONE_VFORK clone returned; the guard's is
        // never dropped).
        unsafe { libc::munmap(self.base, self.size + PAGE) };
    }
}

/// Stack of the init's command between [`vfork`] and its exec: the command's side runs
/// ordinary Rust (Landlock's rules, the secrets' files, error messages) before executing.
const VFORK_STACK: usize = 256 << 10;

/// Runs `child` in a new process that shares this one's memory and is suspended until the
/// child has executed a program or exited (`CLONE_VM | CLONE_VFORK`, as `posix_spawn`
/// does), and returns the child's pid. No copy of the address space is made: under gVisor
/// that copy is a new address space (a new stub process on the ptrace platform) plus a
/// fault into the Sentry for every page either side writes before the exec.
///
/// For a single-threaded caller only (the sandbox's init). The child has its own
/// descriptor table, credentials, signal mask and seccomp filters, so what it changes of
/// those is its own; what it writes to memory is the caller's, seen after `vfork` returns,
/// so it must leave every value usable (it borrows, it never moves out of the caller's
/// values). It should end by executing a program; if `child` returns, the child exits at
/// once with the returned code ([`exit_now`]). A panic out of it aborts the child
/// (`extern "C"` cannot unwind).
pub(crate) fn vfork(child: &mut dyn FnMut() -> i32) -> io::Result<libc::pid_t> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed to clone below, alive on the
        // suspended caller's stack for as long as the child runs before its exec or exit.
        let child = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
        exit_now(child())
    }
    let stack = Stack::with_size(VFORK_STACK)?;
    let mut child = child;
    // SAFETY: clone runs `trampoline` on `stack` in a child that shares our memory
    // (CLONE_VM) and suspends this (the only) thread until the child has executed or
    // exited (CLONE_VFORK): nothing else runs in this address space meanwhile, and `child`
    // and `stack` outlive the child's use of them. `trampoline` never returns normally.
    let pid = unsafe {
        libc::clone(
            trampoline,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(&mut child).cast::<libc::c_void>(),
        )
    };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// What the cleanup guard does once spawn is gone: remove these cgroup directories, killing
/// the processes listed in the matching `cgroup.procs` files if they are still busy.
#[derive(Debug)]
pub(crate) struct GuardPlan {
    /// The guard's end of a socket pair whose other end only spawn holds: EOF means spawn
    /// is gone or done; a message carries descriptors for the guard to hold until it exits
    /// (`Guard::hold`).
    pub(crate) rx: RawFd,
    /// Directories to remove.
    pub(crate) dirs: Vec<CString>,
    /// Their `cgroup.procs` files, index for index.
    pub(crate) procs: Vec<CString>,
    /// Descriptors the guard keeps open until it exits, `rx` included, sorted: besides
    /// `rx`, references to the sandbox's mount namespace, so that the kernel tears it down
    /// when the guard exits (after spawn has returned) rather than in the init's exit.
    pub(crate) keep: Vec<usize>,
    /// How long to wait once woken before killing: a runtime spawn started may still be
    /// creating the run's groups as spawn dies (it is killed with spawn too).
    pub(crate) grace: std::time::Duration,
    /// Files and directories to remove once the processes are gone (the run's bundle and
    /// runtime state), with `rm -rf --one-file-system`, if the first of them still exists
    /// (after a normal end spawn has removed them itself).
    pub(crate) remove: Vec<CString>,
}

/// The program the guard runs to remove the plan's paths.
const RM: &CStr = c"/bin/rm";

/// Starts the cleanup guard: a process that shares spawn's memory (so starting it costs
/// no page-table copy) but outlives it, and runs only raw system calls on its own stack.
/// The plan and the stack are leaked on purpose: the guard may use them after spawn exits.
pub(crate) fn start_guard(plan: GuardPlan) -> io::Result<libc::pid_t> {
    // `rm`'s argument vector, built now: the guard allocates nothing.
    let mut words: Vec<CString> = ["rm", "-rf", "--one-file-system", "--"]
        .iter()
        .map(|w| CString::new(*w).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    words.extend(plan.remove.iter().cloned());
    let words: &'static [CString] = Vec::leak(words);
    let argv: Vec<*const libc::c_char> = words
        .iter()
        .map(|w| w.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let plan: &'static GuardArgs = Box::leak(Box::new(GuardArgs {
        plan,
        rm_argv: Vec::leak(argv),
    }));
    let top = Stack::new()?.leak();
    // SAFETY: glibc's clone runs `guard_main` on the new stack in a child that shares our
    // memory (CLONE_VM) but is its own process (no CLONE_THREAD), and exits it with the
    // function's return value. The child only reads `plan` and `rm`'s arguments, which are
    // leaked and never mutated, uses its own stack, and makes raw system calls that touch
    // no shared state (its execve of `rm` gives it memory of its own).
    let pid = unsafe {
        libc::clone(
            guard_main,
            top,
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::from_ref(plan).cast_mut().cast::<libc::c_void>(),
        )
    };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// What the guard's child function gets: the plan, and `rm`'s argument vector (null
/// terminated, pointing into leaked strings).
struct GuardArgs {
    plan: GuardPlan,
    rm_argv: &'static [*const libc::c_char],
}

extern "C" fn guard_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked `&'static GuardArgs` passed by `start_guard`.
    let args = unsafe { &*arg.cast::<GuardArgs>() };
    let plan = &args.plan;
    let rx = usize::try_from(plan.rx).unwrap_or(0);
    // SAFETY: every raw call below takes integer arguments, or pointers to this function's
    // stack buffers (and to a `msghdr`, all-zero then pointed at them: a valid header) and
    // to the plan's NUL-terminated strings, all live for each call.
    unsafe {
        raw_syscall(libc::SYS_setsid, 0, 0, 0);
        // Close everything but `rx` and the held descriptors: the gaps between the sorted
        // descriptors to keep.
        let mut low: usize = 0;
        for &k in &plan.keep {
            if k > low {
                raw_syscall(libc::SYS_close_range, low, k - 1, 0);
            }
            low = k.wrapping_add(1);
        }
        raw_syscall(libc::SYS_close_range, low, u32::MAX as usize, 0);
        // Each message may carry descriptors: received, they are held until the guard
        // exits, or, should it become `rm`, until `rm` exits (not close-on-exec): what
        // their last close starts (a scratch filesystem's unmount, its loop device's
        // detach, on a busy disk seconds) then follows the removal instead of delaying it.
        let mut byte = 0u8;
        let mut control = [0u64; 8];
        loop {
            let mut iov = libc::iovec {
                iov_base: std::ptr::addr_of_mut!(byte).cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = std::ptr::addr_of_mut!(iov);
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let r = raw_syscall(
                libc::SYS_recvmsg,
                rx,
                std::ptr::addr_of_mut!(msg) as usize,
                0,
            );
            if r == 0 || (r < 0 && r != -(libc::EINTR as isize)) {
                break;
            }
        }
        if !plan.grace.is_zero() {
            let ts = libc::timespec {
                tv_sec: i64::try_from(plan.grace.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: libc::c_long::from(plan.grace.subsec_nanos() as i32),
            };
            raw_syscall(libc::SYS_nanosleep, std::ptr::addr_of!(ts) as usize, 0, 0);
        }
        for (dir, procs) in plan.dirs.iter().zip(&plan.procs) {
            for _ in 0..400 {
                let r = raw_rmdir(dir);
                if r == 0 || r == -(libc::ENOENT as isize) {
                    break;
                }
                if r != -(libc::EBUSY as isize) {
                    break;
                }
                guard_kill_listed(procs);
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 5_000_000,
                };
                raw_syscall(libc::SYS_nanosleep, std::ptr::addr_of!(ts) as usize, 0, 0);
            }
        }
        // Left by a spawn that died: its bundle and the runtime's state go too.
        if let Some(first) = plan.remove.first() {
            let exists = raw_syscall(
                libc::SYS_faccessat,
                libc::AT_FDCWD as usize,
                first.as_ptr() as usize,
                libc::F_OK as usize,
            ) == 0;
            if exists {
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                raw_syscall(
                    libc::SYS_execve,
                    RM.as_ptr() as usize,
                    args.rm_argv.as_ptr() as usize,
                    envp.as_ptr() as usize,
                );
            }
        }
    }
    0
}

/// # Safety
/// `dir` must be a live NUL-terminated string.
unsafe fn raw_rmdir(dir: &CString) -> isize {
    // SAFETY: a NUL-terminated path that outlives the call.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        return raw_syscall(libc::SYS_rmdir, dir.as_ptr() as usize, 0, 0);
        #[cfg(not(target_arch = "x86_64"))]
        return raw_syscall(
            libc::SYS_unlinkat,
            libc::AT_FDCWD as usize,
            dir.as_ptr() as usize,
            libc::AT_REMOVEDIR as usize,
        );
    }
}

/// SIGKILLs every pid listed in a `cgroup.procs` file, without allocating.
///
/// # Safety
/// `procs` must be a live NUL-terminated string.
unsafe fn guard_kill_listed(procs: &CString) {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path, then a stack buffer of the length passed.
    unsafe {
        let fd = raw_syscall(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            procs.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
        );
        if fd < 0 {
            return;
        }
        let n = raw_syscall(
            libc::SYS_read,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        );
        raw_syscall(libc::SYS_close, fd as usize, 0, 0);
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        let mut pid: usize = 0;
        for &b in buf.iter().take(n) {
            if b.is_ascii_digit() {
                pid = pid.wrapping_mul(10).wrapping_add(usize::from(b - b'0'));
            } else {
                if pid > 0 {
                    raw_syscall(libc::SYS_kill, pid, libc::SIGKILL as usize, 0);
                }
                pid = 0;
            }
        }
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when the process exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags (0); no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = cvt(ret)?;
    // SAFETY: on success the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process `pidfd` refers to (`pidfd_send_signal`): never to another
/// process that took its pid.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a live pidfd, a signal number, no siginfo (NULL) and
    // flags (0); no memory is read.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// Sends one message of `bytes` carrying the descriptors `fds` (`SCM_RIGHTS`) on a
/// connected unix socket.
pub fn send_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[io::IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Receives one message into `buf` with the descriptors it carries (at most eight, made
/// close-on-exec and owned): `(length, descriptors)`; length 0 is the peer's end.
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            fds.extend(received.into_iter().map(own_fd));
        }
    }
    Ok((msg.bytes, fds))
}

/// Whether the process's descriptor `fd` is open.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags; on a number that is not open it fails
    // with EBADF and touches nothing.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// One of the process's standard descriptors (0, 1 or 2), borrowed, when it is open.
pub(crate) fn borrow_std_fd(fd: RawFd) -> Option<BorrowedFd<'static>> {
    if !(0..=2).contains(&fd) || !fd_is_open(fd) {
        return None;
    }
    // SAFETY: the descriptor is open, and spawn never closes its standard descriptors, so
    // it stays open (as the same file) for the life of the process.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Whether this process's descriptors `a` and `b` are the same open file description
/// (`kcmp(KCMP_FILE)`): `2>&1`, or the terminal's one description. `false` when the
/// kernel cannot tell (no `kcmp`).
pub(crate) fn same_open_file(a: RawFd, b: RawFd) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = libc::c_long::from(std::process::id() as i32);
    // SAFETY: kcmp only compares kernel objects of the given process; it reads and writes
    // no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            libc::c_long::from(a),
            libc::c_long::from(b),
        )
    };
    ret == 0
}

/// The window size of the terminal `fd`, if it is one.
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` (Winsize is that layout) to the
    // pointer, which is valid for the call.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            std::ptr::addr_of_mut!(size),
        )
    };
    (ret == 0).then_some(size)
}

/// Makes the terminal on descriptor 0 the calling process's controlling terminal (it must
/// lead a session of its own without one). For the run's own pty, before seccomp, which
/// denies `TIOCSCTTY` to the agent.
pub(crate) fn take_controlling_terminal() -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it from another
    // session); no memory is passed.
    let ret = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    cvt(ret.into()).map(drop)
}

/// Sets the window size of the terminal (or pty master) `fd`.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, size: &nix::pty::Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` (Winsize is that layout) from the
    // pointer, which is valid for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, std::ptr::from_ref(size)) };
    cvt(ret.into()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::parse_status_mask;

    /// The masks of `/proc/self/status` (spawn reads `SigIgn`, to reset only ignored
    /// signals): every way the line can be missing or malformed reads as unknown (`None`),
    /// which the caller turns into "all of them".
    #[test]
    fn status_masks_parse_or_are_unknown() {
        let linux = "Name:\tspawn-init\nSigIgn:\t0000000000001000\nCapBnd:\t000001ffffffffff\n";
        let gvisor = "Name:\tcat\nCapBnd:\t000001ffffffdfff\nSeccomp:\t0\n";
        for (status, key, expect) in [
            (linux, "SigIgn:", Some(0x1000)),
            (linux, "CapBnd:", Some(0x1ff_ffff_ffff)),
            (gvisor, "CapBnd:", Some(0x1ff_ffff_dfff)),
            (gvisor, "SigIgn:", None),
            ("CapBnd:\t0000000000000000\n", "CapBnd:", Some(0)),
            ("CapBnd:\tffffffffffffffff\n", "CapBnd:", Some(u64::MAX)),
            ("CapBnd:\t1ffffffffffffffff\n", "CapBnd:", None),
            ("CapBnd:\t\n", "CapBnd:", None),
            ("CapBnd:\t-1\n", "CapBnd:", None),
            ("CapBnd:\t0x1ff\n", "CapBnd:", None),
            ("CapBnd:\t1ff zz\n", "CapBnd:", None),
            ("CapBnd:\t00000000 0000001f\n", "CapBnd:", None),
            (" CapBnd:\t1ff\n", "CapBnd:", None),
            ("capbnd:\t1ff\n", "CapBnd:", None),
            ("", "CapBnd:", None),
        ] {
            assert_eq!(
                parse_status_mask(status, key),
                expect,
                "{key} in {status:?}"
            );
        }
    }
}
