//! API keys as callers send them (`X-API-Key`), arbitrary bytes: no panic; whatever is
//! accepted is exactly 73 characters of the key alphabet, reads back to the same hash,
//! and any change of one of its characters is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spawn_auth::{ApiKey, KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = ApiKey::parse(text) else {
        return;
    };
    assert_eq!(text.len(), KEY_LEN);
    assert!(text.starts_with("spawn_sk_live_") || text.starts_with("spawn_sk_test_"));
    assert!(text[14..]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    let again = ApiKey::parse(key.expose()).expect("an accepted key reads again");
    assert!(again.hash().matches(&key.hash()));
    let mut typo = text.as_bytes().to_vec();
    let at = usize::from(data[0]) % KEY_LEN;
    typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
    if let Ok(t) = std::str::from_utf8(&typo) {
        assert!(ApiKey::parse(t).is_err(), "a one-character change was accepted");
    }
});
