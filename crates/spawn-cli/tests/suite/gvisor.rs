//! The `gvisor` runtime (runsc), spawn's default: the agent runs on gVisor's kernel, with
//! the same root filesystem, limits and cleanup as the other runtimes.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::helpers::{
    cgroup_dirs_of_run, cgroup_dirs_of_spawn, host_mountinfo, wait_until, Cmd, Home, Output,
};

/// `spawn run --runtime gvisor --json FLAGS -- COMMAND`, to run or start.
fn gvisor_cmd(home: &Home, flags: &[&str], command: &[&str]) -> Cmd {
    let mut args = vec!["run", "--runtime", "gvisor", "--json"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    home.cmd(args)
}

fn gvisor(home: &Home, flags: &[&str], command: &[&str]) -> Output {
    gvisor_cmd(home, flags, command).run()
}

#[allow(clippy::expect_used)] // a test helper: a missing runsc is a failure with the reason
fn runsc_containers() -> String {
    let out = std::process::Command::new("runsc")
        .args(["--root", "/dev/shm/spawn/runsc", "list", "--quiet"])
        .output()
        .expect("runsc list (make test installs runsc)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of `/proc/PID/status` (after `field`, trimmed) of the process of `spawn_pid`'s
/// run whose command line starts with `name` (`runsc-sandbox`, `runsc-gofer`): runsc names
/// its processes so, and their arguments hold the run's bundle, `bundles/SPAWNPID-RUNID`.
fn runsc_status(spawn_pid: u32, name: &str, field: &str) -> Option<String> {
    let id = format!("bundles/{spawn_pid}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            if !(cmd.starts_with(name) && cmd.contains(&id)) {
                return None;
            }
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .map(|v| v.trim().to_owned())
        })
}

#[test]
fn gvisor_keeps_the_sandbox_guarantees() {
    let home = Home::new();
    let script = r#"
import os, socket
print('uid', os.getuid(), os.getgid())
print('kernel', os.uname().release)
for path in ['/etc/shadow', '/root', '/home']:
    print('exists', path, os.path.exists(path))
for path in ['/usr/x', '/etc/x', '/x']:
    try:
        open(path, 'w'); print('write', path, 'ALLOWED')
    except OSError as e:
        print('write', path, 'denied')
try:
    socket.create_connection(('1.1.1.1', 443), timeout=2); print('net ALLOWED')
except OSError as e:
    print('net denied')
with open('/proc/self/status') as f:
    print([l.strip() for l in f if l.startswith('CapEff')][0])
"#;
    let out = gvisor(&home, &[], &["python3", "-c", script]);
    out.assert_code(0);
    let body = out.body();
    let host = nix::sys::utsname::uname().expect("uname");
    assert!(body.contains("uid 1000 1000"), "\n{out}");
    assert!(
        !body.contains(&format!("kernel {}", host.release().to_string_lossy())),
        "the agent saw the host's kernel:\n{out}"
    );
    for p in ["/etc/shadow", "/root", "/home"] {
        assert!(
            body.contains(&format!("exists {p} False")),
            "{p} visible:\n{out}"
        );
    }
    for p in ["/usr/x", "/etc/x", "/x"] {
        assert!(
            body.contains(&format!("write {p} denied")),
            "{p} writable:\n{out}"
        );
    }
    assert!(body.contains("net denied"), "\n{out}");
    assert!(body.contains("CapEff:\t0000000000000000"), "\n{out}");
    assert_eq!(out.json()["runtime"], "gvisor");
}

/// The Sentry's debug log (where denials are counted under gVisor) is read on a timer:
/// a flood of denied calls that overflows its FIFO several times over (30,000 lines of
/// ~130 bytes against 1 MiB) waits for spawn's reads and is counted whole.
#[test]
fn every_denial_of_a_flood_larger_than_the_log_fifo_is_counted() {
    let home = Home::new();
    let script = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
denied = 0
for _ in range(30000):
    if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == -1 and ctypes.get_errno() == errno.EPERM:
        denied += 1
print('denied', denied)
"#;
    let out = gvisor(&home, &[], &["python3", "-c", script]);
    out.assert_code(0);
    assert!(out.body().contains("denied 30000"), "\n{out}");
    assert_eq!(out.blocked("mount"), 30000, "\n{out}");
}

#[test]
fn gvisor_exit_codes() {
    let home = Home::new();
    gvisor(&home, &[], &["sh", "-c", "exit 7"]).assert_code(7);
    gvisor(&home, &[], &["no-such-command-xyz"]).assert_code(127);
    gvisor(&home, &[], &["/etc/passwd"]).assert_code(126);
    gvisor(&home, &[], &["sh", "-c", "kill -TERM $$"]).assert_code(143);
    let out = gvisor(&home, &["--timeout", "1s"], &["sleep", "30"]);
    out.assert_code(124);
    assert_eq!(out.json()["killReason"], "timeout", "\n{out}");
    // A run that timed out leaves nothing behind either.
    let run = out.run_id();
    assert!(
        !runsc_containers().contains(&run),
        "the timed-out sandbox is still listed"
    );
    let left = cgroup_dirs_of_run(&run);
    assert!(
        left.is_empty(),
        "cgroups outlived the timed-out run: {left:?}"
    );
    gvisor(
        &home,
        &["--memory", "64Mi"],
        &["python3", "-c", "x = bytearray(1 << 30)"],
    )
    .assert_code(137);
}

#[test]
fn gvisor_leaves_nothing_behind_even_when_spawn_is_killed() {
    let home = Home::new();
    let out = gvisor(&home, &[], &["sh", "-c", "sleep 100 & echo started"]);
    out.assert_code(0);
    let run = out.run_id();
    assert!(
        !runsc_containers().contains(&run),
        "runsc still lists the run"
    );
    // In every hierarchy, including those runsc makes groups in and spawn does not use.
    let left = cgroup_dirs_of_run(&run);
    assert!(left.is_empty(), "cgroups outlived the run: {left:?}");
    // A spawn killed mid-run takes its sandbox with it (its guard ends the run), without
    // waiting for another run to reap it.
    let mut running = home
        .cmd(["run", "--runtime", "gvisor", "--", "sleep", "60"])
        .start();
    let pid = running.pid();
    let listed = wait_until(Duration::from_secs(15), || {
        runsc_containers().contains(&format!("spawn{pid}-"))
    });
    assert!(listed, "the sandbox never appeared");
    running.signal(Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(5), || !running.is_running()),
        "spawn survived SIGKILL"
    );
    let _ = running.wait();
    let gone = wait_until(Duration::from_secs(5), || {
        !runsc_containers().contains(&format!("spawn{pid}-"))
            && cgroup_dirs_of_spawn(pid).is_empty()
    });
    assert!(
        gone,
        "the killed spawn's sandbox outlived it:\n{}\ncgroups: {:?}",
        runsc_containers(),
        cgroup_dirs_of_spawn(pid)
    );
}

