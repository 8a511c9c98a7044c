use super::*;
use crate::testing::{client_hello as hello, client_hello_with, server_name_ext};
use pretty_assertions::assert_eq;

fn sni(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    (SERVER_NAME, server_name_ext(names))
}

#[test]
fn reads_the_server_name_and_waits_for_the_whole_record() {
    let h = hello(Some("api.example.com"));
    assert_eq!(client_hello(&h), Hello::Sni("api.example.com".into()));
    for cut in [0, 1, 4, 5, h.len() - 1] {
        assert_eq!(client_hello(&h[..cut]), Hello::NeedMore, "cut at {cut}");
    }
    // Bytes after the record (early data, the next record) change nothing.
    let mut more = h.clone();
    more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert_eq!(client_hello(&more), Hello::Sni("api.example.com".into()));
    assert_eq!(client_hello(&hello(None)), Hello::NoSni);
    // Other extensions, before and after, and GREASE.
    let h = client_hello_with(&[
        (0x0a0a, vec![]),
        (16, vec![0, 3, 2, b'h', b'2']),
        sni(&[(0, b"a.example")]),
        (43, vec![2, 3, 4]),
        (0x1a1a, vec![0]),
    ]);
    assert_eq!(client_hello(&h), Hello::Sni("a.example".into()));
    // An empty extension list is a ClientHello without a name.
    let mut empty = hello(None);
    empty.extend_from_slice(&[0, 0]);
    let n = empty.len();
    empty[3..5].copy_from_slice(&u16::try_from(n - 5).unwrap().to_be_bytes());
    empty[6..9].copy_from_slice(&u32::try_from(n - 9).unwrap().to_be_bytes()[1..]);
    assert_eq!(client_hello(&empty), Hello::NoSni);
}

#[test]
fn what_does_not_start_like_tls_is_not_tls() {
    for raw in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x80\x2e\x01\x03\x01", // an SSLv2-style hello: no extensions, no name
        b"\x17\x03\x03\x00\x05hello",
        b"\x00",
    ] {
        assert_eq!(client_hello(raw), Hello::NotTls, "{raw:?}");
    }
}

/// Everything that starts like a TLS handshake record but is not exactly one well-formed
/// ClientHello in one record, with one host name in one server_name extension.
#[test]
fn malformed_hellos_are_refused_not_passed_as_not_tls() {
    let good = hello(Some("a.example"));
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut h = good.clone();
        f(&mut h);
        h
    };
    // Offsets in `good`: record header 0..5, handshake header 5..9, version 9..11, random
    // 11..43, session id length 43, suites length 44..46.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("record version 2", with(&|h| h[1] = 2)),
        ("record length 0", vec![22, 3, 1, 0, 0]),
        ("record longer than 2^14", vec![22, 3, 1, 0x40, 1]),
        ("a ServerHello", with(&|h| h[5] = 2)),
        (
            "handshake longer than the record (split)",
            with(&|h| h[8] = h[8].wrapping_add(1)),
        ),
        (
            "handshake shorter than the record",
            with(&|h| h[8] = h[8].wrapping_sub(1)),
        ),
        ("a 33-byte session id", with(&|h| h[43] = 33)),
        ("no cipher suite", client_hello_raw(&[0, 0], &[1, 0], None)),
        (
            "odd cipher suites",
            client_hello_raw(&[0, 3, 0x13, 1, 0], &[1, 0], None),
        ),
        (
            "no compression",
            client_hello_raw(&[0, 2, 0x13, 1], &[0], None),
        ),
        (
            "extensions shorter than their length",
            client_hello_raw(&[0, 2, 0x13, 1], &[1, 0], Some(&[0, 9, 0, 0, 0, 1])),
        ),
        (
            "bytes after the extensions",
            client_hello_raw(&[0, 2, 0x13, 1], &[1, 0], Some(&[0, 0, 7])),
        ),
        (
            "a truncated extension",
            client_hello_raw(&[0, 2, 0x13, 1], &[1, 0], Some(&[0, 3, 0, 16, 0])),
        ),
        (
            "two server_name extensions naming two hosts",
            client_hello_with(&[sni(&[(0, b"a.example")]), sni(&[(0, b"evil.example")])]),
        ),
        (
            "two server_name extensions naming one host",
            client_hello_with(&[sni(&[(0, b"a.example")]), sni(&[(0, b"a.example")])]),
        ),
        (
            "another extension twice",
            client_hello_with(&[
                (16, vec![0, 0]),
                sni(&[(0, b"a.example")]),
                (16, vec![0, 0]),
            ]),
        ),
        (
            "two host names",
            client_hello_with(&[sni(&[(0, b"a.example"), (0, b"evil.example")])]),
        ),
        (
            "a host name and another name type",
            client_hello_with(&[sni(&[(0, b"a.example"), (1, b"evil.example")])]),
        ),
        (
            "only another name type",
            client_hello_with(&[sni(&[(1, b"evil.example")])]),
        ),
        ("an empty host name", client_hello_with(&[sni(&[(0, b"")])])),
        ("an empty name list", client_hello_with(&[sni(&[])])),
        (
            "an empty server_name body",
            client_hello_with(&[(0, vec![])]),
        ),
        (
            "bytes after the name list",
            client_hello_with(&[(0, {
                let mut b = server_name_ext(&[(0, b"a.example")]);
                b.push(0);
                b
            })]),
        ),
        (
            "a name list shorter than its length",
            client_hello_with(&[(0, vec![0, 20, 0, 0, 1, b'a'])]),
        ),
        (
            "a name that is not UTF-8",
            client_hello_with(&[sni(&[(0, b"a.ex\xffample")])]),
        ),
    ];
    for (what, raw) in cases {
        assert!(
            matches!(client_hello(&raw), Hello::Malformed(_)),
            "{what}: {:?}",
            client_hello(&raw)
        );
    }
}

