// The property of the `audit_chain` fuzz target. spawn-audit's tests include this file too
// and check it on every input kept in fuzz/regressions/audit_chain/ (hence no inner
// attributes or `//!` comments here; the includer puts `spawn_audit` in scope).
//
// What `spawn audit verify --file` reads (an export anyone may hand over), arbitrary bytes:
// the check never fails to answer; what it calls intact as a whole log starts at seq 1
// from the genesis hash and has as many seqs as records; a break names a line of the
// input (and the bad record's seq), after the records it vouched for; and the answer does not
// depend on where the input is cut into reads. And for any JSON, the canonical form spawn
// hashes is the RFC 8785 reference implementation's, to the byte.

use spawn_audit::chain::{canonical, verify, GENESIS};

fn check(data: &[u8]) {
    // Any JSON: spawn's canonical form is the RFC 8785 reference's, to the byte.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(
            canonical(&value).ok(),
            serde_json_canonicalizer::to_vec(&value).ok(),
            "{value}"
        );
    }
    let lines = data.split(|&b| b == b'\n').count() as u64;
    for whole in [true, false] {
        let v = verify(data, whole).expect("reading from memory does not fail");
        match &v.broken {
            None => {
                if let (Some(first), Some(last)) = (v.first_seq, v.last_seq) {
                    assert_eq!(last - first + 1, v.records, "{v:?}");
                    if whole {
                        assert_eq!(first, 1, "{v:?}");
                        assert_eq!(v.anchor.as_deref(), Some(GENESIS), "{v:?}");
                    }
                } else {
                    assert_eq!(v.records, 0, "{v:?}");
                    assert_eq!(v.torn_lines, 0, "junk called an intact log: {v:?}");
                }
            }
            Some(b) => {
                // The seq is the bad record's own (0 included: it names what is written).
                assert!(b.line >= 1 && b.line <= lines, "{v:?}");
                assert!(!b.reason.is_empty());
                assert!(v.records < b.line, "{v:?}");
            }
        }
        // Read a byte at a time: the same answer.
        let slow = verify(std::io::BufReader::with_capacity(1, data), whole)
            .expect("reading from memory does not fail");
        assert_eq!(slow, v);
    }
}
