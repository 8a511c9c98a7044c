//! The server name a TLS client asks for, read from its ClientHello before anything is
//! forwarded (for `requireTls` and transparent mode).

use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake,
};

/// The most bytes read while waiting for a complete ClientHello.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not complete yet: read more.
    NeedMore,
    /// A ClientHello naming this server (as sent; not yet normalized).
    Sni(String),
    /// A ClientHello without a server name.
    NoSni,
    /// Not a TLS ClientHello.
    NotTls,
}

/// Reads the first TLS record of a connection.
pub fn client_hello(buf: &[u8]) -> Hello {
    // A record header is 5 bytes: type 22 (handshake), version, length.
    if buf.len() < 5 {
        return if buf.first().is_some_and(|b| *b != 22) {
            Hello::NotTls
        } else {
            Hello::NeedMore
        };
    }
    if buf[0] != 22 {
        return Hello::NotTls;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + len {
        return if 5 + len > MAX_HELLO_BYTES {
            Hello::NotTls
        } else {
            Hello::NeedMore
        };
    }
    let Ok((_, record)) = parse_tls_plaintext(&buf[..5 + len]) else {
        return Hello::NotTls;
    };
    for msg in record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let Some(ext) = hello.ext else {
                return Hello::NoSni;
            };
            let Ok((_, exts)) = parse_tls_extensions(ext) else {
                return Hello::NotTls;
            };
            for e in exts {
                if let TlsExtension::SNI(names) = e {
                    // Type 0 is host_name; a hello naming two hosts is refused.
                    let hosts: Vec<&[u8]> = names
                        .iter()
                        .filter(|(t, _)| t.0 == 0)
                        .map(|(_, n)| *n)
                        .collect();
                    return match hosts.as_slice() {
                        [one] => std::str::from_utf8(one)
                            .map(|s| Hello::Sni(s.to_owned()))
                            .unwrap_or(Hello::NotTls),
                        [] => Hello::NoSni,
                        _ => Hello::NotTls,
                    };
                }
            }
            return Hello::NoSni;
        }
    }
    Hello::NotTls
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::client_hello as hello;

    #[test]
    fn reads_the_server_name_and_waits_for_the_whole_record() {
        let h = hello(Some("api.example.com"));
        assert_eq!(client_hello(&h), Hello::Sni("api.example.com".into()));
        for cut in [0, 1, 4, 5, h.len() - 1] {
            assert_eq!(client_hello(&h[..cut]), Hello::NeedMore, "cut at {cut}");
        }
        assert_eq!(client_hello(&hello(None)), Hello::NoSni);
    }

    #[test]
    fn anything_else_is_not_tls() {
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello(&[22, 3, 1, 0xff, 0xff]), Hello::NotTls);
        let mut h = hello(Some("a.example"));
        h[5] = 2; // a ServerHello type
        assert_ne!(client_hello(&h), Hello::Sni("a.example".into()));
        let mut garbage = vec![22, 3, 1, 0, 20];
        garbage.extend_from_slice(&[0xee; 20]);
        assert_eq!(client_hello(&garbage), Hello::NotTls);
    }
}