/// A ClientHello record with these raw suites and compression vectors (length prefix
/// included) and, if given, this raw extensions block.
fn client_hello_raw(suites: &[u8], compression: &[u8], exts: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(suites);
    body.extend_from_slice(compression);
    if let Some(e) = exts {
        body.extend_from_slice(e);
    }
    let mut handshake = vec![1];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap_or(0).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// A tunnel's ClientHello must name the tunnel's host, after the policy's normalization.
#[test]
fn a_tunnel_sni_names_its_own_host_or_is_refused() {
    let host = Target::Name("allowed.test".into());
    for same in [
        "allowed.test",
        "ALLOWED.TEST",
        "allowed.test.",
        "Allowed.Test.",
    ] {
        assert_eq!(tunnel_sni(same, &host), Ok(()), "{same}");
    }
    let idn = Target::Name("xn--bcher-kva.example".into());
    for same in [
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE",
        "bücher.example",
        "BÜCHER.example.",
    ] {
        assert_eq!(tunnel_sni(same, &idn), Ok(()), "{same}");
    }
    for other in [
        "other.test",
        "evil.allowed.test",
        "allowed.test.evil",
        "allowedtest",
        "localhost",
        "metadata.google.internal",
        "printer.local",
        "11.0.0.1",
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "[::1]",
        "::1",
        "169.254.169.254",
        "allowed.test..",
        "allowed.test:443",
        "allowed.test\0",
        "*.allowed.test",
        "",
    ] {
        let got = tunnel_sni(other, &host);
        assert_eq!(
            got.as_ref().map_err(|d| d.code),
            Err("sni-mismatch"),
            "{other:?}: {got:?}"
        );
    }
    // A tunnel to an address: a name in the hello fronts it, and the address itself is no
    // server name at all.
    let ip = Target::Ip("11.0.0.1".parse().unwrap());
    for sni in ["11.0.0.1", "allowed.test", "0xb000001"] {
        assert_eq!(
            tunnel_sni(sni, &ip).unwrap_err().code,
            "sni-mismatch",
            "{sni}"
        );
    }
}

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_egress;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/tls_hello.rs"
    ));
}

/// The fuzz target's property holds on every hello of the tables above.
#[test]
fn the_fuzz_property_holds_on_the_tables() {
    fuzz_property::check(&hello(Some("api.example.com")));
    fuzz_property::check(&hello(None));
    fuzz_property::check(&client_hello_with(&[
        (16, vec![0, 3, 2, b'h', b'2']),
        sni(&[(0, b"a.example")]),
    ]));
    fuzz_property::check(&client_hello_with(&[
        sni(&[(0, b"a.example")]),
        sni(&[(0, b"b.example")]),
    ]));
    fuzz_property::check(b"GET / HTTP/1.1\r\n");
}

/// Every input the `tls_hello` fuzz target ever failed on (fuzz/regressions/tls_hello/)
/// keeps the target's property.
#[test]
fn fuzz_regressions_keep_the_tls_hello_property() {
    let kept = crate::testing::fuzz_regressions("tls_hello");
    assert!(!kept.is_empty(), "no tls_hello regression inputs");
    for (path, data) in kept {
        eprintln!("{}", path.display());
        fuzz_property::check(&data);
    }
}
