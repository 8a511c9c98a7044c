//! runsc's runtime monitoring: a trace session given at start (`--pod-init-config`) whose
//! `remote` sink streams trace points to a Unix socket spawn listens on.
//!
//! What runsc 0.0~20240729 does (its source, checked against the binary):
//!
//! - The pod init config is `{"trace_session": {"name": "Default", "points": [{"name",
//!   "optional_fields", "context_fields"}…], "sinks": [{"name": "remote", "config":
//!   {"endpoint": PATH}}]}}` ([`pod_init_config`]); only a session named `Default` exists.
//! - The `runsc run` (or `create`) process, host root, connects to the endpoint with a
//!   `SOCK_SEQPACKET` socket before the sandbox starts, sends a handshake (protobuf
//!   `Handshake{version}`, version 1 here), waits for the monitor's, and donates the
//!   connected socket to the Sentry. The Sentry (uid 65534 without capabilities under
//!   `--directfs=false`) never opens the path, so the socket can stay root-only (0600).
//!   One connection per sandbox, closed when the sandbox ends ([`Listener`]).
//! - Every point is one record: an 8-byte little-endian header (`u16` header size, `u16`
//!   message type, `u32` count of points dropped so far) and the protobuf ([`decode`]). The
//!   Sentry writes without blocking: when the socket is full the point is dropped and
//!   counted (no retries by default), and the count rides on every later message.
//! - `syscall/sysno/N/enter` and `/exit` (N in 0..=441) send `MESSAGE_SYSCALL_RAW` (6):
//!   `gvisor.syscall.Syscall{context_data = 1, exit = 2 {result = 1, errorno = 2},
//!   sysno = 4, arg1..arg6 = 5..10}`; enter and exit carry the arguments as the call
//!   received them, exit also the result. Named points (`syscall/socket/enter`, …, about
//!   50 calls; none for mount, unshare, ioctl or ptrace) fire besides the raw ones with
//!   messages of their own, holding decoded arguments rather than all six registers.
//!
//! And the limit that decides its use for spawn (see the parent module): points fire only
//! for calls that **passed** the task's seccomp filters. [`denied_by_filter`] re-runs
//! spawn's compiled filter over an event's number and arguments, so conditional rules
//! (socket families, ioctl requests, clone flags) are judged exactly as the filter judges
//! them; for an agent under the filter it can only ever answer `None`.
//!
//! Cost: each traced call costs the Sentry a protobuf and a non-blocking `sendmsg`. With
//! the enter points of every number spawn's filter can deny (180 of them), 100k allowed
//! `ioctl` went from 1.2 s / 0.55 s to 3.4 s / 1.7 s (wall / CPU, median of 9 on a busy
//! 2-core VM), about 11 µs of CPU per event; `python3 -c pass` about +20 ms of CPU. A
//! Python reader lost 2% of such a burst (the header's dropped count said how many).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use prost::Message as _;

use crate::bpf::RET_USER_NOTIF;
use crate::error::SandboxError;
use crate::seccomp::{policy, syscall_name};
use crate::sys;

/// The wire version spawn speaks: the header above (runsc 0.0~20240729 sends 1).
pub const WIRE_VERSION: u32 = 1;
/// The header runsc writes: header size, message type, dropped count.
pub const HEADER_SIZE: usize = 8;
/// The longest message accepted. Raw syscall messages are under 150 bytes; a longer
/// record is refused, never buffered (the socket truncates it to the buffer).
pub const MAX_MESSAGE: usize = 16 << 10;
/// `MESSAGE_SYSCALL_RAW`: the message of `syscall/sysno/N/…` points.
pub const MESSAGE_SYSCALL_RAW: u16 = 6;
/// The raw syscall points this runsc has: `syscall/sysno/0` to `syscall/sysno/441`.
pub const RAW_SYSCALL_POINTS: u32 = 442;

