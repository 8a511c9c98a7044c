//! What callers put in `Authorization: Bearer …`, `If-Match` and `Last-Event-ID`,
//! arbitrary bytes: no token is accepted without the issuer's private key, a refusal's
//! reason is one of a fixed few (none carries the token), header numbers are exactly the
//! plain ones (`fuzz/properties/bearer.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/bearer.rs");

fuzz_target!(|data: &[u8]| check(data));
