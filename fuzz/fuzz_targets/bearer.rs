//! What callers put in `Authorization: Bearer …`, `If-Match` and `Last-Event-ID`,
//! arbitrary bytes: no panic; no token is accepted without the issuer's private key (which
//! exists nowhere: only this public key does), and a refusal's reason never repeats the
//! token; a header number is accepted exactly when it is 1–18 ASCII digits, and reads back
//! as the same digits.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spawn_auth::bearer::{header_number, JwtVerifier};

const PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEASjfgp5qXHrQ0cROQgeo/SWr4yoK4Vun+e6RnzeDzUU0=\n-----END PUBLIC KEY-----\n";

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        JwtVerifier::new("https://idp.test", "spawn", "EdDSA", PUBLIC).expect("the test key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match verifier().verify(text) {
        Ok(user) => panic!("accepted a token nobody could sign, for {user:?}"),
        Err(reason) => {
            if text.len() > 12 {
                assert!(!reason.contains(text), "the reason repeats the token");
            }
        }
    }
    let plain = !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit());
    match header_number(text) {
        Some(n) => {
            assert!(plain, "{text:?} accepted");
            let digits = text.trim_start_matches('0');
            let want = if digits.is_empty() { "0" } else { digits };
            assert_eq!(n.to_string(), want);
        }
        None => assert!(!plain, "{text:?} refused"),
    }
});
