//! The server name a TLS client asks for, read from its ClientHello before anything is
//! forwarded: on the transparent TLS listener (the name is the destination) and in every
//! `CONNECT` tunnel whose first bytes are TLS (the name must be the tunnel's host).
//!
//! Written here, and strict, because the proxy must read the name the server will read.
//! A general parser stops at the first extension it cannot parse, takes the first of two
//! `server_name` extensions and ignores trailing bytes; a server may do otherwise. So every
//! length must frame exactly the bytes it covers, no extension may appear twice, and
//! `server_name` must hold exactly one non-empty `host_name` (RFC 6066 §3). Whatever
//! starts like a TLS handshake record (byte 22, major version 3) but is not such a
//! ClientHello in one record is [`Hello::Malformed`], which the proxy refuses; only bytes
//! that do not start like TLS at all are [`Hello::NotTls`]. No mainstream client splits its
//! ClientHello over several records, so that is refused too rather than reassembled.

use spawn_policy::net::{parse_host, Denial, Target};

/// The largest TLS record: a 5-byte header and 2^14 bytes (RFC 8446 §5.1). A ClientHello
/// must fit in one, so no more is ever read while waiting for it.
pub const MAX_HELLO_BYTES: usize = 5 + (1 << 14);

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not complete yet: read more.
    NeedMore,
    /// A ClientHello naming this server (as sent, not yet normalized; never empty).
    Sni(String),
    /// A ClientHello without a `server_name` extension.
    NoSni,
    /// Does not start like a TLS handshake record.
    NotTls,
    /// Starts like TLS but is not one well-formed ClientHello in one record: why.
    Malformed(&'static str),
}

/// The record header's content type for handshake messages.
const HANDSHAKE: u8 = 22;
/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The `server_name` extension, and its `host_name` entry type.
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// Reads the first TLS record of a connection. The answer depends only on the record's
/// bytes: it is [`Hello::NeedMore`] for every shorter prefix, and bytes after the record do
/// not change it.
pub fn client_hello(buf: &[u8]) -> Hello {
    match buf.first() {
        None => return Hello::NeedMore,
        Some(&HANDSHAKE) => {}
        Some(_) => return Hello::NotTls,
    }
    if buf.get(1).is_some_and(|major| *major != 3) {
        return Hello::Malformed("not TLS record version 3.x");
    }
    let Some(len) = buf
        .get(3..5)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Hello::NeedMore;
    };
    if len == 0 || len > MAX_HELLO_BYTES - 5 {
        return Hello::Malformed("a handshake record of impossible length");
    }
    match buf.get(5..5 + len) {
        None => Hello::NeedMore,
        Some(record) => match read_record(record) {
            Ok(Some(name)) => Hello::Sni(name),
            Ok(None) => Hello::NoSni,
            Err(why) => Hello::Malformed(why),
        },
    }
}

/// A cursor over bytes that must be consumed exactly.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err(what);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One handshake record's payload: exactly one ClientHello. Its server name, if any.
fn read_record(record: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(record);
    if r.u8("no handshake type")? != CLIENT_HELLO {
        return Err("the first handshake message is not a ClientHello");
    }
    let len = r.take(3, "a short handshake header")?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    if len != r.0.len() {
        return Err(if len > r.0.len() {
            "a ClientHello split over several records"
        } else {
            "bytes after the ClientHello in its record"
        });
    }
    r.take(2 + 32, "a short ClientHello")?; // legacy_version, random
    let session_id = r.vec8("a short session id")?;
    if session_id.len() > 32 {
        return Err("a session id longer than 32 bytes");
    }
    let suites = r.vec16("short cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("malformed cipher suites");
    }
    if r.vec8("short compression methods")?.is_empty() {
        return Err("no compression method");
    }
    if r.is_empty() {
        // A ClientHello without extensions (TLS 1.0 allows it): no name.
        return Ok(None);
    }
    let mut exts = Reader(r.vec16("short extensions")?);
    if !r.is_empty() {
        return Err("bytes after the extensions");
    }
    let mut kinds = Vec::new();
    let mut sni = None;
    while !exts.is_empty() {
        let kind = exts.u16("a short extension")?;
        let data = exts.vec16("a short extension")?;
        kinds.push(kind);
        if kind == SERVER_NAME {
            sni = Some(data);
        }
    }
    kinds.sort_unstable();
    if kinds.windows(2).any(|w| w[0] == w[1]) {
        return Err("an extension sent twice");
    }
    sni.map(server_name).transpose()
}

/// The `server_name` extension's one `host_name`.
fn server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("a short server name list")?);
    if !r.is_empty() {
        return Err("bytes after the server name list");
    }
    if list.u8("an empty server name list")? != HOST_NAME {
        return Err("a server name that is not a host name");
    }
    let name = list.vec16("a short server name")?;
    if !list.is_empty() {
        return Err("more than one server name");
    }
    if name.is_empty() {
        return Err("an empty server name");
    }
    String::from_utf8(name.to_vec()).map_err(|_| "a server name that is not UTF-8")
}

/// Whether a ClientHello sent through a `CONNECT` tunnel to `target` may go on: its server
/// name must be `target` itself after the policy's normalization (case, one trailing dot,
/// punycode). Another name, an IP literal (RFC 6066 allows names only) or what is not a
/// host name at all would have the server pick a site other than the one that was checked
/// (domain fronting): refused as `sni-mismatch`, with or without `requireTls`.
pub fn tunnel_sni(sni: &str, target: &Target) -> Result<(), Denial> {
    let shown: String = sni.chars().take(255).collect();
    let why = match parse_host(sni) {
        Ok(Target::Ip(_)) => format!("the TLS server name {shown:?} is an IP address"),
        Ok(named) if named == *target => return Ok(()),
        Ok(named) => format!("the TLS server name {named} is not {target}"),
        Err(_) => format!("the TLS server name {shown:?} is not a host name"),
    };
    Err(Denial {
        code: "sni-mismatch",
        detail: why,
    })
}

#[cfg(all(test, feature = "testing"))]
mod tests;
