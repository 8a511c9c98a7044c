//! Redaction of granted secrets in a stream cut anywhere (`fuzz/properties/redact.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/redact.rs");

fuzz_target!(|data: &[u8]| check(data));