/// Which side of a call a point reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the Sentry runs the call: arguments only, reported at once.
    Enter,
    /// After: arguments and result; a call that blocks (a `wait4`) reports when it
    /// returns, one that does not return (a successful `execve`) never does.
    Exit,
}

/// The pod init config (`--pod-init-config`) of a session with the raw points of `sysnos`
/// (those below [`RAW_SYSCALL_POINTS`]) with the thread's ids, sent to a `remote` sink
/// at `endpoint`.
pub fn pod_init_config(endpoint: &Path, sysnos: &[u32], phase: Phase) -> serde_json::Value {
    let side = match phase {
        Phase::Enter => "enter",
        Phase::Exit => "exit",
    };
    let points: Vec<serde_json::Value> = sysnos
        .iter()
        .filter(|n| **n < RAW_SYSCALL_POINTS)
        .map(|n| {
            serde_json::json!({
                "name": format!("syscall/sysno/{n}/{side}"),
                "context_fields": ["thread_id", "group_id"],
            })
        })
        .collect();
    serde_json::json!({
        "trace_session": {
            "name": "Default",
            "points": points,
            "sinks": [{ "name": "remote", "config": { "endpoint": endpoint } }],
        }
    })
}

/// The numbers (of those runsc can trace) for which spawn's filter can deny a call
/// ([`super::may_block`]): no entry in the policy (denied whatever the arguments), or an
/// entry allowed only on conditions.
pub fn deniable_syscalls() -> Vec<u32> {
    (0..RAW_SYSCALL_POINTS)
        .filter(|n| super::may_block(*n))
        .collect()
}

/// A listening `SOCK_SEQPACKET` socket for runsc's remote sink; the path is removed when
/// it is dropped.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

/// One sandbox's stream of points.
#[derive(Debug)]
pub struct Connection {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// The wire version the Sentry announced.
    pub sentry_version: u32,
}

fn setup_err(stage: &str, e: impl Into<io::Error>) -> SandboxError {
    SandboxError::setup(format!("gVisor monitoring: {stage}"), e)
}

fn invalid(what: impl Into<String>) -> SandboxError {
    setup_err(
        "message from the Sentry",
        io::Error::new(io::ErrorKind::InvalidData, what.into()),
    )
}

