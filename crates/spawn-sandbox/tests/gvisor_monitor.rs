//! What runsc tells spawn about the calls spawn's filter denies, against the real runsc
//! (systrap, `--directfs=false`: the Sentry runs as the host's `nobody` without
//! capabilities, as spawn runs it).
//!
//! A probe runs in the sandbox under the filter spawn's init gives the agent there (the
//! deny-only form of spawn's seccomp program), started by an unfiltered PID 1, and makes calls the filter denies (`mount`,
//! `unshare(CLONE_NEWUSER)`, `socket(AF_PACKET)`, and `clone3`, which it answers `ENOSYS`)
//! and calls it allows (`socket(AF_UNIX)`, a terminal `ioctl`, `getpid`). Two observers:
//!
//! - the Sentry's debug log, read through [`DenialLog`]: it must name exactly the denied
//!   calls, counted as spawn counts them elsewhere (`clone3` left out);
//! - runsc's `remote` trace sink, tracing every call the filter could deny: it must see the
//!   allowed calls, with their arguments, and none of the denied ones (the points fire after
//!   the Sentry's seccomp check), and spawn's filter re-run over what it saw must deny
//!   nothing.
//!
//! A plain `main` (harness = false): the binary is also the sandbox's init and probe. Needs
//! root and runsc (`apt-get install runsc`; 0.0~20240729 or later for systrap).

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]
// Syscall numbers and flags are converted bit for bit between C integer types; the casts
// are intentional.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use spawn_sandbox::gvisor_monitor::sink::{self, Body, Event, Phase};
use spawn_sandbox::gvisor_monitor::{self, Denial, DenialLog};

/// Where the probe is bound in the sandbox (a directory every host has).
const PROBE_DIR: &str = "/mnt";