/// The platform choice: KVM only when a sandbox really starts on it (on this machine
/// family `/dev/kvm` exists but runsc hangs on it), cached root-only on spawn's tmpfs, and
/// the probe leaves nothing behind.
#[test]
fn gvisor_platform_probe_is_bounded_cached_and_clean() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    // The cache of the installed runsc: the profile file whose key names it.
    let runsc = std::fs::canonicalize("/usr/bin/runsc").expect("runsc is installed");
    let find_cache = || {
        std::fs::read_dir("/dev/shm/spawn")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("runsc-profile-"))
            })
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.lines().next() == runsc.to_str()))
    };
    if let Some(old) = find_cache() {
        std::fs::remove_file(old).expect("remove the cached profile");
    }
    let doctor = home.cmd(["doctor", "--json"]).start();
    let pid = doctor.pid();
    let out = doctor.wait();
    out.assert_code(0);
    let cache = find_cache().expect("the platform is cached");
    let cache = cache.as_path();
    let text = std::fs::read_to_string(cache).expect("the platform is cached");
    // The binary's identity, then the platform and the release.
    let lines: Vec<&str> = text.lines().collect();
    let platform = lines[lines.len().saturating_sub(2)].to_owned();
    let release = lines.last().copied().unwrap_or_default();
    assert!(
        release.len() == 8 && release.starts_with("20"),
        "cached release {release:?} in {text:?}"
    );
    assert!(
        ["kvm", "systrap", "ptrace"].contains(&platform.as_str()),
        "cached {text:?}"
    );
    let mode = std::fs::metadata(cache)
        .expect("cache")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the cache is readable by others: {mode:o}");
    assert!(
        out.stdout.contains(&format!("platform {platform}")),
        "doctor does not report the cached platform {platform}:\n{out}"
    );
    assert!(
        !std::path::Path::new(&format!("/dev/shm/spawn/kvm-probe-{pid}")).exists(),
        "the probe's bundle was left behind"
    );
    let probe_id = format!("spawn{pid}-kvmprobe");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&probe_id))
        .collect();
    assert!(left.is_empty(), "probe processes left: {left:?}");
    let groups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(&probe_id))
        .filter(|g| g.exists())
        .collect();
    assert!(groups.is_empty(), "probe cgroups left: {groups:?}");
    // A run after the probe works on the chosen platform.
    let run = gvisor(&home, &[], &["true"]);
    run.assert_code(0);
}

