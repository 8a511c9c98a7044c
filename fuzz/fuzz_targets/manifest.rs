//! The Agent manifest parser on arbitrary UTF-8: it must return (Ok or Err) without
//! panicking, hanging or exhausting memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(agent) = spawn_policy::parse_agent(text) {
        // Whatever parses must also survive resolution (which may refuse it, e.g. because a
        // mount source does not exist here), without a panic.
        let dir = std::env::temp_dir();
        let _ = spawn_policy::resolve(
            Some(&agent),
            &dir,
            &dir,
            &spawn_policy::Overrides::default(),
            &[dir.join("spawn-home")],
        );
    }
});
