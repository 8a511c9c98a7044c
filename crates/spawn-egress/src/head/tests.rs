use super::*;
use pretty_assertions::assert_eq;

fn name(n: &str) -> Target {
    Target::Name(n.into())
}

fn dest(n: &str, port: u16) -> Destination {
    Destination {
        target: name(n),
        port,
    }
}

/// The whole class of port spellings: only plain decimal 1–65535 without leading zeros is
/// a port; everything else is refused (never a default, never reduced modulo anything).
#[test]
fn ports_are_plain_decimal_or_refused() {
    for (raw, want) in [
        ("1", 1),
        ("80", 80),
        ("443", 443),
        ("8080", 8080),
        ("65535", 65535),
    ] {
        assert_eq!(parse_port(raw), Ok(want), "{raw:?}");
    }
    for raw in [
        "",
        "0",
        "00",
        "080",
        "0443",
        "00080",
        "+80",
        "-80",
        "+0",
        " 80",
        "80 ",
        "8 0",
        "\t80",
        "80\r",
        "80\n",
        "80x",
        "x80",
        "80.0",
        "8_0",
        "0x50",
        "0o120",
        "1e2",
        "65536",
        "65616",
        "99999",
        "131152",
        "4294967296",
        "4294967376",
        "18446744073709551696",
        "\u{0668}\u{0660}",         // Arabic-Indic digits
        "\u{FF18}\u{FF10}",         // fullwidth digits
        "\u{0038}\u{0030}\u{200B}", // a zero-width space after 80
        "８0",
        "80:80",
        "%38%30",
    ] {
        assert!(
            parse_port(raw).is_err(),
            "{raw:?} read as {:?}",
            parse_port(raw)
        );
    }
}

#[test]
fn authorities_split_into_one_host_and_one_port() {
    for (raw, want) in [
        ("allowed.test:443", dest("allowed.test", 443)),
        ("ALLOWED.test.:443", dest("allowed.test", 443)),
        ("allowed.test", dest("allowed.test", 80)),
        (
            "xn--bcher-kva.example:8443",
            dest("xn--bcher-kva.example", 8443),
        ),
    ] {
        assert_eq!(parse_authority(raw, Some(80)), Ok(want), "{raw:?}");
    }
    assert_eq!(
        parse_authority("[::1]:443", None).map(|d| (d.target.to_string(), d.port)),
        Ok(("[::1]".to_owned(), 443))
    );
    for raw in [
        "",
        ":443",
        "allowed.test:",
        "allowed.test:+443",
        "allowed.test:0443",
        "allowed.test:65979",
        "allowed.test:443:443",
        "allowed.test::443",
        "user@allowed.test:443",
        "user:pw@allowed.test:443",
        "::1:443",
        "[::1]443",
        "[::1]:",
        "[::1]:+443",
        "[::1",
        "allowed.test..:443",
        "allowed..test:443",
    ] {
        assert!(
            parse_authority(raw, Some(80)).is_err(),
            "{raw:?} read as {:?}",
            parse_authority(raw, Some(80))
        );
    }
    // CONNECT needs the port.
    assert_eq!(
        parse_authority("allowed.test", None)
            .unwrap_err()
            .denial
            .code,
        "malformed"
    );
}

fn head(method: &str, target: &str, hosts: &[&str]) -> (Method, Uri, HeaderMap) {
    let mut headers = HeaderMap::new();
    for h in hosts {
        headers.append(HOST, HeaderValue::from_str(h).unwrap());
    }
    (
        Method::from_bytes(method.as_bytes()).unwrap(),
        target.parse().unwrap(),
        headers,
    )
}

fn read(mode: Mode, method: &str, target: &str, hosts: &[&str]) -> Result<Asked, Refused> {
    let (m, u, h) = head(method, target, hosts);
    request_destination(mode, &m, &u, &h)
}

