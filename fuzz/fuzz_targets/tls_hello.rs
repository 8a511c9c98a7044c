//! The first bytes a sandboxed program sends to a TLS port or through a CONNECT tunnel:
//! reading the ClientHello's server name never panics, and what it reads is what a TLS
//! server (here: tls-parser) reads (`fuzz/properties/tls_hello.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/tls_hello.rs");

fuzz_target!(|data: &[u8]| check(data));
