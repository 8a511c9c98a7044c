//! The OCI configuration derived from the sandbox policy really runs under an OCI runtime
//! (`runc`, installed by `make test`), with the policy's guarantees: uid 1000, no
//! capabilities, no_new_privs, seccomp denying mount, read-only system, writable scratch.
//! Groundwork for the `container` and `gvisor` runtimes (issue 3).
//!
//! A plain `main` (harness = false), like `granted_mounts`. Needs root and runc.

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use spawn_policy::{RunSpec, RuntimeKind};
use spawn_sandbox::{cgroups::Limits, native, oci, rootfs};

const SCRIPT: &str = "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
    mount -t tmpfs x /tmp 2>/dev/null && echo mount-allowed || echo mount-denied; \
    touch /usr/x 2>/dev/null && echo usr-writable || echo usr-readonly; \
    echo data > /workspace/f && cat /workspace/f; test -e /etc/shadow && echo shadow || echo no-shadow";

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("runc is not installed: `make test` installs it (apt-get install runc)");

    let spec = RunSpec {
        name: "ocitest".into(),
        ..RunSpec::bare(
            RuntimeKind::Container,
            vec!["sh".into(), "-c".into(), SCRIPT.into()],
        )
    };
    // Bundles hold the agent's environment (later: secrets): a private directory on tmpfs.
    let bundle = tempfile::Builder::new()
        .prefix("spawn-oci-test-")
        .tempdir_in("/dev/shm")
        .expect("bundle directory on /dev/shm");
    std::fs::set_permissions(bundle.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let state = tempfile::Builder::new()
        .prefix("spawn-runc-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let (root_id, agent_id) = (0x7180_0000, 0x7180_0001);
    let plan = rootfs::plan(&spec, 64 << 20, "ocitest", rootfs::Dns::None);
    let root = bundle.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    rootfs::populate(&plan, &root, agent_id, rootfs::HostBinds::Mounted).unwrap();
    // spawn attaches a per-run ext4 filesystem here (see `scratch`); plain directories
    // stand in for it.
    let scratch = bundle.path().join("scratch");
    for dir in &plan.scratch {
        let at = scratch.join(&dir.name);
        std::fs::create_dir_all(&at).unwrap();
        let owner = if dir.agent { agent_id } else { root_id };
        std::os::unix::fs::chown(&at, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(dir.mode)).unwrap();
    }
    let env = native::agent_env(&spec);
    let input = oci::OciInput {
        argv: &spec.command,
        env: &env,
        cwd: Path::new("/workspace"),
        hostname: "ocitest",
        plan: &plan,
        root_id,
        agent_id,
        limits: Limits {
            memory_bytes: 256 << 20,
            pids: 64,
            cpu_millis: Some(1000),
        },
        nofile: 4096,
        cgroups_path: None,
        init: None,
        kernel: oci::Kernel::Host,
        secrets_fd: None,
        netns: None,
        terminal: false,
        staged: &[],
        scratch: &scratch,
    };
    let config = oci::runtime_spec(&input).unwrap();
    let path = bundle.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let id = format!("spawn-oci-test-{}", std::process::id());
    let out = Command::new(runc)
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .output()
        .expect("run runc");
    let _ = Command::new(runc)
        .arg("--root")
        .arg(state.path())
        .args(["delete", "--force", &id])
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "runc failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = [
        "1000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "mount-denied",
        "usr-readonly",
        "data",
        "no-shadow",
    ];
    let mut failed = 0;
    for want in expect {
        if !lines.contains(&want) {
            eprintln!("missing {want:?} in:\n{stdout}");
            failed += 1;
        }
    }
    assert_eq!(
        failed, 0,
        "the OCI sandbox does not keep the policy's guarantees"
    );
    println!("oci_runc: {} passed, 0 failed", expect.len());
}
