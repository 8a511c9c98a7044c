// The property of the `gateway_credential` fuzz target. spawn-gateway's tests include this
// file too and check it on every input kept in fuzz/regressions/gateway_credential/ (hence
// no inner attributes or `//!` comments here; the includer puts `spawn_gateway` in scope).
//
// What a client sends the model gateway as its credential: arbitrary header names and
// values (split from the bytes at 0x00 and 0x01). The credential taken is one that was sent,
// non-empty, printable ASCII without spaces, and the only one (a second, different one is
// refused); a refusal's reason is one of a fixed few, so it quotes no value. A placeholder
// check never panics and accepts exactly the texts whose shape and checksum are a
// placeholder's.

use spawn_gateway::credential::presented;
use spawn_gateway::token::{well_formed, LEN, PREFIX};

fn check(data: &[u8]) {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for field in data.split(|b| *b == 0).take(8) {
        let (name, value) = match field.iter().position(|b| *b == 1) {
            Some(i) => (&field[..i], &field[i + 1..]),
            None => (field, &b""[..]),
        };
        let name = match name.first() {
            Some(b'a') => "authorization".to_owned(),
            Some(b'x') => "X-Api-Key".to_owned(),
            _ => String::from_utf8_lossy(name).into_owned(),
        };
        headers.push((name, value.to_vec()));
    }
    match presented(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))) {
        Ok(key) => {
            assert!(!key.is_empty());
            assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
            assert!(
                headers
                    .iter()
                    .any(|(_, v)| v.windows(key.len()).any(|w| w == key.as_bytes())),
                "{key:?} was not sent"
            );
        }
        // One of a fixed few (so it can quote nothing sent; a value may still happen to be
        // a part of one of them).
        Err(reason) => assert!(
            [
                "a credential header given twice",
                "a credential that is not UTF-8",
                "an Authorization header without a scheme",
                "an Authorization scheme other than Bearer",
                "an empty credential",
                "a credential with spaces or control characters",
                "two different credentials",
                "no credential (x-api-key or Authorization: Bearer)",
            ]
            .contains(&reason),
            "{reason}"
        ),
    }
    for (_, v) in &headers {
        if let Ok(text) = std::str::from_utf8(v) {
            if well_formed(text).is_ok() {
                assert_eq!(text.len(), LEN);
                assert!(text.starts_with(PREFIX));
                let crc = crc32fast::hash(&text.as_bytes()[..LEN - 9]);
                assert_eq!(&text[LEN - 8..], format!("{crc:08x}"));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = well_formed(text);
    }
}
