//! Syntax of the names in a manifest: DNS labels, environment identifiers, domain patterns,
//! IP literals and CIDRs, secret references and URLs.
//!
//! Each checker returns the message without a field name; the caller adds the field.

use std::net::IpAddr;

/// RFC 1123: a DNS label is at most 63 bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 63;

/// RFC 1035: a domain name is at most 253 characters in its textual ASCII form.
pub(crate) const MAX_DOMAIN_BYTES: usize = 253;

/// Longest environment-variable name accepted. Far more than any real name; bounds the
/// memory and the error messages an attacker can make us produce.
pub(crate) const MAX_ENV_NAME_BYTES: usize = 256;

/// Longest `store://` or `vault://` reference.
pub(crate) const MAX_SECRET_REF_BYTES: usize = 1024;

/// Longest model endpoint URL (a common limit of HTTP clients and servers).
pub(crate) const MAX_URL_BYTES: usize = 2048;

/// Longest model name. Provider model ids are far shorter.
pub(crate) const MAX_MODEL_NAME_BYTES: usize = 256;

/// Checks an RFC 1123 label: 1–63 of `a-z 0-9 -`, starting and ending with a letter or digit.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= MAX_LABEL_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS label (1 to 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit)",
            quote(s)
        ))
    }
}

/// Checks an environment-variable identifier: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn check_identifier(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let valid = s.len() <= MAX_ENV_NAME_BYTES
        && matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a variable name (letters, digits and '_', not starting with a digit)",
            quote(s)
        ))
    }
}

/// Checks an allowlist entry: `*.example.com` or `example.com`, optional trailing dot,
/// IDNs as Unicode or punycode.
pub(crate) fn check_domain_pattern(s: &str) -> Result<(), String> {
    if parse_ip(s).is_some() || s.contains('/') {
        return Err(format!(
            "{} is an IP address or network; the allowlist takes domain names",
            quote(s)
        ));
    }
    check_domain(s)
}

/// Checks a denylist entry: a domain pattern, an IP literal, a CIDR (`10.0.0.0/8`), or an
/// IPv4 prefix glob (`10.*`, `172.16.*`).
pub(crate) fn check_deny_pattern(s: &str) -> Result<(), String> {
    if parse_ip(s).is_some() {
        return Ok(());
    }
    if let Some((addr, prefix)) = s.split_once('/') {
        if parse_ip(addr).is_some() {
            return check_cidr(s, addr, prefix);
        }
    }
    if let Some(octets) = s.strip_suffix(".*") {
        if octets.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return check_ipv4_glob(s, octets);
        }
    }
    check_domain(s).map_err(|_| {
        format!(
            "{} is not a domain pattern, IP address, CIDR or IPv4 prefix glob \
             (use e.g. *.internal.example.com, 10.0.0.0/8 or 10.*)",
            quote(s)
        )
    })
}

fn check_cidr(s: &str, addr: &str, prefix: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{} is not a CIDR (use e.g. 10.0.0.0/8 or fd00::/8)",
            quote(s)
        )
    };
    let ip = parse_ip(addr).ok_or_else(bad)?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u32 = prefix.parse().map_err(|_| bad())?;
    let (bits, max) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    if len > max {
        return Err(format!(
            "{}: the prefix length is more than {max}",
            quote(s)
        ));
    }
    let host_bits = max - len;
    let host_mask = if host_bits == 0 {
        0
    } else {
        (1u128 << host_bits) - 1
    };
    if bits & host_mask != 0 {
        let network = bits & !host_mask;
        let network = match ip {
            IpAddr::V4(_) => u32::try_from(network)
                .map(|n| std::net::Ipv4Addr::from(n).to_string())
                .unwrap_or_default(),
            IpAddr::V6(_) => std::net::Ipv6Addr::from(network).to_string(),
        };
        return Err(format!(
            "{} has host bits set (did you mean {network}/{len}?)",
            quote(s)
        ));
    }
    Ok(())
}

