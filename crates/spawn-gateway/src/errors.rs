//! The gateway's refusals in each provider's own error body, so that the official SDKs
//! raise their typed errors (`anthropic.PermissionDeniedError`, `openai.AuthenticationError`…)
//! and agent CLIs behave as with the provider: Claude Code does not retry a 403, so a
//! refusal that must stick (a model or provider not allowed, a budget spent) is a 403.
//!
//! - Anthropic: `{"type": "error", "error": {"type": T, "message": M}}`, T one of the
//!   Messages API's error types.
//! - OpenAI: `{"error": {"message": M, "type": T, "param": null, "code": C}}`.

use serde_json::{json, Value};

/// Whose API the request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

/// Why the gateway answers with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or not the run's placeholder (401).
    Unauthenticated,
    /// A provider other than the manifest's (403).
    ProviderNotAllowed,
    /// A model other than the one pinned (403).
    ModelNotAllowed,
    /// The run's token, cost or step budget is spent (403: not retried).
    BudgetExhausted,
    /// A body the gateway cannot read (400).
    BadRequest,
    /// An endpoint the gateway does not serve (404).
    NotFound,
    /// The provider could not be reached or failed (502).
    Upstream,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Unauthenticated => 401,
            Refusal::ProviderNotAllowed | Refusal::ModelNotAllowed | Refusal::BudgetExhausted => {
                403
            }
            Refusal::BadRequest => 400,
            Refusal::NotFound => 404,
            Refusal::Upstream => 502,
        }
    }

    /// The short code spawn gives it (OpenAI's `code`; in the audit event).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "invalid_api_key",
            Refusal::ProviderNotAllowed => "provider_not_allowed",
            Refusal::ModelNotAllowed => "model_not_allowed",
            Refusal::BudgetExhausted => "budget_exhausted",
            Refusal::BadRequest => "invalid_request",
            Refusal::NotFound => "not_found",
            Refusal::Upstream => "upstream_error",
        }
    }
}

/// The status and body of `refusal` for a client of `provider`, saying `message`.
pub fn body(provider: Provider, refusal: Refusal, message: &str) -> (u16, Value) {
    let status = refusal.status();
    let v = match provider {
        Provider::Anthropic => {
            let kind = match refusal {
                Refusal::Unauthenticated => "authentication_error",
                Refusal::ProviderNotAllowed
                | Refusal::ModelNotAllowed
                | Refusal::BudgetExhausted => "permission_error",
                Refusal::BadRequest => "invalid_request_error",
                Refusal::NotFound => "not_found_error",
                Refusal::Upstream => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Provider::OpenAi => {
            let kind = match refusal {
                Refusal::Unauthenticated | Refusal::BadRequest | Refusal::NotFound => {
                    "invalid_request_error"
                }
                Refusal::ProviderNotAllowed
                | Refusal::ModelNotAllowed
                | Refusal::BudgetExhausted => "permission_error",
                Refusal::Upstream => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null,
                             "code": refusal.code()}})
        }
    };
    (status, v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Each refusal in each provider's shape, as their SDKs read it: Anthropic's `type`
    /// `error` with a typed `error`, OpenAI's `error` object with `message`, `type`,
    /// `param`, `code`; a message with quotes and newlines stays one JSON string.
    #[test]
    fn refusals_have_each_providers_shape() {
        let all = [
            Refusal::Unauthenticated,
            Refusal::ProviderNotAllowed,
            Refusal::ModelNotAllowed,
            Refusal::BudgetExhausted,
            Refusal::BadRequest,
            Refusal::NotFound,
            Refusal::Upstream,
        ];
        let msg = "model \"x\"\nis not allowed";
        for r in all {
            let (status, a) = body(Provider::Anthropic, r, msg);
            assert_eq!(status, r.status());
            assert_eq!(a["type"], "error");
            assert!(
                a["error"]["type"].as_str().unwrap().ends_with("_error"),
                "{a}"
            );
            assert_eq!(a["error"]["message"], msg);
            let (_, o) = body(Provider::OpenAi, r, msg);
            assert_eq!(o["error"]["message"], msg);
            assert_eq!(o["error"]["code"], r.code());
            assert!(o["error"]["param"].is_null());
            assert!(o["error"]["type"].is_string());
            let text = o.to_string();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), o);
        }
        assert_eq!(
            body(Provider::Anthropic, Refusal::ModelNotAllowed, "m").1["error"]["type"],
            "permission_error"
        );
        assert_eq!(Refusal::BudgetExhausted.status(), 403);
    }
}
