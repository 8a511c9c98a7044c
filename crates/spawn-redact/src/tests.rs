#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// spawn-secrets' largest value.
const MAX_VALUE: usize = 64 << 10;

const TOKEN: &[u8] = b"ghp_Zx9+/sEcReT value\"\\<>&\xc3\xa9!";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The texts a value shows up in, as other programs write it.
fn carriers(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("raw".to_owned(), value.to_vec())];
    for (name, engine) in [
        ("base64", STANDARD),
        ("base64 no pad", STANDARD_NO_PAD),
        ("base64url", URL_SAFE),
        ("base64url no pad", URL_SAFE_NO_PAD),
    ] {
        out.push((name.into(), engine.encode(value).into_bytes()));
        // Inside a longer encoded text, at each alignment (`user:TOKEN`, and more after).
        // (Values too short for a fragment of MIN_FRAGMENT characters: whole only.)
        let (prefixes, suffixes): (&[&str], &[&str]) = if value.len() >= 8 {
            (
                &["", "u", "us", "user:", "x-token "],
                &["", "!", "tail", "more bytes after"],
            )
        } else {
            (&[""], &[""])
        };
        for prefix in prefixes {
            for suffix in suffixes {
                let mut whole = prefix.as_bytes().to_vec();
                whole.extend_from_slice(value);
                whole.extend_from_slice(suffix.as_bytes());
                out.push((
                    format!("{name} of {prefix:?}+value+{suffix:?}"),
                    engine.encode(&whole).into_bytes(),
                ));
            }
        }
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    out.push(("hex".into(), hex.clone().into_bytes()));
    out.push(("HEX".into(), hex.to_uppercase().into_bytes()));
    let url: String = value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    out.push(("url".into(), url.clone().into_bytes()));
    let url_lower: String = value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    out.push(("url, lowercase hex".into(), url_lower.into_bytes()));
    if let Ok(text) = std::str::from_utf8(value) {
        out.push((
            "json".into(),
            serde_json::to_vec(&serde_json::json!({ "token": text, "n": 1 })).unwrap(),
        ));
        let ascii: String = serde_json::to_string(text)
            .unwrap()
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect();
        out.push(("json, non-ASCII escaped".into(), ascii.into_bytes()));
    }
    out
}

/// Every carrier of the value, inside other text, comes out without the value in any form:
/// the value itself and each of its forms are absent, and the marker is there.
#[test]
fn every_form_in_every_carrier_is_redacted() {
    for value in [
        TOKEN,
        b"abc",
        b"0123456789abcdef0123456789",
        &[0u8, 255, 10, 13, 27][..],
    ] {
        let r = Redactor::new([("TOKEN", value)]).unwrap();
        for (what, carrier) in carriers(value) {
            let mut text = b"before ".to_vec();
            text.extend_from_slice(&carrier);
            text.extend_from_slice(b" after\n");
            let out = r.redact(&text);
            assert!(
                contains(&out, b"[REDACTED:TOKEN]"),
                "{what}: {}",
                String::from_utf8_lossy(&out)
            );
            assert!(!contains(&out, value), "{what}");
            // Only the carrier's own encodings that hold all of the value are its forms; a
            // carrier encoded whole must not show the value's form.
            for f in forms(value) {
                assert!(
                    !contains(&out, &f),
                    "{what}: form {:?} left in {:?}",
                    String::from_utf8_lossy(&f),
                    String::from_utf8_lossy(&out)
                );
            }
            assert!(
                out.starts_with(b"before ") && out.ends_with(b" after\n"),
                "{what}"
            );
        }
    }
}

/// A stream's output is the whole input's redaction, however it is cut: in two at every
/// place, and a byte at a time; and it holds back only what could still begin a form.
#[test]
fn a_stream_cut_anywhere_redacts_as_the_whole() {
    let r = Redactor::new([
        ("A", &b"s3cr3t-AAA"[..]),
        ("B", &b"s3cr3t-AAAB"[..]),
        ("C", &b"xyz"[..]),
    ])
    .unwrap();
    let input =
        b"s3cr3t-AAA s3cr3t-AAAB s3cr3t-AA xyzxyz s3cr3t- czNjcjN0LUFBQQ== end s3cr3t".to_vec();
    let want = r.redact(&input);
    assert_eq!(
        String::from_utf8_lossy(&want),
        "[REDACTED:A] [REDACTED:B] s3cr3t-AA [REDACTED:C][REDACTED:C] s3cr3t- [REDACTED:A] end s3cr3t"
    );
    for cut in 0..=input.len() {
        let mut s = r.stream();
        let mut out = Vec::new();
        s.push(&input[..cut], &mut out);
        s.push(&input[cut..], &mut out);
        s.finish(&mut out);
        assert_eq!(out, want, "cut at {cut}");
    }
    let mut s = r.stream();
    let mut out = Vec::new();
    for b in &input {
        s.push(std::slice::from_ref(b), &mut out);
        let longest = forms(b"s3cr3t-AAAB").iter().map(Vec::len).max().unwrap();
        assert!(s.held() <= longest, "held {}", s.held());
    }
    s.finish(&mut out);
    assert_eq!(out, want);
}

