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
