//! Who a caller of spawn's API is. Today: API keys (SPEC §8), made, read and checked
//! without a database; the store keeps only their [`KeyHash`]. RBAC (SPEC §9) comes next.
#![forbid(unsafe_code)]

mod keys;

pub use keys::{ApiKey, KeyEnv, KeyError, KeyHash, KEY_LEN};
