//! Sealing and opening: AES-256-GCM with a fresh random 96-bit nonce per sealing, and
//! associated data that names what is sealed, so that a ciphertext moved elsewhere does not
//! open.
//!
//! A sealed value is `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`; the first
//! byte is the format's version. The associated data is `spawn.secrets.v1/<kind>` followed
//! by each of its parts as a 4-byte big-endian length and the bytes ([`aad`]), so that no
//! two different lists of parts give the same bytes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::error::SecretsError;

/// The format's version byte.
const FORMAT: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;
/// The bytes a sealing adds to a value.
pub const OVERHEAD: usize = 1 + NONCE + TAG;

/// A 256-bit AES key (a data key or a master key): wiped when dropped, never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A new key from the system's randomness.
    pub fn generate() -> Result<Key, SecretsError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut_slice()).map_err(|e| SecretsError::Random(e.to_string()))?;
        Ok(Key(k))
    }

    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Key> {
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        k.copy_from_slice(bytes);
        Some(Key(k))
    }

    /// Its bytes (to seal it under another key).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// `plaintext` sealed under this key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| SecretsError::Random(e.to_string()))?;
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SecretsError::Seal)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The plaintext of `sealed`, if this key sealed it bound to `aad`; `None` for anything
    /// else (another key, other associated data, a byte changed, a format not known).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < OVERHEAD || sealed[0] != FORMAT {
            return None;
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE);
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

/// Associated data: `spawn.secrets.v1/<kind>`, then each part length-prefixed.
pub fn aad(kind: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    out.extend_from_slice(b"spawn.secrets.v1/");
    out.extend_from_slice(kind.as_bytes());
    for p in parts {
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// What a value of `name` (version `version`, sealed under the namespace's data key
/// `key_version`) in `namespace` is bound to.
pub fn value_aad(namespace: &str, name: &str, version: i64, key_version: i64) -> Vec<u8> {
    aad(
        "value",
        &[
            namespace.as_bytes(),
            name.as_bytes(),
            &version.to_be_bytes(),
            &key_version.to_be_bytes(),
        ],
    )
}

/// What the data key `version` of `namespace` is bound to, sealed under a master key.
pub fn data_key_aad(namespace: &str, version: i64) -> Vec<u8> {
    aad("data-key", &[namespace.as_bytes(), &version.to_be_bytes()])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Sealed values open only with their key and their associated data; every byte
    /// changed, every cut and every other format refuses; two sealings of one value differ
    /// (fresh nonces).
    #[test]
    fn a_sealed_value_opens_only_as_sealed() {
        let k = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let aad = value_aad("team-a", "TOKEN", 1, 1);
        let sealed = k.seal(&aad, b"s3cr3t").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 6);
        assert_eq!(k.open(&aad, &sealed).unwrap().as_slice(), b"s3cr3t");
        assert_ne!(k.seal(&aad, b"s3cr3t").unwrap(), sealed);
        assert!(other.open(&aad, &sealed).is_none());
        for i in 0..sealed.len() {
            for bit in [1u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(k.open(&aad, &bad).is_none(), "byte {i} bit {bit}");
            }
        }
        for n in 0..sealed.len() {
            assert!(k.open(&aad, &sealed[..n]).is_none(), "cut at {n}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open(&aad, &longer).is_none());
        // Bound to each part of the associated data.
        for other_aad in [
            value_aad("team-b", "TOKEN", 1, 1),
            value_aad("team-a", "TOKEN2", 1, 1),
            value_aad("team-a", "TOKEN", 2, 1),
            value_aad("team-a", "TOKEN", 1, 2),
            data_key_aad("team-a", 1),
            Vec::new(),
        ] {
            assert!(k.open(&other_aad, &sealed).is_none());
        }
        // Empty values seal too.
        let empty = k.seal(&aad, b"").unwrap();
        assert_eq!(k.open(&aad, &empty).unwrap().as_slice(), b"");
    }

    /// The length prefixes keep parts apart: moving bytes between parts changes the data.
    #[test]
    fn associated_data_is_unambiguous() {
        assert_ne!(aad("value", &[b"ab", b"c"]), aad("value", &[b"a", b"bc"]));
        assert_ne!(aad("value", &[b"", b"x"]), aad("value", &[b"x", b""]));
        assert_ne!(aad("value", &[b"x"]), aad("data-key", &[b"x"]));
        assert_ne!(value_aad("a/b", "c", 1, 1), value_aad("a", "b/c", 1, 1));
    }

    #[test]
    fn keys_are_never_printed() {
        let k = Key::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "Key(..)");
        assert!(Key::from_bytes(&[0u8; 31]).is_none());
        assert!(Key::from_bytes(&[0u8; 33]).is_none());
    }
}
