//! What a request asks the proxy for, read from its head: one destination (host and port)
//! that every part of the head naming one agrees on. Pure functions, so that the proxy and
//! the `request_head` fuzz target run the same code.
//!
//! Each rule closes a class of differential between what a client (or the server behind
//! the proxy) reads and what the proxy decides:
//!
//! - **Ports** are 1–65535 in plain ASCII decimal: no sign, no leading zero, no space, no
//!   other digits, nothing before or after, never empty after a `:`. That is the one
//!   spelling every reader agrees on; `+80`, `080`, `65616` (80 modulo 2^16) or `80x` are
//!   refused, never read as a default port or reduced.
//! - **Host** (RFC 9112 §3.2): at most one field line. Absolute form: if present, it names
//!   the same host and port as the URI (after normalization; no port is 80). RFC 9112 lets
//!   a proxy ignore it, but a server behind the proxy may read it instead, so any
//!   disagreement is refused rather than resolved. `CONNECT`: if present, the same host,
//!   and the same port if it gives one. Origin form (the transparent HTTP listener): exactly
//!   one, for port 80 (the only port redirected there).
//! - **Forms**: `CONNECT` only in authority form (`host:port`) and only on the proxy
//!   port; absolute URIs only `http://`; no credentials in an authority; IPv6 only in
//!   brackets.

use hyper::header::{HeaderMap, HeaderValue, HOST};
use hyper::{Method, Uri};
use spawn_policy::net::{parse_host, Denial, Target};

use crate::proxy::{denial, Mode, Via};

/// Most characters of a refused host kept for the audit.
const SHOWN_CHARS: usize = 255;

/// A destination as the proxy will connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host, normalized.
    pub target: Target,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.target, self.port)
    }
}

/// What a request asks for: how, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// `CONNECT`, or an HTTP request to forward.
    pub via: Via,
    /// Where.
    pub dest: Destination,
}

/// A refused request head: the host as written (for the audit, possibly empty) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as the request wrote it, or the normalized one when that is what disagreed.
    pub host: String,
    /// Why (`malformed` or `host-mismatch`).
    pub denial: Denial,
}

fn malformed(host: &str, detail: impl Into<String>) -> Refused {
    Refused {
        host: clip(host, SHOWN_CHARS),
        denial: denial("malformed", detail),
    }
}

fn mismatch(host: String, detail: impl Into<String>) -> Refused {
    Refused {
        host,
        denial: denial("host-mismatch", detail),
    }
}

/// A port as written after the `:` of an authority: 1 to 65535 in plain ASCII decimal
/// without leading zeros. `Ok(p)` only when `raw` is exactly `p.to_string()`.
pub fn parse_port(raw: &str) -> Result<u16, String> {
    if raw.is_empty() {
        return Err("an empty port after ':'".into());
    }
    // Five digits are enough for 65535; more is an overflow whatever the digits.
    if raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "port {:?} is not a decimal number from 1 to 65535",
            clip(raw, 16)
        ));
    }
    if raw == "0" {
        return Err("port 0".into());
    }
    if raw.starts_with('0') {
        return Err(format!(
            "port {raw:?} has a leading zero (some read it as octal)"
        ));
    }
    raw.parse::<u16>()
        .map_err(|_| format!("port {raw} is more than 65535"))
}

/// At most `n` characters of `raw`, for a message.
fn clip(raw: &str, n: usize) -> String {
    raw.chars().take(n).collect()
}

/// Splits an authority (`host`, `host:port`, `[v6]`, `[v6]:port`) into the host as
/// written and the port text, if any. No credentials; an IPv6 address only in brackets.
fn split_authority(raw: &str) -> Result<(&str, Option<&str>), Refused> {
    if raw.is_empty() {
        return Err(malformed(raw, "an empty host"));
    }
    if raw.contains('@') {
        return Err(malformed(raw, "credentials in the authority"));
    }
    let (host, rest) = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => raw.split_at(end + 1),
            None => return Err(malformed(raw, "an unterminated [IPv6] host")),
        }
    } else {
        match raw.find(':') {
            Some(colon) => raw.split_at(colon),
            None => (raw, ""),
        }
    };
    if rest.is_empty() {
        return Ok((host, None));
    }
    match rest.strip_prefix(':') {
        Some(port) if !port.contains(':') => Ok((host, Some(port))),
        _ => Err(malformed(
            raw,
            "more than one ':' (an IPv6 address goes in brackets)",
        )),
    }
}

