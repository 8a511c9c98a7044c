// The property of the `sentry_log` fuzz target. spawn-sandbox's tests include this file too
// and check it on the seeds and on every input kept in fuzz/regressions/sentry_log/ (hence
// no inner attributes or `//!` comments here).
//
// A line of the Sentry's debug log (which carries strings the agent chose: paths, names)
// is a denial only when it is a JSON object at level `debug` whose message, as the Sentry
// wrote it, is `task_syscall.go:N] [TGID:TID] Syscall SYSNO: denied by seccomp` with the
// numbers reported; parsing never panics, whatever the bytes.

use spawn_sandbox::gvisor_monitor::{parse_line, MAX_LINE};

pub fn check(data: &[u8]) {
    let Some(d) = parse_line(data) else {
        return;
    };
    assert!(data.len() <= MAX_LINE, "a denial longer than a line");
    let value: serde_json::Value = serde_json::from_slice(data).expect("a denial is JSON");
    assert_eq!(value["level"], "debug");
    let msg = value["msg"].as_str().expect("a denial has a message");
    assert!(msg.starts_with("task_syscall.go:"), "{msg:?}");
    assert!(
        msg.ends_with(&format!("] Syscall {}: denied by seccomp", d.sysno)),
        "{msg:?} is not syscall {}",
        d.sysno
    );
    // The ids, as the Sentry pads them (with spaces), name the same thread.
    let ids = msg
        .split_once("] [")
        .and_then(|(_, rest)| rest.split_once("] "))
        .map(|(ids, _)| ids)
        .expect("a denial names its thread");
    let (tgid, tid) = ids.split_once(':').expect("TGID:TID");
    assert_eq!(tgid.trim_start_matches(' '), d.tgid.to_string(), "{msg:?}");
    assert_eq!(tid.trim_start_matches(' '), d.tid.to_string(), "{msg:?}");
}
