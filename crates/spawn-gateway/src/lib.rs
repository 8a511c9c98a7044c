//! spawn's model gateway: what stands between a run and its model provider (issue 12).
//!
//! Here so far: the run's placeholder credential ([`token`]): what the agent is given as
//! `ANTHROPIC_API_KEY` / `OPENAI_API_KEY` in place of the real key, taken from the headers
//! the clients send ([`credential`]); and errors in each provider's own body shape
//! ([`errors`]), so that the official SDKs raise their typed errors; a run's budget
//! ([`budget`]), what a client asks ([`request`]) and what a call used ([`usage`]). See the
//! README for what is not built yet.
#![forbid(unsafe_code)]

pub mod agent;
pub mod budget;
pub mod credential;
pub mod errors;
pub mod prices;
pub mod request;
pub mod scripted;
pub mod server;
pub mod token;
pub mod tools;
pub mod usage;

/// Why the gateway refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// The system's randomness failed (no token can be made).
    #[error("the system's randomness failed: {0}")]
    Random(String),
    /// The gateway could not be served.
    #[error("spawn's model gateway: {0}")]
    Serve(String),
}

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_gateway;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/gateway_credential.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `gateway_credential` fuzz target ever failed on or was given to
    /// hold (fuzz/regressions/gateway_credential/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_gateway_credential_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "gateway_credential", check);
    }
}

#[cfg(test)]
mod fuzz_request_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_gateway;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/gateway_request.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input kept in fuzz/regressions/gateway_request/ keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_gateway_request_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "gateway_request", check);
    }
}

#[cfg(test)]
mod fuzz_usage_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_gateway;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/gateway_usage.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input kept in fuzz/regressions/gateway_usage/ keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_gateway_usage_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "gateway_usage", check);
    }
}

#[cfg(test)]
mod fuzz_tool_call_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_gateway;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/gateway_tool_call.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input kept in fuzz/regressions/gateway_tool_call/ keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_gateway_tool_call_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "gateway_tool_call", check);
    }
}
