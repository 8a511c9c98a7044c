//! What a client sends the model gateway as its credential, arbitrary headers: one
//! credential taken or a refusal that quotes none; placeholders told by shape and checksum
//! (`fuzz/properties/gateway_credential.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/gateway_credential.rs");

fuzz_target!(|data: &[u8]| check(data));
