//! The disk quota (issue 14, class 6): one quota covers everything a run can write outside
//! granted host mounts (`/tmp`, `/workspace`, `/dev/shm`, together), writing past it fails
//! with `ENOSPC` inside (the agent chooses its exit status; nothing kills it), it is held
//! independently of the memory limit (the scratch filesystem is on the host's disk, not in
//! memory), and nothing of the scratch filesystem (image file, loop device, mount) outlives
//! the run. On every runtime.

use std::path::Path;
use std::time::Duration;

use super::helpers::{host_mountinfo, tempdir, wait_until, write_file, Home, Output};

const MIB: u64 = 1 << 20;
/// The quota of the table's runs.
const QUOTA: u64 = 32 * MIB;
/// What ext4's own metadata may take of it: the agent gets at least the rest.
const FS_OVERHEAD: u64 = 4 * MIB;
/// Where spawn makes the scratch images.
const SCRATCH_DIR: &str = "/var/lib/spawn/scratch";

const RUNTIMES: [&str; 3] = ["native", "container", "gvisor"];

/// A manifest (file `RUNTIME-TAG.yaml`) for `runtime` with `resources` running `script`.
fn manifest(dir: &Path, tag: &str, runtime: &str, resources: &str, script: &str) -> String {
    let name = format!("{runtime}-{tag}.yaml");
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata:\n  name: disk\nspec:\n  \
         command: [\"sh\", \"-c\", {script:?}]\n  \
         sandbox:\n    runtime: {runtime}\n    resources: {{ {resources} }}\n    timeout: 120s\n"
    );
    write_file(dir, &name, &text).to_string_lossy().into_owned()
}

/// A script that writes `mib` MiB of zeros to a file in each of `places`, then prints the
/// bytes that landed (`wrote N`) and exits 3: its own status, whatever dd said.
fn fill(places: &[&str], mib: u64) -> String {
    let mut script = String::new();
    for (i, place) in places.iter().enumerate() {
        script.push_str(&format!(
            "dd if=/dev/zero of={place}/fill{i} bs=1M count={mib}; echo dd{i} $?; "
        ));
    }
    let files: Vec<String> = (0..places.len())
        .map(|i| format!("{}/fill{i}", places[i]))
        .collect();
    script.push_str(&format!(
        "echo wrote $(cat {} | wc -c); exit 3",
        files.join(" ")
    ));
    script
}

/// What of spawn `pid`'s scratch filesystems is left on the host: loop devices bound to
/// one of its images (a bound device also means its filesystem is still mounted
/// somewhere: autoclear detaches it once nothing holds it), image files, host mounts.
pub fn scratch_leftovers_of(pid: u32) -> Vec<String> {
    let image = format!("{SCRATCH_DIR}/{pid}-");
    let mut left = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing = std::fs::read_to_string(e.path().join("loop/backing_file"));
        if backing.is_ok_and(|b| b.starts_with(&image)) {
            left.push(format!("loop device {}", e.file_name().to_string_lossy()));
        }
    }
    for e in std::fs::read_dir(SCRATCH_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path().to_string_lossy().starts_with(&image) {
            left.push(format!("image {}", e.path().display()));
        }
    }
    for line in host_mountinfo() {
        if line.contains(SCRATCH_DIR) {
            left.push(format!("mount {line}"));
        }
    }
    left
}

/// Runs every case of one runtime at once; returns each output with its spawn's pid.
fn run_all(home: &Home, manifests: &[String]) -> Vec<(u32, Output)> {
    let running: Vec<_> = manifests
        .iter()
        .map(|m| home.cmd(["run", "--json", "-f", m.as_str()]).start())
        .collect();
    running
        .into_iter()
        .map(|r| {
            let pid = r.pid();
            (pid, r.wait())
        })
        .collect()
}

/// Empty when nothing of spawn `pid`'s scratch filesystems is left within 5 s; else what is.
fn left_after(pid: u32) -> Vec<String> {
    if wait_until(Duration::from_secs(5), || {
        scratch_leftovers_of(pid).is_empty()
    }) {
        Vec::new()
    } else {
        scratch_leftovers_of(pid)
    }
}

