//! Random identifiers (SPEC §8): `ag_…`, `tr_…`, `req_…`, `key_…`.

use std::io;

use crate::error::AuditError;

/// Random bytes per id: 128 bits, so ids cannot be guessed and never collide in practice.
const ID_RANDOM_BYTES: usize = 16;

/// Lowercase RFC 4648 base32: URL-safe, and also safe as a hostname label, a cgroup or
/// file name, and case-insensitive contexts; it has no `_`, so the prefix separator stays
/// unambiguous.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Characters the random part encodes to: ceil(128 / 5).
pub(crate) const ID_RANDOM_CHARS: usize = 26;

/// `prefix` + `"_"` + 26 lowercase base32 characters carrying 128 bits from the OS
/// random source, e.g. `new_id("tr")` → `"tr_k5x2…"`.
///
/// Fails only if the OS cannot provide randomness; there is no weaker fallback.
pub fn new_id(prefix: &str) -> Result<String, AuditError> {
    let mut bytes = [0u8; ID_RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| {
        AuditError::Random(e.raw_os_error().map_or_else(
            || io::Error::other(e.to_string()),
            io::Error::from_raw_os_error,
        ))
    })?;
    let mut id = String::with_capacity(prefix.len() + 1 + ID_RANDOM_CHARS);
    id.push_str(prefix);
    id.push('_');
    push_base32(&bytes, &mut id);
    Ok(id)
}

fn push_base32(bytes: &[u8], out: &mut String) {
    // At most 4 bits are left over between bytes, so 12 bits fit in `acc`.
    let mut acc: u16 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        acc = (acc << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((acc >> bits) & 31)]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[usize::from((acc << (5 - bits)) & 31)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 §10, lowercased and without padding.
        for (input, want) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            let mut out = String::new();
            push_base32(input.as_bytes(), &mut out);
            assert_eq!(out, want, "input {input:?}");
        }
    }

    #[test]
    fn id_has_prefix_length_and_charset() {
        for prefix in ["ag", "tr", "req", "key"] {
            let id = new_id(prefix).unwrap();
            let rest = id.strip_prefix(&format!("{prefix}_")).unwrap();
            assert_eq!(rest.len(), ID_RANDOM_CHARS, "{id}");
            assert!(
                rest.bytes().all(|c| ALPHABET.contains(&c)),
                "non-base32 character in {id}"
            );
            assert!(!rest.contains('_'));
        }
    }

    #[test]
    fn ids_are_unique_over_10k() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_id("tr").unwrap()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
