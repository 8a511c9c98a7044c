//! API keys: `spawn_sk_live_…` / `spawn_sk_test_…` (SPEC §8).
//!
//! A key is its prefix, 256 random bits from the OS (52 lowercase base32 characters,
//! canonical: the last character's unused bits are zero) and a checksum (CRC-32 of
//! everything before it, 7 base32 characters): 73 ASCII characters in all. The checksum
//! lets a mistyped or truncated key be refused before any lookup (CRC-32 catches every
//! change of one character and every swap of two neighbours). Only the key's SHA-256
//! ([`KeyHash`]) is stored; a 256-bit random secret needs no slow hash, and hashes are
//! compared in constant time.
//!
//! Nothing here ever prints a key: `Debug` is redacted, errors name no part of it, and
//! the secret is zeroed when dropped. [`ApiKey::expose`] is for showing a new key once.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The length of every key, in bytes.
pub const KEY_LEN: usize = PREFIX_LEN + SECRET_CHARS + CHECK_CHARS;

const PREFIX_LEN: usize = "spawn_sk_live_".len();
const SECRET_BYTES: usize = 32;
/// ceil(256 / 5).
const SECRET_CHARS: usize = 52;
/// ceil(32 / 5).
const CHECK_CHARS: usize = 7;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Which kind of key: live keys run anything their principal may; test keys run only on
/// test namespaces (enforced where runs are started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEnv {
    Live,
    Test,
}

impl KeyEnv {
    fn prefix(self) -> &'static str {
        match self {
            KeyEnv::Live => "spawn_sk_live_",
            KeyEnv::Test => "spawn_sk_test_",
        }
    }

    /// `live` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        }
    }
}

/// Why a key, a Role or a RoleBinding was refused. The key variants carry none of the
/// text: a key is never shown.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an API key is {KEY_LEN} characters; this is {0}")]
    Length(usize),
    #[error("an API key starts with spawn_sk_live_ or spawn_sk_test_")]
    Prefix,
    #[error("an API key holds only a-z and 2-7 after its prefix (character {0} is not one)")]
    Character(usize),
    #[error("the API key's checksum does not match: it was mistyped or cut")]
    Checksum,
    #[error("the API key is not in its one canonical spelling")]
    NotCanonical,
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A Role or RoleBinding document that is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A Role or RoleBinding document that is not valid YAML of its kind (with where).
    #[error("{0}")]
    Yaml(String),
    /// A grant of permissions the granter does not hold.
    #[error("you cannot grant what you do not hold: {0}")]
    Escalation(String),
}

impl AuthError {
    pub(crate) fn invalid(message: impl Into<String>) -> AuthError {
        AuthError::Invalid(message.into())
    }

    pub(crate) fn yaml(e: serde_yaml_ng::Error) -> AuthError {
        match e.location() {
            Some(l) => AuthError::Yaml(format!(
                "line {}, column {}: {}",
                l.line(),
                l.column(),
                strip_location(&e.to_string())
            )),
            None => AuthError::Yaml(e.to_string()),
        }
    }
}

/// serde_yaml's message without the " at line L column C" it appends.
fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// An API key, in full. Zeroed when dropped; never printed.
pub struct ApiKey {
    env: KeyEnv,
    text: Zeroizing<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, {}…)", self.env.as_str(), self.hint())
    }
}

impl ApiKey {
    /// A new key of `env` with 256 bits from the OS random source (an error, never a
    /// weaker source, if it fails).
    pub fn generate(env: KeyEnv) -> Result<ApiKey, AuthError> {
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        getrandom::fill(&mut secret[..]).map_err(|e| AuthError::Random(e.to_string()))?;
        let mut text = Zeroizing::new(String::with_capacity(KEY_LEN));
        text.push_str(env.prefix());
        push_base32(&secret[..], &mut text);
        let check = crc32fast::hash(text.as_bytes()).to_be_bytes();
        push_base32(&check, &mut text);
        debug_assert_eq!(text.len(), KEY_LEN);
        Ok(ApiKey { env, text })
    }

    /// Reads a key as a caller sent it: its length, prefix, characters, checksum and
    /// spelling are checked, so that a typo never reaches the store.
    pub fn parse(text: &str) -> Result<ApiKey, AuthError> {
        let bytes = text.as_bytes();
        if bytes.len() != KEY_LEN {
            return Err(AuthError::Length(bytes.len()));
        }
        let env = if bytes.starts_with(KeyEnv::Live.prefix().as_bytes()) {
            KeyEnv::Live
        } else if bytes.starts_with(KeyEnv::Test.prefix().as_bytes()) {
            KeyEnv::Test
        } else {
            return Err(AuthError::Prefix);
        };
        let body = &bytes[PREFIX_LEN..];
        let mut values = Zeroizing::new([0u8; SECRET_CHARS + CHECK_CHARS]);
        for (i, b) in body.iter().enumerate() {
            values[i] = symbol(*b).ok_or(AuthError::Character(PREFIX_LEN + i + 1))?;
        }
        let (secret, check) = values.split_at(SECRET_CHARS);
        // 52 characters carry 260 bits of which 256 are the secret; 7 carry 35 for 32.
        if secret[SECRET_CHARS - 1] & 0b1111 != 0 || check[CHECK_CHARS - 1] & 0b111 != 0 {
            return Err(AuthError::NotCanonical);
        }
        let mut want = [0u8; 4];
        unpack(check, &mut want);
        if crc32fast::hash(&bytes[..PREFIX_LEN + SECRET_CHARS]).to_be_bytes() != want {
            return Err(AuthError::Checksum);
        }
        Ok(ApiKey {
            env,
            text: Zeroizing::new(text.to_owned()),
        })
    }

    /// Live or test.
    pub fn env(&self) -> KeyEnv {
        self.env
    }

    /// What is stored in place of the key.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.text.as_bytes()).into())
    }

    /// The prefix and the first 4 characters of the secret (20 of its 256 bits), for
    /// telling keys apart in listings.
    pub fn hint(&self) -> String {
        self.text[..PREFIX_LEN + 4].to_owned()
    }

    /// The whole key, to be shown once to whoever created it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

/// The SHA-256 of a key: all the store keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Compares in constant time.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// `sha256:` and 64 hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The value of one base32 character, if it is one.
fn symbol(b: u8) -> Option<u8> {
    match b {
        b'a'..=b'z' => Some(b - b'a'),
        b'2'..=b'7' => Some(b - b'2' + 26),
        _ => None,
    }
}

/// Appends `bytes` as lowercase base32 without padding (the last character's unused
/// bits zero).
fn push_base32(bytes: &[u8], out: &mut String) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
}

/// Packs base32 values into `out` (as many bytes as `out` holds; the rest are padding).
fn unpack(values: &[u8], out: &mut [u8]) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut n = 0;
    for &v in values {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if n < out.len() {
                out[n] = (acc >> bits).to_le_bytes()[0];
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
