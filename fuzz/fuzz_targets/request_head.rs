//! Request heads as a sandboxed program sends them to the proxy or to port 80, read as hyper
//! reads them: where the proxy decides they go is the one destination every part of the
//! head agrees on, ports only in plain decimal (`fuzz/properties/request_head.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/request_head.rs");

fuzz_target!(|data: &[u8]| check(data));
