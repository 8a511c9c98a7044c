//! The seccomp policy as data: which syscalls the agent may make, on which arguments.
//!
//! Shared by the library and its build script, which compiles it once at build time into
//! the program that `seccomp::compile` returns (so no run pays for the compilation).
// Kernel ABI values (syscall numbers, flags) are converted bit for bit between C integer
// types here; the casts are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::collections::BTreeMap;

use crate::bpf::{Action, Cond, Entry, Filter, Op};

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Calls allowed without conditions, on every architecture.
const ALLOWED: &[(&str, i64)] = syscalls![
    SYS_read,
    SYS_write,
    SYS_close,
    SYS_fstat,
    SYS_lseek,
    SYS_mmap,
    SYS_mprotect,
    SYS_munmap,
    SYS_brk,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_pread64,
    SYS_pwrite64,
    SYS_readv,
    SYS_writev,
    SYS_sched_yield,
    SYS_mremap,
    SYS_msync,
    SYS_mincore,
    SYS_madvise,
    SYS_shmget,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_dup,
    SYS_dup3,
    SYS_nanosleep,
    SYS_getitimer,
    SYS_setitimer,
    SYS_getpid,
    SYS_sendfile,
    SYS_connect,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_sendmmsg,
    SYS_recvmmsg,
    SYS_shutdown,
    SYS_bind,
    SYS_listen,
    SYS_getsockname,
    SYS_getpeername,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_wait4,
    SYS_waitid,
    SYS_kill,
    SYS_tkill,
    SYS_tgkill,
    SYS_uname,
    SYS_semget,
    SYS_semop,
    SYS_semctl,
    SYS_semtimedop,
    SYS_msgget,
    SYS_msgsnd,
    SYS_msgrcv,
    SYS_msgctl,
    SYS_fcntl,
    SYS_flock,
    SYS_fsync,
    SYS_fdatasync,
    SYS_truncate,
    SYS_ftruncate,
    SYS_getcwd,
    SYS_chdir,
    SYS_fchdir,
    SYS_fchown,
    SYS_umask,
    SYS_gettimeofday,
    SYS_getrlimit,
    SYS_setrlimit,
    SYS_prlimit64,
    SYS_getrusage,
    SYS_sysinfo,
    SYS_times,
    SYS_getuid,
    SYS_getgid,
    SYS_geteuid,
    SYS_getegid,
    SYS_setuid,
    SYS_setgid,
    SYS_setreuid,
    SYS_setregid,
    SYS_setresuid,
    SYS_setresgid,
    SYS_getresuid,
    SYS_getresgid,
    SYS_setfsuid,
    SYS_setfsgid,
    SYS_getgroups,
    SYS_setpgid,
    SYS_getppid,
    SYS_getpgid,
    SYS_setsid,
    SYS_getsid,
    SYS_capget,
    SYS_rt_sigpending,
    SYS_rt_sigtimedwait,
    SYS_rt_sigqueueinfo,
    SYS_rt_tgsigqueueinfo,
    SYS_rt_sigsuspend,
    SYS_sigaltstack,
    SYS_statfs,
    SYS_fstatfs,
    SYS_getpriority,
    SYS_setpriority,
    SYS_sched_setparam,
    SYS_sched_getparam,
    SYS_sched_setscheduler,
    SYS_sched_getscheduler,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_getaffinity,
    SYS_sched_setattr,
    SYS_sched_getattr,
    SYS_mlock,
    SYS_munlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_munlockall,
    SYS_sync,
    SYS_syncfs,
    SYS_gettid,
    SYS_readahead,
    SYS_setxattr,
    SYS_lsetxattr,
    SYS_fsetxattr,
    SYS_getxattr,
    SYS_lgetxattr,
    SYS_fgetxattr,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_flistxattr,
    SYS_removexattr,
    SYS_lremovexattr,
    SYS_fremovexattr,
    SYS_futex,
    SYS_set_tid_address,
    SYS_restart_syscall,
    SYS_timer_create,
    SYS_timer_settime,
    SYS_timer_gettime,
    SYS_timer_getoverrun,
    SYS_timer_delete,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_clock_nanosleep,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_create1,
    SYS_mbind,
    SYS_set_mempolicy,
    SYS_get_mempolicy,
    SYS_mq_open,
    SYS_mq_unlink,
    SYS_mq_timedsend,
    SYS_mq_timedreceive,
    SYS_mq_notify,
    SYS_mq_getsetattr,
    SYS_inotify_add_watch,
    SYS_inotify_rm_watch,
    SYS_inotify_init1,
    SYS_mkdirat,
    SYS_fchownat,
    SYS_newfstatat,
    SYS_unlinkat,
    SYS_renameat,
    SYS_renameat2,
    SYS_linkat,
    SYS_symlinkat,
    SYS_readlinkat,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_pselect6,
    SYS_ppoll,
    SYS_set_robust_list,
    SYS_get_robust_list,
    SYS_splice,
    SYS_tee,
    SYS_sync_file_range,
    SYS_vmsplice,
    SYS_utimensat,
    SYS_signalfd4,
    SYS_timerfd_create,
    SYS_timerfd_settime,
    SYS_timerfd_gettime,
    SYS_eventfd2,
    SYS_fallocate,
    SYS_pipe2,
    SYS_preadv,
    SYS_pwritev,
    SYS_preadv2,
    SYS_pwritev2,
    SYS_getcpu,
    SYS_getrandom,
    SYS_memfd_create,
    SYS_membarrier,
    SYS_copy_file_range,
    SYS_statx,
    SYS_rseq,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_close_range,
    SYS_io_setup,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_submit,
    SYS_io_cancel,
    SYS_landlock_create_ruleset,
    SYS_landlock_add_rule,
    SYS_landlock_restrict_self,
    SYS_futex_waitv,
    SYS_capset,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
];

