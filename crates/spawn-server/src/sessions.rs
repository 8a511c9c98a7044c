//! When a credential's use is a login (`auth.login`).
//!
//! A request authenticated by a credential — an API key, a bearer JWT, a client
//! certificate — is a login when it begins a session: the credential's first successful
//! use on this daemon, or its first after it went unused for [`IDLE`] (the resolution at
//! which a key's `last_used` is kept, `spawn_store::LAST_USED_RESOLUTION_MS`). A busy
//! credential logs in once, not once per request; one used every few minutes logs in each
//! time. Each daemon keeps its own sessions (in memory): a key used through two daemons
//! logs in on each, and a restarted daemon sees every credential log in anew.
//!
//! A credential is named here by a SHA-256 (an API key's stored hash, a token's hash, the
//! certificate's User): nothing of a secret is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a credential may go unused and stay in its session.
pub(crate) const IDLE: Duration =
    Duration::from_millis(spawn_store::LAST_USED_RESOLUTION_MS.unsigned_abs());

/// Most sessions remembered: beyond, the idle ones are forgotten, then all (which only
/// makes more logins, never fewer).
const MAX_SESSIONS: usize = 65_536;

/// The sessions of this daemon: a credential's hash and when it was last used.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    last_used: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    /// Notes a use of `credential` at `now`; whether it begins a session (a login).
    pub(crate) fn begins(&self, credential: [u8; 32], now: Instant) -> bool {
        let mut seen = self
            .last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let begins = seen
            .get(&credential)
            .is_none_or(|t| now.saturating_duration_since(*t) >= IDLE);
        if begins && seen.len() >= MAX_SESSIONS {
            seen.retain(|_, t| now.saturating_duration_since(*t) < IDLE);
            if seen.len() >= MAX_SESSIONS {
                seen.clear();
            }
        }
        seen.insert(credential, now);
        begins
    }

    /// Ends the session of `credential`: its next use is a login (a logout, or a login
    /// that could not be recorded).
    pub(crate) fn end(&self, credential: &[u8; 32]) {
        self.last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(credential);
    }
}

/// The name of a credential that is not an API key (whose stored hash names it): the
/// SHA-256 of `kind` and its text.
pub(crate) fn credential_hash(kind: &str, text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_begins_at_first_use_and_after_idle_only() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a = [1; 32];
        let cases = [
            (Duration::ZERO, true, "first use"),
            (Duration::from_millis(1), false, "in the session"),
            (IDLE / 2, false, "in the session"),
            // Each use extends the session: IDLE after the first, not after the last.
            (IDLE, false, "busy: still the same session"),
            (IDLE * 3, true, "idle for 2 IDLE: a new session"),
        ];
        for (at, begins, why) in cases {
            assert_eq!(s.begins(a, t0 + at), begins, "{why} at {at:?}");
        }
        assert!(s.begins([2; 32], t0 + IDLE * 3), "another credential");
        s.end(&a);
        assert!(s.begins(a, t0 + IDLE * 3), "after its end");
    }

    #[test]
    fn credential_names_are_apart_by_kind() {
        assert_ne!(credential_hash("jwt", "x"), credential_hash("mtls", "x"));
        assert_ne!(credential_hash("jwt", "ab"), credential_hash("jwta", "b"));
    }
}
