//! Nothing of a run survives it: no process running as the sandbox's uids, no cgroup
//! directory, no mount on the host — however the run ends.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pretty_assertions::assert_eq;
use serde_json::Value;

use super::helpers::{
    cgroup_dirs_of_run, cgroup_dirs_of_spawn, children_of, describe, host_mountinfo, is_alive,
    processes_of, wait_until, Home, Output, Proc, Running, SandboxUids,
};

/// How long spawn may take to clean up after it was told to stop.
const PROMPT: Duration = Duration::from_secs(5);

/// Starts `spawn run --json -- COMMAND` and waits until `sleep` runs in its sandbox.
fn start_sleeping(home: &Home, command: &[&str]) -> Running {
    let mut run = home.native_cmd(&[], command).start();
    let uids = run.uids();
    let up = wait_until(Duration::from_secs(15), || {
        processes_of(uids).iter().any(|p| p.name == "sleep")
    });
    if !up {
        let alive = run.is_running();
        panic!(
            "the sandboxed sleep never showed up on the host as uid {} (spawn running: {alive})",
            uids.agent
        );
    }
    run
}

/// The run's uids, from `--json` (checked against the documented formula).
fn uids_of(out: &Output, spawn_pid: u32) -> SandboxUids {
    let uids = super::helpers::sandbox_uids(spawn_pid);
    assert_eq!(
        out.json()["hostUid"],
        Value::from(uids.agent),
        "hostUid is not the documented uid:\n{out}"
    );
    uids
}

/// No process, cgroup directory or host mount of the run remains.
fn assert_nothing_left(
    run_id: Option<&str>,
    spawn_pid: u32,
    uids: SandboxUids,
    mounts_before: &[String],
) {
    let left = processes_of(uids);
    assert!(
        left.is_empty(),
        "processes of the run survived it: {}",
        describe(&left)
    );
    let dirs = cgroup_dirs_of_spawn(spawn_pid);
    assert!(
        dirs.is_empty(),
        "cgroup directories of the run survived it: {dirs:?}"
    );
    if let Some(run_id) = run_id {
        let dirs = cgroup_dirs_of_run(run_id);
        assert!(
            dirs.is_empty(),
            "cgroup directories of {run_id} survived it: {dirs:?}"
        );
    }
    assert_eq!(
        host_mountinfo(),
        mounts_before,
        "the host's mount table changed"
    );
}

#[test]
fn normal_end_leaves_nothing_behind() {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = home.native_cmd(&[], &["sh", "-c", "echo hello"]).start();
    let pid = run.pid();
    let out = run.wait();
    out.assert_code(0);
    let uids = uids_of(&out, pid);
    assert_nothing_left(Some(&out.run_id()), pid, uids, &mounts);
}

#[test]
fn timeout_leaves_nothing_behind() {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = home
        .native_cmd(&["--timeout", "1s"], &["sleep", "60"])
        .start();
    let pid = run.pid();
    let out = run.wait();
    out.assert_code(124);
    let uids = uids_of(&out, pid);
    assert_nothing_left(Some(&out.run_id()), pid, uids, &mounts);
}

fn cancel_with(sig: Signal, expected_code: i32) {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = start_sleeping(&home, &["sleep", "60"]);
    let pid = run.pid();
    let sent = Instant::now();
    run.signal(sig);
    let out = run.wait();
    assert!(
        sent.elapsed() < PROMPT,
        "spawn took {:?} to stop after {sig}:\n{out}",
        sent.elapsed()
    );
    out.assert_code(expected_code);
    assert_eq!(out.json()["killReason"], "cancelled", "\n{out}");
    let uids = uids_of(&out, pid);
    assert_nothing_left(Some(&out.run_id()), pid, uids, &mounts);
}

#[test]
fn sigint_is_forwarded_and_cleaned_up() {
    cancel_with(Signal::SIGINT, 130);
}

#[test]
fn sigterm_is_forwarded_and_cleaned_up() {
    cancel_with(Signal::SIGTERM, 143);
}

