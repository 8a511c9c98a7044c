//! A client certificate's DER, arbitrary bytes: `spawn_auth::cert::principal_of` never
//! panics, refuses with one of a fixed few reasons (none carries the certificate), and names
//! only a principal name that stands in the certificate (`fuzz/properties/client_cert.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/client_cert.rs");

fuzz_target!(|data: &[u8]| check(data));
