//! Who a caller of spawn's API is and what it may do: API keys (SPEC §8), made, read and
//! checked without a database (the store keeps only their [`KeyHash`]), bearer JWTs
//! ([`bearer`]), the User a verified client certificate names ([`cert`]), and RBAC (SPEC §9):
//! Roles, RoleBindings, the built-in roles, the decision and the check against escalation.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod cert;
mod keys;
pub mod rbac;

pub use keys::{ApiKey, AuthError, KeyEnv, KeyHash, KEY_LEN};