impl Listener {
    /// Listens at `path` (in a directory private to spawn), mode 0600: only root (runsc)
    /// connects.
    pub fn bind(path: &Path) -> Result<Listener, SandboxError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| setup_err("socket", e))?;
        let addr = UnixAddr::new(path).map_err(|e| setup_err("socket path", e))?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(|e| setup_err("bind", e))?;
        let listener = Listener {
            fd,
            path: path.to_path_buf(),
        };
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| setup_err("chmod", e))?;
        let backlog = socket::Backlog::new(4).map_err(|e| setup_err("listen", e))?;
        socket::listen(&listener.fd, backlog).map_err(|e| setup_err("listen", e))?;
        Ok(listener)
    }

    /// The listening socket, to poll for `POLLIN` (runsc connecting).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Accepts runsc's connection (waiting at most `timeout` for it and for its handshake)
    /// and answers the handshake. Refuses a peer that is not spawn's own user.
    pub fn accept(&self, timeout: Duration) -> Result<Connection, SandboxError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(ms)).map_err(|e| setup_err("poll", e))?;
        if ready == 0 {
            return Err(setup_err(
                "accept",
                io::Error::new(io::ErrorKind::TimedOut, "runsc did not connect"),
            ));
        }
        let conn = socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
            .map(sys::own_fd)
            .map_err(|e| setup_err("accept", e))?;
        let peer = socket::getsockopt(&conn, sockopt::PeerCredentials)
            .map_err(|e| setup_err("peer credentials", e))?;
        let me = nix::unistd::geteuid().as_raw();
        if peer.uid() != me {
            return Err(setup_err(
                "accept",
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the peer runs as uid {}, not {me}", peer.uid()),
                ),
            ));
        }
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            i64::from(timeout.subsec_micros()),
        );
        socket::setsockopt(&conn, sockopt::ReceiveTimeout, &tv)
            .map_err(|e| setup_err("handshake", e))?;
        let mut c = Connection {
            fd: conn,
            buf: vec![0; MAX_MESSAGE + 1],
            sentry_version: 0,
        };
        let hello = c
            .recv_record()
            .map_err(|e| setup_err("handshake", e))?
            .ok_or_else(|| invalid("the Sentry closed before its handshake"))?;
        let theirs = Handshake::decode(hello).map_err(|e| invalid(format!("handshake: {e}")))?;
        if theirs.version < 1 {
            return Err(invalid(format!("wire version {}", theirs.version)));
        }
        c.sentry_version = theirs.version;
        let ours = Handshake {
            version: WIRE_VERSION,
        }
        .encode_to_vec();
        socket::send(c.fd.as_raw_fd(), &ours, MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| setup_err("handshake", e))?;
        nix::fcntl::fcntl(
            &c.fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| setup_err("non-blocking", e))?;
        Ok(c)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Connection {
    /// The connection, to poll for `POLLIN`.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next record: `Ok(None)` at the end of the sandbox, `WouldBlock` when none is
    /// waiting. Records longer than [`MAX_MESSAGE`] are an error (and consumed).
    pub fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        self.recv_record()
    }

    fn recv_record(&mut self) -> io::Result<Option<&[u8]>> {
        let mut iov = [io::IoSliceMut::new(&mut self.buf)];
        let msg = loop {
            match socket::recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => {}
                r => break r?,
            }
        };
        let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        if truncated || len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record longer than the monitor accepts",
            ));
        }
        if len == 0 {
            return Ok(None);
        }
        Ok(self.buf.get(..len))
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The header's message type.
    pub message_type: u16,
    /// Points the Sentry has dropped so far (cumulative, wraps at 2^32).
    pub dropped: u32,
    /// The payload, when spawn reads this type.
    pub body: Body,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A raw syscall point.
    RawSyscall(RawSyscall),
    /// Another message type (not decoded).
    Other,
}

/// A `syscall/sysno/N/…` point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSyscall {
    /// The syscall number.
    pub sysno: u64,
    /// The six argument registers.
    pub args: [u64; 6],
    /// On exit points: what the call returned.
    pub exit: Option<Exit>,
    /// The thread, in the sandbox's root PID namespace (0 when not asked for).
    pub thread_id: i32,
    /// Its thread group (0 when not asked for).
    pub thread_group_id: i32,
}

/// A call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The return value.
    pub result: i64,
    /// The errno (0 on success).
    pub errno: i64,
}

/// Decodes one record. Never panics and allocates nothing beyond what the record holds;
/// the bytes come from the Sentry, which runs the agent's kernel and must not be trusted.
pub fn decode(msg: &[u8]) -> Result<Event, SandboxError> {
    if msg.len() > MAX_MESSAGE {
        return Err(invalid(format!("{} bytes", msg.len())));
    }
    let header = msg
        .get(..HEADER_SIZE)
        .ok_or_else(|| invalid(format!("a {}-byte record", msg.len())))?;
    let word = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    let header_size = usize::from(word(0));
    let message_type = word(2);
    let dropped = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if header_size < HEADER_SIZE {
        return Err(invalid(format!("header size {header_size}")));
    }
    // A longer header (a newer runsc) is skipped: the payload follows it.
    let payload = msg.get(header_size..).ok_or_else(|| {
        invalid(format!(
            "header size {header_size} of a {}-byte record",
            msg.len()
        ))
    })?;
    let body = match message_type {
        MESSAGE_SYSCALL_RAW => {
            let s = SyscallPb::decode(payload).map_err(|e| invalid(format!("syscall: {e}")))?;
            let ctx = s.context_data.unwrap_or_default();
            Body::RawSyscall(RawSyscall {
                sysno: s.sysno,
                args: [s.arg1, s.arg2, s.arg3, s.arg4, s.arg5, s.arg6],
                exit: s.exit.map(|e| Exit {
                    result: e.result,
                    errno: e.errorno,
                }),
                thread_id: ctx.thread_id,
                thread_group_id: ctx.thread_group_id,
            })
        }
        _ => Body::Other,
    };
    Ok(Event {
        message_type,
        dropped,
        body,
    })
}