fn check_ipv4_glob(s: &str, octets: &str) -> Result<(), String> {
    let parts: Vec<&str> = octets.split('.').collect();
    let valid = (1..=3).contains(&parts.len())
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 3
                && !(part.len() > 1 && part.starts_with('0'))
                && part.parse::<u8>().is_ok()
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not an IPv4 prefix glob (1 to 3 decimal octets then .*, e.g. 10.* or 172.16.*)",
            quote(s)
        ))
    }
}

/// An IP literal in the plain forms `std` parses (no zone, no brackets, no octal).
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

fn check_domain(s: &str) -> Result<(), String> {
    // Bound the work (punycode is quadratic in a label's length) before looking closer.
    if s.len() > 4 * MAX_DOMAIN_BYTES {
        return Err(format!(
            "{} is longer than {MAX_DOMAIN_BYTES} characters",
            quote(s)
        ));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let (wildcard, name) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if name.contains('*') {
        return Err(format!(
            "{}: '*' is only allowed as the whole first label, as in *.example.com",
            quote(s)
        ));
    }
    if name.is_empty() {
        return Err(format!("{} is not a domain name", quote(s)));
    }
    let mut ascii_len = if wildcard { 2 } else { 0 };
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        let encoded_len = check_label(s, label)?;
        ascii_len += encoded_len + usize::from(i > 0);
    }
    if ascii_len > MAX_DOMAIN_BYTES {
        return Err(format!(
            "{} is longer than {MAX_DOMAIN_BYTES} characters",
            quote(s)
        ));
    }
    if let Some(last) = labels.last() {
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{} is not a domain name (its last label is numeric)",
                quote(s)
            ));
        }
    }
    Ok(())
}

/// Checks one label of a domain and returns its length in ASCII (punycode) form.
fn check_label(whole: &str, label: &str) -> Result<usize, String> {
    if label.is_empty() {
        return Err(format!("{} has an empty label", quote(whole)));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{}: a label cannot start or end with '-'",
            quote(whole)
        ));
    }
    let encoded_len = if label.is_ascii() {
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "{}: a label holds only letters, digits and '-'",
                quote(whole)
            ));
        }
        label.len()
    } else {
        let chars: Vec<char> = label.chars().flat_map(char::to_lowercase).collect();
        if let Some(bad) = chars.iter().find(|c| !idn_char_allowed(**c)) {
            return Err(format!(
                "{}: {bad:?} is not allowed in a domain name",
                quote(whole)
            ));
        }
        match punycode_encode(&chars) {
            Some(encoded) => "xn--".len() + encoded.len(),
            None => MAX_LABEL_BYTES + 1,
        }
    };
    if encoded_len > MAX_LABEL_BYTES {
        return Err(format!(
            "{}: a label is longer than {MAX_LABEL_BYTES} characters",
            quote(whole)
        ));
    }
    Ok(encoded_len)
}

/// Characters allowed in a Unicode label. This is not full IDNA (UTS #46) mapping: it refuses
/// ASCII other than letters, digits and '-', whitespace, controls and the ideographic full
/// stops that IDNA would turn into label separators, and leaves the rest to DNS.
fn idn_char_allowed(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '-';
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{3002}' | '\u{ff0e}' | '\u{ff61}' | '\u{fffd}' | '\u{feff}'
        ))
}

