use super::*;
use crate::source::Entry;

/// A strict RFC 5424 reader for the tests: the header fields, the SD params of the one
/// element (unescaped), and MSG after its BOM.
struct Parsed {
    pri: u16,
    timestamp: String,
    hostname: String,
    app: String,
    msgid: String,
    params: Vec<(String, String)>,
    msg: Vec<u8>,
}

fn parse(m: &[u8]) -> Parsed {
    let text_end = m
        .windows(3)
        .position(|w| w == BOM)
        .expect("MSG starts with a BOM");
    let head = std::str::from_utf8(&m[..text_end]).unwrap();
    let msg = m[text_end + 3..].to_vec();
    let rest = head.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once(">1 ").unwrap();
    let mut fields = rest.splitn(6, ' ');
    let timestamp = fields.next().unwrap().to_owned();
    let hostname = fields.next().unwrap().to_owned();
    let app = fields.next().unwrap().to_owned();
    let _procid = fields.next().unwrap();
    let msgid = fields.next().unwrap().to_owned();
    let sd = fields.next().unwrap();
    for f in [&timestamp, &hostname, &app, &msgid] {
        assert!(
            f.bytes().all(|b| (33..=126).contains(&b)),
            "header field {f:?}"
        );
    }
    // [SD-ID (SP name="value")*] SP, values with \" \\ \] escapes, nothing after.
    let sd = sd.strip_suffix(' ').expect("SP before MSG");
    let mut chars = sd.chars().peekable();
    assert_eq!(chars.next(), Some('['));
    let id: String = chars.by_ref().take_while(|&c| c != ' ').collect();
    assert_eq!(id, SD_ID);
    let mut params = Vec::new();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "after {name}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated value") {
                '\\' => {
                    let c = chars.next().unwrap();
                    assert!(matches!(c, '"' | '\\' | ']'), "escape of {c:?}");
                    value.push(c);
                }
                '"' => break,
                ']' => panic!("unescaped ] in {name}"),
                c => value.push(c),
            }
        }
        params.push((name, value));
        match chars.next() {
            Some(' ') => continue,
            Some(']') => break,
            other => panic!("after a param: {other:?}"),
        }
    }
    assert_eq!(chars.next(), None, "one SD element, then MSG");
    Parsed {
        pri: pri.parse().unwrap(),
        timestamp,
        hostname,
        app,
        msgid,
        params,
        msg,
    }
}

fn entry(seq: u64, event_type: &str, outcome: &str, hash: &str, line: &str) -> Item {
    Item::Record(Entry {
        seq,
        line: line.to_owned(),
        event_type: event_type.to_owned(),
        outcome: outcome.to_owned(),
        timestamp: "2026-01-15T10:30:00.123Z".into(),
        hash: Some(hash.to_owned()),
        trace_id: None,
        request_id: None,
    })
}

#[test]
fn hostile_values_cannot_break_the_structured_data_or_the_frame() {
    let long = "x".repeat(70_000);
    for (name, hash, line, event_type) in [
        ("plain", "sha256:ab", r#"{"seq":1}"#, "auth.login"),
        ("quote", "a\"b", r#"{"seq":1,"d":"\""}"#, "auth.login"),
        (
            "backslash",
            "a\\\\b\\",
            r#"{"seq":1,"d":"\\"}"#,
            "auth.login",
        ),
        ("bracket", "a]b]", r#"{"seq":1,"d":"]"}"#, "auth.login"),
        ("all three", "\\\"]\\]\"", r#"{"seq":1,"d":"\\\"]"}"#, "x"),
        (
            "newline escapes",
            "h",
            r#"{"seq":1,"d":"a\nb\r\n<13>1 - forged"}"#,
            "auth.login",
        ),
        (
            "terminal escapes",
            "\u{1b}[31mred",
            "{\"seq\":1,\"d\":\"\\u001b[2J\u{1b}]0;title\u{7}\"}",
            "agent.start\u{1b}[0m",
        ),
        (
            "spaces in msgid",
            "h",
            r#"{"seq":1}"#,
            "a b c d e f g h i j k l m n o p q r s",
        ),
        ("empty msgid", "h", r#"{"seq":1}"#, ""),
        ("long hash", &long, r#"{"seq":1}"#, "auth.login"),
        (
            "unicode",
            "é]\"ü",
            r#"{"seq":1,"d":"日本語]"}"#,
            "auth.login",
        ),
    ] {
        for max in [480, 2048, 256 * 1024] {
            let item = entry(7, event_type, "denied", hash, line);
            let m = message(&item, Format::Spawn, 10, "host", 42, max);
            assert!(m.len() <= max, "{name}: {} > {max}", m.len());
            let p = parse(&m);
            assert_eq!(p.pri, 10 * 8 + 4, "{name}");
            assert_eq!(p.app, "spawn");
            assert_eq!(p.hostname, "host");
            assert_eq!(p.timestamp, "2026-01-15T10:30:00.123Z");
            assert!(p.msgid.len() <= 32, "{name}");
            assert_eq!(p.params[0], ("seq".into(), "7".into()), "{name}");
            let truncated = p
                .params
                .iter()
                .any(|(k, v)| k == "truncated" && v == "true");
            if let Some((_, h)) = p.params.iter().find(|(k, _)| k == "hash") {
                assert!(hash.starts_with(h.as_str()), "{name}: hash {h:?}");
                if hash.len() <= MAX_PARAM {
                    assert_eq!(h, hash, "{name}");
                }
            }
            if truncated {
                assert!(line.as_bytes().starts_with(&p.msg), "{name}");
            } else {
                assert_eq!(p.msg, line.as_bytes(), "{name}");
            }
            // The octet-counted frame says exactly how long the message is.
            let f = frame(&m);
            let (len, rest) = std::str::from_utf8(&f[..f.iter().position(|&b| b == b' ').unwrap()])
                .map(|l| (l.parse::<usize>().unwrap(), &f[l.len() + 1..]))
                .unwrap();
            assert_eq!(len, rest.len());
            assert_eq!(rest, &m[..]);
        }
    }
}

#[test]
fn long_lines_are_cut_at_a_character_boundary_and_marked() {
    let line = format!("{{\"seq\":1,\"d\":\"{}\"}}", "é".repeat(5000));
    let item = entry(1, "auth.login", "success", "sha256:ab", &line);
    let m = message(&item, Format::Spawn, 16, "h", 1, 2048);
    assert!(m.len() <= 2048);
    let p = parse(&m);
    assert!(p.params.contains(&("truncated".into(), "true".into())));
    assert!(
        std::str::from_utf8(&p.msg).is_ok(),
        "cut inside a character"
    );
    assert_eq!(p.pri, 16 * 8 + 6);
    // Whole when it fits.
    let m = message(&item, Format::Spawn, 16, "h", 1, 256 * 1024);
    assert_eq!(parse(&m).msg, line.as_bytes());
}

#[test]
fn severities_and_checkpoints() {
    assert_eq!(severity("success"), 6);
    assert_eq!(severity("denied"), 4);
    assert_eq!(severity("error"), 3);
    let note = "spawn.audit/log_x\n3\nAAAA\n\n— spawn.audit/log_x sig\n".to_owned();
    let m = message(
        &Item::Checkpoint {
            size: 3,
            note: note.clone(),
        },
        Format::Spawn,
        10,
        "h",
        1,
        2048,
    );
    let p = parse(&m);
    assert_eq!(p.msgid, "audit.checkpoint");
    assert_eq!(p.params, vec![("checkpointSize".into(), "3".into())]);
    assert_eq!(p.msg, note.as_bytes());
}
