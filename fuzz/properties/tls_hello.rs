// The property of the `tls_hello` fuzz target. spawn-egress's tests include this file too and
// check it on every input kept in fuzz/regressions/tls_hello/ (hence no inner attributes or
// `//!` comments here).
//
// What the ClientHello reader says about the first bytes of a connection is what a TLS
// server reads from them: a reported name is the one non-empty `host_name` of the one
// `server_name` extension of a ClientHello, and a second parser (tls-parser) reads the same
// ClientHello and the same name; "no name" means that parser finds none either; only bytes
// that do not start like TLS pass as "not TLS"; and the verdict depends on the first record
// alone, so the proxy, which decides as soon as it can, decides as it would on all of it.

use spawn_egress::{client_hello, Hello, MAX_HELLO_BYTES};
use tls_parser::{
    parse_tls_extension_sni_content, parse_tls_plaintext, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// Where the first record ends, once its header is there.
fn record_end(data: &[u8]) -> Option<usize> {
    let len = data.get(3..5)?;
    Some(5 + usize::from(u16::from_be_bytes([len[0], len[1]])))
}

/// The server names tls-parser reads from a record holding one ClientHello: `None` if it
/// reads no ClientHello, else the `host_name` entries of each `server_name` extension.
fn oracle(record: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let (rest, plain) = parse_tls_plaintext(record).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let [TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))] = plain.msg.as_slice()
    else {
        return None;
    };
    let mut found = Vec::new();
    // The extension list itself is walked here (tls-parser stops at the first extension
    // whose body it cannot parse); each server_name body is read by tls-parser.
    let mut exts = hello.ext.unwrap_or_default();
    while exts.len() >= 4 {
        let kind = u16::from_be_bytes([exts[0], exts[1]]);
        let len = usize::from(u16::from_be_bytes([exts[2], exts[3]]));
        let body = exts.get(4..4 + len)?;
        exts = &exts[4 + len..];
        if kind == 0 {
            let (_, TlsExtension::SNI(names)) = parse_tls_extension_sni_content(body).ok()? else {
                return None;
            };
            found.push(names.iter().map(|(_, n)| n.to_vec()).collect());
        }
    }
    Some(found)
}

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let verdict = client_hello(data);
    let end = record_end(data);
    match &verdict {
        Hello::NeedMore => {
            assert!(
                data.len() < 5 || end.is_some_and(|e| data.len() < e && e <= MAX_HELLO_BYTES),
                "NeedMore on a whole record"
            );
            return;
        }
        Hello::NotTls => assert!(
            data.first().is_some_and(|b| *b != 22),
            "TLS read as not TLS"
        ),
        Hello::Malformed(why) => assert!(!why.is_empty()),
        Hello::Sni(_) | Hello::NoSni => {}
    }
    // The verdict depends on the first record alone: shorter prefixes need more (or, once
    // the first bytes say so, give the same answer); bytes after it change nothing.
    let cuts = (0..data.len().min(6)).chain(end.map(|e| e.saturating_sub(1)));
    for cut in cuts.filter(|c| *c < data.len()) {
        let early = client_hello(&data[..cut]);
        assert!(
            early == Hello::NeedMore || early == verdict,
            "{early:?} on {cut} bytes, {verdict:?} on all"
        );
    }
    if let Some(e) = end.filter(|e| *e <= data.len()) {
        let mut more = data[..e].to_vec();
        assert_eq!(
            client_hello(&more),
            verdict,
            "bytes after the record changed it"
        );
        more.extend_from_slice(&[22, 3, 1, 0, 4, 1, 0, 0, 0]);
        assert_eq!(
            client_hello(&more),
            verdict,
            "bytes after the record changed it"
        );
    }
    match verdict {
        Hello::Sni(name) => {
            assert!(!name.is_empty(), "an empty server name");
            let bytes = name.as_bytes();
            assert!(
                data.windows(bytes.len()).any(|w| w == bytes),
                "{name:?} is not in the bytes sent"
            );
            let record = &data[..end.unwrap_or(0)];
            assert_eq!(
                oracle(record),
                Some(vec![vec![bytes.to_vec()]]),
                "tls-parser reads another name than {name:?}"
            );
        }
        Hello::NoSni => {
            let record = &data[..end.unwrap_or(0)];
            assert_eq!(oracle(record), Some(vec![]), "tls-parser reads a name");
        }
        _ => {}
    }
}
