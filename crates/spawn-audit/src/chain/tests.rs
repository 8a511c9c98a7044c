use super::*;
use crate::event::{Event, EventType, Outcome, Principal, Resource};
use crate::AuditLog;
use serde_json::json;

fn event(n: u64) -> Event {
    Event::new(
        EventType::AgentCapabilityDenied,
        Principal {
            kind: "agent".into(),
            id: "ag_test".into(),
            name: Some("tester".into()),
        },
        Resource {
            kind: "capability".into(),
            name: "exec".into(),
        },
        "execute",
        Outcome::Denied,
    )
    .with_detail("n", n)
    .with_detail(
        "argv",
        json!(["sh", "-c", "echo \"}\n{\\\"seq\\\": 1}\u{1b}[2J"]),
    )
    .with_detail("ratio", 0.1 + 0.2)
    .with_detail("big", u64::MAX)
    .with_detail("unicode", "é\u{10ffff}\u{7f}")
}

/// A log of 12 records in batches of 1, 3, 1, 5 and 2, from two handles.
fn log() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut a = AuditLog::open(dir.path()).unwrap();
    let mut b = AuditLog::open(dir.path()).unwrap();
    let mut n = 0;
    for (i, size) in [1, 3, 1, 5, 2].into_iter().enumerate() {
        let batch: Vec<Event> = (0..size)
            .map(|_| {
                n += 1;
                event(n)
            })
            .collect();
        if i % 2 == 0 { &mut a } else { &mut b }
            .append(&batch)
            .unwrap();
    }
    let text = std::fs::read_to_string(a.path()).unwrap();
    text.lines().map(str::to_owned).collect()
}

fn check(lines: &[String], whole: bool) -> Verified {
    let mut text = lines.join("\n");
    text.push('\n');
    verify(text.as_bytes(), whole).unwrap()
}

fn edit(line: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let Value::Object(mut m) = serde_json::from_str(line).unwrap() else {
        panic!("not an object")
    };
    f(&mut m);
    serde_json::to_string(&m).unwrap()
}

/// Re-seals a record as a forger without the chain's history would: its hash recomputed
/// over its (changed) content, its prevHash kept.
fn reseal(line: &str) -> String {
    edit(line, |m| {
        m.remove("hash");
        let h = hash_of(&*m).unwrap();
        m.insert("hash".into(), Value::String(h));
    })
}

#[test]
fn an_untouched_log_verifies() {
    let lines = log();
    assert_eq!(lines.len(), 12);
    let v = check(&lines, true);
    assert!(v.intact(), "{v:?}");
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (12, Some(1), Some(12))
    );
    assert_eq!(v.anchor.as_deref(), Some(GENESIS));
    assert_eq!(v.torn_lines, 0);
    // Any range of it verifies on its own, anchored where it starts.
    let v = check(&lines[4..9], false);
    assert!(v.intact(), "{v:?}");
    assert_eq!((v.first_seq, v.last_seq), (Some(5), Some(9)));
    // But not as a whole log.
    let v = check(&lines[4..9], true);
    assert_eq!(v.broken.map(|b| b.seq), Some(5));
}

