//! Checkpoint notes and keys, arbitrary text: no note opens without the signing key, keys
//! that parse print back as themselves (`fuzz/properties/checkpoint_note.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/checkpoint_note.rs");

fuzz_target!(|data: &[u8]| check(data));
