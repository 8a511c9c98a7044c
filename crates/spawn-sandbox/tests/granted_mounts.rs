//! Granted mounts are opened exactly once, without following symlinks, so a path swapped
//! for a symlink after the policy checked it cannot smuggle another tree in. The policy
//! layer canonicalizes sources, so this can only be reached by a race; here the library is
//! called directly with a symlink where the canonical path should be.
//!
//! A plain `main` (harness = false): the native runtime must be started from a
//! single-threaded process, which the default test harness is not. Needs root.

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use spawn_policy::{MountSource, MountSpec, RunSpec, RuntimeKind};
use spawn_sandbox::{NoObserver, RunOptions, SandboxError};

fn spec(source: PathBuf, writable: bool) -> RunSpec {
    RunSpec {
        name: "race".into(),
        mounts: vec![MountSpec {
            source: MountSource::Host(source),
            target: "/data".into(),
            writable,
        }],
        ..RunSpec::bare(RuntimeKind::Native, vec!["true".into()])
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/etc", &link).expect("symlink");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");

    for writable in [true, false] {
        let result = spawn_sandbox::run(
            &spec(link.clone(), writable),
            &RunOptions::new(format!("tr_racetest{}", u8::from(writable))),
            &mut NoObserver,
        );
        match result {
            Err(SandboxError::Setup { source, .. })
                if source.raw_os_error() == Some(libc::ELOOP) => {}
            other => {
                panic!("a symlinked source (writable={writable}) must be refused, got {other:?}")
            }
        }
    }
    // The same directory through its real path works.
    let report = spawn_sandbox::run(
        &spec(real, true),
        &RunOptions::new("tr_racetestok"),
        &mut NoObserver,
    )
    .expect("a real directory mounts");
    assert_eq!(report.exit_code, 0);
    println!("granted_mounts: 2 passed, 0 failed");
}
