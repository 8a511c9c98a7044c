// The property of the `net_host` fuzz target. spawn-policy's tests include this file too and
// check it on every input kept in fuzz/regressions/net_host/ (hence no inner attributes or
// `//!` comments here; the includer puts `spawn_policy` in scope).
//
// A destination as a sandboxed program writes it (a CONNECT authority's or URL's host, a
// Host header, a TLS server name) has one normalized spelling, and the lists judge every
// spelling of a host as they judge that one.

use spawn_policy::net::{parse_host, NetRules, Target};
use spawn_policy::{NetCapability, NetPolicy};

/// Rules for `policy` with these lists, if they are valid.
fn rules(policy: NetPolicy, allow: &[&str], deny: &[&str]) -> Option<NetRules> {
    NetRules::from_capability(&NetCapability {
        policy: Some(policy),
        allowlist: allow.iter().map(|s| (*s).to_owned()).collect(),
        denylist: deny.iter().map(|s| (*s).to_owned()).collect(),
        rate_limit: None,
        require_tls: None,
        max_connections: None,
        max_dns_queries: None,
    })
    .ok()
}

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = parse_host(raw) else {
        return;
    };
    // Normalization is idempotent: the normalized form parses to itself.
    let shown = target.to_string();
    assert_eq!(
        parse_host(&shown),
        Ok(target.clone()),
        "{raw:?} normalizes to {shown:?}, which does not read back as itself"
    );
    let egress = NetRules::plain(NetPolicy::EgressOnly);
    let verdict = egress.check(&target);
    assert_eq!(
        egress.check(&target),
        verdict,
        "{raw:?} judged twice differently"
    );
    match &target {
        Target::Name(name) => {
            // What the lists compare: lowercase ASCII labels of 1 to 63 characters, at most
            // 253 in all, no empty label and no trailing dot.
            assert!(
                name.len() <= 253
                    && name.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    }),
                "{raw:?} normalizes to {name:?}, not a comparable name"
            );
            // A denylist entry naming the host refuses it however the program spelled it,
            // whether the entry is the normalized name or the spelling itself.
            for entry in [name.as_str(), raw] {
                if let Some(r) = rules(NetPolicy::EgressOnly, &[], &[entry]) {
                    let got = r.check(&target);
                    assert!(
                        got.as_ref()
                            .is_err_and(|d| d.code == "denylist" || d.code == "blocked-name"),
                        "{raw:?} passes a denylist naming {entry:?}: {got:?}"
                    );
                }
                // And an allowlist entry naming it lets it through (restricted), unless it
                // is always blocked.
                if let Some(r) = rules(NetPolicy::Restricted, &[entry], &[]) {
                    let got = r.check(&target);
                    assert!(
                        got.as_ref()
                            .map_or_else(|d| d.code == "blocked-name", |()| true),
                        "{raw:?} is refused by an allowlist naming {entry:?}: {got:?}"
                    );
                }
            }
        }
        Target::Ip(ip) => {
            assert_eq!(egress.check_ip(*ip).is_ok(), verdict.is_ok(), "{raw:?}");
            // A denylist entry with the address refuses every spelling of it.
            if let Some(r) = rules(NetPolicy::EgressOnly, &[], &[&ip.to_string()]) {
                assert!(
                    r.check(&target).is_err(),
                    "{raw:?} passes a denylist naming {ip}"
                );
            }
        }
    }
}
