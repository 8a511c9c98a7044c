// The property of the `bearer` fuzz target. spawn-auth's tests include this file too and
// check it on every input kept in fuzz/regressions/bearer/ (hence no inner attributes or
// `//!` comments here; the includer puts `spawn_auth` in scope).
//
// What callers put in `Authorization: Bearer …`, `If-Match` and `Last-Event-ID`: no token
// is accepted without the issuer's private key (which exists nowhere: only this public key
// does), and a refusal's reason is one of a fixed few, so it never carries any of the
// token; a header number is accepted exactly when it is 1–18 ASCII digits, and reads back
// as the same digits.

use std::sync::OnceLock;

use spawn_auth::bearer::{header_number, JwtVerifier, MAX_TOKEN_BYTES};

const PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEASjfgp5qXHrQ0cROQgeo/SWr4yoK4Vun+e6RnzeDzUU0=\n-----END PUBLIC KEY-----\n";

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        JwtVerifier::new("https://idp.test", "spawn", "EdDSA", PUBLIC).expect("the test key")
    })
}

/// Every reason a token may be refused with.
fn known_reason(reason: &str) -> bool {
    let invalid = [
        "it has expired",
        "it is not valid yet (nbf)",
        "another issuer",
        "another audience",
        "another signature algorithm",
        "the signature does not verify",
        "a required claim (exp, iss, aud, sub) is missing",
        "it is malformed",
    ];
    reason == format!("the token is longer than {MAX_TOKEN_BYTES} bytes")
        || reason == "the token's sub is not a principal name"
        || invalid
            .iter()
            .any(|w| reason == format!("the token is not valid: {w}"))
}

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match verifier().verify(text) {
        Ok(user) => panic!("accepted a token nobody could sign, for {user:?}"),
        Err(reason) => assert!(known_reason(&reason), "unexpected reason {reason:?}"),
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
}
