//! The run's placeholder credential: what the agent gets in place of the provider's key.
//!
//! `spawn_gw_` + 43 characters of base64url (32 random bytes) + `_` + 8 hex digits of the
//! CRC-32 of everything before it. The prefix and the checksum let a secret scanner (and the
//! gateway, before any comparison) tell a placeholder from a typo or a provider key; the
//! random part makes it worthless outside its run: the gateway of a run holds only the
//! SHA-256 of the run's own placeholder and compares in constant time. It is not a secret
//! worth protecting (it opens nothing but the run's gateway, which only its sandbox can
//! reach), and it is still never logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::GatewayError;

/// What every placeholder starts with.
pub const PREFIX: &str = "spawn_gw_";
/// Characters of the random part.
const BODY: usize = 43;
/// The whole placeholder's length.
pub const LEN: usize = PREFIX.len() + BODY + 1 + 8;

/// A run's placeholder, as its gateway keeps it: the digest only.
#[derive(Clone)]
pub struct Placeholder {
    digest: [u8; 32],
}

impl std::fmt::Debug for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placeholder(..)")
    }
}

/// What a presented credential is, to the run's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The run's placeholder.
    Valid,
    /// Not a placeholder at all (wrong length, prefix, characters or checksum): a typo, a
    /// provider's real key, or junk. Says which, without quoting it.
    Malformed(&'static str),
    /// A well-formed placeholder of another run.
    OtherRun,
}

impl Placeholder {
    /// A new placeholder: the gateway's record, and the text the agent is given.
    pub fn mint() -> Result<(Placeholder, Zeroizing<String>), GatewayError> {
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *random).map_err(|e| GatewayError::Random(e.to_string()))?;
        let mut text = Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(*random)));
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("_{crc:08x}"));
        Ok((Placeholder::of(&text), text))
    }

    /// The record of `text` (a placeholder made before).
    pub fn of(text: &str) -> Placeholder {
        Placeholder {
            digest: Sha256::digest(text.as_bytes()).into(),
        }
    }

    /// Whether `presented` is this run's placeholder.
    pub fn check(&self, presented: &str) -> Verdict {
        if let Err(why) = well_formed(presented) {
            return Verdict::Malformed(why);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(&self.digest)) {
            Verdict::Valid
        } else {
            Verdict::OtherRun
        }
    }
}

/// Whether `s` has a placeholder's shape and checksum; if not, why (never quoting it).
pub fn well_formed(s: &str) -> Result<(), &'static str> {
    // Bytes, not characters: a multi-byte character must not split a field.
    let b = s.as_bytes();
    if b.len() != LEN {
        return Err("not the length of a spawn placeholder");
    }
    let Some(rest) = b.strip_prefix(PREFIX.as_bytes()) else {
        return Err("not a spawn placeholder (its prefix)");
    };
    let (body, check) = rest.split_at(BODY);
    if !body
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    {
        return Err("a character no placeholder has");
    }
    let Some(hex) = check.strip_prefix(b"_") else {
        return Err("not a spawn placeholder (its checksum's separator)");
    };
    if !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a checksum that is not lowercase hex");
    }
    let got = std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    if got != Some(crc32fast::hash(&b[..PREFIX.len() + BODY])) {
        return Err("a checksum that does not match (a typo?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_minted_placeholder_is_its_runs_only() {
        let (mine, text) = Placeholder::mint().unwrap();
        let (_, other) = Placeholder::mint().unwrap();
        assert_eq!(text.len(), LEN);
        assert!(text.starts_with(PREFIX));
        assert_eq!(mine.check(&text), Verdict::Valid);
        assert_eq!(mine.check(&other), Verdict::OtherRun);
        assert_ne!(*text, *other);
        assert_eq!(format!("{mine:?}"), "Placeholder(..)");
    }

    /// Every way to get a placeholder wrong: each refused as malformed before any compare.
    #[test]
    fn malformed_placeholders_are_told_apart() {
        let (mine, text) = Placeholder::mint().unwrap();
        let t = text.as_str();
        let flip = |i: usize| {
            let mut b = t.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "length"),
            (t[..LEN - 1].to_owned(), "length"),
            (format!("{t}x"), "length"),
            (format!(" {}", &t[1..]), "prefix"),
            (t.replacen("spawn_gw_", "SPAWN_GW_", 1), "prefix"),
            (t.replacen("spawn_gw_", "sk-ant-a_", 1), "prefix"),
            (flip(PREFIX.len() + 3), "checksum"),
            (
                format!(
                    "{}{}",
                    &t[..LEN - 1],
                    if t.ends_with('0') { '1' } else { '0' }
                ),
                "checksum",
            ),
            (
                format!(
                    "{}-{}",
                    &t[..PREFIX.len() + BODY],
                    &t[PREFIX.len() + BODY + 1..]
                ),
                "separator",
            ),
            (format!("{}{}", &t[..LEN - 8], "DEADBEEF"), "lowercase hex"),
            (
                format!(
                    "{}{}x{}",
                    &t[..PREFIX.len()],
                    "é".repeat(21),
                    &t[PREFIX.len() + BODY..]
                ),
                "character",
            ),
            // A multi-byte character across the body's end: no panic, refused.
            (
                format!(
                    "{}{}é{}",
                    &t[..PREFIX.len()],
                    "a".repeat(BODY - 1),
                    &t[PREFIX.len() + BODY + 1..]
                ),
                "character",
            ),
            (
                format!(
                    "{}{}{}",
                    &t[..PREFIX.len()],
                    "=".repeat(BODY),
                    &t[PREFIX.len() + BODY..]
                ),
                "character",
            ),
            (
                format!(
                    "{}{}{}",
                    &t[..PREFIX.len()],
                    "\0".repeat(BODY),
                    &t[PREFIX.len() + BODY..]
                ),
                "character",
            ),
            ("sk-ant-api03-".to_owned() + &"x".repeat(LEN - 13), "prefix"),
        ];
        for (bad, why) in cases {
            match mine.check(&bad) {
                Verdict::Malformed(reason) => {
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                    assert!(!reason.contains(t), "{reason}");
                }
                v => panic!("{bad:?}: {v:?}"),
            }
        }
    }
}
