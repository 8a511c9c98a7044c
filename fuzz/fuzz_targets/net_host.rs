//! Destinations as a sandboxed program writes them (CONNECT authorities, URL hosts, SNI):
//! parsing never panics, and whatever parses is judged the same way every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spawn_policy::net::{parse_host, NetRules, Target};
use spawn_policy::NetPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = parse_host(s) {
        // Normalization is idempotent: the normalized form parses to itself.
        let again = parse_host(&target.to_string()).expect("a normalized host parses");
        assert_eq!(again, target);
        let rules = NetRules::plain(NetPolicy::EgressOnly);
        let _ = rules.check(&target);
        if let Target::Ip(ip) = target {
            let _ = rules.check_ip(ip);
        }
    }
});
