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
    for &runtime in RUNTIMES {
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
    for &runtime in RUNTIMES {
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

/// The Kubernetes `subPath` class (CVE-2017-1002101) on every runtime: an agent plants
/// symlinks in its writable mount; a later run given one of them (or a path through one)
/// as a mount source is refused, and the host directory they point to is never reached.
#[test]
fn a_symlink_planted_in_a_writable_mount_is_never_followed_by_a_later_run() {
    let home = Home::new();
    let ws = tempdir("spawn-ws-");
    let host_dir = tempdir("spawn-host-dir-");
    write_file(host_dir.path(), "secret.txt", "host secret\n");
    let victim = host_dir.path().display().to_string();
    for &runtime in RUNTIMES {
        // The first run plants every kind of link in what it was given rw.
        let plant = format!(
            "mkdir -p /out/d && ln -s {victim} /out/d/dir && ln -s {victim}/secret.txt /out/d/file \
             && ln -s d/dir /out/rel && ln -s /out/d/dir /out/chain && ln -s {victim} /out/top && echo planted"
        );
        let mount = format!("{}:/out:rw", ws.path().display());
        let out = home.sh_on(runtime, &["--mount", &mount], &plant);
        out.assert_code(0);
        assert!(out.stdout.contains("planted"), "{runtime}:\n{out}");
        for (link, mode) in [
            ("d/dir", "rw"),
            ("d/dir", "ro"),
            ("d/file", "ro"),
            ("rel", "rw"),
            ("chain", "rw"),
            ("top", "rw"),
            ("d/dir/sub", "rw"),
        ] {
            let source = ws.path().join(link);
            let flag = format!("{}:/mnt/x:{mode}", source.display());
            let out = home.sh_on(
                runtime,
                &["--mount", &flag],
                "echo pwned > /mnt/x/pwned 2>/dev/null; cat /mnt/x 2>/dev/null; echo ran",
            );
            out.assert_code(125);
            assert!(
                out.stderr.contains("through a symlink") || out.stderr.contains("does not exist"),
                "{runtime} {link} {mode}:\n{out}"
            );
            assert!(
                !out.stdout.contains("ran"),
                "{runtime} {link} {mode}: it ran:\n{out}"
            );
        }
        let left: Vec<String> = std::fs::read_dir(host_dir.path())
            .expect("read the host dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["secret.txt"],
            "{runtime}: the host directory was reached"
        );
        std::fs::remove_dir_all(ws.path().join("d")).expect("clean");
        for l in ["rel", "chain", "top"] {
            std::fs::remove_file(ws.path().join(l)).expect("clean");
        }
    }
}

/// spawn's own state, the runtimes' state and spawn's binaries are never a mount source, ro
/// or rw, on any runtime, nor is a directory that holds them.
#[test]
fn spawns_own_files_are_never_mounted() {
    let home = Home::new();
    std::fs::create_dir_all(home.path().join("audit")).expect("audit dir");
    let exe = std::fs::canonicalize(super::helpers::SPAWN).expect("spawn's path");
    let bin_dir = exe.parent().expect("a directory").to_owned();
    let sources = [
        home.path().to_owned(),
        home.path().join("audit"),
        Path::new("/dev/shm/spawn").to_owned(),
        Path::new("/dev/shm/spawn/bundles").to_owned(),
        Path::new("/dev/shm").to_owned(),
        exe.clone(),
        bin_dir,
    ];
    for &runtime in RUNTIMES {
        for source in &sources {
            for mode in ["ro", "rw"] {
                let flag = format!("{}:/mnt/x:{mode}", source.display());
                let out = home.sh_on(runtime, &["--mount", &flag], "echo ran");
                out.assert_code(125);
                assert!(
                    out.stderr.contains("spawn's own")
                        || out.stderr.contains("never mounted")
                        || out.stderr.contains("cannot be mounted writable"),
                    "{runtime} {flag}:\n{out}"
                );
                assert!(
                    !out.stdout.contains("ran"),
                    "{runtime} {flag}: it ran:\n{out}"
                );
            }
        }
    }
}

/// Nothing a mount target names may create anything on the host: targets inside the
/// sandbox's host trees (every one, and through `/bin -> usr/bin`) or inside a mount of a
/// host directory are refused before any runtime starts, and nothing appears on the host.
#[test]
fn mount_targets_never_make_anything_on_the_host() {
    let home = Home::new();
    let src = tempdir("spawn-src-");
    write_file(src.path(), "f", "x\n");
    let outer = tempdir("spawn-outer-");
    let name = unique("spawn-target-");
    let targets = [
        format!("/usr/share/{name}"),
        format!("/usr/local/bin/{name}"),
        format!("/usr/lib/{name}/deep"),
        format!("/bin/{name}"),
        format!("/sbin/{name}"),
        format!("/lib/{name}"),
        format!("/lib64/{name}"),
        format!("/etc/ssl/certs/{name}"),
        format!("/etc/alternatives/{name}"),
        format!("/etc/ld.so.conf.d/{name}"),
    ];
    for &runtime in RUNTIMES {
        for target in &targets {
            for mode in ["ro", "rw"] {
                let flag = format!("{}:{target}:{mode}", src.path().display());
                let out = home.sh_on(runtime, &["--mount", &flag], "echo ran");
                out.assert_code(125);
                assert!(
                    out.stderr.contains("made on the host"),
                    "{runtime} {flag}:\n{out}"
                );
            }
        }
        // Inside another host mount.
        let out = home.sh_on(
            runtime,
            &[
                "--mount",
                &format!("{}:/data:rw", outer.path().display()),
                "--mount",
                &format!("{}:/data/inner:ro", src.path().display()),
            ],
            "echo ran",
        );
        out.assert_code(125);
        assert!(out.stderr.contains("inside /data"), "{runtime}:\n{out}");
        // Beside, it works.
        let out = home.sh_on(
            runtime,
            &[
                "--mount",
                &format!("{}:/mnt/{name}:ro", src.path().display()),
            ],
            &format!("cat /mnt/{name}/f"),
        );
        out.assert_code(0);
    }
    for target in &targets {
        let host_path = Path::new(target);
        assert!(
            !host_path.exists(),
            "{} appeared on the host",
            host_path.display()
        );
    }
    assert!(
        std::fs::read_dir(outer.path())
            .expect("outer")
            .next()
            .is_none(),
        "a mount point was made in the host's directory"
    );
}