/// What cannot begin a form is written at once (an agent's prompt is not held back); what
/// could is held, and only that much.
#[test]
fn only_a_possible_beginning_is_held() {
    let r = Redactor::new([("T", &b"tok-12345678"[..])]).unwrap();
    let mut s = r.stream();
    let mut out = Vec::new();
    s.push(b"Password: ", &mut out);
    assert_eq!((out.as_slice(), s.held()), (&b"Password: "[..], 0));
    s.push(b"tok-1", &mut out);
    assert_eq!((out.as_slice(), s.held()), (&b"Password: "[..], 5));
    s.push(b"2x", &mut out);
    assert_eq!((out.as_slice(), s.held()), (&b"Password: tok-12x"[..], 0));
    // A whole form at the end is held until the next byte (it could grow into a longer
    // form), then written as its marker.
    s.push(b"tok-12345678", &mut out);
    assert_eq!(s.held(), 12);
    s.push(b"\n", &mut out);
    assert_eq!(
        (out.as_slice(), s.held()),
        (&b"Password: tok-12x[REDACTED:T]\n"[..], 0)
    );
    s.finish(&mut out);
    assert_eq!(out, b"Password: tok-12x[REDACTED:T]\n");
}

/// Without secrets, or with no form in it, the input comes out as it went in.
#[test]
fn text_without_a_form_is_untouched() {
    let empty = Redactor::new([]).unwrap();
    assert!(empty.is_empty());
    let text: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(empty.redact(&text), text);
    let r = Redactor::new([("T", &b"not-in-there-0123"[..]), ("E", &b""[..])]).unwrap();
    assert_eq!(r.redact(&text), text);
    let mut s = r.stream();
    let mut out = Vec::new();
    for chunk in text.chunks(7) {
        s.push(chunk, &mut out);
    }
    s.finish(&mut out);
    assert_eq!(out, text);
    assert_eq!(r.redact_str("plain"), "plain");
}

#[test]
fn forms_are_those_documented() {
    let f = forms(b"a b/\xc3\xa9");
    let has = |x: &[u8]| f.iter().any(|g| g == x);
    assert!(has(b"a b/\xc3\xa9"));
    assert!(forms(b"Tok-XY").contains(&b"tok-xy".to_vec()));
    assert!(has(b"YSBiL8Op"));
    assert!(has(b"YSBiL8Op") && has(&URL_SAFE.encode(b"a b/\xc3\xa9").into_bytes()));
    assert!(has(b"6120622fc3a9") && has(b"6120622FC3A9"));
    assert!(has(b"a%20b%2F%C3%A9") && has(b"a%20b%2f%c3%a9") && has(b"a+b%2F%C3%A9"));
    assert!(has(b"a b\\/\xc3\xa9") && has(b"a b/\\u00e9") && has(b"a b/\\u00E9"));
    // Short values have no alignment fragments, but their whole encodings.
    let short = forms(b"ab");
    assert!(short.iter().all(|g| g.len() >= 2));
    assert!(short.contains(&b"YWI=".to_vec()) && short.contains(&b"YWI".to_vec()));
}

/// The largest values (64 KiB each, every form far beyond the DFA's budget): still found,
/// in a stream cut into chunks smaller than a form.
#[test]
fn the_largest_values_are_redacted_too() {
    let big: Vec<Vec<u8>> = (1..3u64)
        .map(|k| {
            let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (0..MAX_VALUE)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_be_bytes()[4]
                })
                .collect()
        })
        .collect();
    let r = Redactor::new([("BIG0", big[0].as_slice()), ("BIG1", big[1].as_slice())]).unwrap();
    let mut input = b"head ".to_vec();
    input.extend_from_slice(&big[1]);
    input.extend_from_slice(b" mid ");
    input.extend_from_slice(STANDARD.encode(&big[0]).as_bytes());
    input.extend_from_slice(b" tail");
    let mut s = r.stream();
    let mut out = Vec::new();
    for chunk in input.chunks(4096) {
        s.push(chunk, &mut out);
    }
    s.finish(&mut out);
    assert_eq!(out, b"head [REDACTED:BIG1] mid [REDACTED:BIG0] tail");
}

/// The first pass changes nothing: for forms of every length around the window's width, a
/// text with forms at every offset from the looked-up positions (and near misses: a form
/// less its last byte), cut into chunks long enough to be searched in place and short ones,
/// redacts as the automaton alone does.
#[test]
fn the_first_pass_finds_what_the_automaton_finds() {
    for len in [4usize, 5, 7, 8, 9, 12, 16, 40, 100] {
        let value: Vec<u8> = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            .iter()
            .cycle()
            .step_by(7)
            .take(len)
            .copied()
            .collect();
        let other: Vec<u8> = value.iter().rev().copied().collect();
        let r = Redactor::new([("V", value.as_slice()), ("W", other.as_slice())]).unwrap();
        assert!(r.grams.is_some(), "len {len}: a first pass");
        let plain = Redactor::new([("V", value.as_slice()), ("W", other.as_slice())])
            .unwrap()
            .without_first_pass();
        let mut text = Vec::new();
        for pad in 0..3 * len + 20 {
            text.extend(std::iter::repeat_n(b'.', pad));
            text.extend_from_slice(if pad % 2 == 0 { &value } else { &other });
            text.extend_from_slice(&value[..len - 1]);
            text.extend(STANDARD.encode(&value).bytes());
        }
        let expected = plain.redact(&text);
        assert_eq!(r.redact(&text), expected, "len {len}");
        assert!(!contains(&expected, &value), "len {len}");
        for cut in [1usize, 3, 2 * r.max_len, 2 * r.max_len + 1, 4096, 65536] {
            let mut s = r.stream();
            let mut out = Vec::new();
            for chunk in text.chunks(cut) {
                s.push(chunk, &mut out);
            }
            s.finish(&mut out);
            assert!(out == expected, "len {len}, chunks of {cut}");
        }
    }
}
