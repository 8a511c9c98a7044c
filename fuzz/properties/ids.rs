// The property of the `ids` fuzz target. spawn-audit's tests include this file too and
// check it on every input kept in fuzz/regressions/ids/ (hence no inner attributes or
// `//!` comments here; the includer puts `spawn_audit` in scope).
//
// What callers put where an id goes (a run id in a URL path, a trace id in a query): an id
// is accepted exactly when it is one spawn could have made — and then it reads back as
// itself, so one id has one spelling — and every 128 bits make an id that reads back as
// those bits.

use spawn_audit::{format_id, parse_id, ID_RANDOM_BYTES};

const PREFIXES: [&str; 4] = ["tr", "ag", "req", "key"];

fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let prefix = PREFIXES[usize::from(first) % PREFIXES.len()];
    // The bytes as text (what a path segment decodes to), whatever they are.
    let text = String::from_utf8_lossy(rest);
    if let Some(bits) = parse_id(prefix, &text) {
        assert_eq!(format_id(prefix, &bits), text, "accepted a second spelling");
    }
    // With the prefix glued on, as a real id would come.
    let glued = format!("{prefix}_{text}");
    if let Some(bits) = parse_id(prefix, &glued) {
        assert_eq!(format_id(prefix, &bits), glued, "accepted a second spelling");
    }
    // Any 128 bits round-trip.
    if rest.len() >= ID_RANDOM_BYTES {
        let mut bits = [0u8; ID_RANDOM_BYTES];
        bits.copy_from_slice(&rest[..ID_RANDOM_BYTES]);
        let id = format_id(prefix, &bits);
        assert_eq!(parse_id(prefix, &id), Some(bits), "{id} does not read back");
        for other in PREFIXES.iter().filter(|p| **p != prefix) {
            assert_eq!(parse_id(other, &id), None, "{id} read as an {other} id");
        }
    }
}
