//! What an agent sends the model gateway: endpoints from a request line, model calls read
//! from a body, refusals that quote nothing (`fuzz/properties/gateway_request.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/gateway_request.rs");

fuzz_target!(|data: &[u8]| check(data));