/// RFC 3492 punycode encoding of one label (without the `xn--` prefix). `None` on overflow.
pub(crate) fn punycode_encode(input: &[char]) -> Option<String> {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const INITIAL_BIAS: u32 = 72;
    const INITIAL_N: u32 = 128;

    fn digit(d: u32) -> char {
        // The algorithm only produces d < 36: 0..26 are 'a'..'z', 26..36 are '0'..'9'.
        const DIGITS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let byte = usize::try_from(d)
            .ok()
            .and_then(|i| DIGITS.get(i))
            .copied()
            .unwrap_or(b'?');
        char::from(byte)
    }

    let mut output: String = input.iter().filter(|c| c.is_ascii()).collect();
    let basic = u32::try_from(output.len()).ok()?;
    let total = u32::try_from(input.len()).ok()?;
    if basic > 0 {
        output.push('-');
    }
    let mut n = INITIAL_N;
    let mut delta: u32 = 0;
    let mut bias = INITIAL_BIAS;
    let mut handled = basic;
    while handled < total {
        let m = input
            .iter()
            .map(|&c| u32::from(c))
            .filter(|&c| c >= n)
            .min()?;
        delta = delta.checked_add((m - n).checked_mul(handled + 1)?)?;
        n = m;
        for &c in input {
            let c = u32::from(c);
            if c < n {
                delta = delta.checked_add(1)?;
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    output.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                output.push(digit(q));
                bias = adapt(delta, handled + 1, handled == basic);
                delta = 0;
                handled += 1;
            }
        }
        delta = delta.checked_add(1)?;
        n = n.checked_add(1)?;
    }
    Some(output)
}

fn adapt(delta: u32, num_points: u32, first_time: bool) -> u32 {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const SKEW: u32 = 38;
    const DAMP: u32 = 700;
    let mut delta = if first_time { delta / DAMP } else { delta / 2 };
    delta += delta / num_points;
    let mut k = 0;
    while delta > ((BASE - TMIN) * TMAX) / 2 {
        delta /= BASE - TMIN;
        k += BASE;
    }
    k + (BASE - TMIN + 1) * delta / (delta + SKEW)
}

/// Checks `store://NAME` or `vault://path/to/secret#key`.
pub(crate) fn check_secret_ref(s: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{} is not a secret reference (use store://NAME or vault://path/to/secret#key)",
            quote(s)
        )
    };
    if s.len() > MAX_SECRET_REF_BYTES {
        return Err(format!(
            "{} is longer than {MAX_SECRET_REF_BYTES} bytes",
            quote(s)
        ));
    }
    if let Some(name) = s.strip_prefix("store://") {
        if ref_segment_ok(name) {
            return Ok(());
        }
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix("vault://") {
        let (path, key) = rest.split_once('#').ok_or_else(|| {
            format!(
                "{}: a vault reference names a key after '#', as in vault://secret/data/gh#token",
                quote(s)
            )
        })?;
        if !(ref_segment_ok(key) && path.split('/').all(ref_segment_ok)) {
            return Err(bad());
        }
        // KV v2: the API's path, MOUNT/data/PATH (a `data` segment after the mount).
        let segments: Vec<&str> = path.split('/').collect();
        let kv2 = segments.len() >= 3 && segments[1..segments.len() - 1].contains(&"data");
        if !kv2 {
            return Err(format!(
                "{}: a vault reference is a KV v2 path, MOUNT/data/PATH#KEY, as in vault://secret/data/gh#token",
                quote(s)
            ));
        }
        return Ok(());
    }
    Err(bad())
}

/// One segment of a secret reference: `[A-Za-z0-9_.-]+`, but not `.` or `..`.
fn ref_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks an `http://` or `https://` URL: a host (domain, IPv4 or `[IPv6]`), an optional
/// port, an optional path; no credentials, whitespace or control characters.
pub(crate) fn check_http_url(s: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{} is not an http(s) URL ({why})", quote(s));
    if s.len() > MAX_URL_BYTES {
        return Err(bad("too long"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let lower = s.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s["https://".len()..]
    } else if lower.starts_with("http://") {
        &s["http://".len()..]
    } else {
        return Err(bad("use e.g. https://api.example.com"));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(bad(
            "credentials do not belong in the URL; use `credential`",
        ));
    }
    let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
        let (v6, tail) = after_bracket
            .split_once(']')
            .ok_or_else(|| bad("unclosed '['"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("bad IPv6 address"));
        }
        match tail {
            "" => (None, None),
            _ => match tail.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(bad("bad port")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.parse::<std::net::Ipv4Addr>().is_err() && check_domain(host).is_err() {
            return Err(bad("bad host"));
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(bad("bad port"));
        }
    }
    Ok(())
}

/// Checks a model name: 1–256 visible characters.
pub(crate) fn check_model_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_MODEL_NAME_BYTES {
        return Err(format!(
            "a model name has 1 to {MAX_MODEL_NAME_BYTES} characters"
        ));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{} contains whitespace or control characters",
            quote(s)
        ));
    }
    Ok(())
}

