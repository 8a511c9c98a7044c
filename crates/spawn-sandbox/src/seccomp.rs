//! The sandbox's seccomp policy: a default-deny allowlist, built as data ([`policy`]) and
//! compiled by [`crate::bpf`] into a binary search over syscall numbers.
//!
//! Blocked calls are not killed: they are handed to spawn through a seccomp *user
//! notification* listener, which answers `EPERM` and counts them (and reports the first of
//! each kind to the audit log). `clone3` and `openat2` get `ENOSYS` so that libc falls back
//! to `clone` and `openat`, whose flags and modes the filter can inspect (the newer calls
//! pass them in memory, out of BPF's reach).
//!
//! Toolchain note: a new libc or language runtime can start using syscalls that are not in
//! this list (as glibc did with `clone3`, `rseq` and `faccessat2`). Such a call is then
//! denied with `EPERM` and shows up in the run's blocked-syscall count; add it here after
//! checking it cannot be used to escape.
// Kernel ABI values (syscall numbers, flags, fds, BPF words) are converted bit for bit
// between C integer types here; the casts are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod policy;

pub use policy::{policy, syscall_name};

use crate::error::SandboxError;

/// The compiled program, ready to install with a listener.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The default-deny allowlist; its denials become user notifications, `clone3` and
    /// `openat2` fail with `ENOSYS`.
    pub main: Vec<libc::sock_filter>,
}

/// The sandbox's filter, compiled at build time from [`policy`] (see `build.rs`).
pub fn compile() -> Result<Compiled, SandboxError> {
    const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp.bpf"));
    let main = PROGRAM
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect::<Vec<_>>();
    if main.is_empty() || !PROGRAM.len().is_multiple_of(8) {
        return Err(SandboxError::Seccomp(
            "the built-in seccomp program is malformed".into(),
        ));
    }
    Ok(Compiled { main })
}

impl Compiled {
    /// The same program for where there is no listener (gVisor's kernel has no user
    /// notifications; bwrap in the benchmark takes a bare filter): every decision is
    /// unchanged except that blocked calls fail with `EPERM` directly instead of going to
    /// a listener, so they are denied but not counted.
    #[must_use]
    pub fn deny_only(&self) -> Vec<libc::sock_filter> {
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        self.main
            .iter()
            .map(|i| {
                if i.code == RET_K && i.k == crate::bpf::RET_USER_NOTIF {
                    libc::sock_filter {
                        k: crate::bpf::RET_ERRNO | libc::EPERM as u32,
                        ..*i
                    }
                } else {
                    *i
                }
            })
            .collect()
    }
}