fn main() {
    let mut args = std::env::args();
    let me = args.next().unwrap_or_default();
    match args.next().as_deref() {
        // PID 1 of the sandbox, unfiltered like spawn's init: starts the probe and waits.
        Some("inside-init") => {
            let status = Command::new(&me).arg("inside-probe").status();
            std::process::exit(status.map_or(125, |s| s.code().unwrap_or(125)))
        }
        Some("inside-probe") => std::process::exit(probe()),
        _ => {}
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    let runsc = ["/usr/bin/runsc", "/usr/sbin/runsc", "/usr/local/bin/runsc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("runsc is not installed (apt-get install runsc)");
    monitor_a_run(&runsc);
    println!("gvisor_monitor: ok");
}

/// Runs inside the sandbox, under spawn's filter. Prints what each call gave; fails when
/// a call the filter denies was not denied or an allowed one was.
fn probe() -> i32 {
    use nix::errno::Errno;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    // Exactly the program spawn's init gives the agent under gVisor.
    let program: seccompiler::BpfProgram = spawn_sandbox::seccomp::compile()
        .unwrap()
        .deny_only()
        .iter()
        .map(|i| seccompiler::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    seccompiler::apply_filter(&program).unwrap();
    let mut ok = true;
    let mut expect = |what: &str, got: Result<(), Errno>, want: Result<(), Errno>| {
        println!("{what}: {got:?}");
        ok &= got == want;
    };
    let mount = nix::mount::mount::<str, str, str, str>(
        None,
        "/tmp",
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None,
    );
    expect("mount", mount, Err(Errno::EPERM));
    let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
    expect("unshare", unshare, Err(Errno::EPERM));
    let packet = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    );
    expect("socket(AF_PACKET)", packet.map(drop), Err(Errno::EPERM));
    // Allowed: a unix socket, a terminal ioctl (stdout is a pipe: ENOTTY from gVisor's
    // kernel, past the filter), getpid.
    let unix = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    );
    expect("socket(AF_UNIX)", unix.map(drop), Ok(()));
    let tty = nix::sys::termios::tcgetattr(std::io::stdout());
    expect("ioctl(TCGETS)", tty.map(drop), Err(Errno::ENOTTY));
    println!("getpid: {}", nix::unistd::getpid());
    // A thread: glibc tries clone3 (ENOSYS from the filter), then clone.
    let thread = std::thread::spawn(|| 7).join().map_err(|_| Errno::EIO);
    expect("thread", thread.map(drop), Ok(()));
    i32::from(!ok)
}

/// The bundle: the host's root read-only, the probe (a copy of this binary) bound at
/// [`PROBE_DIR`], run as uid 1000 without capabilities by spawn's init.
fn write_bundle(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(std::env::current_exe().unwrap(), bin.join("probe")).unwrap();
    std::fs::set_permissions(bin.join("probe"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = format!("{PROBE_DIR}/probe");
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": { "uid": 1000, "gid": 1000 },
            "args": [probe, "inside-init"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
            "noNewPrivileges": true,
            "capabilities": { "bounding": [], "effective": [], "permitted": [] },
        },
        "root": { "path": "/", "readonly": true },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": PROBE_DIR, "type": "bind", "source": bin, "options": ["rbind", "ro"] },
        ],
        "linux": { "namespaces": [ { "type": "pid" }, { "type": "mount" }, { "type": "network" } ] },
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn monitor_a_run(runsc: &Path) {
    let dir = tempfile::Builder::new()
        .prefix("spawn-gvisor-monitor-")
        .tempdir_in("/dev/shm")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    write_bundle(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    let mut log = DenialLog::create(dir.path()).unwrap();
    let endpoint = dir.path().join("monitor.sock");
    let listener = sink::Listener::bind(&endpoint).unwrap();
    let mut points = sink::deniable_syscalls();
    points.push(libc::SYS_getpid as u32);
    let pod_init = dir.path().join("pod-init.json");
    std::fs::write(
        &pod_init,
        sink::pod_init_config(&endpoint, &points, Phase::Enter).to_string(),
    )
    .unwrap();

    let id = format!("spawn-monitor-test-{}", std::process::id());
    let mut cmd = Command::new(runsc);
    cmd.arg("--root")
        .arg(&state)
        .args([
            "--platform=systrap",
            "--network=none",
            "--ignore-cgroups",
            "--directfs=false",
        ])
        .args(gvisor_monitor::runsc_flags(log.path()).unwrap())
        .arg(format!("--pod-init-config={}", pod_init.display()))
        .args(["run", "--bundle"])
        .arg(dir.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();

    // The sink, in a thread of its own: runsc connects before the sandbox starts and waits
    // for the handshake.
    let sink_thread = std::thread::spawn(move || {
        let mut conn = listener.accept(Duration::from_secs(30)).unwrap();
        let version = conn.sentry_version;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut events = Vec::new();
        while Instant::now() < deadline {
            let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u16)).unwrap();
            match conn.recv() {
                Ok(Some(record)) => events.push(sink::decode(record).unwrap()),
                Ok(None) => return (version, events),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("sink: {e}"),
            }
        }
        panic!("the sink never saw the sandbox end");
    });

    // The debug log, read while runsc runs and drained after.
    let mut denials: Vec<Denial> = Vec::new();
    let output = {
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut fds = [PollFd::new(log.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(50u16)).unwrap();
            log.read_available(|d| denials.push(d)).unwrap();
            if child.try_wait().unwrap().is_some() {
                break child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = Command::new(runsc)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force", &id])
                    .output();
                panic!("runsc did not finish");
            }
        }
    };
    log.drain(|d| denials.push(d)).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the probe failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for want in [
        "mount: Err(EPERM)",
        "unshare: Err(EPERM)",
        "socket(AF_PACKET): Err(EPERM)",
        "socket(AF_UNIX): Ok(())",
    ] {
        assert!(stdout.contains(want), "{want} missing from:\n{stdout}");
    }

    // The debug log names exactly the denied calls, from the probe (never the unfiltered
    // init, thread 1), counted as spawn counts them.
    let mut blocked = BTreeMap::new();
    let mut first = Vec::new();
    for d in &denials {
        assert_ne!(d.tid, 1, "{d:?}");
        if let Some((name, is_first)) = gvisor_monitor::record(d, &mut blocked) {
            first.push((name, is_first));
        }
    }
    assert_eq!(
        blocked,
        BTreeMap::from([
            ("mount".to_owned(), 1),
            ("socket".to_owned(), 1),
            ("unshare".to_owned(), 1),
        ]),
        "{denials:?}"
    );
    assert!(first.iter().all(|(_, is_first)| *is_first));
    let clone3 = libc::SYS_clone3 as u32;
    assert!(
        denials.iter().any(|d| d.sysno == clone3),
        "glibc's clone3 attempt (answered ENOSYS) is in the log too: {denials:?}"
    );
    let probe_tgid = denials[0].tgid;

    // The trace sink saw the allowed calls and none of the denied ones.
    let (version, events) = sink_thread.join().unwrap();
    assert!(version >= 1);
    let calls: Vec<&sink::RawSyscall> = events
        .iter()
        .map(|e: &Event| match &e.body {
            Body::RawSyscall(r) => r,
            Body::Other => panic!("only raw points were asked for: {e:?}"),
        })
        .collect();
    assert_eq!(events.last().map(|e| e.dropped), Some(0));
    let of_probe = |nr: i64| {
        calls
            .iter()
            .filter(move |c| c.sysno == nr as u64 && c.thread_group_id == probe_tgid as i32)
    };
    assert!(
        of_probe(libc::SYS_socket).any(|c| c.args[0] == libc::AF_UNIX as u64),
        "{calls:?}"
    );
    assert!(
        of_probe(libc::SYS_ioctl).any(|c| c.args[1] == libc::TCGETS),
        "{calls:?}"
    );
    assert!(of_probe(libc::SYS_getpid).next().is_some(), "{calls:?}");
    for c in &calls {
        assert!(points.contains(&(c.sysno as u32)), "{c:?}");
    }
    // The probe's own seccomp(SECCOMP_SET_MODE_FILTER) ran before its filter existed (the
    // filter would deny it: the judge says so); from then on it saw only what the filter
    // let through.
    let installed = calls
        .iter()
        .position(|c| c.sysno == libc::SYS_seccomp as u64 && c.thread_group_id == probe_tgid as i32)
        .expect("the probe's seccomp call was traced");
    assert_eq!(
        sink::denied_by_filter(calls[installed]).as_deref(),
        Some("seccomp")
    );
    let filtered: Vec<_> = calls[installed + 1..]
        .iter()
        .filter(|c| c.thread_group_id == probe_tgid as i32)
        .collect();
    assert!(filtered.len() >= 3, "{filtered:?}");
    for c in &filtered {
        assert_eq!(sink::denied_by_filter(c), None, "{c:?}");
    }
    for nr in [libc::SYS_mount, libc::SYS_unshare, libc::SYS_clone3] {
        assert!(
            !calls.iter().any(|c| c.sysno == nr as u64),
            "{nr} reached the sink"
        );
    }
    assert!(!calls
        .iter()
        .any(|c| c.sysno == libc::SYS_socket as u64 && c.args[0] == libc::AF_PACKET as u64));
    println!(
        "denied (debug log): {blocked:?}; traced by the sink: {} calls, none denied",
        calls.len()
    );
}
