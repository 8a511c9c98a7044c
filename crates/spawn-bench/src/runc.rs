//! The `runc` baseline: a bare `runc run` of a bundle equivalent to the one
//! `spawn run --runtime container` makes (same rootfs plan, ids, limits, `/proc` masks and
//! the policy's seccomp rules as an OCI profile), running the command directly: no spawn,
//! no init, no listener.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use spawn_policy::{RunSpec, RuntimeKind};
use spawn_sandbox::{cgroups::Limits, native, oci, rootfs};

use crate::case::{require, Case};

/// Path of `runc`, or an error saying how to install it.
pub fn find() -> Result<PathBuf> {
    require("runc", "runc")
}

/// Writes a bundle running `argv` under `dir` (which must be on tmpfs), in a directory
/// named `tag`, and returns the case running it.
pub fn case(name: &str, runc: &Path, dir: &Path, tag: &str, argv: &[&str]) -> Result<Case> {
    let spec = RunSpec {
        name: "bench".into(),
        ..RunSpec::bare(
            RuntimeKind::Container,
            argv.iter().map(|a| (*a).to_owned()).collect(),
        )
    };
    let bundle = dir.join(format!("runc-bundle-{tag}"));
    let state = dir.join("runc-state");
    let root = bundle.join("rootfs");
    for d in [&bundle, &state, &root] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o711))?;
    // Unused host ids, as spawn picks them (never 0).
    let (root_id, agent_id) = (0x7190_0000, 0x7190_0001);
    let plan = rootfs::plan(&spec, 64 << 20, "bench", rootfs::Dns::None);
    rootfs::populate(&plan, &root, agent_id, rootfs::HostBinds::Mounted)
        .context("populate the baseline's root")?;
    // spawn's scratch filesystem is a per-run ext4 image; the baseline binds plain
    // directories of the bench's tmpfs in its place.
    let scratch = bundle.join("scratch");
    for dir in &plan.scratch {
        let at = scratch.join(&dir.name);
        std::fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?;
        let owner = if dir.agent { agent_id } else { root_id };
        std::os::unix::fs::chown(&at, Some(owner), Some(owner))?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(dir.mode))?;
    }
    let env = native::agent_env(&spec);
    let config = oci::runtime_spec(&oci::OciInput {
        argv: &spec.command,
        env: &env,
        cwd: Path::new("/workspace"),
        hostname: "bench",
        plan: &plan,
        root_id,
        agent_id,
        limits: Limits {
            memory_bytes: 512 << 20,
            pids: 256,
            cpu_millis: Some(1000),
        },
        nofile: 1024,
        cgroups_path: Some(format!("/spawn-bench/runc-{}-{tag}", std::process::id())),
        init: None,
        kernel: oci::Kernel::Host,
        secrets_fd: None,
        netns: None,
        terminal: false,
        staged: &[],
        scratch: &scratch,
    })
    .context("derive the baseline's OCI configuration")?;
    let path = bundle.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(Case::new(name, runc)
        .args([std::ffi::OsStr::new("--root"), state.as_os_str()])
        .args(["run", "--bundle"])
        .args([bundle.as_os_str()])
        .args([format!("spawn-bench-{}-{tag}", std::process::id())]))
}

/// Removes the (empty) `spawn-bench` parent groups runc created for the baseline, in every
/// hierarchy; runc removes each run's own group.
pub fn remove_cgroup_parents() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = hierarchies
        .flatten()
        .map(|h| h.path().join("spawn-bench"))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup/spawn-bench").to_owned());
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