/// `hostUid` names the host uid the agent's kernel runs as: runsc's Sentry runs as
/// `nobody`, never root.
#[test]
fn gvisor_reports_the_sentrys_host_uid() {
    let home = Home::new();
    let run = gvisor_cmd(&home, &[], &["sleep", "2"]).start();
    let mut sentry_uid = None;
    let seen = wait_until(Duration::from_secs(10), || {
        sentry_uid = runsc_status(run.pid(), "runsc-sandbox", "Uid:")
            .and_then(|v| v.split_whitespace().next().map(str::to_owned));
        sentry_uid.is_some()
    });
    assert!(seen, "no runsc-sandbox process of this run was found");
    let out = run.wait();
    out.assert_code(0);
    let reported = out.json()["hostUid"].to_string();
    assert_eq!(Some(reported.clone()), sentry_uid, "\n{out}");
    assert_ne!(reported, "0", "the Sentry runs as host root:\n{out}");
}

/// Coreutils work inside gVisor (runsc 2022 rejected the `statx` flags `ls` and `stat`
/// pass; runsc 2024-07-29 fails `lgetxattr` on symlinks, which `ls -l` calls): no command
/// fails and none prints an error, on the host's binds, the synthesized root and tmpfs.
#[test]
fn coreutils_work_inside_gvisor() {
    let home = Home::new();
    let script =
        "set -e; ls -la / /dev /etc >/dev/null; ls -l /bin /usr/bin/env /usr/lib >/dev/null; \
         stat / /etc/passwd /bin /usr/bin/python3 >/dev/null; \
         find /etc /usr/lib/python3 -maxdepth 2 >/dev/null; \
         cp -a /etc /tmp/etc && cp -a /usr/lib/python3 /tmp/py && ls -lR /tmp/etc >/dev/null; \
         ln -s /tmp/etc /tmp/link && ls -l /tmp/link && stat -L /tmp/link >/dev/null; \
         du -s /tmp/py >/dev/null; echo done";
    let out = gvisor(&home, &[], &["sh", "-c", script]);
    out.assert_code(0);
    assert!(out.body().ends_with("done"), "\n{out}");
    assert!(
        out.stderr.trim().is_empty(),
        "coreutils printed errors inside gVisor:\n{out}"
    );
}

