//! Records of runsc's remote trace sink (`fuzz/properties/sentry_record.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/sentry_record.rs");

fuzz_target!(|data: &[u8]| check(data));
