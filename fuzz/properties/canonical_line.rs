// The property of the `canonical_line` fuzz target. spawn-audit's tests include this file too
// and check it on every input kept in fuzz/regressions/canonical_line/ (hence no inner
// attributes or `//!` comments here; the includer puts `spawn_audit` in scope).
//
// The chain's fast path (`spawn_audit::canonical::scan`) hashes a line as it stands, minus
// its `hash` member, instead of parsing and canonicalizing it. That is sound only if every
// line it accepts is exactly what the RFC 8785 reference (serde_json_canonicalizer) writes
// for the parsed line, and, without its hash member, for the parsed record without `hash`
// (same bytes, so the same SHA-256); and the chain members it reports are the parsed
// ones. And whatever the input, `verify` (chunks, threads, the fast path) answers exactly
// as `verify_reference` (every line parsed and canonicalized in turn) does.
//
// So that the fuzzer reaches canonical lines at all, any JSON object input is also
// canonicalized by the reference and checked; it must be accepted when its numbers are all
// integers within ±2^53 and it is not nested too deep (spawn's own lines take the fast path).

use spawn_audit::canonical::{scan, MAX_DEPTH};
use spawn_audit::chain::{verify, verify_reference};

fn check(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        check_line(line);
    }
    if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_slice(data) {
        if let Ok(line) = serde_json_canonicalizer::to_vec(&value) {
            if fast_path_kind(&value, 1) {
                assert!(scan(&line).is_some(), "{}", String::from_utf8_lossy(&line));
            }
            check_line(&line);
        }
    }
    for whole in [true, false] {
        let fast = verify(data, whole).expect("reading from memory does not fail");
        let reference = verify_reference(data, whole).expect("reading from memory does not fail");
        assert_eq!(fast, reference);
    }
}

/// Whatever `scan` accepts is its own RFC 8785 form, and so is it without its hash member.
fn check_line(line: &[u8]) {
    let Some(found) = scan(line) else {
        return;
    };
    let text = String::from_utf8_lossy(line);
    let value: serde_json::Value = serde_json::from_slice(line).expect("accepted, so JSON");
    let reference = serde_json_canonicalizer::to_vec(&value).expect("JSON canonicalizes");
    assert_eq!(
        String::from_utf8_lossy(&reference),
        text,
        "not its own canonical form"
    );
    let serde_json::Value::Object(mut record) = value else {
        panic!("accepted, so an object: {text}")
    };
    assert_eq!(
        found.seq,
        record.get("seq").and_then(serde_json::Value::as_u64),
        "{text}"
    );
    if found.prev_hash.is_some() {
        assert_eq!(
            found.prev_hash,
            record.get("prevHash").and_then(|v| v.as_str()),
            "{text}"
        );
    }
    if found.hash.is_some() {
        assert_eq!(
            found.hash,
            record.get("hash").and_then(|v| v.as_str()),
            "{text}"
        );
    }
    let had_hash = record.remove("hash").is_some();
    assert_eq!(found.without_hash().is_some(), had_hash, "{text}");
    if let Some((before, after)) = found.without_hash() {
        let reference = serde_json_canonicalizer::to_vec(&record).expect("JSON canonicalizes");
        assert_eq!(
            String::from_utf8_lossy(&reference),
            String::from_utf8_lossy(&[before, after].concat()),
            "without its hash: {text}"
        );
    }
}

/// Whether `v` (at nesting level `depth`) has only integers within ±2^53 as numbers and
/// is nested at most `MAX_DEPTH` deep: what `scan` accepts in canonical form.
fn fast_path_kind(v: &serde_json::Value, depth: usize) -> bool {
    use serde_json::Value;
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => {
            n.as_u64().is_some_and(|u| u <= EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT)
        }
        Value::Array(a) => depth <= MAX_DEPTH && a.iter().all(|v| fast_path_kind(v, depth + 1)),
        Value::Object(m) => depth <= MAX_DEPTH && m.values().all(|v| fast_path_kind(v, depth + 1)),
    }
}