/// Every way to change a stored log is caught at the record where it happened, and named.
#[test]
fn every_tampering_is_caught_and_named() {
    let lines = log();
    type Tamper = Box<dyn Fn(&mut Vec<String>)>;
    let cases: Vec<(&str, Tamper, u64, &str)> = vec![
        (
            "a detail edited",
            Box::new(|l| l[5] = edit(&l[5], |m| m["details"]["n"] = json!(99))),
            6,
            "hash does not match",
        ),
        (
            "the outcome flipped",
            Box::new(|l| l[2] = edit(&l[2], |m| m["outcome"] = json!("success"))),
            3,
            "hash does not match",
        ),
        (
            "the timestamp moved",
            Box::new(|l| {
                l[0] = edit(&l[0], |m| {
                    m["timestamp"] = json!("2020-01-01T00:00:00.000Z")
                })
            }),
            1,
            "hash does not match",
        ),
        (
            "a field added",
            Box::new(|l| {
                l[7] = edit(&l[7], |m| {
                    m.insert("sourceIP".into(), json!("10.9.9.9"));
                })
            }),
            8,
            "hash does not match",
        ),
        (
            "a field removed",
            Box::new(|l| {
                l[7] = edit(&l[7], |m| {
                    m.remove("traceId");
                    m.remove("details");
                })
            }),
            8,
            "hash does not match",
        ),
        (
            "a record edited and re-sealed",
            Box::new(|l| l[4] = reseal(&edit(&l[4], |m| m["principal"]["id"] = json!("ag_other")))),
            6,
            "prevHash is not seq 5's hash",
        ),
        (
            "a record deleted",
            Box::new(|l| {
                l.remove(6);
            }),
            8,
            "seq 7 is missing",
        ),
        (
            "a record deleted and the later seqs renumbered, re-sealed",
            Box::new(|l| {
                l.remove(6);
                for (i, line) in l.iter_mut().enumerate().skip(6) {
                    *line = reseal(&edit(line, |m| m["seq"] = json!(i + 1)));
                }
            }),
            7,
            "prevHash is not seq 6's hash",
        ),
        (
            "the first record deleted",
            Box::new(|l| {
                l.remove(0);
            }),
            2,
            "starts at seq 2",
        ),
        (
            "a forged record inserted with the next seq",
            Box::new(|l| {
                let forged = reseal(&edit(&l[3], |m| m["seq"] = json!(5)));
                l.insert(4, forged);
            }),
            5,
            "prevHash is not seq 4's hash",
        ),
        (
            "a record repeated",
            Box::new(|l| {
                let again = l[3].clone();
                l.insert(4, again);
            }),
            4,
            "reordered or repeated",
        ),
        (
            "two records swapped",
            Box::new(|l| l.swap(8, 9)),
            10,
            "seq 10 follows seq 8",
        ),
        (
            "a record's line destroyed",
            Box::new(|l| l[10] = "{\"seq\": 11, garbage".into()),
            12,
            "seq 11 is missing",
        ),
        (
            "a record's hash removed",
            Box::new(|l| {
                l[1] = edit(&l[1], |m| {
                    m.remove("hash");
                })
            }),
            2,
            "no hash",
        ),
        (
            "a record's seq removed",
            Box::new(|l| {
                l[1] = edit(&l[1], |m| {
                    m.remove("seq");
                })
            }),
            2,
            "without a seq",
        ),
        (
            "the hash's case changed",
            Box::new(|l| l[2] = l[2].replace("\"hash\":\"sha256:", "\"hash\":\"SHA256:")),
            3,
            "hash does not match",
        ),
    ];
    for (what, tamper, seq, says) in cases {
        let mut tampered = lines.clone();
        tamper(&mut tampered);
        let v = check(&tampered, true);
        let broken = v
            .broken
            .unwrap_or_else(|| panic!("{what}: not caught ({} records)", v.records));
        assert_eq!(broken.seq, seq, "{what}: {broken:?}");
        assert!(broken.reason.contains(says), "{what}: {broken:?}");
    }
}

/// The last seq there can be is followed by nothing, not by itself again.
#[test]
fn nothing_follows_the_last_seq() {
    let first = reseal(&edit(&log()[0], |m| m["seq"] = json!(u64::MAX)));
    let h = serde_json::from_str::<Value>(&first).unwrap()["hash"].clone();
    let second = reseal(&edit(&first, |m| m["prevHash"] = h));
    let v = check(&[first, second], false);
    let broken = v.broken.clone().unwrap_or_else(|| panic!("{v:?}"));
    assert_eq!(broken.seq, u64::MAX);
    assert!(broken.reason.contains("repeated"), "{broken:?}");
}

/// What a crash mid-write leaves — a torn line — is no break: the chain runs across it.
#[test]
fn a_torn_line_between_records_is_not_a_break() {
    let mut lines = log();
    let torn: String = lines[5].chars().take(40).collect();
    lines.insert(5, torn);
    lines.insert(9, String::new());
    let v = check(&lines, true);
    assert!(v.intact(), "{v:?}");
    assert_eq!((v.records, v.torn_lines), (12, 1));
}

