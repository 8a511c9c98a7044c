//! Lines of the Sentry's debug log, from which spawn counts the calls its seccomp filter
//! denied under gVisor: a line is a denial only as the Sentry writes one, never because of
//! what the agent got into the log (`fuzz/properties/sentry_log.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../properties/sentry_log.rs");

fuzz_target!(|data: &[u8]| check(data));
