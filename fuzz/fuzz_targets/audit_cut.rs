//! Retention's signed cuts, arbitrary text and trees (`fuzz/properties/audit_cut.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/audit_cut.rs");

fuzz_target!(|data: &[u8]| check(data));