/// Shows a value unquoted when that is unambiguous (short, no control characters, no
/// spaces), quoted otherwise.
pub(crate) fn plain(s: &str) -> String {
    if s.len() <= 200 && !s.is_empty() && !s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        s.to_owned()
    } else {
        quote(s)
    }
}

/// [`plain`] for a path.
pub(crate) fn plain_path(p: &std::path::Path) -> String {
    plain(&p.to_string_lossy())
}

/// Quotes a value for an error message, shortened so a hostile value cannot flood the output.
pub(crate) fn quote(s: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 80;
    if s.chars().count() <= MAX_SHOWN_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn dns_labels() {
        for ok in ["a", "researcher", "my-agent-2", "0abc", &"a".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Researcher",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"a".repeat(64),
            "a\0",
        ] {
            let err = check_dns_label(bad).unwrap_err();
            assert!(err.contains("is not a DNS label"), "{bad}: {err}");
        }
    }

    #[test]
    fn identifiers() {
        for ok in ["A", "_", "GITHUB_TOKEN", "path2", "x_1"] {
            assert_eq!(check_identifier(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "É", "A\0", &"A".repeat(257)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn punycode_vectors() {
        let cases = [
            ("bücher", "bcher-kva"),
            ("münchen", "mnchen-3ya"),
            ("例え", "r8jz45g"),
            ("ü", "tda"),
            // RFC 3492 §7.1 (B) Chinese (simplified)
            ("他们为什么不说中文", "ihqwcrb4cv8a8dqg056pqjye"),
        ];
        for (input, want) in cases {
            let chars: Vec<char> = input.chars().collect();
            assert_eq!(punycode_encode(&chars).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn allowlist_patterns() {
        for ok in [
            "example.com",
            "*.wikipedia.org",
            "api.github.com.",
            "*.example.com.",
            "localhost",
            "xn--bcher-kva.example",
            "bücher.example",
            "例え.テスト",
            "EXAMPLE.com",
            &format!("{}.com", "a".repeat(63)),
        ] {
            assert_eq!(check_domain_pattern(ok), Ok(()), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "is not a domain name"),
            ("*", "only allowed as the whole first label"),
            ("*.", "only allowed as the whole first label"),
            ("a.*.com", "only allowed as the whole first label"),
            ("*example.com", "only allowed as the whole first label"),
            ("**.example.com", "only allowed as the whole first label"),
            ("a..b", "empty label"),
            (".example.com", "empty label"),
            ("example.com..", "empty label"),
            ("-a.com", "start or end with '-'"),
            ("a_b.com", "only letters, digits and '-'"),
            ("a b.com", "only letters, digits and '-'"),
            ("https://example.com", "IP address or network"),
            ("example.com:443", "only letters, digits and '-'"),
            ("1.2.3.4", "IP address or network"),
            ("::1", "IP address or network"),
            ("10.0.0.0/8", "IP address or network"),
            ("1.2.3.256", "last label is numeric"),
            ("a\u{3002}b", "is not allowed in a domain name"),
            ("a\u{0}b.com", "only letters, digits and '-'"),
        ];
        for (input, want) in cases {
            let err = check_domain_pattern(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(check_domain_pattern(&long_label)
            .unwrap_err()
            .contains("longer than 63"));
        let long_name = vec!["abcdefghi"; 26].join(".");
        assert!(long_name.len() > MAX_DOMAIN_BYTES);
        assert!(check_domain_pattern(&long_name)
            .unwrap_err()
            .contains("longer than 253"));
        // The label limit applies to the punycode form, not to the UTF-8 bytes:
        // 57 × ü is xn-- plus 59 characters (63), 58 × ü is 64.
        let at_limit = format!("{}.com", "ü".repeat(57));
        assert_eq!(check_domain_pattern(&at_limit), Ok(()));
        let over = format!("{}.com", "ü".repeat(58));
        assert!(check_domain_pattern(&over)
            .unwrap_err()
            .contains("longer than 63"));
        // 96 UTF-8 bytes, but only 27 characters in punycode.
        let compact = format!("{}.jp", "例え".repeat(16));
        assert_eq!(check_domain_pattern(&compact), Ok(()));
        let huge = "a.".repeat(100_000);
        assert!(check_domain_pattern(&huge).is_err());
    }

    #[test]
    fn denylist_patterns() {
        for ok in [
            "*.internal.company.com",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.1.1",
            "::1",
            "fc00::/7",
            "0.0.0.0/0",
            "10.*",
            "172.16.*",
            "192.168.1.*",
            "metadata.google.internal",
        ] {
            assert_eq!(check_deny_pattern(ok), Ok(()), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("fc00::1/7", "did you mean fc00::/7?"),
            ("10.0.0.0/33", "more than 32"),
            ("::/129", "more than 128"),
            ("10.0.0.0/", "is not a CIDR"),
            ("10.0.0.0/+8", "is not a CIDR"),
            ("example.com/8", "is not a domain pattern, IP address, CIDR"),
            ("256.*", "is not an IPv4 prefix glob"),
            ("1.2.3.4.*", "is not an IPv4 prefix glob"),
            ("010.*", "is not an IPv4 prefix glob"),
            (".*", "is not an IPv4 prefix glob"),
            ("10..*", "is not an IPv4 prefix glob"),
            ("a b", "is not a domain pattern, IP address, CIDR"),
            ("*", "is not a domain pattern, IP address, CIDR"),
        ];
        for (input, want) in cases {
            let err = check_deny_pattern(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn secret_refs() {
        for ok in [
            "store://GITHUB_TOKEN",
            "store://anthropic-key.v2",
            "vault://secret/data/gh#token",
            "vault://kv/team/data/app/db#password",
        ] {
            assert_eq!(check_secret_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "GITHUB_TOKEN",
            "env://HOME",
            "store://",
            "store://a/b",
            "store://..",
            "vault://secret/data/gh",
            "vault://secret//gh#k",
            "vault://../x#k",
            "vault:///abs#k",
            "vault://secret#",
            "vault://secret#a#b",
            // KV v2 paths only (MOUNT/data/PATH).
            "vault://kv#k",
            "vault://secret/gh#k",
            "vault://data/gh#k",
            "vault://secret/data#k",
            "vault://secret/metadata/gh#k",
            "store://A B",
        ] {
            assert!(check_secret_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for ok in [
            "https://api.anthropic.com",
            "http://localhost:8080/v1",
            "https://127.0.0.1:443",
            "https://[::1]:8443/path?q=1",
            "HTTPS://API.EXAMPLE.COM/",
        ] {
            assert_eq!(check_http_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("ftp://example.com", "use e.g."),
            ("https://", "no host"),
            ("https://user:pw@example.com", "credentials"),
            ("https://example.com:0", "bad port"),
            ("https://example.com:65536", "bad port"),
            ("https://example.com:", "bad port"),
            ("https://exa mple.com", "whitespace"),
            ("https://[::1", "unclosed"),
            ("https://[zz]:80", "bad IPv6"),
            ("https://a_b.com", "bad host"),
        ] {
            let err = check_http_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn quote_shortens() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "x".repeat(1000);
        let shown = quote(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("(1000 bytes)"));
    }
}
