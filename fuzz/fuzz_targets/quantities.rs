//! The quantity, CPU and duration parsers on arbitrary UTF-8: no panic, and every accepted
//! value is consistent with its text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if spawn_policy::parse_bytes(text).is_ok() || spawn_policy::parse_cpu_millis(text).is_ok() {
        assert!(text.starts_with(|c: char| c.is_ascii_digit()));
    }
    if let Ok(d) = spawn_policy::parse_duration(text) {
        assert!(!text.is_empty());
        let _ = d.as_millis();
    }
});