/// Fails the test with every failed row of the table at once.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed row(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Why one row of the quota table failed, if it did.
fn check_fill(out: &Output, pid: u32, places: usize) -> Result<(), String> {
    if out.code != Some(3) {
        return Err("the agent's own exit status (3) did not come through".into());
    }
    if !out.json()["killReason"].is_null() {
        return Err("spawn killed the run".into());
    }
    if !out.stderr.contains("No space left on device") {
        return Err("no ENOSPC reached the agent".into());
    }
    let fields = out.fields();
    let wrote: u64 = fields
        .get("wrote")
        .and_then(|w| w.parse().ok())
        .ok_or("no byte count")?;
    if wrote > QUOTA {
        return Err(format!("{} MiB written under a 32 MiB quota", wrote / MIB));
    }
    if wrote < QUOTA - FS_OVERHEAD {
        return Err(format!(
            "only {} MiB of a 32 MiB quota was writable",
            wrote / MIB
        ));
    }
    // The first place took what there was; each later one failed at once.
    for i in 0..places {
        if fields.get(&format!("dd{i}")).map(String::as_str) != Some("1") {
            return Err(format!("dd {i} did not fail"));
        }
    }
    let left = left_after(pid);
    if !left.is_empty() {
        return Err(format!(
            "the scratch filesystem outlived the run by 5 s: {left:?}"
        ));
    }
    Ok(())
}

/// `disk: 32Mi`: whatever the agent writes, in one place or spread over all three, at
/// most the quota lands, the write fails with "No space left on device" and the agent
/// exits as it chooses (not 137); afterwards no image, loop device or mount is left. The
/// old layout let 96 MiB through on native and runc (`/dev/shm` was a second 64 MiB
/// tmpfs) and 128 MiB on gVisor (`/tmp` and `/workspace` each a tmpfs of the quota's size).
#[test]
fn disk_quota_covers_everything_writable_on_every_runtime() {
    let home = Home::new();
    let dir = tempdir("spawn-disk-");
    let cases: [(&str, &[&str], u64); 4] = [
        ("/tmp", &["/tmp"], 100),
        ("/workspace", &["/workspace"], 100),
        ("/dev/shm", &["/dev/shm"], 100),
        ("spread", &["/tmp", "/workspace", "/dev/shm"], 40),
    ];
    let mut failures = Vec::new();
    for runtime in RUNTIMES {
        let manifests: Vec<String> = cases
            .iter()
            .enumerate()
            .map(|(i, (_, places, mib))| {
                let tag = format!("fill{i}");
                manifest(dir.path(), &tag, runtime, "disk: 32Mi", &fill(places, *mib))
            })
            .collect();
        for ((case, places, _), (pid, out)) in cases.iter().zip(run_all(&home, &manifests)) {
            if let Err(why) = check_fill(&out, pid, places.len()) {
                failures.push(format!("{runtime} {case}: {why}\n{out}"));
            }
        }
    }
    assert_no_failures(&failures);
    home.assert_healthy();
}

/// Why the memory row failed, if it did.
fn check_memory(out: &Output, pid: u32) -> Result<(), String> {
    if out.code != Some(0) {
        return Err("the run did not exit 0".into());
    }
    if out.json()["oomKills"] != 0 {
        return Err("an OOM kill".into());
    }
    let fields = out.fields();
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    if field("dd") != "0" || field("wrote") != (300 * MIB).to_string() {
        return Err("300 MiB did not fit in /workspace".into());
    }
    if field("shm") != "1" || !out.stderr.contains("No space left on device") {
        return Err("/dev/shm did not end at the disk quota with ENOSPC".into());
    }
    let total: u64 = field("total").parse().map_err(|_| "no byte count")?;
    if !(1024 * MIB - 64 * MIB..=1024 * MIB).contains(&total) {
        return Err(format!("{} MiB written under a 1 GiB quota", total / MIB));
    }
    let left = left_after(pid);
    if !left.is_empty() {
        return Err(format!(
            "the scratch filesystem outlived the run by 5 s: {left:?}"
        ));
    }
    Ok(())
}

/// `memory: 64Mi, disk: 1Gi`: writing 300 MiB to `/workspace` succeeds (it was an OOM
/// kill while scratch was tmpfs, charged to memory), and filling `/dev/shm` after it stops
/// at the disk quota's remainder with ENOSPC, not at the memory limit with a kill.
#[test]
fn disk_quota_is_independent_of_the_memory_limit_on_every_runtime() {
    let home = Home::new();
    let dir = tempdir("spawn-diskmem-");
    let script = "dd if=/dev/zero of=/workspace/big bs=1M count=300; echo dd $?; \
                  echo wrote $(wc -c < /workspace/big); \
                  dd if=/dev/zero of=/dev/shm/more bs=1M count=2000; echo shm $?; \
                  echo total $(cat /workspace/big /dev/shm/more | wc -c)";
    let manifests: Vec<String> = RUNTIMES
        .iter()
        .map(|rt| manifest(dir.path(), "memory", rt, "memory: 64Mi, disk: 1Gi", script))
        .collect();
    let mut failures = Vec::new();
    for (runtime, (pid, out)) in RUNTIMES.iter().zip(run_all(&home, &manifests)) {
        if let Err(why) = check_memory(&out, pid) {
            failures.push(format!("{runtime}: {why}\n{out}"));
        }
    }
    assert_no_failures(&failures);
    home.assert_healthy();
}
