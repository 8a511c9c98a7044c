//! Who a caller of spawn's API is and what it may do: API keys (SPEC §8), made, read and
//! checked without a database (the store keeps only their [`KeyHash`]), and RBAC (SPEC §9):
//! Roles, RoleBindings, the built-in roles, the decision and the check against escalation.
#![forbid(unsafe_code)]

pub mod bearer;
mod keys;
pub mod rbac;

pub use keys::{ApiKey, AuthError, KeyEnv, KeyHash, KEY_LEN};