/// The host's system directories (`/usr`, `/etc/ssl/certs`, `/etc/alternatives`) are part
/// of gVisor's read-only root, not gofer mounts of their own: attached in runsc's own
/// mount namespace, they are whole and read-only inside, and the host's mount table never
/// holds them (nor anything else of the run), while the run lasts or after.
#[test]
fn system_directories_are_in_the_read_only_root_and_never_on_the_host() {
    let home = Home::new();
    let before = host_mountinfo();
    let count = |dir: &str| std::fs::read_dir(dir).map_or(0, Iterator::count);
    let script = "echo usr-mounts $(awk '$2 ~ /^\\/(usr|etc)/' /proc/mounts | wc -l); \
         echo root-flags $(awk '$2 == \"/\" {print $4}' /proc/mounts | cut -d, -f1); \
         echo certs $(ls -A /etc/ssl/certs | wc -l); \
         echo alternatives $(ls -A /etc/alternatives | wc -l); \
         echo cas $(python3 -c 'import ssl; print(len(ssl.create_default_context().get_ca_certs()))'); \
         touch /usr/spawn-test 2>/dev/null; echo usr-write $?; sleep 2";
    let mut run = gvisor_cmd(&home, &[], &["sh", "-c", script]).start();
    let bundle = format!("bundles/{}-", run.pid());
    let mut seen = Vec::new();
    while run.is_running() {
        seen.extend(host_mountinfo().into_iter().filter(|l| {
            l.contains(&bundle) || l.contains("/rootfs/usr") || l.contains("/rootfs/etc")
        }));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run.wait();
    out.assert_code(0);
    assert!(
        seen.is_empty(),
        "the run's mounts reached the host: {seen:?}"
    );
    assert_eq!(
        out.field("usr-mounts"),
        "0",
        "gofer mounts of their own:\n{out}"
    );
    assert_eq!(out.field("root-flags"), "ro", "\n{out}");
    assert_eq!(
        out.field("certs"),
        count("/etc/ssl/certs").to_string(),
        "\n{out}"
    );
    assert_eq!(
        out.field("alternatives"),
        count("/etc/alternatives").to_string(),
        "\n{out}"
    );
    assert_ne!(out.field("cas"), "0", "no CA certificate loaded:\n{out}");
    assert_ne!(out.field("usr-write"), "0", "/usr is writable:\n{out}");
    assert!(!std::path::Path::new("/usr/spawn-test").exists());
    assert_eq!(host_mountinfo(), before, "the host's mount table changed");
}

/// A runsc too old to be safe or correct is refused, never run: `spawn run` exits 125 with
/// the fix, and `spawn doctor` says why the gvisor runtime is not available.
#[test]
fn a_runsc_older_than_2024_07_29_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    for (version, says) in [
        (
            "runsc version 0.0~20221219.0",
            "runsc 2022-12-19 is too old",
        ),
        (
            "runsc version release-20240101.0",
            "runsc 2024-01-01 is too old",
        ),
        ("runsc version custom", "names no release date"),
    ] {
        let bin = super::helpers::tempdir("fake-runsc-");
        let runsc = bin.path().join("runsc");
        // Answers --version; anything else (a probe, a run) fails loudly.
        std::fs::write(
            &runsc,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version}'; echo 'spec: 1.0.2'; exit 0; fi\n\
                 echo \"fake runsc ran: $*\" >&2; exit 99\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&runsc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = home
            .cmd(["run", "--runtime", "gvisor", "--", "true"])
            .env("PATH", &path)
            .env("SPAWN_GVISOR_PLATFORM", "ptrace")
            .run();
        out.assert_code(125);
        assert!(out.stderr.contains(says), "{version}:\n{out}");
        assert!(
            out.stderr.contains("2024-07-29 or newer"),
            "{version}:\n{out}"
        );
        assert!(
            !out.stderr.contains("fake runsc ran"),
            "{version}: it ran:\n{out}"
        );
        let doctor = home
            .cmd(["doctor"])
            .env("PATH", &path)
            .env("SPAWN_GVISOR_PLATFORM", "ptrace")
            .run();
        doctor.assert_code(0);
        let line = doctor
            .stdout
            .lines()
            .find(|l| l.starts_with("runtime gvisor"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.contains(" no ")
                && line.contains(says)
                && line.contains(version.trim_start_matches("runsc version ")),
            "{version}: {line}"
        );
    }
}

/// runsc's gofer and Sentry start with descriptor tables of 1024 slots (spawn leaves
/// `/dev/null` open at 1023 in runsc, see `sys::launch::Step::SizeFdTable`): outgrowing the
/// kernel's first 64 made each wait for an RCU grace period as the sandbox started. The
/// agent's own descriptors are gVisor's and hold nothing of it.
#[test]
fn runscs_processes_start_with_large_descriptor_tables_the_agent_never_sees() {
    let home = Home::new();
    let run = gvisor_cmd(&home, &[], &["sh", "-c", "ls /proc/self/fd; sleep 2"]).start();
    let mut sizes = std::collections::BTreeMap::new();
    let seen = wait_until(Duration::from_secs(10), || {
        for name in ["runsc-gofer", "runsc-sandbox"] {
            let size = runsc_status(run.pid(), name, "FDSize:").and_then(|v| v.parse::<u32>().ok());
            if let Some(size) = size {
                sizes.insert(name, size);
            }
        }
        sizes.len() == 2
    });
    let out = run.wait();
    assert!(
        seen,
        "runsc's gofer and sandbox of this run not both found: {sizes:?}\n{out}"
    );
    out.assert_code(0);
    for (name, size) in &sizes {
        assert!(*size >= 1024, "{name} has {size} descriptor slots\n{out}");
    }
    // 0–2 and `ls`'s own directory.
    assert_eq!(out.body(), "0\n1\n2\n3", "\n{out}");
}

/// The run's CPU quota, from whichever file its cgroup directory holds (v1
/// `cpu.cfs_quota_us`, v2 `cpu.max`), in microseconds per 100 ms period.
fn cpu_quota(dirs: &[std::path::PathBuf]) -> Option<u64> {
    dirs.iter().find_map(|d| {
        let v1 = std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok();
        let v2 = std::fs::read_to_string(d.join("cpu.max")).ok();
        v1.or(v2)?.split_whitespace().next()?.parse().ok()
    })
}

/// A gVisor sandbox boots with one CPU more than the agent's limit (runsc, its gofer and
/// the Sentry count against the run's group, and were throttled at the default of one CPU),
/// and half a second after runsc's start the group holds the agent's limit exactly.
#[test]
fn gvisor_boots_with_a_cpu_allowance_then_holds_the_agents_limit() {
    let home = Home::new();
    let run = gvisor_cmd(&home, &["--cpu", "500m"], &["sleep", "3"]).start();
    let spawn_pid = run.pid();
    let mut seen = Vec::new();
    let booted = wait_until(Duration::from_secs(2), || {
        let q = cpu_quota(&cgroup_dirs_of_spawn(spawn_pid));
        if let Some(q) = q {
            if seen.last() != Some(&q) {
                seen.push(q);
            }
        }
        q.is_some()
    });
    assert!(booted, "no cgroup of the run was found");
    // Well after the window (0.5 s from runsc's start), while the agent still sleeps.
    std::thread::sleep(Duration::from_millis(1500));
    let late = cpu_quota(&cgroup_dirs_of_spawn(spawn_pid));
    let out = run.wait();
    out.assert_code(0);
    assert_eq!(late, Some(50_000), "the agent's 500m as a quota\n{out}");
    // The first quota the group was seen with: the agent's and one CPU more.
    assert_eq!(seen.first(), Some(&150_000), "quotas seen: {seen:?}\n{out}");
}
