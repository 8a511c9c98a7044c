//! The daemon's bearer-JWT issuer (`auth.jwt`): its key read from the configured file and
//! handed to `spawn_auth::bearer::JwtVerifier`, which holds what a token must satisfy.

use spawn_auth::bearer::JwtVerifier;

use crate::config::Jwt;
use crate::ServerError;

/// Reads the issuer's key; a key that cannot be read or parsed stops the daemon with the
/// reason.
pub(crate) fn load(config: &Jwt) -> Result<JwtVerifier, ServerError> {
    let bad = |reason: String| ServerError::Config {
        what: "auth.jwt".into(),
        reason,
    };
    let pem = std::fs::read(&config.public_key)
        .map_err(|e| bad(format!("publicKey {}: {e}", config.public_key.display())))?;
    JwtVerifier::new(&config.issuer, &config.audience, &config.algorithm, &pem).map_err(|e| {
        let reason = e.to_string();
        if reason.starts_with("not a ") {
            bad(format!(
                "publicKey {} is {reason}",
                config.public_key.display()
            ))
        } else {
            bad(reason)
        }
    })
}
