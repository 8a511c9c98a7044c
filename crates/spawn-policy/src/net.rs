//! What `capabilities.net` lets a run reach (SPEC §6), as values the egress proxy checks
//! every connection attempt against: destination parsing and normalization, the
//! always-blocked address ranges and names, and allowlist / denylist matching.
//!
//! Everything here is pure: the proxy (`spawn-egress`) parses what a program asked for with
//! [`parse_host`], checks the name with [`NetRules::check`], resolves it itself, checks
//! **every** resolved address with [`NetRules::check_ip`] and connects only to a checked
//! address.
//!
//! Destinations are normalized before any check, so that one host has one spelling:
//! names are lowercased, lose one trailing dot (two are an empty label, refused) and are
//! compared in punycode; IPv4 literals are read in every form `inet_aton` accepts
//! (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`); IPv6 literals may be bracketed and
//! carry a zone id; IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4) are
//! checked as the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::manifest::NetCapability;
use crate::names::{self, MAX_DOMAIN_BYTES};
use crate::spec::NetPolicy;

/// A destination as the proxy will treat it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A domain name: ASCII (IDNs in punycode), lowercase, no trailing dot.
    Name(String),
    /// An IP literal, in whatever spelling it was written.
    Ip(IpAddr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parses and normalizes a host as a program wrote it (CONNECT authority or URL host
/// without the port, `Host` header, TLS SNI). The error says what is wrong, for the
/// program's 400/403 answer.
pub fn parse_host(raw: &str) -> Result<Target, String> {
    if raw.is_empty() {
        return Err("empty host".into());
    }
    if raw.len() > 4 * MAX_DOMAIN_BYTES {
        return Err(format!("host longer than {MAX_DOMAIN_BYTES} characters"));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unterminated [IPv6] host".to_owned())?;
        return parse_ipv6(inner)
            .map(|v6| Target::Ip(IpAddr::V6(v6)))
            .ok_or_else(|| format!("{} is not an IPv6 address", names::quote(raw)));
    }
    if raw.contains(':') {
        return parse_ipv6(raw)
            .map(|v6| Target::Ip(IpAddr::V6(v6)))
            .ok_or_else(|| format!("{} is not a host name or address", names::quote(raw)));
    }
    if let Some(v4) = parse_ipv4_any(raw) {
        return Ok(Target::Ip(IpAddr::V4(v4)));
    }
    // One trailing dot (the root) is the same name; anything more is an empty label, which
    // no resolver or server reads the same way, so it is refused rather than trimmed.
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() || name.ends_with('.') {
        return Err(format!(
            "{} is not a host name: it has an empty label",
            names::quote(raw)
        ));
    }
    if name.starts_with("*.") {
        return Err(format!("{} is a pattern, not a host", names::quote(raw)));
    }
    // Reject before looking closer anything that would be an IP address in some other
    // reading: every label made of digits, hex or `0x` forms (e.g. `0x7f.0x1` that some
    // libraries read as 127.0.0.1), so one host never has two meanings.
    if name
        .split('.')
        .all(|l| !l.is_empty() && (is_number_like(l)))
    {
        return Err(format!("{} is not a valid IPv4 address", names::quote(raw)));
    }
    names::check_domain_pattern(name)
        .map_err(|e| format!("{} is not a host name: {e}", names::quote(raw)))?;
    Ok(Target::Name(ascii_name(name)))
}

/// Whether a label reads as a number in some IPv4 spelling (decimal, octal, `0x` hex).
fn is_number_like(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    match l.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => l.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// A checked domain (see `names::check_domain_pattern`) in its comparable form: lowercase
/// ASCII, each Unicode label in punycode (`xn--`). A label is lowercased before it is
/// encoded, so one that is ASCII once lowercased (the Kelvin sign `\u{212A}` becomes `k`)
/// is that ASCII label, as IDNA maps it, never an `xn--` form of plain letters.
fn ascii_name(name: &str) -> String {
    name.split('.')
        .map(|label| {
            let chars: Vec<char> = label.chars().flat_map(char::to_lowercase).collect();
            if chars.iter().all(char::is_ascii) {
                chars.into_iter().collect()
            } else {
                names::punycode_encode(&chars)
                    .map(|p| format!("xn--{p}"))
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// An IPv6 literal, with an optional zone id (`%eth0`, or `%25eth0` from a URL) dropped.
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    let addr = match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => addr,
        Some(_) => return None,
        None => s,
    };
    addr.parse().ok()
}

/// IPv4 in every form `inet_aton(3)` accepts: one to four parts separated by dots (the
/// last part fills the remaining bytes), each decimal, octal (leading `0`) or hex (`0x`),
/// and one trailing dot as browsers allow. `None` if it is not such a form.
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_ipv4_part(part)?);
    }
    let (last, head) = values.split_last()?;
    let mut addr: u64 = 0;
    for v in head {
        if *v > 0xff {
            return None;
        }
        addr = (addr << 8) | v;
    }
    // 1 to 3 leading parts: the last one fills the other 3 to 1 bytes.
    let rest_bits: u32 = match head.len() {
        0 => 32,
        1 => 24,
        2 => 16,
        _ => 8,
    };
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    addr = (addr << rest_bits) | last;
    u32::try_from(addr).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 12 {
        return None;
    }
    let lower = part.to_ascii_lowercase();
    let (digits, radix) = if let Some(hex) = lower.strip_prefix("0x") {
        (hex, 16)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty() {
        // `0x` alone: inet_aton reads it as 0.
        return (radix == 16).then_some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The IPv4 address an IPv6 address carries, for the forms a connection could reach it
/// through: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/16`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && u32::from(tail) > 1)) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

const BLOCKED_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
    ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT (100.64.0.0/10)"),
    ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
    (
        [169, 254, 0, 0],
        16,
        "link-local and cloud metadata (169.254.0.0/16)",
    ),
    ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
    ([192, 88, 99, 0], 24, "6to4 relay (192.88.99.0/24)"),
    ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
    ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
    ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
    ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
    ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
    ([240, 0, 0, 0], 4, "reserved and broadcast (240.0.0.0/4)"),
];

const BLOCKED_V6: &[(u16, u16, u8, &str)] = &[
    // (first segment, second segment, prefix length, why)
    (0x0100, 0, 64, "discard (100::/64)"),
    (0x0064, 0xff9b, 32, "NAT64 (64:ff9b::/32)"),
    (0x2001, 0, 32, "Teredo (2001::/32)"),
    (0x2001, 0x0db8, 32, "documentation (2001:db8::/32)"),
    (0xfc00, 0, 7, "unique local (fc00::/7)"),
    (0xfe80, 0, 10, "link-local (fe80::/10)"),
    (0xfec0, 0, 10, "site-local (fec0::/10)"),
    (0xff00, 0, 8, "multicast (ff00::/8)"),
];

fn in_prefix(addr: u128, net: u128, len: u8, bits: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (addr >> shift) == (net >> shift)
}

/// Why `ip` may never be a destination under `restricted` or `egress-only` (SPEC §6), or
/// `None` for a public address. IPv6 forms that carry an IPv4 address are judged by it.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let a = u128::from(u32::from(v4));
            BLOCKED_V4
                .iter()
                .find(|(net, len, _)| in_prefix(a, u128::from(u32::from_be_bytes(*net)), *len, 32))
                .map(|(_, _, why)| *why)
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                return Some("unspecified (::)");
            }
            if v6.is_loopback() {
                return Some("loopback (::1)");
            }
            if let Some(v4) = embedded_ipv4(v6) {
                // The embedded address decides; a public one through NAT64/6to4 is still
                // a translation the proxy does not offer.
                return Some(
                    blocked_reason(IpAddr::V4(v4))
                        .unwrap_or("IPv6 form of an IPv4 address (use the IPv4 address)"),
                );
            }
            let a = u128::from(v6);
            BLOCKED_V6
                .iter()
                .find(|(s0, s1, len, _)| {
                    let net = (u128::from(*s0) << 112) | (u128::from(*s1) << 96);
                    in_prefix(a, net, *len, 128)
                })
                .map(|(_, _, _, why)| *why)
        }
    }
}