/// Reads an authority (`host[:port]`); `default_port` when it has no port, or `None` if a
/// port is required.
pub fn parse_authority(raw: &str, default_port: Option<u16>) -> Result<Destination, Refused> {
    let (host, port) = split_authority(raw)?;
    let port = match (port, default_port) {
        (Some(p), _) => parse_port(p).map_err(|e| malformed(host, e))?,
        (None, Some(default)) => default,
        (None, None) => return Err(malformed(host, "CONNECT needs host:port")),
    };
    let target = parse_host(host).map_err(|e| malformed(host, e))?;
    Ok(Destination { target, port })
}

/// The one `Host` value of a request, if any. More than one field line is refused, as is a
/// value that is not visible ASCII.
fn single_host(headers: &HeaderMap) -> Result<Option<&str>, Refused> {
    let mut values = headers.get_all(HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(mismatch(String::new(), "more than one Host header"));
    }
    first
        .map(|v: &HeaderValue| {
            v.to_str()
                .map_err(|_| malformed("", "a Host header that is not visible ASCII"))
        })
        .transpose()
}

/// The destination of a request head received on a listener of `mode`, with every rule of
/// this module applied.
pub fn request_destination(
    mode: Mode,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Asked, Refused> {
    let host_header = single_host(headers)?;
    if method == Method::CONNECT {
        if mode != Mode::Explicit {
            return Err(malformed(
                "",
                "CONNECT goes to the proxy (HTTP_PROXY), not to port 80",
            ));
        }
        let authority = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
            (None, Some(a), None) => a.as_str(),
            _ => return Err(malformed("", "CONNECT takes host:port and nothing else")),
        };
        let dest = parse_authority(authority, None)?;
        if let Some(value) = host_header {
            let (host, port) = split_authority(value)?;
            let named = parse_host(host).map_err(|e| malformed(host, e))?;
            let port = port
                .map(|p| parse_port(p).map_err(|e| malformed(host, e)))
                .transpose()?;
            if named != dest.target || port.is_some_and(|p| p != dest.port) {
                return Err(mismatch(
                    dest.target.to_string(),
                    format!(
                        "Host {:?} is not the CONNECT target {dest}",
                        clip(value, SHOWN_CHARS)
                    ),
                ));
            }
        }
        return Ok(Asked {
            via: Via::Connect,
            dest,
        });
    }
    let dest = match uri.authority() {
        Some(authority) => {
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(malformed(authority.host(), "use CONNECT for https"));
                }
                _ => {
                    return Err(malformed(
                        authority.host(),
                        "only http:// URIs are forwarded",
                    ))
                }
            }
            let dest = parse_authority(authority.as_str(), Some(80))?;
            if let Some(value) = host_header {
                let named = parse_authority(value, Some(80))?;
                if named != dest {
                    return Err(mismatch(
                        dest.target.to_string(),
                        format!(
                            "Host {:?} is not the URI's {dest}",
                            clip(value, SHOWN_CHARS)
                        ),
                    ));
                }
            }
            dest
        }
        None if mode == Mode::TransparentHttp => match host_header {
            Some(value) => parse_authority(value, Some(80))?,
            None => return Err(malformed("", "no Host header")),
        },
        None => {
            return Err(malformed(
                "",
                "this is a proxy: send CONNECT host:port or an absolute http:// URI",
            ))
        }
    };
    if mode == Mode::TransparentHttp && dest.port != 80 {
        return Err(mismatch(
            dest.target.to_string(),
            format!(
                "the request names port {} but was sent to port 80",
                dest.port
            ),
        ));
    }
    Ok(Asked {
        via: Via::Http,
        dest,
    })
}

#[cfg(test)]
mod tests;
