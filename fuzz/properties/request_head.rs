// The property of the `request_head` fuzz target. spawn-egress's tests include this file too
// and check it on every input kept in fuzz/regressions/request_head/ (hence no inner
// attributes or `//!` comments here).
//
// A request head is read as hyper reads it (httparse, then http's Method, Uri and header
// types), and the proxy's reading of where it goes is one every part of the head agrees on:
// a port accepted anywhere is exactly its plain decimal spelling; the destination is what
// the URI's authority (or, in origin form, the one Host) says, and every Host agrees with
// it; a destination written back reads as itself.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use spawn_egress::{parse_authority, parse_port, request_destination, Mode, Via};

/// The head of `data` as hyper's HTTP/1 server builds it, if it parses.
fn head(data: &[u8]) -> Option<(Method, Uri, HeaderMap)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !req.parse(data).ok()?.is_complete() {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri = Uri::try_from(req.path?).ok()?;
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some((method, uri, map))
}

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    // Any text as a port: accepted only in its one plain spelling.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(port) = parse_port(text) {
            assert_eq!(text, port.to_string(), "port {text:?} read as {port}");
        }
        if let Ok(dest) = parse_authority(text, None) {
            assert!(
                text.ends_with(&format!(":{}", dest.port)),
                "{text:?} read as {dest}"
            );
            assert_eq!(
                parse_authority(&dest.to_string(), None),
                Ok(dest.clone()),
                "{text:?}"
            );
        }
    }
    // The first byte picks the listener, the rest is a request head.
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let mode = if first % 2 == 0 {
        Mode::Explicit
    } else {
        Mode::TransparentHttp
    };
    let Some((method, uri, headers)) = head(rest) else {
        return;
    };
    let got = request_destination(mode, &method, &uri, &headers);
    assert_eq!(
        request_destination(mode, &method, &uri, &headers),
        got,
        "read twice differently"
    );
    let asked = match got {
        Ok(asked) => asked,
        Err(refused) => {
            assert!(
                matches!(refused.denial.code, "malformed" | "host-mismatch"),
                "{refused:?}"
            );
            assert!(refused.host.chars().count() <= 255);
            return;
        }
    };
    let dest = &asked.dest;
    assert!(dest.port >= 1);
    assert_eq!(
        parse_authority(&dest.to_string(), None).as_ref(),
        Ok(dest),
        "{dest} does not read back as itself"
    );
    let hosts: Vec<&HeaderValue> = headers.get_all("host").iter().collect();
    assert!(hosts.len() <= 1, "{} Host headers accepted", hosts.len());
    let authority = uri.authority().map(|a| a.as_str());
    match asked.via {
        Via::Connect => {
            assert_eq!(method, Method::CONNECT);
            assert_eq!(mode, Mode::Explicit);
            let authority = authority.expect("CONNECT without an authority accepted");
            assert!(
                authority.ends_with(&format!(":{}", dest.port)),
                "{authority:?}: {dest}"
            );
            if let Some(host) = hosts.first() {
                let host = host.to_str().expect("a Host that is not text accepted");
                // The Host of a CONNECT may leave the port out.
                let named = parse_authority(host, Some(dest.port)).expect("a bad Host accepted");
                assert_eq!(&named, dest, "Host {host:?} disagrees with {dest}");
            }
        }
        Via::Http => {
            assert_ne!(method, Method::CONNECT);
            match authority {
                Some(a) => assert!(
                    a.ends_with(&format!(":{}", dest.port))
                        || (dest.port == 80 && !a.rsplit(']').next().unwrap_or(a).contains(':')),
                    "{a:?} read as {dest}"
                ),
                None => assert!(mode == Mode::TransparentHttp && hosts.len() == 1),
            }
            if let Some(host) = hosts.first() {
                let host = host.to_str().expect("a Host that is not text accepted");
                let named = parse_authority(host, Some(80)).expect("a bad Host accepted");
                assert_eq!(&named, dest, "Host {host:?} disagrees with {dest}");
            }
            if mode == Mode::TransparentHttp {
                assert_eq!(
                    dest.port, 80,
                    "the transparent listener serves port 80 only"
                );
            }
        }
        Via::Tls | Via::Dns => panic!("a request head read as {}", asked.via.as_str()),
    }
}