/// spawn's compiled filter and the architecture it accepts.
fn filter() -> Option<&'static (Vec<libc::sock_filter>, u32)> {
    static FILTER: OnceLock<Option<(Vec<libc::sock_filter>, u32)>> = OnceLock::new();
    FILTER
        .get_or_init(|| {
            crate::seccomp::compile()
                .ok()
                .map(|c| (c.main, policy().arch))
        })
        .as_ref()
}

/// Whether spawn's filter denies (blocks) this call, judged by running the compiled
/// program over its number and arguments; the name it is counted under when it does.
/// Calls the filter answers `ENOSYS` (`clone3`, `openat2`) are not blocked calls.
pub fn denied_by_filter(call: &RawSyscall) -> Option<String> {
    let nr = u32::try_from(call.sysno).ok()?;
    let (program, arch) = filter()?;
    (crate::bpf::run(program, *arch, nr, call.args) == Some(RET_USER_NOTIF))
        .then(|| syscall_name(i64::from(nr)))
}

// The protobuf messages of gVisor's `pkg/sentry/seccheck/points` (common.proto,
// syscall.proto), written out with only the fields spawn reads; prost skips the others.

/// `gvisor.common.Handshake`.
#[derive(Clone, PartialEq, prost::Message)]
struct Handshake {
    #[prost(uint32, tag = "1")]
    version: u32,
}

/// `gvisor.common.ContextData` (thread and thread group; the strings are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct ContextData {
    #[prost(int32, tag = "2")]
    thread_id: i32,
    #[prost(int32, tag = "4")]
    thread_group_id: i32,
}

/// `gvisor.syscall.Exit`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExitPb {
    #[prost(int64, tag = "1")]
    result: i64,
    #[prost(int64, tag = "2")]
    errorno: i64,
}

/// `gvisor.syscall.Syscall`.
#[derive(Clone, PartialEq, prost::Message)]
struct SyscallPb {
    #[prost(message, optional, tag = "1")]
    context_data: Option<ContextData>,
    #[prost(message, optional, tag = "2")]
    exit: Option<ExitPb>,
    #[prost(uint64, tag = "4")]
    sysno: u64,
    #[prost(uint64, tag = "5")]
    arg1: u64,
    #[prost(uint64, tag = "6")]
    arg2: u64,
    #[prost(uint64, tag = "7")]
    arg3: u64,
    #[prost(uint64, tag = "8")]
    arg4: u64,
    #[prost(uint64, tag = "9")]
    arg5: u64,
    #[prost(uint64, tag = "10")]
    arg6: u64,
}