/// The same content written another way (members reordered, spaces) has the same hash:
/// the hash is over the canonical form, which anyone can compute.
#[test]
fn the_hash_is_over_the_canonical_form() {
    let lines = log();
    let value: Value = serde_json::from_str(&lines[3]).unwrap();
    let pretty = serde_json::to_string_pretty(&value)
        .unwrap()
        .replace('\n', " ");
    let mut relaid = lines.clone();
    relaid[3] = pretty;
    assert!(check(&relaid, true).intact());
    // An independent computation: sorted members, compact, then SHA-256.
    let Value::Object(mut m) = value else {
        panic!()
    };
    let hash = m.remove("hash").unwrap();
    let canonical = serde_json_canonicalizer::to_string(&m).unwrap();
    assert!(
        canonical.starts_with(r#"{"action":"execute","details":{"argv":"#),
        "{canonical}"
    );
    let digest = Sha256::digest(canonical.as_bytes());
    assert_eq!(hash, json!(format_hash(&digest)));
}

/// What is not a log at all is not "intact": lines none of which is a record.
#[test]
fn input_without_records_is_not_intact_unless_empty() {
    assert!(verify(&b""[..], true).unwrap().intact());
    assert!(verify(&b"\n\n"[..], true).unwrap().intact());
    for junk in [
        &b"not json\n"[..],
        b"[1,2,3]\n",
        b"\x00\x01\x02",
        b"\xff\xfe{\"seq\":1}",
        b"\"seq\"\n",
    ] {
        let v = verify(junk, false).unwrap();
        assert_eq!(
            v.broken.as_ref().map(|b| b.reason.as_str()),
            Some(format!("none of its {} line(s) is a record", v.torn_lines).as_str()),
            "{junk:?}"
        );
    }
}

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_audit;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/audit_chain.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `audit_chain` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/audit_chain/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_audit_chain_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "audit_chain", check);
    }

    /// The property holds for a real log and for each of its tamperings.
    #[test]
    fn the_property_holds_for_logs_and_their_tamperings() {
        let lines = super::log();
        let mut text = lines.join("\n");
        text.push('\n');
        check(text.as_bytes());
        for cut in [0, 1, 100, text.len() / 2, text.len() - 1] {
            check(&text.as_bytes()[..cut]);
            check(&text.as_bytes()[cut..]);
        }
    }
}

/// The fast canonical form is RFC 8785's (the reference crate's) to the byte, over a table
/// of hostile values of every kind spawn writes, and the reference is used for the rest.
#[test]
fn the_fast_canonical_form_is_rfc_8785() {
    let mut strings: Vec<String> = (0u32..0x80)
        .filter_map(char::from_u32)
        .map(|c| format!("a{c}b"))
        .collect();
    strings.extend(
        [
            "",
            "\u{7f}",
            "\u{80}",
            "é",
            "\u{2028}\u{2029}",
            "\u{fffd}",
            "\u{ffff}",
            "\u{10000}",
            "\u{1f600}",
            "\u{e000}",
            "\"\\/",
            "\u{1b}[2J\u{7}",
            "}\n{\"seq\":1}",
            "\0\0",
        ]
        .map(str::to_owned),
    );
    let numbers = [
        json!(0),
        json!(-1),
        json!(1u64 << 53),
        json!(-(1i64 << 53)),
        json!((1u64 << 53) + 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.5),
        json!(7.610874),
        json!(1e21),
        json!(1e-7),
        json!(123456789012345680000.0),
        json!(-0.0),
    ];
    let mut values: Vec<Value> = strings.iter().map(|s| json!(s)).collect();
    values.extend(numbers);
    values.extend([
        json!(null),
        json!(true),
        json!([]),
        json!({}),
        json!([1, "a", {"b": []}]),
    ]);
    for (i, v) in values.iter().enumerate() {
        for key in ["k", "a b", "Z", "é", "\u{1f600}", "\u{e000}", ""] {
            let record = json!({
                "seq": i, "z": v, "a": [v, {"y": v, "b": v}], key: v,
                "details": {"m": v, "M": 1, "_": v},
            });
            let fast = canonical(&record).unwrap();
            let reference = serde_json_canonicalizer::to_vec(&record).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference),
                "{record}"
            );
        }
    }
}

