// The property of the `sentry_record` fuzz target. spawn-sandbox's tests include this file
// too and check it on every input kept in fuzz/regressions/sentry_record/ (hence no inner
// attributes or `//!` comments here).
//
// A record of runsc's remote trace sink (written by the Sentry, which runs the agent's
// kernel) decodes or is refused, never panics, and a record that decodes is one that fits
// the size limit; decoding the same bytes twice gives the same answer.

use spawn_sandbox::gvisor_monitor::sink::{decode, MAX_MESSAGE};

pub fn check(data: &[u8]) {
    let first = decode(data);
    if first.is_ok() {
        assert!(data.len() <= MAX_MESSAGE, "a record over the limit decoded");
    }
    let again = decode(data);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "decoding is not deterministic"
    );
}