#[test]
fn host_headers_agree_with_the_uri_or_the_request_is_refused() {
    let ok = |mode, method, target, hosts: &[&str], via, want: Destination| {
        assert_eq!(
            read(mode, method, target, hosts),
            Ok(Asked { via, dest: want }),
            "{method} {target} {hosts:?}"
        );
    };
    use Mode::{Explicit, TransparentHttp};
    ok(
        Explicit,
        "GET",
        "http://allowed.test/",
        &[],
        Via::Http,
        dest("allowed.test", 80),
    );
    for host in ["allowed.test", "ALLOWED.TEST.", "allowed.test:80"] {
        ok(
            Explicit,
            "GET",
            "http://allowed.test/",
            &[host],
            Via::Http,
            dest("allowed.test", 80),
        );
    }
    ok(
        Explicit,
        "GET",
        "http://allowed.test:8080/",
        &["allowed.test:8080"],
        Via::Http,
        dest("allowed.test", 8080),
    );
    ok(
        Explicit,
        "CONNECT",
        "allowed.test:443",
        &[],
        Via::Connect,
        dest("allowed.test", 443),
    );
    for host in ["allowed.test:443", "allowed.test", "Allowed.Test."] {
        ok(
            Explicit,
            "CONNECT",
            "allowed.test:443",
            &[host],
            Via::Connect,
            dest("allowed.test", 443),
        );
    }
    for host in ["allowed.test", "allowed.test:80", "ALLOWED.test."] {
        ok(
            TransparentHttp,
            "GET",
            "/x",
            &[host],
            Via::Http,
            dest("allowed.test", 80),
        );
    }
    ok(
        TransparentHttp,
        "GET",
        "http://allowed.test/x",
        &["allowed.test"],
        Via::Http,
        dest("allowed.test", 80),
    );

    let refused = |mode, method, target, hosts: &[&str], code: &str| {
        let got = read(mode, method, target, hosts);
        assert_eq!(
            got.as_ref().map_err(|r| r.denial.code),
            Err(code),
            "{method} {target} {hosts:?}: {got:?}"
        );
    };
    // More than one Host, whatever they say.
    for hosts in [
        &["allowed.test", "allowed.test"][..],
        &["allowed.test", "other.test"],
        &["other.test", "allowed.test"],
        &["allowed.test", ""],
    ] {
        refused(
            Explicit,
            "GET",
            "http://allowed.test/",
            hosts,
            "host-mismatch",
        );
        refused(
            Explicit,
            "CONNECT",
            "allowed.test:443",
            hosts,
            "host-mismatch",
        );
        refused(TransparentHttp, "GET", "/", hosts, "host-mismatch");
    }
    // One Host that names another host or port than the URI.
    for host in [
        "other.test",
        "allowed.test:8080",
        "allowed.test:443",
        "11.0.0.1",
        "[::1]",
    ] {
        refused(
            Explicit,
            "GET",
            "http://allowed.test/",
            &[host],
            "host-mismatch",
        );
    }
    refused(
        Explicit,
        "GET",
        "http://allowed.test:8080/",
        &["allowed.test"],
        "host-mismatch",
    );
    for host in ["other.test:443", "other.test", "allowed.test:8443"] {
        refused(
            Explicit,
            "CONNECT",
            "allowed.test:443",
            &[host],
            "host-mismatch",
        );
    }
    // A Host that does not parse.
    for host in [
        "",
        "allowed.test:",
        "allowed.test:+80",
        "allowed.test:080",
        "allowed.test:65616",
        "allowed.test..",
        "a b",
        "allowed.test, other.test",
    ] {
        refused(
            Explicit,
            "GET",
            "http://allowed.test/",
            &[host],
            "malformed",
        );
        refused(TransparentHttp, "GET", "/", &[host], "malformed");
    }
    // The transparent listener only ever gets port 80.
    refused(
        TransparentHttp,
        "GET",
        "/",
        &["allowed.test:8080"],
        "host-mismatch",
    );
    refused(
        TransparentHttp,
        "GET",
        "http://allowed.test:8080/",
        &[],
        "host-mismatch",
    );
    refused(TransparentHttp, "GET", "/", &[], "malformed");
    refused(
        TransparentHttp,
        "CONNECT",
        "allowed.test:443",
        &["allowed.test:443"],
        "malformed",
    );
    // Forms.
    refused(Explicit, "GET", "/", &["allowed.test"], "malformed");
    refused(Explicit, "GET", "https://allowed.test/", &[], "malformed");
    refused(Explicit, "GET", "ftp://allowed.test/", &[], "malformed");
    refused(
        Explicit,
        "CONNECT",
        "http://allowed.test:443/",
        &[],
        "malformed",
    );
    refused(Explicit, "CONNECT", "allowed.test", &[], "malformed");
    refused(
        Explicit,
        "GET",
        "http://user@allowed.test/",
        &[],
        "malformed",
    );
}

#[test]
fn host_values_that_are_not_text_are_refused() {
    let mut headers = HeaderMap::new();
    headers.append(HOST, HeaderValue::from_bytes(b"allowed.test\xff").unwrap());
    let got = request_destination(
        Mode::TransparentHttp,
        &Method::GET,
        &"/".parse().unwrap(),
        &headers,
    );
    assert_eq!(got.unwrap_err().denial.code, "malformed");
}

/// Every spelling of an overflowing or signed port, on every form that carries one.
#[test]
fn port_spellings_are_refused_on_every_form() {
    let mut checked = 0;
    for port in ["", "+80", "080", "65616", "4294967376", "80a", "0"] {
        let connect = format!("allowed.test:{port}");
        let absolute = format!("http://allowed.test:{port}/");
        let host = format!("allowed.test:{port}");
        for (mode, method, target, hosts) in [
            (Mode::Explicit, "CONNECT", connect.as_str(), vec![]),
            (Mode::Explicit, "GET", absolute.as_str(), vec![]),
            (Mode::TransparentHttp, "GET", "/", vec![host.as_str()]),
            (
                Mode::Explicit,
                "GET",
                "http://allowed.test/",
                vec![host.as_str()],
            ),
        ] {
            // What http's Uri refuses never reaches the proxy's code (hyper answers 400).
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            let (m, _, h) = head(method, "/", &hosts);
            let got = request_destination(mode, &m, &uri, &h);
            assert_eq!(
                got.as_ref().map_err(|r| r.denial.code),
                Err("malformed"),
                "{method} {target} {hosts:?}: {got:?}"
            );
            checked += 1;
        }
    }
    // Only the empty port in a URI (`http://allowed.test:/`) is refused by http itself.
    assert!(
        checked >= 26,
        "only {checked} heads reached the proxy's reading"
    );
}

mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_egress;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/request_head.rs"
    ));
}

/// Every input the `request_head` fuzz target ever failed on
/// (fuzz/regressions/request_head/), and the heads of the class tables, keep the target's
/// property. (The first byte picks the listener: even for the proxy port, odd for port 80.)
#[test]
fn fuzz_regressions_keep_the_request_head_property() {
    for (path, data) in crate::testing::fuzz_regressions("request_head") {
        eprintln!("{}", path.display());
        fuzz_property::check(&data);
    }
    for head in [
        "\0GET http://allowed.test:65616/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "\0GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n",
        "\0GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test:80\r\n\r\n",
        "\0CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "\0CONNECT allowed.test:+443 HTTP/1.1\r\n\r\n",
        "\x01GET / HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n",
        "\x01GET / HTTP/1.1\r\nHost: ALLOWED.test.\r\n\r\n",
        "443",
        "+443",
        "[::1]:443",
    ] {
        fuzz_property::check(head.as_bytes());
    }
}