/// Calls allowed without conditions that exist only on x86_64.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[(&str, i64)] = syscalls![
    SYS_stat,
    SYS_lstat,
    SYS_poll,
    SYS_access,
    SYS_pipe,
    SYS_select,
    SYS_dup2,
    SYS_pause,
    SYS_alarm,
    SYS_fork,
    SYS_vfork,
    SYS_getdents,
    SYS_getdents64,
    SYS_rename,
    SYS_mkdir,
    SYS_rmdir,
    SYS_link,
    SYS_unlink,
    SYS_symlink,
    SYS_readlink,
    SYS_chown,
    SYS_lchown,
    SYS_getpgrp,
    SYS_utime,
    SYS_utimes,
    SYS_futimesat,
    SYS_arch_prctl,
    SYS_time,
    SYS_epoll_create,
    SYS_epoll_wait,
    SYS_inotify_init,
    SYS_signalfd,
    SYS_eventfd,
    SYS_fadvise64,
    SYS_set_thread_area,
    SYS_get_thread_area,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[(&str, i64)] = syscalls![SYS_getdents64, SYS_fadvise64];

/// Calls that are denied and worth naming in audit events. Anything not allowed is denied;
/// this table only gives names to the numbers.
const NAMED_DENIED: &[(&str, i64)] = syscalls![
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_kcmp,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_unshare,
    SYS_setns,
    SYS_clone,
    SYS_socket,
    SYS_ioctl,
    SYS_personality,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_acct,
    SYS_quotactl,
    SYS_userfaultfd,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_fanotify_init,
    SYS_vhangup,
    SYS_syslog,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_open_tree,
    SYS_move_mount,
    SYS_mount_setattr,
    SYS_pidfd_getfd,
    SYS_setgroups,
    SYS_openat2,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchmodat2,
    SYS_openat,
    SYS_mknodat,
    SYS_process_madvise,
    SYS_migrate_pages,
    SYS_move_pages,
    SYS_clone3,
    SYS_socketpair,
    SYS_prctl,
    SYS_seccomp,
];