/// Names that are never public destinations: cloud metadata services, local-only
/// top-level domains, and single-label names (which only a local resolver would answer).
pub fn blocked_name_reason(name: &str) -> Option<&'static str> {
    const EXACT: &[(&str, &str)] = &[
        ("metadata.google.internal", "cloud metadata service"),
        ("metadata.goog", "cloud metadata service"),
        ("instance-data.ec2.internal", "cloud metadata service"),
    ];
    const SUFFIXES: &[(&str, &str)] = &[
        ("localhost", "loopback name (localhost)"),
        ("internal", "private top-level domain (.internal)"),
        ("local", "link-local name (.local)"),
        ("localdomain", "local name (.localdomain)"),
        ("home.arpa", "home network name (.home.arpa)"),
        ("in-addr.arpa", "reverse-lookup name"),
        ("ip6.arpa", "reverse-lookup name"),
        ("onion", "Tor name (.onion)"),
    ];
    if let Some((_, why)) = EXACT.iter().find(|(n, _)| *n == name) {
        return Some(why);
    }
    if let Some((_, why)) = SUFFIXES
        .iter()
        .find(|(s, _)| name == *s || name.strip_suffix(s).is_some_and(|p| p.ends_with('.')))
    {
        return Some(why);
    }
    if !name.contains('.') {
        return Some("single-label name (not a public domain)");
    }
    None
}

