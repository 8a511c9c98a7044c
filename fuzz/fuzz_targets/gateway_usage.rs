//! What a provider streams back: usage read the same however the stream is cut
//! (`fuzz/properties/gateway_usage.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/gateway_usage.rs");

fuzz_target!(|data: &[u8]| check(data));