/// A log of `n` records, each about 600 bytes, as spawn writes it.
fn big_log(n: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    // All in canonical form but every 97th, which holds a decimal and a number past 2^53.
    let batch: Vec<Event> = (0..1000)
        .map(|i| {
            let mut e = event(i).with_detail("pad", "p".repeat(200));
            if i % 97 != 0 {
                e.details.remove("ratio");
                e.details.remove("big");
            }
            e
        })
        .collect();
    for _ in 0..n / 1000 {
        log.append(&batch).unwrap();
    }
    std::fs::read(log.path()).unwrap()
}

/// Verification in chunks, on threads, with the fast path, answers exactly as the
/// reference (every line parsed and canonicalized in turn) does, and calls back in order.
#[test]
fn chunked_parallel_verification_is_the_reference() {
    let text = big_log(12_000);
    assert!(text.len() > 2 * CHUNK, "{} bytes", text.len());
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // What the fast path takes, and what it leaves to the reference path.
    let fast = |l: &[u8]| crate::canonical::scan(l).is_some_and(|c| c.hash.is_some());
    assert!(fast(lines[1]));
    assert!(!fast(lines[0]));

    let mut seen = Vec::new();
    let v = verify_with(&text[..], true, |seq, hash| {
        seen.push((seq, hash.to_owned()))
    })
    .unwrap();
    assert!(v.intact(), "{v:?}");
    assert_eq!(v.records, 12_000);
    assert_eq!(v, verify_reference(&text[..], true).unwrap());
    let want: Vec<(u64, String)> = lines
        .iter()
        .map(|l| {
            let r: Value = serde_json::from_slice(l).unwrap();
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(seen, want);
    // Read a few bytes at a time: the same.
    assert_eq!(
        v,
        verify(std::io::BufReader::with_capacity(7, &text[..]), true).unwrap()
    );

    // Changes in the second chunk, each found where the reference finds it.
    let at = lines.len() * 3 / 4;
    let mut tampered: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    let changed = String::from_utf8(tampered[at].clone())
        .unwrap()
        .replacen("\"n\":", "\"n\":1", 1);
    tampered[at] = changed.into_bytes();
    let relaid: Value = serde_json::from_slice(&tampered[at - 50]).unwrap();
    tampered[at - 50] = serde_json::to_string_pretty(&relaid)
        .unwrap()
        .replace('\n', " ")
        .into_bytes();
    tampered.insert(at - 5, b"{\"seq\":1,\"torn".to_vec());
    tampered.insert(at - 100, Vec::new());
    let joined = tampered.join(&b'\n');
    for whole in [true, false] {
        let v = verify(&joined[..], whole).unwrap();
        assert_eq!(v, verify_reference(&joined[..], whole).unwrap());
        let broken = v.broken.unwrap();
        assert_eq!(
            (broken.line, broken.seq),
            (at as u64 + 3, at as u64 + 1),
            "{broken:?}"
        );
        assert!(broken.reason.contains("hash does not match"), "{broken:?}");
    }
}

/// A line longer than a chunk is read whole, as any other.
#[test]
fn a_line_longer_than_a_chunk_verifies() {
    let first = edit(&log()[0], |m| {
        m["details"]["blob"] = json!("b".repeat(CHUNK + 10));
    });
    let first = reseal(&first);
    let text = format!("{first}\n");
    let v = verify(text.as_bytes(), true).unwrap();
    assert!(v.intact(), "{v:?}");
    assert_eq!(v, verify_reference(text.as_bytes(), true).unwrap());
}

/// A read error is an error, unless the chain broke before it (as the reference).
#[test]
fn a_read_error_is_reported_after_the_lines_before_it() {
    struct Failing<'a>(&'a [u8]);
    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len()).min(100);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let lines = log();
    let text = lines.join("\n") + "\n";
    fn read(t: &str) -> std::io::BufReader<Failing<'_>> {
        std::io::BufReader::new(Failing(t.as_bytes()))
    }
    assert!(verify(read(&text), true).is_err());
    assert!(verify_reference(read(&text), true).is_err());
    let mut broken = lines.clone();
    broken.swap(2, 3);
    let text = broken.join("\n") + "\n";
    let v = verify(read(&text), true).unwrap();
    assert_eq!(v, verify_reference(read(&text), true).unwrap());
    assert_eq!(v.broken.unwrap().seq, 4);
}
