use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules(policy: NetPolicy, allow: &[&str], deny: &[&str]) -> NetRules {
    let cap = NetCapability {
        policy: Some(policy),
        allowlist: allow.iter().map(|s| (*s).to_owned()).collect(),
        denylist: deny.iter().map(|s| (*s).to_owned()).collect(),
        rate_limit: None,
        require_tls: None,
        max_connections: None,
        max_dns_queries: None,
    };
    NetRules::from_capability(&cap).unwrap()
}

/// Every spelling of a blocked address is read as that address, and refused.
#[test]
fn ip_literals_in_every_spelling_are_normalized() {
    let cases: &[(&str, &str)] = &[
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("0251.254.43518", "169.254.169.254"),
        ("169.16689662", "169.254.169.254"),
        ("169.254.169.254.", "169.254.169.254"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("10.0.0.1", "10.0.0.1"),
        ("012.0.0.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254"),
        ("[::ffff:a9fe:a9fe]", "::ffff:169.254.169.254"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
    ];
    for (raw, want) in cases {
        assert_eq!(
            parse_host(raw),
            Ok(Target::Ip(ip(want))),
            "{raw} should read as {want}"
        );
    }
}

#[test]
fn malformed_hosts_are_errors_not_names() {
    for raw in [
        "",
        "256.0.0.1",
        "1.2.3.4.5",
        "0x1.0x2.0x3.0x4.0x5",
        "4294967296",
        "08.0.0.1",
        "[::1",
        "[not-v6]",
        "fe80::1%",
        "1.2.3.4:80",
        "exa mple.com",
        "example..com",
        "-example.com",
        "*.example.com",
        "a/b.example.com",
        "ex\u{0}ample.com",
        "example.com\r\nHost: evil.com",
    ] {
        assert!(
            parse_host(raw).is_err(),
            "{raw:?} parsed as {:?}",
            parse_host(raw)
        );
    }
    let long = format!("{}.com", "a".repeat(300));
    assert!(parse_host(&long).is_err());
    let huge = "a.".repeat(2000);
    assert!(parse_host(&huge).is_err());
}

#[test]
fn names_are_lowercased_undotted_and_punycoded() {
    assert_eq!(
        parse_host("API.GitHub.COM."),
        Ok(Target::Name("api.github.com".into()))
    );
    assert_eq!(
        parse_host("bücher.example"),
        Ok(Target::Name("xn--bcher-kva.example".into()))
    );
    assert_eq!(
        parse_host("BÜCHER.example"),
        Ok(Target::Name("xn--bcher-kva.example".into()))
    );
    assert_eq!(
        parse_host("xn--bcher-kva.example"),
        Ok(Target::Name("xn--bcher-kva.example".into()))
    );
}

/// The always-blocked ranges of SPEC §6, and the IPv6 forms that smuggle them.
#[test]
fn blocked_ranges_whatever_the_form() {
    for blocked in [
        "0.0.0.0",
        "10.1.2.3",
        "100.64.0.1",
        "100.100.100.200",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "192.0.0.192",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::8.8.8.8",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
    ] {
        assert!(
            blocked_reason(ip(blocked)).is_some(),
            "{blocked} is not blocked"
        );
    }
    for public in [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
    ] {
        assert_eq!(blocked_reason(ip(public)), None, "{public} is blocked");
    }
}

#[test]
fn metadata_and_local_names_are_always_blocked() {
    let r = rules(NetPolicy::EgressOnly, &[], &[]);
    for name in [
        "metadata.google.internal",
        "METADATA.GOOGLE.INTERNAL.",
        "metadata.goog",
        "metadata",
        "instance-data",
        "localhost",
        "api.localhost",
        "printer.local",
        "db.internal",
        "router.home.arpa",
        "1.0.0.127.in-addr.arpa",
    ] {
        let target = parse_host(name).unwrap();
        let err = r.check(&target).unwrap_err();
        assert_eq!(err.code, "blocked-name", "{name}: {err}");
    }
    // An IDN look-alike of a blocked name is a different (punycode) name, judged as such.
    let lookalike = parse_host("metadata.goog\u{0435}").unwrap();
    assert_ne!(lookalike, Target::Name("metadata.goog".into()));
}

/// SPEC §6: `*.example.com` matches subdomains, not the domain; case, trailing dot and
/// punycode do not matter; the denylist wins.
#[test]
fn allowlist_and_denylist_semantics() {
    let r = rules(
        NetPolicy::Restricted,
        &[
            "*.wikipedia.org",
            "api.github.com",
            "*.bücher.example",
            "WEIRD.Example.ORG.",
        ],
        &["secret.wikipedia.org", "*.internal.wikipedia.org"],
    );
    let ok = |h: &str| r.check(&parse_host(h).unwrap());
    for allowed in [
        "en.wikipedia.org",
        "EN.WIKIPEDIA.ORG.",
        "a.b.wikipedia.org",
        "api.github.com",
        "shop.xn--bcher-kva.example",
        "shop.bücher.example",
        "weird.example.org",
    ] {
        assert_eq!(ok(allowed), Ok(()), "{allowed}");
    }
    for (denied, code) in [
        ("wikipedia.org", "not-allowlisted"),
        ("evilwikipedia.org", "not-allowlisted"),
        ("wikipedia.org.evil.com", "not-allowlisted"),
        ("github.com", "not-allowlisted"),
        ("x.api.github.com", "not-allowlisted"),
        ("secret.wikipedia.org", "denylist"),
        ("SECRET.wikipedia.org.", "denylist"),
        ("a.internal.wikipedia.org", "denylist"),
        ("bücher.example", "not-allowlisted"),
        ("en.wikipedia.org\u{0435}", "not-allowlisted"),
    ] {
        let got = ok(denied).unwrap_err();
        assert_eq!(got.code, code, "{denied}: {got}");
    }
    // Restricted never lets an address literal through, public or not.
    assert_eq!(ok("93.184.216.34").unwrap_err().code, "not-allowlisted");
    assert_eq!(ok("169.254.169.254").unwrap_err().code, "blocked-address");
}

#[test]
fn denylist_networks_and_globs_match_every_form() {
    let r = rules(
        NetPolicy::EgressOnly,
        &[],
        &["93.184.216.0/24", "8.*", "2606:4700::/32", "1.1.1.1"],
    );
    for denied in [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "1.1.1.1",
    ] {
        assert_eq!(
            r.check_ip(ip(denied)).unwrap_err().code,
            "denylist",
            "{denied}"
        );
    }
    assert_eq!(
        r.check(&parse_host("0x08080808").unwrap())
            .unwrap_err()
            .code,
        "denylist"
    );
    // An IPv6 form of a public IPv4 address is refused as such (the proxy does not
    // translate), before the denylist is consulted.
    assert_eq!(
        r.check_ip(ip("::ffff:93.184.216.34")).unwrap_err().code,
        "blocked-address"
    );
    assert_eq!(r.check_ip(ip("9.9.9.9")), Ok(()));
    assert_eq!(r.check_ip(ip("1.1.1.2")), Ok(()));
    // Always-blocked ranges come first, whatever the lists say.
    assert_eq!(
        r.check_ip(ip("10.0.0.1")).unwrap_err().code,
        "blocked-address"
    );
}

#[test]
fn only_proxied_policies_pass() {
    for policy in [NetPolicy::None, NetPolicy::Full] {
        let r = NetRules::plain(policy);
        let got = r.check(&parse_host("example.com").unwrap()).unwrap_err();
        assert_eq!(got.code, "policy");
    }
    let r = NetRules::plain(NetPolicy::EgressOnly);
    assert_eq!(r.check(&parse_host("example.com").unwrap()), Ok(()));
    assert_eq!(r.check(&parse_host("93.184.216.34").unwrap()), Ok(()));
}

#[test]
fn rate_limit_and_require_tls_are_read() {
    let cap = NetCapability {
        policy: Some(NetPolicy::Restricted),
        allowlist: vec!["example.com".into()],
        denylist: vec![],
        rate_limit: Some(crate::manifest::RateLimit {
            requests: 60,
            per: "1m".into(),
        }),
        require_tls: Some(true),
        max_connections: None,
        max_dns_queries: None,
    };
    let r = NetRules::from_capability(&cap).unwrap();
    assert_eq!(
        r.rate,
        Some(Rate {
            requests: 60,
            per: Duration::from_secs(60)
        })
    );
    assert!(r.require_tls);
}

/// A trailing dot is the root: one is the same name, more is an empty label and refused,
/// never trimmed to a name that the lists would judge differently.
#[test]
fn more_than_one_trailing_dot_or_an_empty_label_is_malformed() {
    for raw in [
        ".",
        "..",
        "bx..",
        "Bx..",
        "Q0..",
        "denied.example..",
        "denied.example...",
        "denied..example",
        ".denied.example",
        "..denied.example",
        "denied.example.\u{3002}",
        "xn--bcher-kva.example..",
        "bücher.example..",
        "1.2.3.4..",
        "[::1].",
    ] {
        assert!(
            parse_host(raw).is_err(),
            "{raw:?} parsed as {:?}",
            parse_host(raw)
        );
    }
    assert_eq!(
        parse_host("denied.example."),
        Ok(Target::Name("denied.example".into()))
    );
    assert_eq!(parse_host("1.2.3.4."), Ok(Target::Ip(ip("1.2.3.4"))));
}

/// Every spelling that parses has one normalized form, which parses to itself, including
/// Unicode letters that are ASCII once lowercased (the Kelvin sign is `k`).
#[test]
fn normalization_is_a_fixed_point() {
    for (raw, want) in [
        ("Bx.", "bx"),
        ("\u{212A}elvin.example", "kelvin.example"),
        ("\u{212A}.example", "k.example"),
        ("b\u{212A}\u{00FC}.example", "xn--bk-yka.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ] {
        let got = parse_host(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(got, Target::Name(want.into()), "{raw:?}");
        assert_eq!(parse_host(&got.to_string()), Ok(got.clone()), "{raw:?}");
    }
}

/// The lists judge every spelling of a name as they judge the name: a denylist entry is
/// not passed by adding dots, case or Unicode.
#[test]
fn denylist_entries_hold_against_every_spelling() {
    let r = rules(
        NetPolicy::EgressOnly,
        &[],
        &["denied.example", "*.kelvin.example"],
    );
    for raw in [
        "denied.example",
        "DENIED.example.",
        "a.kelvin.example",
        "a.\u{212A}elvin.example",
        "A.\u{212A}ELVIN.EXAMPLE.",
    ] {
        let got = r.check(&parse_host(raw).unwrap());
        assert_eq!(got.unwrap_err().code, "denylist", "{raw:?}");
    }
    for raw in ["denied.example..", "denied..example", "a.kelvin.example.."] {
        assert!(parse_host(raw).is_err(), "{raw:?} is a host to judge");
    }
}

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_policy;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/net_host.rs"
    ));
}

/// Every input the `net_host` fuzz target ever failed on (fuzz/regressions/net_host/),
/// and the spellings above, keep the target's property.
#[test]
fn fuzz_regressions_keep_the_net_host_property() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/net_host");
    let mut kept = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("{}", path.display());
        fuzz_property::check(&std::fs::read(&path).unwrap());
        kept += 1;
    }
    assert!(kept > 0, "no regression inputs in {}", dir.display());
    for raw in [
        "Bx..",
        "denied.example..",
        "\u{212A}.example",
        "a.\u{212A}elvin.example",
        "169.254.169.254.",
        "[::ffff:a9fe:a9fe]",
        "bücher.example",
    ] {
        fuzz_property::check(raw.as_bytes());
    }
}

#[test]
fn connection_and_dns_caps_are_read_with_safe_defaults() {
    let mut net = NetCapability {
        policy: Some(NetPolicy::EgressOnly),
        ..NetCapability::default()
    };
    let r = NetRules::from_capability(&net).unwrap();
    assert_eq!(
        (r.max_connections, r.max_dns_queries),
        (DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DNS_QUERIES)
    );
    assert_eq!(NetRules::plain(NetPolicy::EgressOnly), r);
    net.max_connections = Some(7);
    net.max_dns_queries = Some(3);
    let r = NetRules::from_capability(&net).unwrap();
    assert_eq!((r.max_connections, r.max_dns_queries), (7, 3));
    // Rules read back from an older peer's JSON (no caps) get the defaults, never 0.
    let mut doc = serde_yaml_ng::to_value(&r).unwrap();
    let map = doc.as_mapping_mut().unwrap();
    map.remove("max_connections");
    map.remove("max_dns_queries");
    let back: NetRules = serde_yaml_ng::from_value(doc).unwrap();
    assert_eq!(back.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(back.max_dns_queries, DEFAULT_MAX_DNS_QUERIES);
}