/// An allowlist or denylist domain pattern: `example.com` matches only that name,
/// `*.example.com` only its subdomains (any depth), not `example.com` itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamePattern {
    wildcard: bool,
    name: String,
}

impl NamePattern {
    fn parse(s: &str) -> Result<NamePattern, String> {
        names::check_domain_pattern(s)?;
        let s = s.strip_suffix('.').unwrap_or(s);
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        Ok(NamePattern {
            wildcard,
            name: ascii_name(name),
        })
    }

    /// Whether the normalized `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.strip_suffix(self.name.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            name == self.name
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// One denylist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyRule {
    /// A domain pattern.
    Name(NamePattern),
    /// An address, CIDR or IPv4 prefix glob (`10.*`), as a network.
    Net {
        /// The network's address.
        addr: IpAddr,
        /// Its prefix length.
        len: u8,
        /// As written in the manifest, for the denial reason.
        text: String,
    },
}

impl DenyRule {
    fn parse(s: &str) -> Result<DenyRule, String> {
        names::check_deny_pattern(s)?;
        if let Ok(ip) = s.parse::<IpAddr>() {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(DenyRule::Net {
                addr: ip,
                len,
                text: s.to_owned(),
            });
        }
        if let Some((addr, len)) = s.split_once('/') {
            if let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) {
                return Ok(DenyRule::Net {
                    addr,
                    len,
                    text: s.to_owned(),
                });
            }
        }
        if let Some(octets) = s.strip_suffix(".*") {
            let parts: Vec<u8> = octets
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{} is not an IPv4 prefix glob", names::quote(s)))?;
            let mut bytes = [0u8; 4];
            bytes[..parts.len()].copy_from_slice(&parts);
            return Ok(DenyRule::Net {
                addr: IpAddr::V4(Ipv4Addr::from(bytes)),
                len: 8 * u8::try_from(parts.len()).unwrap_or(0),
                text: s.to_owned(),
            });
        }
        NamePattern::parse(s).map(DenyRule::Name)
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        let DenyRule::Net { addr, len, .. } = self else {
            return false;
        };
        let candidates = match ip {
            IpAddr::V6(v6) => [Some(ip), embedded_ipv4(v6).map(IpAddr::V4)],
            IpAddr::V4(_) => [Some(ip), None],
        };
        candidates.into_iter().flatten().any(|ip| match (ip, addr) {
            (IpAddr::V4(a), IpAddr::V4(n)) => in_prefix(
                u128::from(u32::from(a)),
                u128::from(u32::from(*n)),
                *len,
                32,
            ),
            (IpAddr::V6(a), IpAddr::V6(n)) => in_prefix(u128::from(a), u128::from(*n), *len, 128),
            _ => false,
        })
    }
}

impl std::fmt::Display for DenyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyRule::Name(p) => p.fmt(f),
            DenyRule::Net { text, .. } => f.write_str(text),
        }
    }
}

/// `rateLimit`: at most `requests` connection attempts per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Attempts per period.
    pub requests: u64,
    /// The period.
    pub per: Duration,
}

/// Why a destination is refused: a stable code (for audit and tests) and the detail a
/// person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `blocked-address`, `blocked-name`, `denylist`, `not-allowlisted`, `policy`.
    pub code: &'static str,
    /// What exactly, e.g. "10.0.0.1 is private (10.0.0.0/8)".
    pub detail: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

fn deny(code: &'static str, detail: String) -> Result<(), Denial> {
    Err(Denial { code, detail })
}

/// The network rules of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRules {
    /// The policy.
    pub policy: NetPolicy,
    /// Allowlist (restricted only).
    pub allow: Vec<NamePattern>,
    /// Denylist; it wins over the allowlist.
    pub deny: Vec<DenyRule>,
    /// Rate limit on connection attempts.
    pub rate: Option<Rate>,
    /// Only TLS to port 443 whose SNI is the requested host.
    pub require_tls: bool,
    /// Connections the run may hold open through the proxy at once (`maxConnections`).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// DNS queries of the run answered at once (`maxDnsQueries`).
    #[serde(default = "default_max_dns_queries")]
    pub max_dns_queries: u32,
}

