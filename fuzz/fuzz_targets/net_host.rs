//! Destinations as a sandboxed program writes them (CONNECT authorities, URL hosts, Host
//! headers, SNI): parsing never panics, the normalized form is a fixed point, and the lists
//! judge every spelling of a host as they judge that form (`fuzz/properties/net_host.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/net_host.rs");

fuzz_target!(|data: &[u8]| check(data));
