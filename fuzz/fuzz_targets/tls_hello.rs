//! The first bytes a sandboxed program sends to a TLS port: reading the ClientHello's
//! server name never panics, and a name it reports is one the client really sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spawn_egress::{client_hello, Hello};

fuzz_target!(|data: &[u8]| {
    match client_hello(data) {
        Hello::Sni(name) => assert!(data
            .windows(name.len().max(1))
            .any(|w| w == name.as_bytes())),
        Hello::NeedMore => assert!(data.len() < spawn_egress::MAX_HELLO_BYTES + 5),
        Hello::NoSni | Hello::NotTls => {}
    }
});
