//! What a model asks the built-in loop to run: tool calls checked against their schemas and
//! the grants before anything runs (`fuzz/properties/gateway_tool_call.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/gateway_tool_call.rs");

fuzz_target!(|data: &[u8]| check(data));
