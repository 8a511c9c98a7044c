//! A line of the audit log, arbitrary bytes: whatever the chain's fast path takes as being
//! in RFC 8785 form is, to the byte, what the reference canonicalizer writes for it (with
//! and without its hash member), and `verify` answers as `verify_reference` does
//! (`fuzz/properties/canonical_line.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/canonical_line.rs");

fuzz_target!(|data: &[u8]| check(data));
