//! Bearer JWTs (SPEC §8: `Authorization: Bearer <JWT>`), verified with `jsonwebtoken`
//! against the one issuer the configuration names (`auth.jwt`).
//!
//! Accepted only when all of these hold: at most [`MAX_TOKEN_BYTES`]; signed with the
//! configured algorithm and key (the token's `alg` must be that one: `none`, HMAC with the
//! public key as a secret, or any other algorithm is refused); `iss` is the issuer; `aud`
//! names the audience; `exp` is present and not past, `nbf` (if any) reached, both with
//! [`LEEWAY_SECS`] of clock skew; `sub` is a principal name
//! (`spawn_auth::rbac::check_principal`). The token authenticates the User `sub`; what it
//! may do is what that User's RoleBindings grant, as for a key's principal.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Jwt;
use crate::ServerError;

/// Longest token looked at.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The configured issuer's verifier.
pub(crate) struct JwtVerifier {
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

/// Who a verified token authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The User's name (`sub`).
    pub(crate) user: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Reads the issuer's key; a key that cannot be read or parsed stops the daemon with
    /// the reason.
    pub(crate) fn load(config: &Jwt) -> Result<JwtVerifier, ServerError> {
        let bad = |reason: String| ServerError::Config {
            what: "auth.jwt".into(),
            reason,
        };
        let algorithm = match config.algorithm.as_str() {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            other => {
                return Err(bad(format!(
                    "algorithm {other:?} is not one of EdDSA, ES256, RS256"
                )))
            }
        };
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(bad("issuer and audience must not be empty".into()));
        }
        let pem = std::fs::read(&config.public_key)
            .map_err(|e| bad(format!("publicKey {}: {e}", config.public_key.display())))?;
        let key = match algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        }
        .map_err(|e| {
            bad(format!(
                "publicKey {} is not a {} public key in PEM: {e}",
                config.public_key.display(),
                config.algorithm
            ))
        })?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(JwtVerifier { key, validation })
    }

    /// The User `token` authenticates, or why not (a reason safe to log and to answer:
    /// it holds nothing of the token).
    pub(crate) fn verify(&self, token: &str) -> Result<Verified, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("the token is longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("the token is not valid: {}", describe(&e)))?;
        spawn_auth::rbac::check_principal(&data.claims.sub)
            .map_err(|_| "the token's sub is not a principal name".to_owned())?;
        Ok(Verified {
            user: data.claims.sub,
        })
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
