//! What callers put where an id goes (run ids in URL paths), arbitrary bytes: accepted
//! exactly when spawn could have made the id, one spelling per id, every 128 bits
//! round-trip (`fuzz/properties/ids.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/ids.rs");

fuzz_target!(|data: &[u8]| check(data));
