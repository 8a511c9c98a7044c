//! What `spawn audit verify --file` reads, arbitrary bytes: always an answer; intact only
//! for a chain from seq 1 and the genesis hash (as a whole log); a break names a seq and a
//! line of the input (`fuzz/properties/audit_chain.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/audit_chain.rs");

fuzz_target!(|data: &[u8]| check(data));
