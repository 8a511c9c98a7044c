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

fn assert_nothing_left(runtime: &str, case: &str, pid: u32) {
    let clean = wait_until(Duration::from_secs(5), || {
        scratch_leftovers_of(pid).is_empty()
    });
    assert!(
        clean,
        "{runtime} {case}: the scratch filesystem outlived the run by 5 s: {:?}",
        scratch_leftovers_of(pid)
    );
}

/// `disk: 32Mi`: whatever the agent writes, in one place or spread over all three, at
/// most the quota lands, the write fails with "No space left on device" and the agent
/// exits as it chooses (not 137). The old layout let 96 MiB through on native and runc
/// (`/dev/shm` was a second 64 MiB tmpfs) and 128 MiB on gVisor (`/tmp` and `/workspace`
/// each a tmpfs of the quota's size).
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
            out.assert_code(3);
            let json = out.json();
            assert_eq!(
                json["killReason"],
                serde_json::Value::Null,
                "{runtime} {case}:\n{out}"
            );
            assert!(
                out.stderr.contains("No space left on device"),
                "{runtime} {case}: no ENOSPC reached the agent:\n{out}"
            );
            let wrote: u64 = out.field("wrote").parse().expect("a byte count");
            assert!(
                wrote <= QUOTA,
                "{runtime} {case}: {} MiB written under a 32 MiB quota:\n{out}",
                wrote / MIB
            );
            assert!(
                wrote >= QUOTA - FS_OVERHEAD,
                "{runtime} {case}: only {} MiB of a 32 MiB quota was writable:\n{out}",
                wrote / MIB
            );
            // The first place took what there was; each later one failed at once.
            assert_eq!(out.field("dd0"), "1", "{runtime} {case}:\n{out}");
            for i in 1..places.len() {
                assert_eq!(
                    out.field(&format!("dd{i}")),
                    "1",
                    "{runtime} {case}:\n{out}"
                );
            }
            assert_nothing_left(runtime, case, pid);
        }
    }
    home.assert_healthy();
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
    for (runtime, (pid, out)) in RUNTIMES.iter().zip(run_all(&home, &manifests)) {
        out.assert_code(0);
        let json = out.json();
        assert_eq!(json["oomKills"], 0, "{runtime}: an OOM kill:\n{out}");
        assert_eq!(out.field("dd"), "0", "{runtime}:\n{out}");
        assert_eq!(
            out.field("wrote"),
            (300 * MIB).to_string(),
            "{runtime}:\n{out}"
        );
        assert_eq!(out.field("shm"), "1", "{runtime}:\n{out}");
        assert!(
            out.stderr.contains("No space left on device"),
            "{runtime}: /dev/shm did not end at the disk quota:\n{out}"
        );
        let total: u64 = out.field("total").parse().expect("a byte count");
        assert!(
            (1024 * MIB - 64 * MIB..=1024 * MIB).contains(&total),
            "{runtime}: {} MiB written under a 1 GiB quota:\n{out}",
            total / MIB
        );
        assert_nothing_left(runtime, "memory", pid);
    }
    home.assert_healthy();
}