#[test]
fn sigkill_of_spawn_takes_the_sandbox_and_its_cgroups_with_it() {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = start_sleeping(&home, &["sleep", "60"]);
    let pid = run.pid();
    let uids = run.uids();
    assert!(
        !cgroup_dirs_of_spawn(pid).is_empty(),
        "the run has no cgroup directory to check"
    );
    // spawn's own helpers (the sandbox init and the cgroup guard) must go too.
    let helpers = children_of(pid);
    assert!(!helpers.is_empty(), "spawn has no child processes to check");
    run.signal(Signal::SIGKILL);
    let out = run.wait();
    assert_eq!(out.code, None, "spawn was not killed:\n{out}");
    let gone = wait_until(PROMPT, || {
        processes_of(uids).is_empty()
            && cgroup_dirs_of_spawn(pid).is_empty()
            && !helpers.iter().any(|p| is_alive(p.pid))
    });
    let survivors: Vec<Proc> = helpers
        .iter()
        .filter(|p| is_alive(p.pid))
        .cloned()
        .collect();
    assert!(
        gone,
        "{PROMPT:?} after spawn was killed: sandbox processes [{}], helper processes [{}], \
         cgroup directories {:?}",
        describe(&processes_of(uids)),
        describe(&survivors),
        cgroup_dirs_of_spawn(pid)
    );
    assert_nothing_left(None, pid, uids, &mounts);
}

#[test]
fn helper_processes_end_with_the_run() {
    let home = Home::new();
    let run = start_sleeping(&home, &["sh", "-c", "sleep 1"]);
    let helpers = children_of(run.pid());
    assert!(!helpers.is_empty(), "spawn has no child processes to check");
    run.wait().assert_code(0);
    // The cleanup guard finishes tearing the sandbox's mounts down just after spawn has
    // returned (off the run's critical path): it may take a moment, never longer.
    wait_until(PROMPT, || !helpers.iter().any(|p| is_alive(p.pid)));
    let survivors: Vec<Proc> = helpers.into_iter().filter(|p| is_alive(p.pid)).collect();
    assert!(
        survivors.is_empty(),
        "spawn's helper processes outlived it: {}",
        describe(&survivors)
    );
}

#[test]
fn agent_ignoring_sigint_is_killed_after_the_grace_period() {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = start_sleeping(&home, &["sh", "-c", "trap '' INT TERM HUP; sleep 60"]);
    let pid = run.pid();
    let sent = Instant::now();
    run.signal(Signal::SIGINT);
    let out = run.wait();
    // spawn gives the agent a few seconds (3 s today) to exit, then kills it.
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "spawn took {took:?} to stop after SIGINT:\n{out}"
    );
    assert_ne!(out.code, Some(0), "\n{out}");
    assert_eq!(out.json()["killReason"], "cancelled", "\n{out}");
    let uids = uids_of(&out, pid);
    assert_nothing_left(Some(&out.run_id()), pid, uids, &mounts);
}

#[test]
fn background_processes_do_not_outlive_the_run() {
    let home = Home::new();
    let mounts = host_mountinfo();
    let run = home
        .native_cmd(
            &[],
            &[
                "sh",
                "-c",
                "sleep 100 & sleep 100 > /dev/null 2>&1 & exit 0",
            ],
        )
        .start();
    let pid = run.pid();
    let out = run.wait();
    out.assert_code(0);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "spawn waited for the background process:\n{out}"
    );
    let uids = uids_of(&out, pid);
    assert_nothing_left(Some(&out.run_id()), pid, uids, &mounts);
}

#[test]
fn a_later_run_reaps_groups_left_by_a_dead_spawn() {
    let home = Home::new();
    // Where this host keeps the groups: look at a running sandbox's.
    let running = start_sleeping(&home, &["sleep", "1"]);
    let hierarchies: Vec<std::path::PathBuf> = cgroup_dirs_of_spawn(running.pid())
        .iter()
        .filter_map(|d| d.parent().map(std::path::Path::to_path_buf))
        .collect();
    running.wait().assert_code(0);
    assert!(!hierarchies.is_empty(), "no spawn cgroup hierarchy found");
    // Groups as a spawn that died together with its guard would leave them: named after a
    // pid that no longer exists.
    let dead_pid = (4_000_000..4_194_000)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let name = format!("{dead_pid}-tr_stale");
    for h in &hierarchies {
        std::fs::create_dir(h.join(&name)).expect("create a stale group");
    }
    home.native(&[], &["true"]).assert_code(0);
    let left: Vec<_> = hierarchies
        .iter()
        .map(|h| h.join(&name))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "stale groups were not reaped: {left:?}");
}