/// `program` (the sandbox's filter) with a compatibility rule before it, for gVisor
/// releases before 2024-10-21, whose `lgetxattr` fails with `EBADF` on any symlink served
/// by the gofer (gVisor issue 11049, fixed by its PR 11052): `ls -l` then prints an error
/// for every symlink. Here `lgetxattr` answers `ENODATA` (no such attribute), which is
/// what Linux answers for an unprivileged caller on a symlink; the price is that extended
/// attributes read without following symlinks look absent on regular files too. Every
/// other call is left to `program`. One program (see [`crate::bpf::chain`]), where there
/// were two filters: the sandbox's filter allows `lgetxattr`, so it answers the same.
pub fn with_gvisor_xattr_compat(
    program: &[libc::sock_filter],
) -> Result<Vec<libc::sock_filter>, SandboxError> {
    crate::bpf::chain(&gvisor_xattr_compat()?, program)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// The compatibility rule alone: `lgetxattr` fails `ENODATA`, everything else is allowed.
fn gvisor_xattr_compat() -> Result<Vec<libc::sock_filter>, SandboxError> {
    use crate::bpf::{Action, Entry, Filter};
    let entries = [(
        policy::nr(libc::SYS_lgetxattr),
        Entry {
            any_of: Vec::new(),
            action: Action::Errno(libc::ENODATA as u16),
        },
    )]
    .into_iter()
    .collect();
    Filter {
        arch: policy::AUDIT_ARCH,
        entries,
        default: Action::Allow,
    }
    .compile()
    .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::policy::AUDIT_ARCH;
    use super::*;
    use crate::bpf::{run, Action, Op, RET_ALLOW, RET_ERRNO, RET_USER_NOTIF};
    use std::collections::BTreeMap;

    fn decide(nr: i64, args: [u64; 6]) -> u32 {
        let p = compile().unwrap().main;
        run(&p, AUDIT_ARCH, u32::try_from(nr).unwrap(), args).unwrap()
    }

    #[test]
    fn dangerous_calls_are_denied() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_ptrace,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_keyctl,
            libc::SYS_io_uring_setup,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_process_vm_readv,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_pidfd_getfd,
            libc::SYS_fsopen,
            libc::SYS_move_mount,
        ] {
            assert_eq!(
                decide(nr, [0; 6]),
                RET_USER_NOTIF,
                "{} must be denied",
                syscall_name(nr)
            );
        }
        assert_eq!(
            decide(libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            decide(libc::SYS_openat2, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn deny_only_answers_eperm_where_the_main_program_notifies_and_is_otherwise_equal() {
        let c = compile().unwrap();
        let deny = c.deny_only();
        assert_eq!(deny.len(), c.main.len());
        let flags = [
            0,
            (libc::CLONE_VM | libc::CLONE_THREAD) as u64,
            libc::CLONE_NEWUSER as u64,
            libc::TIOCSTI,
            libc::AF_PACKET as u64,
            u64::MAX,
        ];
        let mut notified = 0;
        for nr in 0..460u32 {
            for a0 in flags {
                for a1 in flags {
                    let args = [a0, a1, 3, 0, 0, 0];
                    let main = run(&c.main, AUDIT_ARCH, nr, args).unwrap();
                    let got = run(&deny, AUDIT_ARCH, nr, args).unwrap();
                    if main == RET_USER_NOTIF {
                        notified += 1;
                        assert_eq!(got, RET_ERRNO | libc::EPERM as u32, "syscall {nr}");
                    } else {
                        assert_eq!(got, main, "syscall {nr} {args:?}");
                    }
                }
            }
        }
        assert!(notified > 1000, "only {notified} denials exercised");
        assert!(!deny.iter().any(|i| i.k == RET_USER_NOTIF));
    }

    #[test]
    fn conditional_calls() {
        let clone_flags = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u64;
        assert_eq!(
            decide(libc::SYS_clone, [clone_flags, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
        ] {
            assert_eq!(
                decide(libc::SYS_clone, [clone_flags | ns as u64, 0, 0, 0, 0, 0]),
                RET_USER_NOTIF
            );
        }
        let sock = |f: i32, t: i32, p: i32| {
            decide(libc::SYS_socket, [f as u64, t as u64, p as u64, 0, 0, 0])
        };
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
            RET_ALLOW
        );
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM, 0), RET_ALLOW);
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0), RET_ALLOW);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_RAW, 1), RET_USER_NOTIF);
        assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW, 0), RET_USER_NOTIF);
        assert_eq!(
            sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            RET_ALLOW
        );
        assert_eq!(
            sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(libc::SYS_ioctl, [1, libc::TIOCSTI, 0, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(libc::SYS_ioctl, [1, libc::TCGETS, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(libc::SYS_fchmodat, [0, 0, 0o755, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(libc::SYS_fchmodat, [0, 0, 0o4755, 0, 0, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            decide(libc::SYS_openat, [0, 0, 0x41, 0o644, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            decide(libc::SYS_openat, [0, 0, 0x41, 0o2755, 0, 0]),
            RET_USER_NOTIF
        );
    }

    /// Differential check against seccompiler, a maintained compiler of the same rules: for
    /// every syscall number and argument values around each condition's operand, both
    /// programs must agree on allow versus not-allow.
    #[test]
    fn agrees_with_seccompiler() {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule,
        };
        let policy = policy();
        let mut rules = BTreeMap::new();
        let mut probes: Vec<u64> = vec![0, 1, u64::MAX, 0xffff_ffff, 1 << 32];
        for (n, e) in &policy.entries {
            if e.action != Action::Allow {
                continue;
            }
            let alts = e
                .any_of
                .iter()
                .map(|alt| {
                    let conds = alt
                        .iter()
                        .map(|c| {
                            probes.extend([
                                c.value,
                                c.value ^ 1,
                                c.value | 0x100,
                                c.value | (1 << 33),
                            ]);
                            if let Op::MaskedEq(m) = c.op {
                                probes.extend([m, c.value | m, !m]);
                            }
                            let len = if c.wide {
                                SeccompCmpArgLen::Qword
                            } else {
                                SeccompCmpArgLen::Dword
                            };
                            let op = match c.op {
                                Op::Eq => SeccompCmpOp::Eq,
                                Op::Ne => SeccompCmpOp::Ne,
                                Op::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                            };
                            SeccompCondition::new(c.arg, len, op, c.value).unwrap()
                        })
                        .collect();
                    SeccompRule::new(conds).unwrap()
                })
                .collect();
            rules.insert(i64::from(*n), alts);
        }
        let oracle: seccompiler::BpfProgram = SeccompFilter::new(
            rules,
            SeccompAction::Errno(1),
            SeccompAction::Allow,
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap();
        let oracle: Vec<libc::sock_filter> = oracle
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let ours = compile().unwrap().main;
        probes.sort_unstable();
        probes.dedup();
        for n in 0..480u32 {
            for (i, p) in probes.iter().enumerate() {
                let q = probes[(i * 7 + 3) % probes.len()];
                let args = [*p, *p, *p, q, *p, q];
                let a = run(&ours, AUDIT_ARCH, n, args).unwrap() == RET_ALLOW;
                let b = run(&oracle, AUDIT_ARCH, n, args).unwrap() == RET_ALLOW;
                assert_eq!(
                    a,
                    b,
                    "syscall {} ({}) args {args:x?}",
                    n,
                    syscall_name(i64::from(n))
                );
            }
        }
    }

    #[test]
    fn built_in_program_is_the_policy_compiled() {
        let built = compile().unwrap().main;
        let now = policy().compile().unwrap();
        assert_eq!(built.len(), now.len());
        for (a, b) in built.iter().zip(&now) {
            assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
        }
    }

    #[test]
    fn program_is_compact() {
        // A binary search keeps the program small and every lookup ~log2(N) deep.
        let p = compile().unwrap().main;
        assert!(p.len() < 600, "{} instructions", p.len());
        eprintln!("seccomp program: {} instructions", p.len());
    }

    /// What the kernel answers with `older` installed first and `newer` after it: the
    /// action of lower value as a signed number (kill < trap < errno < notify < allow)
    /// wins, and of two equal actions the newer filter's (its data, e.g. the errno).
    fn stacked(older: u32, newer: u32) -> u32 {
        const ACTION: u32 = 0xffff_0000;
        let rank = |r: u32| (r & ACTION) as i32;
        if rank(older) < rank(newer) {
            older
        } else {
            newer
        }
    }

    #[test]
    fn the_xattr_compat_program_answers_as_the_two_filters_did() {
        let main = compile().unwrap();
        let x86 = u32::try_from(libc::SYS_lgetxattr).unwrap();
        let compat = gvisor_xattr_compat().unwrap();
        // Every syscall number of this ABI and past it, the x32 ABI's (bit 30), numbers
        // no table has, a foreign architecture; with arguments that the filter's argument
        // rules (clone flags, socket families, ioctl requests, ...) tell apart.
        let numbers = (0..=600u32)
            .chain((0..=600).map(|n| n | 0x4000_0000))
            .chain([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, u32::MAX]);
        let args_table: [[u64; 6]; 5] = [
            [0; 6],
            [1, 2, 3, 4, 5, 6],
            [u64::MAX; 6],
            [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0],
            [0, libc::CLONE_NEWUSER as u64, 0, 0, 0, 0],
        ];
        for program in [main.main.clone(), main.deny_only()] {
            let chained = with_gvisor_xattr_compat(&program).unwrap();
            assert_eq!(chained.len(), compat.len() + program.len());
            for arch in [AUDIT_ARCH, 0x4000_0003] {
                for nr in numbers.clone() {
                    for args in args_table {
                        let one = run(&chained, arch, nr, args).unwrap();
                        let two = stacked(
                            run(&compat, arch, nr, args).unwrap(),
                            run(&program, arch, nr, args).unwrap(),
                        );
                        assert_eq!(one, two, "arch {arch:#x} syscall {nr} args {args:x?}");
                    }
                }
            }
            // What it is for: lgetxattr fails ENODATA, whatever its arguments.
            for args in args_table {
                let answer = run(&chained, AUDIT_ARCH, x86, args).unwrap();
                assert_eq!(answer, RET_ERRNO | libc::ENODATA as u32);
            }
            // And the rest is the sandbox's filter: mount is still refused, read allowed.
            let mount = u32::try_from(libc::SYS_mount).unwrap();
            let read = u32::try_from(libc::SYS_read).unwrap();
            for (nr, expected) in [
                (mount, run(&program, AUDIT_ARCH, mount, [0; 6])),
                (read, Some(RET_ALLOW)),
            ] {
                assert_eq!(run(&chained, AUDIT_ARCH, nr, [0; 6]), expected);
            }
        }
    }

    #[test]
    fn chaining_refuses_a_program_past_the_kernels_limit() {
        let long = vec![
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: RET_ALLOW
            };
            crate::bpf::MAX_INSNS
        ];
        assert!(crate::bpf::chain(&gvisor_xattr_compat().unwrap(), &long).is_err());
        assert!(crate::bpf::chain(&long[..10], &long[..20]).is_ok());
    }

    #[test]
    fn names_syscalls() {
        assert_eq!(syscall_name(libc::SYS_mount), "mount");
        assert_eq!(syscall_name(libc::SYS_read), "read");
        assert_eq!(syscall_name(99_999), "syscall_99999");
    }
}