#[cfg(test)]
// Kernel ABI constants and test bytes are converted bit for bit; the casts are intended.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn record(message_type: u16, dropped: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&8u16.to_le_bytes());
        m.extend_from_slice(&message_type.to_le_bytes());
        m.extend_from_slice(&dropped.to_le_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn raw(e: &Event) -> &RawSyscall {
        match &e.body {
            Body::RawSyscall(r) => r,
            Body::Other => panic!("not a raw syscall: {e:?}"),
        }
    }

    #[test]
    fn decodes_records_runsc_sent() {
        // Captured from runsc 0.0~20240729 (systrap): `mount(0, 0, 0, 0, 0)` enter with
        // thread_id and container_id, its exit (EPERM), `unshare(CLONE_NEWUSER)` exit,
        // `socket(AF_PACKET, SOCK_RAW, 0)` exit (fd 3) and the named socket point.
        let mount_enter = decode(&record(6, 0, &hex("0a0610013202743120a5015006"))).unwrap();
        assert_eq!(mount_enter.dropped, 0);
        let r = raw(&mount_enter);
        assert_eq!(
            (r.sysno, r.args, r.exit, r.thread_id),
            (165, [0, 0, 0, 0, 0, 6], None, 1)
        );
        let mount_exit = decode(&record(6, 0, &hex("0a061001320274311202100120a5015006"))).unwrap();
        assert_eq!(
            raw(&mount_exit).exit,
            Some(Exit {
                result: 0,
                errno: 1
            })
        );
        let unshare = decode(&record(
            6,
            0,
            &hex("120020900228808080800130908ac8a0bcdc1f388e88b1e3e0de1f40b0f5cee3e0de1f48b0c9c5e3e0de1f5006"),
        ))
        .unwrap();
        let r = raw(&unshare);
        assert_eq!((r.sysno, r.args[0]), (272, 0x1000_0000));
        assert_eq!(
            r.exit,
            Some(Exit {
                result: 0,
                errno: 0
            })
        );
        let socket = decode(&record(
            6,
            7,
            &hex("12020803202928113003400848cc83b1e3e0de1f5006"),
        ))
        .unwrap();
        assert_eq!(socket.dropped, 7);
        let r = raw(&socket);
        assert_eq!((r.sysno, r.args[0], r.args[1], r.args[2]), (41, 17, 3, 0));
        assert_eq!(r.exit.map(|e| e.result), Some(3));
        let named = decode(&record(12, 0, &hex("12020803182920112803"))).unwrap();
        assert_eq!((named.message_type, &named.body), (12, &Body::Other));
    }

    #[test]
    fn hostile_headers_are_refused() {
        for len in 0..HEADER_SIZE {
            assert!(decode(&vec![8; len]).is_err(), "{len}-byte record");
        }
        let payload = hex("20a501");
        for size in [0u16, 1, 7] {
            let mut m = record(6, 0, &payload);
            m[..2].copy_from_slice(&size.to_le_bytes());
            assert!(decode(&m).is_err(), "header size {size}");
        }
        for size in [12u16, 100, u16::MAX] {
            let mut m = record(6, 0, &payload);
            m[..2].copy_from_slice(&size.to_le_bytes());
            assert!(decode(&m).is_err(), "header size {size} past the end");
        }
        // A longer header that fits is skipped.
        let mut m = record(6, 0, &[0xaa, 0xbb]);
        m[..2].copy_from_slice(&10u16.to_le_bytes());
        m.extend_from_slice(&payload);
        assert_eq!(raw(&decode(&m).unwrap()).sysno, 165);
        // Too long to come from runsc.
        assert!(decode(&vec![0; MAX_MESSAGE + 1]).is_err());
        // Unknown types are reported, not decoded.
        for t in [0u16, 1, 99, u16::MAX] {
            let e = decode(&record(t, u32::MAX, &[0xff; 40])).unwrap();
            assert_eq!((e.body, e.dropped), (Body::Other, u32::MAX));
        }
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            // A varint that never ends.
            &[
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &[0x20, 0x80],
            // A length far past the end (must not be allocated).
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            // A nested message whose inner length overruns it.
            &[0x0a, 0x02, 0x12, 0x05],
            // Wrong wire type for sysno (length-delimited instead of varint).
            &[0x22, 0x01, 0x00],
            // Field number 0, group wire types.
            &[0x00, 0x01],
            &[0x0b, 0x0c],
            // A truncated fixed64 of an unknown field.
            &[0x59, 0x01, 0x02],
        ];
        for p in bad {
            assert!(decode(&record(6, 0, p)).is_err(), "{p:x?}");
        }
        // Deeply nested unknown groups/messages are bounded by prost's recursion limit.
        // Field 11, start group, 200 times.
        let deep = vec![0x5b; 200];
        assert!(decode(&record(6, 0, &deep)).is_err());
        // Random bytes: whatever comes out, nothing panics.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 7)) as u8)
                .collect();
            let _ = decode(&record(6, 0, &payload));
        }
    }

    #[test]
    fn the_filters_own_decisions_are_reproduced() {
        let call = |sysno: i64, args: [u64; 6]| RawSyscall {
            sysno: sysno as u64,
            args,
            exit: None,
            thread_id: 2,
            thread_group_id: 2,
        };
        let denied = |sysno, args| denied_by_filter(&call(sysno, args));
        assert_eq!(denied(libc::SYS_mount, [0; 6]).as_deref(), Some("mount"));
        assert_eq!(
            denied(
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]
            )
            .as_deref(),
            Some("unshare")
        );
        assert_eq!(
            denied(libc::SYS_socket, [libc::AF_PACKET as u64, 3, 0, 0, 0, 0]).as_deref(),
            Some("socket")
        );
        assert_eq!(
            denied(libc::SYS_socket, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            denied(libc::SYS_ioctl, [1, libc::TIOCSTI, 0, 0, 0, 0]).as_deref(),
            Some("ioctl")
        );
        assert_eq!(denied(libc::SYS_ioctl, [1, libc::TCGETS, 0, 0, 0, 0]), None);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD) as u64;
        assert_eq!(denied(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            denied(
                libc::SYS_clone,
                [thread | libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0]
            )
            .as_deref(),
            Some("clone")
        );
        // ENOSYS is an answer, not a block; an impossible number is nothing.
        assert_eq!(denied(libc::SYS_clone3, [0; 6]), None);
        assert_eq!(
            denied_by_filter(&RawSyscall {
                sysno: 1 << 40,
                ..call(0, [0; 6])
            }),
            None
        );
    }

    #[test]
    fn the_session_traces_every_call_the_filter_can_deny() {
        let deniable = deniable_syscalls();
        for n in [
            libc::SYS_mount,
            libc::SYS_socket,
            libc::SYS_ioctl,
            libc::SYS_clone,
            libc::SYS_openat,
        ] {
            assert!(deniable.contains(&(n as u32)), "{}", syscall_name(n));
        }
        for n in [
            libc::SYS_read,
            libc::SYS_getpid,
            libc::SYS_clone3,
            libc::SYS_openat2,
        ] {
            assert!(!deniable.contains(&(n as u32)), "{}", syscall_name(n));
        }
        // Every number runsc can trace that the filter blocks for some arguments is there.
        let probe = [
            0u64,
            1,
            3,
            17,
            libc::CLONE_NEWUSER as u64,
            libc::TIOCSTI,
            0o4755,
            u64::MAX,
        ];
        for n in 0..RAW_SYSCALL_POINTS {
            let blocks = probe.iter().any(|a| {
                denied_by_filter(&RawSyscall {
                    sysno: u64::from(n),
                    args: [*a; 6],
                    exit: None,
                    thread_id: 0,
                    thread_group_id: 0,
                })
                .is_some()
            });
            if blocks {
                assert!(deniable.contains(&n), "{}", syscall_name(i64::from(n)));
            }
        }
        let config = pod_init_config(Path::new("/run/x.sock"), &[165, 41, 9999], Phase::Exit);
        let session = &config["trace_session"];
        assert_eq!(session["name"], "Default");
        assert_eq!(session["sinks"][0]["name"], "remote");
        assert_eq!(session["sinks"][0]["config"]["endpoint"], "/run/x.sock");
        let names: Vec<&str> = session["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["syscall/sysno/165/exit", "syscall/sysno/41/exit"]);
        assert_eq!(
            session["points"][0]["context_fields"],
            serde_json::json!(["thread_id", "group_id"])
        );
    }
}