#[test]
fn the_sandbox_dies_with_spawn_even_without_its_guard() {
    // The guard only removes cgroups; the sandbox's own parent-death signal must end it.
    let home = Home::new();
    let run = start_sleeping(&home, &["sleep", "60"]);
    let pid = run.pid();
    let uids = run.uids();
    let guard: Vec<Proc> = children_of(pid)
        .into_iter()
        .filter(|p| p.uids.first() == Some(&0))
        .collect();
    assert_eq!(
        guard.len(),
        1,
        "expected one root-owned helper (the guard): {}",
        describe(&guard)
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard[0].pid), Signal::SIGKILL)
        .expect("kill the guard");
    run.signal(Signal::SIGKILL);
    let out = run.wait();
    assert_eq!(out.code, None, "spawn was not killed:\n{out}");
    let gone = wait_until(PROMPT, || processes_of(uids).is_empty());
    assert!(
        gone,
        "sandbox processes outlived spawn and its guard: {}",
        describe(&processes_of(uids))
    );
    // What the guard would have removed, the next run reaps.
    home.native(&[], &["true"]).assert_code(0);
    let dirs = cgroup_dirs_of_spawn(pid);
    assert!(dirs.is_empty(), "the next run did not reap {dirs:?}");
}

/// A runtime killed with spawn while writing a container's state leaves it cut short;
/// neither runc nor runsc can delete a container whose state it cannot load, so without
/// spawn's own reaping every later run asked again (a runtime start each). The next run
/// removes such state of dead spawns, on both OCI runtimes, whatever the cut.
#[test]
fn runtime_state_cut_short_by_a_kill_is_reaped_by_the_next_run() {
    let home = Home::new();
    let whole = r#"{"id":"x","spec":{"ociVersion":"1.0.2","process":{"args":["true"]}}}"#;
    for runtime in ["container", "gvisor"] {
        // The directories exist once a run has used the runtime.
        home.sh_on(runtime, &[], "true").assert_code(0);
        for cut in [
            "",
            "{",
            &whole[..whole.len() / 2],
            &whole[..whole.len() - 1],
        ] {
            // A pid that was spawn's and is gone: a child that has exited.
            let dead = std::process::Command::new("true")
                .spawn()
                .expect("start true");
            let pid = dead.id();
            let _ = { dead }.wait();
            let id = format!("spawn{pid}-tr_cutshort");
            let mut planted: Vec<String> = if runtime == "gvisor" {
                let dir = std::path::Path::new("/dev/shm/spawn/runsc");
                let files = [
                    format!("{id}_sandbox:{id}.state"),
                    format!("{id}_sandbox:{id}.lock"),
                    format!("runsc-{id}.sock"),
                ];
                for f in &files {
                    std::fs::write(dir.join(f), "").expect("plant a runsc file");
                }
                std::fs::write(dir.join(&files[0]), cut).expect("plant the state");
                files
                    .iter()
                    .map(|f| dir.join(f).display().to_string())
                    .collect()
            } else {
                let dir = std::path::Path::new("/dev/shm/spawn/runc").join(&id);
                std::fs::create_dir_all(&dir).expect("plant a runc container");
                std::fs::write(dir.join("state.json"), cut).expect("plant the state");
                vec![dir.display().to_string()]
            };
            planted.sort();
            let mut left = leftovers_of(pid);
            left.sort();
            assert_eq!(left, planted, "{runtime}: the planted state");
            home.sh_on(runtime, &[], "true").assert_code(0);
            assert_eq!(
                leftovers_of(pid),
                Vec::<String>::new(),
                "{runtime}: state cut to {cut:?} outlived the next run"
            );
        }
    }
}