/// `maxConnections` when the manifest does not say.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
/// The most `maxConnections` may be.
pub const MAX_CONNECTIONS: u32 = 4096;
/// `maxDnsQueries` when the manifest does not say.
pub const DEFAULT_MAX_DNS_QUERIES: u32 = 32;
/// The most `maxDnsQueries` may be.
pub const MAX_DNS_QUERIES: u32 = 1024;

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

fn default_max_dns_queries() -> u32 {
    DEFAULT_MAX_DNS_QUERIES
}

impl NetRules {
    /// The rules of a (validated) `capabilities.net`.
    pub fn from_capability(net: &NetCapability) -> Result<NetRules, PolicyError> {
        let field = |list: &str, i: usize| format!("spec.capabilities.net.{list}[{i}]");
        let allow = net
            .allowlist
            .iter()
            .enumerate()
            .map(|(i, s)| {
                NamePattern::parse(s).map_err(|m| PolicyError::invalid(field("allowlist", i), m))
            })
            .collect::<Result<_, _>>()?;
        let deny = net
            .denylist
            .iter()
            .enumerate()
            .map(|(i, s)| {
                DenyRule::parse(s).map_err(|m| PolicyError::invalid(field("denylist", i), m))
            })
            .collect::<Result<_, _>>()?;
        let rate = match &net.rate_limit {
            Some(r) => Some(Rate {
                requests: r.requests,
                per: crate::quantity::parse_duration(&r.per).map_err(|e| {
                    PolicyError::invalid("spec.capabilities.net.rateLimit.per", e.to_string())
                })?,
            }),
            None => None,
        };
        Ok(NetRules {
            policy: net.policy.unwrap_or_default(),
            allow,
            deny,
            rate,
            require_tls: net.require_tls.unwrap_or(false),
            max_connections: net
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .clamp(1, MAX_CONNECTIONS),
            max_dns_queries: net
                .max_dns_queries
                .unwrap_or(DEFAULT_MAX_DNS_QUERIES)
                .clamp(1, MAX_DNS_QUERIES),
        })
    }

    /// Rules for `policy` with no lists, no rate limit and no TLS requirement.
    pub fn plain(policy: NetPolicy) -> NetRules {
        NetRules {
            policy,
            allow: vec![],
            deny: vec![],
            rate: None,
            require_tls: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_dns_queries: DEFAULT_MAX_DNS_QUERIES,
        }
    }

    /// Whether a connection to `target` may be attempted. A name that passes must still
    /// have every address it resolves to pass [`NetRules::check_ip`].
    pub fn check(&self, target: &Target) -> Result<(), Denial> {
        if !self.policy.is_proxied() {
            return deny(
                "policy",
                format!(
                    "policy {} does not go through the egress proxy",
                    self.policy.as_str()
                ),
            );
        }
        match target {
            Target::Ip(ip) => {
                self.check_ip(*ip)?;
                if self.policy == NetPolicy::Restricted {
                    return deny(
                        "not-allowlisted",
                        format!("{target}: the allowlist names domains, not addresses"),
                    );
                }
                Ok(())
            }
            Target::Name(name) => {
                if let Some(why) = blocked_name_reason(name) {
                    return deny("blocked-name", format!("{name} is a {why}"));
                }
                if let Some(rule) = self.deny.iter().find(|r| match r {
                    DenyRule::Name(p) => p.matches(name),
                    DenyRule::Net { .. } => false,
                }) {
                    return deny(
                        "denylist",
                        format!("{name} matches the denylist entry {rule}"),
                    );
                }
                if self.policy == NetPolicy::Restricted
                    && !self.allow.iter().any(|p| p.matches(name))
                {
                    return deny("not-allowlisted", format!("{name} is not on the allowlist"));
                }
                Ok(())
            }
        }
    }

    /// Whether the proxy may connect to `ip` (a literal, or an address a name resolved
    /// to): never to an always-blocked range, never to a denylisted network.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denial> {
        if let Some(why) = blocked_reason(ip) {
            return deny("blocked-address", format!("{ip} is {why}"));
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches_ip(ip)) {
            return deny(
                "denylist",
                format!("{ip} matches the denylist entry {rule}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
