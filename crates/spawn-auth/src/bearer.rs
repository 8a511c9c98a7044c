//! What callers send beside an API key: bearer JWTs (SPEC §8: `Authorization: Bearer
//! <JWT>`), verified with `jsonwebtoken` against one issuer, and the plain numbers the API
//! takes in headers (`If-Match`, `Last-Event-ID`).
//!
//! A token is accepted only when all of these hold: at most [`MAX_TOKEN_BYTES`]; signed
//! with the configured algorithm and key (the token's `alg` must be that one: `none`, HMAC
//! with the public key as a secret, or any other algorithm is refused); `iss` is the
//! issuer; `aud` names the audience; `exp` is present and not past, `nbf` (if any)
//! reached, both with [`LEEWAY_SECS`] of clock skew; `sub` is a principal name
//! ([`crate::rbac::check_principal`]). The token authenticates the User `sub`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::AuthError;

/// Longest token looked at.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// One issuer's verifier.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// The verifier of `issuer`'s tokens for `audience`, signed with `algorithm` (`EdDSA`,
    /// `ES256` or `RS256`) by the key whose public half is `public_pem`.
    pub fn new(
        issuer: &str,
        audience: &str,
        algorithm: &str,
        public_pem: &[u8],
    ) -> Result<JwtVerifier, AuthError> {
        let alg = match algorithm {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not one of EdDSA, ES256, RS256"
                )))
            }
        };
        if issuer.is_empty() || audience.is_empty() {
            return Err(AuthError::Invalid(
                "issuer and audience must not be empty".into(),
            ));
        }
        let key = match alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(public_pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(public_pem),
            _ => DecodingKey::from_rsa_pem(public_pem),
        }
        .map_err(|e| AuthError::Invalid(format!("not a {algorithm} public key in PEM: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(JwtVerifier { key, validation })
    }

    /// The User `token` authenticates, or why not (a reason safe to log and to answer: it
    /// holds nothing of the token).
    pub fn verify(&self, token: &str) -> Result<String, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("the token is longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("the token is not valid: {}", describe(&e)))?;
        crate::rbac::check_principal(&data.claims.sub)
            .map_err(|_| "the token's sub is not a principal name".to_owned())?;
        Ok(data.claims.sub)
    }
}

/// What went wrong, in words that hold nothing of the token.
fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "it has expired",
        K::ImmatureSignature => "it is not valid yet (nbf)",
        K::InvalidIssuer => "another issuer",
        K::InvalidAudience => "another audience",
        K::InvalidAlgorithm => "another signature algorithm",
        K::InvalidSignature => "the signature does not verify",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        _ => "it is malformed",
    }
}

/// A number as the API writes it in headers (versions, event ids): 1 to 18 ASCII digits,
/// nothing else — no sign, space, leading `+`, exponent, other script's digits or a value
/// that would not fit in an `i64` (18 digits always do).
pub fn header_number(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::header_number;

    /// Every way to write something that is not a plain decimal number is refused.
    #[test]
    fn a_header_number_is_plain_decimal_digits_only() {
        for (text, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("007", Some(7)),
            ("999999999999999999", Some(999_999_999_999_999_999)),
            ("", None),
            ("-1", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1\t", None),
            ("1e3", None),
            ("0x1", None),
            ("1_000", None),
            ("1.0", None),
            ("\u{ff11}", None),
            ("\u{0661}", None),
            ("9999999999999999999", None),
            ("99999999999999999999999999", None),
            ("1\u{0}", None),
        ] {
            assert_eq!(header_number(text), want, "{text:?}");
        }
    }
}

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_auth;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/bearer.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `bearer` fuzz target ever failed on (fuzz/regressions/bearer/)
    /// keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_bearer_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "bearer", check);
    }
}