/// The name of a syscall number, for audit events and `--json`.
pub fn syscall_name(nr: i64) -> String {
    ALLOWED
        .iter()
        .chain(ALLOWED_ARCH)
        .chain(NAMED_DENIED)
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| name.trim_start_matches("SYS_").to_owned())
        .or_else(|| {
            MODE_SETTERS
                .iter()
                .find(|(_, n, _)| *n == nr)
                .map(|(name, _, _)| (*name).to_owned())
        })
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// Calls that set a file mode, with the index of their mode argument. They may not set the
/// setuid or setgid bit: in a writable idmapped mount a file the agent creates belongs to
/// the directory's host owner (possibly root), so a setuid bit there would plant a
/// privileged program on the host.
#[cfg(target_arch = "x86_64")]
const MODE_SETTERS: &[(&str, i64, u8)] = &[
    ("fchmod", libc::SYS_fchmod, 1),
    ("fchmodat", libc::SYS_fchmodat, 2),
    ("fchmodat2", libc::SYS_fchmodat2, 2),
    ("openat", libc::SYS_openat, 3),
    ("mknodat", libc::SYS_mknodat, 2),
    ("open", libc::SYS_open, 2),
    ("creat", libc::SYS_creat, 1),
    ("chmod", libc::SYS_chmod, 1),
    ("mknod", libc::SYS_mknod, 1),
];
#[cfg(not(target_arch = "x86_64"))]
const MODE_SETTERS: &[(&str, i64, u8)] = &[
    ("fchmod", libc::SYS_fchmod, 1),
    ("fchmodat", libc::SYS_fchmodat, 2),
    ("fchmodat2", libc::SYS_fchmodat2, 2),
    ("openat", libc::SYS_openat, 3),
    ("mknodat", libc::SYS_mknodat, 2),
];
/// S_ISUID | S_ISGID.
const SETID_BITS: u64 = 0o6000;

/// Namespace flags that `clone` may not carry inside the sandbox.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// An ioctl request number as the filter compares it (the C library's own type for it
/// differs: `unsigned long` in glibc, `int` in musl).
// The same type under glibc, a widening one under musl.
#[allow(clippy::unnecessary_cast)]
const fn request(r: libc::Ioctl) -> u64 {
    r as u64
}

/// Terminal ioctls that push input into a terminal, take one over or change how it works
/// for everyone using it (classic sandbox escapes): injecting input (`TIOCSTI`,
/// `TIOCLINUX`), changing its line discipline (`TIOCSETD`), making it a controlling
/// terminal (`TIOCSCTTY`) and redirecting the console to it (`TIOCCONS`). The run's own
/// pty (an interactive run) is made the agent's controlling terminal before the filter.
const DENIED_IOCTLS: &[u64] = &[
    request(libc::TIOCSTI),
    request(libc::TIOCLINUX),
    request(libc::TIOCSETD),
    request(libc::TIOCSCTTY),
    request(libc::TIOCCONS),
];

/// Socket types allowed for AF_INET/AF_INET6 (no SOCK_RAW, no SOCK_PACKET).
/// IPv4/IPv6 socket types and the protocols each may name (0 = the type's default). Other
/// protocols (SCTP, MPTCP, UDP-Lite, L2TP, …) are kernel attack surface an agent does not
/// need, and some would autoload modules.
const INET_TYPES: &[(i32, &[i32])] = &[
    (libc::SOCK_STREAM, &[0, libc::IPPROTO_TCP]),
    (
        libc::SOCK_DGRAM,
        &[
            0,
            libc::IPPROTO_UDP,
            libc::IPPROTO_ICMP,
            libc::IPPROTO_ICMPV6,
        ],
    ),
];
/// `prctl` options that are refused: installing seccomp filters (see `SECCOMP_OPS`).
const PR_SET_SECCOMP: u64 = 22;
/// `seccomp(2)` operations the agent may use: only the queries. Installing its own filters
/// would let it answer its own blocked calls with an errno before spawn sees (and counts)
/// them; an agent has no business sandboxing itself further.
const SECCOMP_OPS: &[u64] = &[2, 3]; // SECCOMP_GET_ACTION_AVAIL, SECCOMP_GET_NOTIF_SIZES
/// Mask of the type argument of socket(2) without SOCK_NONBLOCK/SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u64 = 0xf;
/// personality(2) values programs legitimately use (query, PER_LINUX, ADDR_NO_RANDOMIZE
/// variants used by debuggers and some runtimes); everything else is denied.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x0004_0000, 0x0004_0008, 0xffff_ffff];

fn cond(arg: u8, wide: bool, op: Op, value: u64) -> Cond {
    Cond {
        arg,
        wide,
        op,
        value,
    }
}

fn allow_if(any_of: Vec<Vec<Cond>>) -> Entry {
    Entry {
        any_of,
        action: Action::Allow,
    }
}

