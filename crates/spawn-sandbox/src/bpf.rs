//! A small classic-BPF code generator for seccomp filters.
//!
//! Why not only `seccompiler`: it emits a linear chain (the kernel walks every check of
//! every earlier syscall, and precomputing its per-syscall action cache costs ~1–2 ms per
//! sandbox for our ~300-entry allowlist), has one match and one mismatch action per filter,
//! and no user-notification action. This generator emits a binary search over the sorted
//! syscall numbers (≈9 comparisons deep), per-syscall actions and `SECCOMP_RET_USER_NOTIF`.
//! `seccompiler` stays in the test suite as an oracle: the two compilers must agree on
//! every decision (see `tests`).
//!
//! The program only uses: `LD W ABS`, `ALU AND K`, `JEQ K`, `JGE K`, `JGT K`, `JA`, `RET K`.
//! Conditional jumps never skip more than a few instructions; long jumps use `JA`, whose
//! 32-bit offset has no practical limit.
// Kernel ABI values (syscall numbers, flags, fds, BPF words) are converted bit for bit
// between C integer types here; the casts are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::collections::BTreeMap;

#[cfg(not(target_endian = "little"))]
compile_error!("the seccomp generator assumes little-endian seccomp_data argument words");

/// Kill the whole process (used for a foreign architecture).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Fail the call with an errno (low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// Ask the supervisor (user notification).
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// Run the call.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// The kernel's limit on filter length.
pub const MAX_INSNS: usize = 4096;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// What the filter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the call run.
    Allow,
    /// Fail it with this errno, silently.
    Errno(u16),
    /// Hand it to the supervisor.
    Notify,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Errno(e) => RET_ERRNO | u32::from(e),
            Action::Notify => RET_USER_NOTIF,
        }
    }
}

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg & mask == value`
    MaskedEq(u64),
}

/// One condition on an argument. `wide`: compare all 64 bits, else only the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0..=5.
    pub arg: u8,
    /// 64-bit comparison.
    pub wide: bool,
    /// The comparison.
    pub op: Op,
    /// The operand.
    pub value: u64,
}

/// What happens for one syscall: if `any_of` is empty, or any of its condition lists holds
/// entirely, `action`; otherwise the filter's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Alternatives (OR) of conjunctions (AND).
    pub any_of: Vec<Vec<Cond>>,
    /// The action when matched.
    pub action: Action,
}

/// A whole filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `AUDIT_ARCH_*` value the filter accepts; any other architecture is killed.
    pub arch: u32,
    /// Per syscall number.
    pub entries: BTreeMap<u32, Entry>,
    /// For syscalls without an entry, or whose conditions do not hold.
    pub default: Action,
}

/// Compilation failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// An argument index above 5.
    #[error("syscall {nr}: argument index {arg} out of range")]
    BadArg {
        /// Syscall.
        nr: u32,
        /// Index.
        arg: u8,
    },
    /// A bug in the generator.
    #[error("seccomp generator: {0}")]
    Internal(&'static str),
    /// The program would exceed the kernel's limit.
    #[error("filter of {0} instructions exceeds the kernel limit of 4096")]
    TooLong(usize),
}

#[derive(Debug, Clone, Copy)]
enum Insn {
    Raw(libc::sock_filter),
    Ja(usize),
    Label(usize),
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn::Raw(libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    })
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn::Raw(libc::sock_filter { code, jt, jf, k })
}

struct Gen {
    out: Vec<Insn>,
    labels: usize,
}

impl Gen {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn push(&mut self, i: Insn) {
        self.out.push(i);
    }

    /// Binary search over `items` (disjoint `lo..=hi` ranges sorted by `lo`) with the
    /// syscall number in A. Leaves check both bounds of each range, so a leaf is correct
    /// whatever path led to it.
    fn tree(&mut self, items: &[(u32, u32, Dispatch)], default: Action) {
        if items.len() <= 3 {
            for (lo, hi, d) in items {
                if lo == hi {
                    self.push(jump(JMP_JEQ_K, *lo, 0, 1));
                } else {
                    self.push(jump(JMP_JGE_K, *lo, 0, 2));
                    self.push(jump(JMP_JGT_K, *hi, 1, 0));
                }
                match d {
                    Dispatch::Ret(a) => self.push(stmt(RET_K, a.ret())),
                    Dispatch::Block(l) => self.push(Insn::Ja(*l)),
                }
            }
            self.push(stmt(RET_K, default.ret()));
            return;
        }
        let mid = items.len() / 2;
        let right = self.label();
        self.push(jump(JMP_JGE_K, items[mid].0, 0, 1));
        self.push(Insn::Ja(right));
        self.tree(&items[..mid], default);
        self.push(Insn::Label(right));
        self.tree(&items[mid..], default);
    }

    /// Checks one 32-bit word of an argument; on mismatch jumps to `fail`.
    fn word_eq(&mut self, offset: u32, mask: Option<u32>, value: u32, fail: usize) {
        self.push(stmt(LD_W_ABS, offset));
        if let Some(m) = mask {
            self.push(stmt(ALU_AND_K, m));
        }
        self.push(jump(JMP_JEQ_K, value, 1, 0));
        self.push(Insn::Ja(fail));
    }

    fn cond(&mut self, c: &Cond, fail: usize) {
        let low = OFF_ARGS + 8 * u32::from(c.arg);
        let high = low + 4;
        let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
        match c.op {
            Op::Eq => {
                self.word_eq(low, None, vlo, fail);
                if c.wide {
                    self.word_eq(high, None, vhi, fail);
                }
            }
            Op::MaskedEq(mask) => {
                let (mlo, mhi) = (mask as u32, (mask >> 32) as u32);
                self.word_eq(low, Some(mlo), vlo & mlo, fail);
                if c.wide {
                    self.word_eq(high, Some(mhi), vhi & mhi, fail);
                }
            }
            Op::Ne if !c.wide => {
                self.push(stmt(LD_W_ABS, low));
                self.push(jump(JMP_JEQ_K, vlo, 0, 1));
                self.push(Insn::Ja(fail));
            }
            Op::Ne => {
                // Holds unless both words are equal.
                self.push(stmt(LD_W_ABS, low));
                self.push(jump(JMP_JEQ_K, vlo, 0, 3));
                self.push(stmt(LD_W_ABS, high));
                self.push(jump(JMP_JEQ_K, vhi, 0, 1));
                self.push(Insn::Ja(fail));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Dispatch {
    Ret(Action),
    Block(usize),
}

impl Filter {
    /// Compiles the filter to a program ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
    pub fn compile(&self) -> Result<Vec<libc::sock_filter>, BpfError> {
        let mut g = Gen {
            out: Vec::new(),
            labels: 0,
        };
        g.push(stmt(LD_W_ABS, OFF_ARCH));
        g.push(jump(JMP_JEQ_K, self.arch, 1, 0));
        g.push(stmt(RET_K, RET_KILL_PROCESS));
        g.push(stmt(LD_W_ABS, OFF_NR));

        let mut items: Vec<(u32, u32, Dispatch)> = Vec::with_capacity(self.entries.len());
        let mut blocks = Vec::new();
        for (nr, e) in &self.entries {
            for alt in &e.any_of {
                if let Some(c) = alt.iter().find(|c| c.arg > 5) {
                    return Err(BpfError::BadArg {
                        nr: *nr,
                        arg: c.arg,
                    });
                }
            }
            if e.any_of.is_empty() {
                // Merge runs of consecutive numbers with the same unconditional action.
                match items.last_mut() {
                    Some((_, hi, Dispatch::Ret(a)))
                        if *a == e.action && hi.checked_add(1) == Some(*nr) =>
                    {
                        *hi = *nr;
                    }
                    _ => items.push((*nr, *nr, Dispatch::Ret(e.action))),
                }
            } else {
                let l = g.label();
                items.push((*nr, *nr, Dispatch::Block(l)));
                blocks.push((l, e));
            }
        }
        g.tree(&items, self.default);

        for (label, e) in blocks {
            g.push(Insn::Label(label));
            for alt in &e.any_of {
                let next = g.label();
                for c in alt {
                    g.cond(c, next);
                }
                g.push(stmt(RET_K, e.action.ret()));
                g.push(Insn::Label(next));
            }
            g.push(stmt(RET_K, self.default.ret()));
        }
        resolve(&g.out)
    }
}

fn resolve(code: &[Insn]) -> Result<Vec<libc::sock_filter>, BpfError> {
    let mut pos = BTreeMap::new();
    let mut n = 0usize;
    for i in code {
        match i {
            Insn::Label(l) => {
                pos.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    if n > MAX_INSNS {
        return Err(BpfError::TooLong(n));
    }
    let mut out = Vec::with_capacity(n);
    for i in code {
        match i {
            Insn::Raw(f) => out.push(*f),
            Insn::Ja(l) => {
                // Labels are only ever placed after the jumps that target them; anything
                // else is a bug in this generator, never a silent fall-through.
                let target = pos
                    .get(l)
                    .copied()
                    .ok_or(BpfError::Internal("jump to a missing label"))?;
                let k = target
                    .checked_sub(out.len() + 1)
                    .and_then(|k| u32::try_from(k).ok())
                    .ok_or(BpfError::Internal("backward or oversized jump"))?;
                out.push(libc::sock_filter {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k,
                });
            }
            Insn::Label(_) => {}
        }
    }
    Ok(out)
}

/// One program of two: `first`'s answer, except where it answers "allow": there `then`
/// decides. Each of `first`'s `ret ALLOW` becomes a jump to `then`'s first instruction
/// (both programs load what they compare, so `then` starts as it would alone). Installing
/// one program instead of two saves a filter installation (gVisor compiles each one, which
/// takes milliseconds) and an evaluation per call. It answers as the two installed one
/// after the other would (`first` first) wherever `then` allows what `first` does not:
/// the caller checks that (see `seccomp::tests`).
pub fn chain(
    first: &[libc::sock_filter],
    then: &[libc::sock_filter],
) -> Result<Vec<libc::sock_filter>, BpfError> {
    let total = first.len() + then.len();
    if total > MAX_INSNS {
        return Err(BpfError::TooLong(total));
    }
    let mut out = Vec::with_capacity(total);
    for (i, insn) in first.iter().enumerate() {
        if insn.code == RET_K && insn.k == RET_ALLOW {
            // To the instruction after `first`'s last: `then`'s first.
            let skip = u32::try_from(first.len() - i - 1)
                .map_err(|_| BpfError::Internal("jump too long"))?;
            out.push(libc::sock_filter {
                code: JMP_JA,
                jt: 0,
                jf: 0,
                k: skip,
            });
        } else {
            out.push(*insn);
        }
    }
    out.extend_from_slice(then);
    Ok(out)
}

/// Runs a program over a `seccomp_data` (for tests and self-checks): returns the RET value.
pub fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut a: u32 = 0;
    let mut pc = 0usize;
    for _ in 0..=program.len() {
        let f = program.get(pc)?;
        pc += 1;
        match f.code {
            LD_W_ABS => {
                let o = f.k as usize;
                a = u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?);
            }
            ALU_AND_K => a &= f.k,
            JMP_JA => pc += f.k as usize,
            JMP_JEQ_K => pc += usize::from(if a == f.k { f.jt } else { f.jf }),
            JMP_JGE_K => pc += usize::from(if a >= f.k { f.jt } else { f.jf }),
            JMP_JGT_K => pc += usize::from(if a > f.k { f.jt } else { f.jf }),
            RET_K => return Some(f.k),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    fn filter(entries: Vec<(u32, Entry)>) -> Filter {
        Filter {
            arch: ARCH,
            entries: entries.into_iter().collect(),
            default: Action::Notify,
        }
    }

    #[test]
    fn foreign_arch_is_killed() {
        let p = filter(vec![(
            1,
            Entry {
                any_of: vec![],
                action: Action::Allow,
            },
        )])
        .compile()
        .unwrap();
        assert_eq!(run(&p, 0x4000_0003, 1, [0; 6]), Some(RET_KILL_PROCESS));
        assert_eq!(run(&p, ARCH, 1, [0; 6]), Some(RET_ALLOW));
    }

    #[test]
    fn every_listed_number_found_and_others_default() {
        let nrs: Vec<u32> = (0..400).filter(|n| n % 3 != 0).collect();
        let p = filter(
            nrs.iter()
                .map(|n| {
                    (
                        *n,
                        Entry {
                            any_of: vec![],
                            action: Action::Allow,
                        },
                    )
                })
                .collect(),
        )
        .compile()
        .unwrap();
        for n in 0..1000u32 {
            let want = if nrs.contains(&n) {
                RET_ALLOW
            } else {
                RET_USER_NOTIF
            };
            assert_eq!(run(&p, ARCH, n, [0; 6]), Some(want), "nr {n}");
        }
        assert_eq!(run(&p, ARCH, 0x4000_0001, [0; 6]), Some(RET_USER_NOTIF));
        assert_eq!(run(&p, ARCH, u32::MAX, [0; 6]), Some(RET_USER_NOTIF));
    }

    #[test]
    fn conditions_and_actions() {
        let c = |arg, wide, op, value| Cond {
            arg,
            wide,
            op,
            value,
        };
        let p = filter(vec![
            (
                10,
                Entry {
                    any_of: vec![vec![c(0, true, Op::MaskedEq(0xff00), 0)]],
                    action: Action::Allow,
                },
            ),
            (
                11,
                Entry {
                    any_of: vec![vec![c(1, false, Op::Ne, 5), c(1, false, Op::Ne, 6)]],
                    action: Action::Allow,
                },
            ),
            (
                12,
                Entry {
                    any_of: vec![
                        vec![c(0, false, Op::Eq, 1)],
                        vec![c(0, false, Op::Eq, 2), c(2, true, Op::Eq, 1 << 40)],
                    ],
                    action: Action::Allow,
                },
            ),
            (
                13,
                Entry {
                    any_of: vec![],
                    action: Action::Errno(38),
                },
            ),
            (
                14,
                Entry {
                    any_of: vec![vec![c(3, true, Op::Ne, u64::MAX)]],
                    action: Action::Allow,
                },
            ),
        ])
        .compile()
        .unwrap();
        let r = |nr, args| run(&p, ARCH, nr, args);
        assert_eq!(r(10, [0x00ff, 0, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(r(10, [0x0100, 0, 0, 0, 0, 0]), Some(RET_USER_NOTIF));
        assert_eq!(r(11, [0, 4, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(r(11, [0, 5, 0, 0, 0, 0]), Some(RET_USER_NOTIF));
        assert_eq!(
            r(11, [0, 6 | (1 << 32), 0, 0, 0, 0]),
            Some(RET_USER_NOTIF),
            "dword ignores high bits"
        );
        assert_eq!(r(12, [1, 0, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(r(12, [2, 0, 1 << 40, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(r(12, [2, 0, 1 << 41, 0, 0, 0]), Some(RET_USER_NOTIF));
        assert_eq!(r(12, [3, 0, 1 << 40, 0, 0, 0]), Some(RET_USER_NOTIF));
        assert_eq!(r(13, [0; 6]), Some(RET_ERRNO | 38));
        assert_eq!(r(14, [0, 0, 0, u64::MAX, 0, 0]), Some(RET_USER_NOTIF));
        assert_eq!(r(14, [0, 0, 0, u64::MAX - 1, 0, 0]), Some(RET_ALLOW));
        assert_eq!(r(14, [0, 0, 0, 0xffff_ffff, 0, 0]), Some(RET_ALLOW));
    }

    #[test]
    fn ranges_and_neighbours() {
        let allow = |n| {
            (
                n,
                Entry {
                    any_of: vec![],
                    action: Action::Allow,
                },
            )
        };
        let p = filter(vec![
            allow(5),
            allow(6),
            allow(7),
            (
                8,
                Entry {
                    any_of: vec![],
                    action: Action::Errno(1),
                },
            ),
            allow(9),
            allow(11),
            allow(u32::MAX),
        ])
        .compile()
        .unwrap();
        let expect = [
            (4, RET_USER_NOTIF),
            (5, RET_ALLOW),
            (6, RET_ALLOW),
            (7, RET_ALLOW),
            (8, RET_ERRNO | 1),
            (9, RET_ALLOW),
            (10, RET_USER_NOTIF),
            (11, RET_ALLOW),
            (12, RET_USER_NOTIF),
            (u32::MAX - 1, RET_USER_NOTIF),
            (u32::MAX, RET_ALLOW),
        ];
        for (nr, want) in expect {
            assert_eq!(run(&p, ARCH, nr, [0; 6]), Some(want), "nr {nr}");
        }
    }

    #[test]
    fn rejects_bad_argument_index() {
        let f = filter(vec![(
            1,
            Entry {
                any_of: vec![vec![Cond {
                    arg: 6,
                    wide: false,
                    op: Op::Eq,
                    value: 0,
                }]],
                action: Action::Allow,
            },
        )]);
        assert_eq!(f.compile(), Err(BpfError::BadArg { nr: 1, arg: 6 }));
    }
}