/// Host processes whose cgroup is one of spawn `spawn_pid`'s runs (the agent's under native
/// and runc; runsc, its gofer and the Sentry under gVisor), as `pid command`.
fn processes_in_runs_of(spawn_pid: u32) -> Vec<String> {
    let marker = format!("/spawn/{spawn_pid}-");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cgroups = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cgroups.contains(&marker) && is_alive(pid) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid} {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// What of spawn `spawn_pid`'s runs is left on the host: bundles and runtime state under
/// /dev/shm/spawn, cgroup directories, scratch filesystems (image, loop device, mount).
pub(super) fn leftovers_of(spawn_pid: u32) -> Vec<String> {
    let mut left: Vec<String> = cgroup_dirs_of_spawn(spawn_pid)
        .into_iter()
        .map(|d| d.display().to_string())
        .collect();
    left.extend(super::disk::scratch_leftovers_of(spawn_pid));
    for (dir, prefix) in [
        ("/dev/shm/spawn/bundles", format!("{spawn_pid}-")),
        ("/dev/shm/spawn/runc", format!("spawn{spawn_pid}-")),
        ("/dev/shm/spawn/runsc", format!("spawn{spawn_pid}-")),
        ("/dev/shm/spawn/runsc", format!("runsc-spawn{spawn_pid}-")),
    ] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                left.push(e.path().display().to_string());
            }
        }
    }
    left
}

fn count_of(cmd: &[&str], needle: &str) -> usize {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.matches(needle).count()
}

/// SIGKILL of spawn ends the run within a second on every runtime, whatever the agent does
/// to survive (a new session ignoring SIGHUP and SIGTERM, a tree of children), with a
/// network or without, and nothing of it remains: no process, cgroup, bundle, runtime
/// state, link or host-side filter.
#[test]
fn killing_spawn_ends_the_run_on_every_runtime() {
    use std::io::BufRead as _;
    let home = Home::new();
    let agents = [
        ("plain", "echo ready; sleep 100"),
        (
            "setsid-ignoring",
            "setsid sh -c 'trap \"\" HUP TERM INT; sleep 100' & sleep 0.2; echo ready; \
             trap '' HUP TERM INT; sleep 100",
        ),
        (
            "tree",
            "for i in 1 2 3; do sh -c 'sleep 100 & sleep 100' & done; sleep 0.2; echo ready; wait",
        ),
    ];
    let links_before = count_of(&["ip", "-o", "link"], "spw");
    let tables_before = count_of(&["nft", "list", "tables"], "spawn-spw");
    for runtime in ["native", "container", "gvisor"] {
        for (i, (what, script)) in agents.iter().enumerate() {
            let mut args = vec!["run", "--runtime", runtime];
            // One of the agents runs with a network (a link, filters, the proxy).
            if i == 0 {
                args.extend(["--net", "egress-only"]);
            }
            args.extend(["--", "sh", "-c", script]);
            let mut child = std::process::Command::new(super::helpers::SPAWN)
                .args(&args)
                .env("SPAWN_HOME", home.path())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start spawn");
            let pid = child.id();
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("read the agent's first line");
            assert_eq!(
                line.trim(),
                "ready",
                "{runtime} {what}: the agent did not start"
            );
            assert!(
                !processes_in_runs_of(pid).is_empty(),
                "{runtime} {what}: the test sees no process of the run"
            );
            child.kill().expect("SIGKILL spawn");
            let _ = child.wait();
            let killed = Instant::now();
            let ended = wait_until(Duration::from_secs(1), || {
                processes_in_runs_of(pid).is_empty()
            });
            assert!(
                ended,
                "{runtime} {what}: the run outlived spawn by a second: {:?}",
                processes_in_runs_of(pid)
            );
            // The removal follows the kill at once, but the last of it (a scratch
            // filesystem's unmount and its image's freeing) waits on the host's disk,
            // which the rest of the suite keeps busy: seconds, at worst.
            let clean = wait_until(2 * PROMPT, || leftovers_of(pid).is_empty());
            assert!(
                clean,
                "{runtime} {what}: left after {:?}: {:?}",
                killed.elapsed(),
                leftovers_of(pid)
            );
        }
    }
    let gone = wait_until(PROMPT, || {
        count_of(&["ip", "-o", "link"], "spw") == links_before
            && count_of(&["nft", "list", "tables"], "spawn-spw") == tables_before
    });
    assert!(
        gone,
        "links or host-side filters of the killed runs are left"
    );
    home.assert_healthy();
}