/// Alternatives: the first argument (32 bits) equals one of `values`.
fn first_arg_one_of(values: &[u64]) -> Vec<Vec<Cond>> {
    values
        .iter()
        .map(|v| vec![cond(0, false, Op::Eq, *v)])
        .collect()
}

pub(crate) fn nr(n: i64) -> u32 {
    // Syscall numbers are small non-negative integers on every supported architecture.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The sandbox's policy as data: syscall number → entry. Anything without an entry, and
/// any conditional entry whose conditions fail, is handed to spawn (denied with EPERM).
pub fn policy() -> Filter {
    let mut entries: BTreeMap<u32, Entry> = BTreeMap::new();
    for (_, n) in ALLOWED.iter().chain(ALLOWED_ARCH) {
        entries.insert(nr(*n), allow_if(vec![]));
    }
    // clone: only without namespace flags.
    entries.insert(
        nr(libc::SYS_clone),
        allow_if(vec![vec![cond(0, true, Op::MaskedEq(CLONE_NS_FLAGS), 0)]]),
    );
    // clone3 and openat2 pass their flags in memory, out of BPF's reach: ENOSYS makes libc
    // fall back to clone and openat, which are checked above and below.
    for n in [libc::SYS_clone3, libc::SYS_openat2] {
        entries.insert(
            nr(n),
            Entry {
                any_of: vec![],
                action: Action::Errno(libc::ENOSYS as u16),
            },
        );
    }
    // ioctl: anything but the terminal-injection requests. The request is an unsigned int.
    entries.insert(
        nr(libc::SYS_ioctl),
        allow_if(vec![DENIED_IOCTLS
            .iter()
            .map(|req| cond(1, false, Op::Ne, *req))
            .collect()]),
    );
    // socket: unix sockets, IPv4/IPv6 stream and datagram, and routing netlink (used by
    // getaddrinfo). Raw and packet sockets are denied.
    let mut socket = vec![vec![cond(0, false, Op::Eq, libc::AF_UNIX as u64)]];
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (ty, protocols) in INET_TYPES {
            for protocol in *protocols {
                socket.push(vec![
                    cond(0, false, Op::Eq, family as u64),
                    cond(1, false, Op::MaskedEq(SOCK_TYPE_MASK), *ty as u64),
                    cond(2, false, Op::Eq, *protocol as u64),
                ]);
            }
        }
    }
    socket.push(vec![
        cond(0, false, Op::Eq, libc::AF_NETLINK as u64),
        cond(2, false, Op::Eq, libc::NETLINK_ROUTE as u64),
    ]);
    entries.insert(nr(libc::SYS_socket), allow_if(socket));
    // socketpair creates two sockets of any family the kernel has before it can refuse the
    // pair: only unix ones.
    entries.insert(
        nr(libc::SYS_socketpair),
        allow_if(vec![vec![cond(0, false, Op::Eq, libc::AF_UNIX as u64)]]),
    );
    entries.insert(
        nr(libc::SYS_prctl),
        allow_if(vec![vec![cond(0, false, Op::Ne, PR_SET_SECCOMP)]]),
    );
    entries.insert(
        nr(libc::SYS_seccomp),
        allow_if(first_arg_one_of(SECCOMP_OPS)),
    );
    entries.insert(
        nr(libc::SYS_personality),
        allow_if(first_arg_one_of(PERSONALITIES)),
    );
    for (_, n, arg) in MODE_SETTERS {
        entries.insert(
            nr(*n),
            allow_if(vec![vec![cond(*arg, false, Op::MaskedEq(SETID_BITS), 0)]]),
        );
    }
    // mknod/mknodat: regular files, FIFOs and sockets only (never a character or block
    // device, which no kernel should let the agent make, gVisor's included), and without
    // setuid/setgid bits.
    for (name, n, arg) in MODE_SETTERS {
        if name.starts_with("mknod") {
            let kinds = [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK];
            let mask = u64::from(libc::S_IFMT) | SETID_BITS;
            entries.insert(
                nr(*n),
                allow_if(
                    kinds
                        .iter()
                        .map(|k| vec![cond(*arg, false, Op::MaskedEq(mask), u64::from(*k))])
                        .collect(),
                ),
            );
        }
    }
    Filter {
        arch: AUDIT_ARCH,
        entries,
        default: Action::Notify,
    }
}

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
