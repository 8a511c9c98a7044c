use super::*;

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_audit;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/canonical_line.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `canonical_line` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/canonical_line/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_canonical_line_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "canonical_line", check);
    }

    pub(super) fn holds(line: &[u8]) {
        check(line);
    }
}

/// Checks the fuzz target's property on `line` (the fast path agrees with the reference,
/// and verify with verify_reference) and returns whether the validator accepted it.
fn accepted(line: &str) -> bool {
    fuzz_property::holds(line.as_bytes());
    scan(line.as_bytes()).is_some()
}

#[test]
fn canonical_lines_are_accepted() {
    for line in [
        "{}",
        r#"{"a":1}"#,
        r#"{"a":[],"b":{},"c":[1,"x",{"d":null}],"e":true,"f":false}"#,
        r#"{"a":1,"ab":2,"b":3}"#,
        r#"{"":0,"a":-1}"#,
        r#"{"m":-9007199254740992,"n":9007199254740992}"#,
        "{\"a\":\"\u{7f}\"}",
        "{\"a\":\"é\u{2028}\u{fffd}\u{ffff}\u{10000}\u{1f600}\"}",
        r#"{"a":"\"\\\b\f\n\r\t\u0000\u001f\u000b\u0010"}"#,
        // Escaped names sort by what they stand for: \n (U+000A) < \" (U+0022) < # < \\ < a.
        r##"{"\n":1,"\"":2,"#":3,"\\":4,"a":5}"##,
        r#"{"\b":1,"\u001f":2}"#,
        // UTF-16 order: U+1F600 (D83D DE00) before U+E000, though its UTF-8 sorts after.
        "{\"\u{1f600}\":1,\"\u{e000}\":2}",
        "{\"\u{10000}\":1,\"\u{ffff}\":2}",
        "{\"\u{ff}\":1,\"\u{100}\":2}",
    ] {
        assert!(accepted(line), "{line}");
        assert_eq!(
            serde_json_canonicalizer::to_string(&serde_json::from_str::<Value>(line).unwrap())
                .unwrap(),
            line
        );
    }
    // Every ASCII character in a string, as RFC 8785 writes it.
    for c in (0u8..0x80).map(char::from) {
        let line =
            serde_json_canonicalizer::to_string(&serde_json::json!({ "k": format!("a{c}b") }))
                .unwrap();
        assert!(accepted(&line), "{line}");
    }
    // ... and at every place in a longer string (the validator skips eight bytes at a time).
    for c in (0u8..0x80)
        .map(char::from)
        .chain(['é', '\u{7ff}', '\u{1f600}'])
    {
        for at in 0..20 {
            let text = format!("{}{c}{}", "x".repeat(at), "y".repeat(20 - at));
            let line =
                serde_json_canonicalizer::to_string(&serde_json::json!({ "k": text })).unwrap();
            assert!(accepted(&line), "{line}");
            if c < ' ' || c == '"' || c == '\\' {
                // As it is, not escaped: refused.
                let raw = format!("{{\"k\":\"{text}\"}}");
                assert!(!accepted(&raw), "{raw:?}");
            }
        }
    }
    // Nested as deep as the validator follows, and no deeper.
    let nested = |levels: usize| {
        format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    assert!(accepted(&nested(MAX_DEPTH)));
    assert!(!accepted(&nested(MAX_DEPTH + 1)));
    // Deeper than serde_json parses: not JSON to the reference either.
    assert!(!accepted(&nested(200)));
}

#[test]
fn every_other_form_is_refused() {
    let refused = [
        // Whitespace anywhere.
        r#" {"a":1}"#,
        r#"{ "a":1}"#,
        r#"{"a" :1}"#,
        r#"{"a": 1}"#,
        r#"{"a":1 }"#,
        r#"{"a":1} "#,
        r#"{"a":[1, 2]}"#,
        "{\"a\":1}\r",
        "{\"a\":1,\t\"b\":2}",
        // Trailing bytes, or not one object.
        r#"{"a":1}x"#,
        r#"{"a":1}{}"#,
        r#"{"a":1"#,
        r#"{"a":1,}"#,
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{,"a":1}"#,
        r#"{"a":[1,]}"#,
        r#"[{"a":1}]"#,
        r#""a""#,
        "1",
        "",
        // Member order: not sorted, repeated (at any level), UTF-8 order where UTF-16's differs.
        r#"{"b":1,"a":2}"#,
        r#"{"a":1,"a":1}"#,
        r#"{"ab":1,"a":2}"#,
        r#"{"a":{"y":1,"x":2}}"#,
        r#"{"a":{"x":1,"x":2}}"#,
        "{\"\u{e000}\":2,\"\u{1f600}\":1}",
        "{\"\u{ffff}\":2,\"\u{10000}\":1}",
        r#"{"a":5,"\\":4}"#,
        r##"{"#":3,"\"":2}"##,
        r#"{"\u001f":2,"\b":1}"#,
        // Escapes RFC 8785 does not write.
        r#"{"a":"\/"}"#,
        r#"{"a":"\u0041"}"#,
        r#"{"a":"\u0022"}"#,
        r#"{"a":"\u005c"}"#,
        r#"{"a":"\u002f"}"#,
        r#"{"a":"\u0008"}"#,
        r#"{"a":"\u0009"}"#,
        r#"{"a":"\u000a"}"#,
        r#"{"a":"\u000c"}"#,
        r#"{"a":"\u000d"}"#,
        r#"{"a":"\u001F"}"#,
        r#"{"a":"\u000B"}"#,
        r#"{"a":"\u0020"}"#,
        r#"{"a":"\u007f"}"#,
        r#"{"a":"\u00e9"}"#,
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00"}"#,
        r#"{"a":"\x41"}"#,
        r#"{"a":"\u00"}"#,
        r#"{"a":"\"#,
        r#"{"a\u0041":1}"#,
        // Controls as they are.
        "{\"a\":\"\u{0}\"}",
        "{\"a\":\"\u{1f}\"}",
        "{\"a\":\"\n\"}",
        "{\"a\":\"\t\"}",
        "{\"a\u{1}\":1}",
        // Numbers in any form but an integer's within ±2^53.
        r#"{"a":01}"#,
        r#"{"a":-0}"#,
        r#"{"a":-01}"#,
        r#"{"a":00}"#,
        r#"{"a":+1}"#,
        r#"{"a":-}"#,
        r#"{"a":1.0}"#,
        r#"{"a":0.5}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e2}"#,
        r#"{"a":1E2}"#,
        r#"{"a":1e+21}"#,
        r#"{"a":9007199254740993}"#,
        r#"{"a":-9007199254740993}"#,
        r#"{"a":10000000000000000}"#,
        r#"{"a":18446744073709551616}"#,
        r#"{"a":0x10}"#,
        r#"{"a":NaN}"#,
        r#"{"a":Infinity}"#,
        // Literals as JSON has them only.
        r#"{"a":True}"#,
        r#"{"a":nul}"#,
        r#"{"a":nulll}"#,
        r#"{"a":truefalse}"#,
    ];
    for line in refused {
        assert!(!accepted(line), "{line}");
    }
    // Invalid UTF-8, in a value and in a name.
    for bad in [
        &b"\xff"[..],
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xe2\x82",
        b"\xf4\x90\x80\x80",
        b"\xc3",
    ] {
        for line in [
            [&b"{\"a\":\""[..], bad, b"\"}"].concat(),
            [&b"{\""[..], bad, b"\":1}"].concat(),
        ] {
            fuzz_property::holds(&line);
            assert!(scan(&line).is_none(), "{line:?}");
        }
    }
}

#[test]
fn the_chain_members_are_found_at_the_top_level_only() {
    let line = r#"{"a":{"hash":"inner","prevHash":"p","seq":5},"hash":"sha256:x","prevHash":"sha256:p","seq":7}"#;
    assert!(accepted(line));
    let found = scan(line.as_bytes()).unwrap();
    assert_eq!(found.seq, Some(7));
    assert_eq!(found.prev_hash, Some("sha256:p"));
    assert_eq!(found.hash, Some("sha256:x"));
    let (before, after) = found.without_hash().unwrap();
    assert_eq!(
        [before, after].concat(),
        br#"{"a":{"hash":"inner","prevHash":"p","seq":5},"prevHash":"sha256:p","seq":7}"#
    );

    // The member spliced out with the comma on either side, or none.
    for (line, without) in [
        (r#"{"hash":"h","z":1}"#, r#"{"z":1}"#),
        (r#"{"a":1,"hash":"h"}"#, r#"{"a":1}"#),
        (r#"{"hash":"h"}"#, "{}"),
        (r#"{"a":1,"hash":{"b":[2]},"z":1}"#, r#"{"a":1,"z":1}"#),
    ] {
        assert!(accepted(line), "{line}");
        let found = scan(line.as_bytes()).unwrap();
        let (before, after) = found.without_hash().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&[before, after].concat()),
            without,
            "{line}"
        );
    }

    // Only in a form that needs no decoding: a hash or prevHash with an escape, a seq that
    // is not a non-negative integer, are not reported (the reference path reads them).
    for line in [
        r#"{"hash":"a\nb","prevHash":"p\"q","seq":-1}"#,
        r#"{"hash":1,"prevHash":null,"seq":"7"}"#,
        r#"{"a":{"hash":"h","seq":1}}"#,
    ] {
        assert!(accepted(line), "{line}");
        let found = scan(line.as_bytes()).unwrap();
        assert_eq!((found.seq, found.prev_hash, found.hash), (None, None, None));
    }
    assert!(scan(br#"{"hash":1}"#).unwrap().without_hash().is_some());
    assert!(scan(br#"{"a":{"hash":1}}"#)
        .unwrap()
        .without_hash()
        .is_none());
}
