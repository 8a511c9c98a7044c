//! What the agent starts with: a clean environment, the working directory it asked for,
//! mounts with the modes granted, empty per-run scratch space, and live output.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::helpers::{tempdir, unique, write_file, Home};

#[test]
fn environment_is_clean_apart_from_env_flags() {
    let home = Home::new();
    let out = home
        .native_cmd(&["--env", "K=V", "--env", "GREETING=hello world"], &["env"])
        .env("SECRET_LEAK_CANARY", "xyz-canary-value")
        .env("AWS_SECRET_ACCESS_KEY", "aws-canary-value")
        .env("ANTHROPIC_API_KEY", "anthropic-canary-value")
        .env("SPAWN_TEST_OTHER", "other-canary-value")
        .run();
    out.assert_code(0);
    let body = out.body();
    let mut names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["GREETING", "HOME", "K", "LANG", "PATH", "TERM"],
        "\n{out}"
    );
    assert!(body.lines().any(|l| l == "K=V"), "\n{out}");
    assert!(body.lines().any(|l| l == "GREETING=hello world"), "\n{out}");
    assert!(
        !body.contains("canary"),
        "spawn's own environment leaked into the sandbox:\n{out}"
    );
}

#[test]
fn workdir_flag_sets_the_working_directory() {
    let home = Home::new();
    let out = home.native(&["--workdir", "/tmp"], &["/bin/pwd"]);
    out.assert_code(0);
    assert_eq!(out.body(), "/tmp", "\n{out}");
}

/// Granted mounts behave the same on every runtime.
const RUNTIMES: &[&str] = &["native", "container", "gvisor"];

#[test]
fn read_only_mount_cannot_be_written() {
    for runtime in RUNTIMES {
        read_only_mount_cannot_be_written_on(runtime);
    }
}

#[allow(clippy::expect_used, clippy::unwrap_used)] // the body of a test
fn read_only_mount_cannot_be_written_on(runtime: &str) {
    let home = Home::new();
    let dir = tempdir("spawn-ro-");
    // World-writable on the host: only the read-only mount can stop the agent.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod dir");
    let existing = write_file(dir.path(), "existing", "original\n");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o666))
        .expect("chmod file");
    let mount = format!("{}:/in:ro", dir.path().display());
    let out = home.sh_on(
        runtime,
        &["--mount", &mount],
        "echo read $(cat /in/existing); \
         echo x > /in/new 2>/dev/null; echo create $?; \
         echo x >> /in/existing 2>/dev/null; echo append $?; \
         rm -f /in/existing 2>/dev/null; echo rm $?; \
         mkdir /in/d 2>/dev/null; echo mkdir $?",
    );
    out.assert_code(0);
    assert_eq!(
        out.field("read"),
        "original",
        "{runtime}: the mount is not readable:\n{out}"
    );
    for op in ["create", "append", "rm", "mkdir"] {
        assert_ne!(
            out.field(op),
            "0",
            "{runtime}: {op} succeeded on a read-only mount:\n{out}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&existing).expect("still there"),
        "original\n",
        "{runtime}"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, [std::ffi::OsString::from("existing")], "{runtime}");
}

#[test]
fn read_write_mount_is_writable_and_files_belong_to_the_directory_owner() {
    for runtime in RUNTIMES {
        read_write_mount_on(runtime);
    }
}

#[allow(clippy::expect_used, clippy::unwrap_used)] // the body of a test
fn read_write_mount_on(runtime: &str) {
    let home = Home::new();
    let dir = tempdir("spawn-rw-");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let owner = std::fs::metadata(dir.path()).expect("stat").uid();
    assert_eq!(owner, 0, "the test directory should belong to root");
    // Not the owner's: the agent may read it (world-readable) but not change it.
    let other = write_file(dir.path(), "other", "theirs\n");
    std::os::unix::fs::chown(&other, Some(4242), Some(4242)).expect("chown");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mount = format!("{}:/out:rw", dir.path().display());
    let out = home.sh_on(
        runtime,
        &["--mount", &mount],
        "echo result > /out/result.txt; echo write $?; \
         mkdir /out/sub && echo nested > /out/sub/file; echo mkdir $?; \
         echo x >> /out/other 2>/dev/null; echo other $?; \
         echo sees $(cat /out/other)",
    );
    out.assert_code(0);
    assert_eq!(
        out.field("write"),
        "0",
        "{runtime}: the agent cannot write its rw mount:\n{out}"
    );
    assert_eq!(out.field("mkdir"), "0", "{runtime}:\n{out}");
    assert_ne!(
        out.field("other"),
        "0",
        "{runtime}: the agent changed a file of another owner:\n{out}"
    );
    assert_eq!(out.field("sees"), "theirs", "{runtime}:\n{out}");
    for (path, body) in [("result.txt", "result\n"), ("sub/file", "nested\n")] {
        let file = dir.path().join(path);
        assert_eq!(
            std::fs::read_to_string(&file).ok().as_deref(),
            Some(body),
            "{runtime}: {path}\n{out}"
        );
        let meta = std::fs::metadata(&file).expect("stat result");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{runtime}: {path} does not belong to the directory's owner"
        );
    }
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "theirs\n");
    // The staged mount lived only in the runtime's own mount namespace.
    let leaked: Vec<String> = super::helpers::host_mountinfo()
        .into_iter()
        .filter(|l| l.contains(&dir.path().display().to_string()) || l.contains("/grant"))
        .collect();
    assert!(
        leaked.is_empty(),
        "{runtime}: mounts left on the host: {leaked:?}"
    );
}

#[test]
fn scratch_space_is_writable_empty_and_per_run() {
    let home = Home::new();
    let name = unique("scratch");
    let script = format!(
        "echo tmp-start $(ls -A /tmp | wc -l); echo workspace-start $(ls -A /workspace | wc -l); \
         echo data > /tmp/{name}; echo tmp-write $?; \
         echo data > /workspace/{name}; echo workspace-write $?; \
         echo shm-start $(ls -A /dev/shm | wc -l); echo data > /dev/shm/{name}; echo shm-write $?"
    );
    for _ in 0..2 {
        let out = home.sh(&[], &script);
        out.assert_code(0);
        let fields = out.fields();
        let expected = [
            ("tmp-start", "0"),
            ("workspace-start", "0"),
            ("tmp-write", "0"),
            ("workspace-write", "0"),
            ("shm-start", "0"),
            ("shm-write", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(fields, expected, "\n{out}");
    }
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "the sandbox's /tmp file is on the host"
    );
    assert!(
        !Path::new("/workspace").join(&name).exists(),
        "the sandbox's /workspace file is on the host"
    );
}

#[test]
fn output_is_streamed_live() {
    let home = Home::new();
    let out = home.native(&[], &["sh", "-c", "echo first; sleep 2; echo second"]);
    out.assert_code(0);
    let at = |text: &str| {
        out.lines
            .iter()
            .find(|(_, l)| l.trim_end() == text)
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no line {text:?}:\n{out}"))
    };
    let first = at("first");
    assert!(
        first < Duration::from_millis(1500),
        "\"first\" reached spawn's stdout only after {first:?}:\n{out}"
    );
    assert!(at("second") >= Duration::from_secs(2), "\n{out}");
}
