//! spawn-init's command line, run as a program: what `InitArgs::to_args` writes is run,
//! anything else refused with the usage and 125 before anything runs. (It runs as PID 1
//! of real sandboxes in spawn-cli's end-to-end suite.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::process::Command;

/// The init's own argument parsing (`spawn-init`, a binary of its own): anything but what
/// `InitArgs::to_args` writes is refused with the usage and 125, nothing is run.
#[test]
fn spawn_init_refuses_malformed_arguments() {
    let init = env!("CARGO_BIN_EXE_spawn-init");
    let run = |args: &[&str]| {
        Command::new(init)
            .args(args)
            .output()
            .expect("run spawn-init")
    };
    for args in [
        &[][..],
        &["--"],
        &["true"],
        &["--report-fd", "x", "--", "true"],
        &["--report-fd", "1", "--", "true"],
        &["--report-fd", "-3", "--", "true"],
        &["--report-fd", "+4", "--", "true"],
        &["--report-fd", "99999999999", "--", "true"],
        &["--report-fd"],
        &["--stdio-fd", "2", "--", "true"],
        &["--report-fd", "4", "--stdio-fd", "3", "--", "true"],
        &["--report-fd", "5", "--stdio-fd", "3", "--", "true"],
        &["--stdio-fd", "4", "--stdio-fd", "7", "--", "true"],
        &["--verbose", "--", "true"],
        &["--read", "relative", "--", "true"],
        &["--write", "--", "true"],
        &["--gvisor-root", "--gvisor-root", "--", "true"],
        &["--xattr-compat", "--xattr-compat", "--", "true"],
        &["--report-fd", "5", "--report-fd", "6", "--", "true"],
        &["--", ""][..1],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains("usage"), "{args:?}: {stderr}");
    }
    // Well-formed but naming descriptors that are not open: refused, nothing run.
    for args in [
        &["--report-fd", "9", "--", "sh", "-c", "echo ran"][..],
        &["--stdio-fd", "9", "--", "sh", "-c", "echo ran"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains("not open"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: it ran");
    }
    // Well-formed, it runs the command and returns its status.
    let out = run(&["--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
}

/// Arguments that are not UTF-8, empty, or very long (the init reads `argv` itself): each
/// refused or run as written, never misread.
#[test]
fn spawn_init_reads_its_argv_whole() {
    let init = env!("CARGO_BIN_EXE_spawn-init");
    let bad = OsStr::from_bytes(b"--gvisor-r\xffot");
    for args in [
        vec![bad, OsStr::new("--"), OsStr::new("true")],
        vec![OsStr::new("--"), OsStr::from_bytes(b"tr\xffue")],
        vec![OsStr::new(""), OsStr::new("--"), OsStr::new("true")],
    ] {
        let out = Command::new(init)
            .args(&args)
            .output()
            .expect("run spawn-init");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains("usage"), "{args:?}: {stderr}");
    }
    // The command's arguments arrive whole and in order: empty, long, many.
    let long = "x".repeat(100_000);
    let mut args = vec![
        "--",
        "sh",
        "-c",
        r#"printf '%s|' "$#" "$1" "${#2}" "$3""#,
        "sh",
        "",
    ];
    args.push(&long);
    args.push("last");
    let out = Command::new(init)
        .args(&args)
        .output()
        .expect("run spawn-init");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3||100000|last|");
    // Exit statuses pass through as the command's: 0-255, and 128+N for a signal.
    for (script, code) in [
        ("exit 0", 0),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + 15),
    ] {
        let out = Command::new(init)
            .args(["--", "sh", "-c", script])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(code), "{script}");
    }
}
