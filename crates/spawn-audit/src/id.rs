//! Random identifiers (SPEC §8): `ag_…`, `tr_…`, `req_…`, `key_…`.

use std::io;

use crate::error::AuditError;

/// Random bytes per id: 128 bits, so ids cannot be guessed and never collide in practice.
pub const ID_RANDOM_BYTES: usize = 16;

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
    Ok(format_id(prefix, &bytes))
}

/// The id `prefix` + `_` + the 128 bits `bits` in lowercase base32 ([`parse_id`]'s
/// inverse).
pub fn format_id(prefix: &str, bits: &[u8; ID_RANDOM_BYTES]) -> String {
    let mut id = String::with_capacity(prefix.len() + 1 + ID_RANDOM_CHARS);
    id.push_str(prefix);
    id.push('_');
    push_base32(bits, &mut id);
    id
}

/// The 128 random bits of `id` when it is exactly what [`new_id`]`(prefix)` makes:
/// `prefix`, `_`, then 26 characters of the lowercase base32 alphabet whose last carries
/// no bits beyond the 128 (its two low bits are zero). Anything else — another prefix,
/// another length, upper case, padding, `0 1 8 9`, a non-canonical last character — is
/// `None`, so one set of bits has one spelling and an id read from a URL path is either
/// one spawn could have made or refused before it is looked up.
pub fn parse_id(prefix: &str, id: &str) -> Option<[u8; ID_RANDOM_BYTES]> {
    let rest = id.strip_prefix(prefix)?.strip_prefix('_')?;
    if rest.len() != ID_RANDOM_CHARS {
        return None;
    }
    let mut out = [0u8; ID_RANDOM_BYTES];
    let (mut acc, mut bits, mut n) = (0u16, 0u32, 0usize);
    for c in rest.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        acc = (acc << 5) | u16::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            // At most 12 bits are held: after the shift, 8 remain.
            *out.get_mut(n)? = u8::try_from(acc >> bits).ok()?;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 26 × 5 = 130 bits: the 2 left over must be zero.
    (n == ID_RANDOM_BYTES && acc == 0).then_some(out)
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
    fn parse_id_reads_back_what_new_id_made() {
        for prefix in ["ag", "tr", "req", "key"] {
            for _ in 0..1000 {
                let id = new_id(prefix).unwrap();
                let bits = parse_id(prefix, &id).unwrap_or_else(|| panic!("{id}"));
                let mut again = format!("{prefix}_");
                push_base32(&bits, &mut again);
                assert_eq!(again, id);
            }
        }
        for bits in [[0u8; 16], [0xff; 16]] {
            let mut id = "tr_".to_owned();
            push_base32(&bits, &mut id);
            assert_eq!(parse_id("tr", &id), Some(bits), "{id}");
        }
    }

    /// Every other way to write something like a run id is refused.
    #[test]
    fn parse_id_refuses_every_other_spelling() {
        let good = "tr_aaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert!(parse_id("tr", good).is_some());
        let long = format!("{good}a");
        let last_bits = "tr_aaaaaaaaaaaaaaaaaaaaaaaaab"; // a low bit past the 128
        let table: &[&str] = &[
            "",
            "tr",
            "tr_",
            "tr_a",
            &good[..good.len() - 1],
            &long,
            "TR_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "tr_AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "tr-aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "tr__aaaaaaaaaaaaaaaaaaaaaaaaa",
            "ag_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "xtr_aaaaaaaaaaaaaaaaaaaaaaaaa",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa0",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa1",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa8",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa9",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa=",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaa==",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa ",
            " tr_aaaaaaaaaaaaaaaaaaaaaaaaa",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa/",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaa..",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa%",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa\0",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa\u{e9}",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaa\u{e9}",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaa\u{ff41}",
            last_bits,
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaad",
            "tr_aaaaaaaaaaaaaaaaaaaaaaaaah",
        ];
        for id in table {
            assert_eq!(parse_id("tr", id), None, "{id:?}");
        }
        // The last character's 8 spellings that end in two zero bits are the only ones.
        let mut canonical = 0;
        for &c in ALPHABET {
            let id = format!("tr_aaaaaaaaaaaaaaaaaaaaaaaaa{}", char::from(c));
            canonical += usize::from(parse_id("tr", &id).is_some());
        }
        assert_eq!(canonical, 8);
    }

    #[test]
    fn ids_are_unique_over_10k() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_id("tr").unwrap()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_audit;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/ids.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `ids` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/ids/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_ids_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "ids", check);
    }
}
