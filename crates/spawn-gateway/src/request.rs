//! What a client asks the gateway, before anything is forwarded: which endpoint (and so
//! which provider's API), which model, how many tokens it may produce, streaming or not;
//! and whether the run's policy allows it (the manifest's provider and pinned model only,
//! never a silent fail-over to another).
//!
//! Only `model`, the output cap and `stream` are read; every other field is passed on as it
//! came (clients send fields, betas and message shapes this gateway does not know: see
//! `../shared/CLIENTS.md`).

use serde_json::Value;

use crate::errors::{Provider, Refusal};

/// The endpoints served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/messages` (Anthropic; Claude Code adds `?beta=true`).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/responses` (OpenAI; the only API Codex speaks).
    Responses,
    /// `GET /v1/models` (both).
    Models,
    /// `HEAD /` (Claude Code's connection warm-up: answered, not a model call).
    WarmUp,
}

impl Endpoint {
    /// The endpoint of `method` and `path` (query and all), or `None` (404).
    pub fn of(method: &str, path: &str) -> Option<Endpoint> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        // No query but Claude Code's; nothing else is read from one.
        if !(query.is_empty() || query == "beta=true") {
            return None;
        }
        Some(match (method, path) {
            ("POST", "/v1/messages") => Endpoint::Messages,
            ("POST", "/v1/messages/count_tokens") => Endpoint::CountTokens,
            ("POST", "/v1/chat/completions") => Endpoint::ChatCompletions,
            ("POST", "/v1/responses") => Endpoint::Responses,
            ("GET", "/v1/models") => Endpoint::Models,
            ("HEAD", "/") => Endpoint::WarmUp,
            _ => return None,
        })
    }

    /// Its name in records (`messages`, `chat.completions`…).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
            Endpoint::WarmUp => "warm-up",
        }
    }

    /// The endpoint of a record's name.
    pub fn from_name(name: &str) -> Option<Endpoint> {
        [
            Endpoint::Messages,
            Endpoint::CountTokens,
            Endpoint::ChatCompletions,
            Endpoint::Responses,
            Endpoint::Models,
            Endpoint::WarmUp,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }

    /// Whose API it is (`None`: both providers serve it).
    pub fn provider(self) -> Option<Provider> {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Some(Provider::Anthropic),
            Endpoint::ChatCompletions | Endpoint::Responses => Some(Provider::OpenAi),
            Endpoint::Models | Endpoint::WarmUp => None,
        }
    }

    /// Whether a call is a model call (counted as a step, budgeted).
    pub fn is_model_call(self) -> bool {
        matches!(
            self,
            Endpoint::Messages | Endpoint::ChatCompletions | Endpoint::Responses
        )
    }
}

/// What the gateway reads of a model call's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub model: String,
    /// The most output tokens asked for (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`); `None` when the client set no cap (OpenAI's are optional).
    pub max_output: Option<u64>,
    pub stream: bool,
    /// The call brings input the body does not hold, so its input cannot be bounded by the
    /// body's size: a stored response or conversation (`previous_response_id`,
    /// `conversation`, a stored `prompt`), files or URLs the provider fetches (`file_id`,
    /// an `http(s)` `url` / `image_url`), or server-side tools that read (web search and
    /// fetch, file search, code execution, MCP servers).
    pub unbounded_input: bool,
}

/// The most completions one Chat Completions call may ask for (`n`; OpenAI's own limit).
pub const MAX_CHOICES: u64 = 128;

/// Keys whose (non-empty) value is input held by the provider, not the body.
const STORED_INPUT_KEYS: &[&str] = &[
    "previous_response_id",
    "conversation",
    "file_id",
    "mcp_servers",
];

/// Tool types the provider runs itself, reading what the body does not hold.
const SERVER_TOOL_PREFIXES: &[&str] = &[
    "web_search",
    "web_fetch",
    "file_search",
    "code_execution",
    "code_interpreter",
    "mcp",
    "computer",
    "image_generation",
];

/// Keys whose value the client wrote for the model to read, not for the provider to fetch:
/// JSON Schemas (of a tool's input, of a structured output), whose properties and examples
/// may well be named `url` or typed `url`.
const SCHEMA_KEYS: &[&str] = &["input_schema", "parameters", "schema"];

/// Whether `v` (a request body, or part of one) brings input it does not hold.
fn brings_input(v: &Value, depth: usize) -> bool {
    if depth > 64 {
        // Deeper than any API nests: taken as the worst.
        return true;
    }
    match v {
        Value::Object(m) => {
            // A tool call the model made earlier in the conversation (Messages' `tool_use`
            // block) holds the model's own arguments: a `url` there is what the client's
            // tool fetched, never the provider.
            let tool_call = m.get("type").and_then(Value::as_str) == Some("tool_use");
            m.iter().any(|(k, x)| {
                if SCHEMA_KEYS.contains(&k.as_str()) || (tool_call && k == "input") {
                    return false;
                }
                let present =
                    !matches!(x, Value::Null) && !matches!(x, Value::String(s) if s.is_empty());
                (present && STORED_INPUT_KEYS.contains(&k.as_str()))
                    || (k == "prompt" && x.is_object())
                    || ((k == "url" || k == "image_url" || k == "file_url")
                        && matches!(x, Value::String(s) if !s.starts_with("data:")))
                    || (k == "type"
                        && x.as_str().is_some_and(|t| {
                            t == "url" || SERVER_TOOL_PREFIXES.iter().any(|p| t.starts_with(p))
                        }))
                    || brings_input(x, depth + 1)
            })
        }
        Value::Array(a) => a.iter().any(|x| brings_input(x, depth + 1)),
        _ => false,
    }
}

/// The largest output cap taken as given (above it the request is refused: no model
/// produces that many, and a worst case must stay countable).
pub const MAX_OUTPUT_CAP: u64 = 1 << 24;

/// Reads `body` of a call to `endpoint`; a body that is not such a request is refused with
/// what is wrong (never quoting it).
pub fn inspect(endpoint: Endpoint, body: &[u8]) -> Result<Inspected, (Refusal, String)> {
    let bad = |m: &str| (Refusal::BadRequest, m.to_owned());
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        (
            Refusal::BadRequest,
            format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body is not a JSON object"))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() && m.len() <= 256 => m.clone(),
        Some(Value::String(_)) => return Err(bad("model: empty or longer than 256 bytes")),
        Some(_) => return Err(bad("model: not a string")),
        None => return Err(bad("model: missing")),
    };
    let cap_fields: &[&str] = match endpoint {
        Endpoint::Messages | Endpoint::CountTokens => &["max_tokens"],
        Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Models | Endpoint::WarmUp => &[],
    };
    let mut max_output = None;
    for f in cap_fields {
        match obj.get(*f) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_u64() {
                Some(c) if (1..=MAX_OUTPUT_CAP).contains(&c) => {
                    max_output = Some(max_output.map_or(c, |m: u64| m.min(c)));
                }
                _ => {
                    return Err(bad(&format!(
                        "{f}: not a whole number of tokens from 1 to {MAX_OUTPUT_CAP}"
                    )))
                }
            },
            Some(_) => return Err(bad(&format!("{f}: not a number"))),
        }
    }
    if endpoint == Endpoint::Messages && max_output.is_none() {
        return Err(bad("max_tokens: missing (the Messages API requires it)"));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream: not true or false")),
    };
    // Several completions in one call: each may produce the cap.
    if endpoint == Endpoint::ChatCompletions {
        match obj.get("n") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_u64() {
                Some(c) if (1..=MAX_CHOICES).contains(&c) => {
                    max_output = max_output.map(|m| m.saturating_mul(c));
                }
                _ => {
                    return Err(bad(&format!(
                        "n: not a whole number from 1 to {MAX_CHOICES}"
                    )))
                }
            },
            Some(_) => return Err(bad("n: not a number")),
        }
    }
    // A response made in the background is billed after the call has ended: it cannot be
    // counted against the run's budget.
    if endpoint == Endpoint::Responses && obj.get("background") == Some(&Value::Bool(true)) {
        return Err(bad(
            "background: responses made in the background are not served by spawn's gateway (their use cannot be counted)",
        ));
    }
    Ok(Inspected {
        model,
        max_output,
        stream,
        unbounded_input: brings_input(&v, 0),
    })
}

/// What the run's manifest allows: one provider, one pinned model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub provider: Provider,
    pub model: String,
    /// Every API is served (the scripted provider answers in each); else only
    /// `provider`'s.
    pub any_api: bool,
}

impl Policy {
    /// Whether a call to `endpoint` for `model` is allowed; the refusal says why.
    pub fn allows(&self, endpoint: Endpoint, model: Option<&str>) -> Result<(), (Refusal, String)> {
        if let Some(p) = endpoint.provider() {
            if p != self.provider && !self.any_api {
                return Err((
                    Refusal::ProviderNotAllowed,
                    format!(
                        "this run may use {} only",
                        match self.provider {
                            Provider::Anthropic => "Anthropic's API",
                            Provider::OpenAi => "the OpenAI API",
                        }
                    ),
                ));
            }
        }
        match model {
            Some(m) if m != self.model => Err((
                Refusal::ModelNotAllowed,
                format!("this run may use the model {} only", self.model),
            )),
            _ => Ok(()),
        }
    }
}

/// The field of `endpoint`'s API that caps a call's output (the one the gateway sets when
/// the client set none and the run has a budget).
pub fn cap_field(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::Messages => Some("max_tokens"),
        Endpoint::ChatCompletions => Some("max_completion_tokens"),
        Endpoint::Responses => Some("max_output_tokens"),
        Endpoint::CountTokens | Endpoint::Models | Endpoint::WarmUp => None,
    }
}

/// A model call's worst case in tokens: its body's bytes (no input is more tokens than
/// bytes) and its output cap, or `remaining` when it set none.
pub fn worst_case_tokens(body_len: usize, max_output: Option<u64>, remaining: u64) -> u64 {
    let input = u64::try_from(body_len).unwrap_or(u64::MAX);
    input.saturating_add(max_output.unwrap_or(remaining))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn endpoints_are_exactly_these() {
        assert_eq!(
            Endpoint::of("POST", "/v1/messages"),
            Some(Endpoint::Messages)
        );
        assert_eq!(
            Endpoint::of("POST", "/v1/messages?beta=true"),
            Some(Endpoint::Messages)
        );
        assert_eq!(Endpoint::of("HEAD", "/"), Some(Endpoint::WarmUp));
        assert_eq!(
            Endpoint::of("POST", "/v1/responses"),
            Some(Endpoint::Responses)
        );
        for (m, p) in [
            ("GET", "/v1/messages"),
            ("POST", "/v1/messages/"),
            ("POST", "/v1//messages"),
            ("POST", "/V1/messages"),
            ("POST", "/v1/messages?beta=false"),
            ("POST", "/v1/messages?beta=true&x=1"),
            ("POST", "/v1/../v1/messages"),
            ("POST", "/v1/messages%2F"),
            ("post", "/v1/messages"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/embeddings"),
            ("GET", "/"),
            ("POST", ""),
        ] {
            assert_eq!(Endpoint::of(m, p), None, "{m} {p}");
        }
        assert!(Endpoint::Messages.is_model_call() && !Endpoint::CountTokens.is_model_call());
    }

    #[test]
    fn model_calls_are_read_and_hostile_bodies_refused() {
        let ok = inspect(
            Endpoint::Messages,
            br#"{"model":"claude-x","max_tokens":512,"stream":true,"messages":[],"unknown":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.model.as_str(), ok.max_output, ok.stream),
            ("claude-x", Some(512), true)
        );
        let chat = inspect(
            Endpoint::ChatCompletions,
            br#"{"model":"gpt-x","max_tokens":900,"max_completion_tokens":300}"#,
        )
        .unwrap();
        assert_eq!(chat.max_output, Some(300), "the smaller cap");
        let resp = inspect(Endpoint::Responses, br#"{"model":"gpt-x","input":"hi"}"#).unwrap();
        assert_eq!((resp.max_output, resp.stream), (None, false));
        let secret_in_body = r#"{"model": 7, "x": "sk-live-SECRET"}"#;
        for (endpoint, body, want) in [
            (Endpoint::Messages, "", "not JSON"),
            (Endpoint::Messages, "[1]", "not a JSON object"),
            (Endpoint::Messages, "{", "not JSON"),
            (Endpoint::Messages, r#"{"max_tokens":1}"#, "model: missing"),
            (Endpoint::Messages, secret_in_body, "model: not a string"),
            (
                Endpoint::Messages,
                r#"{"model":"","max_tokens":1}"#,
                "model: empty",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m"}"#,
                "max_tokens: missing",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":0}"#,
                "max_tokens: not a whole",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":-1}"#,
                "max_tokens: not a whole",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":1.5}"#,
                "max_tokens: not a whole",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":1e30}"#,
                "max_tokens: not a whole",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":18446744073709551615}"#,
                "max_tokens: not a whole",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":"5"}"#,
                "max_tokens: not a number",
            ),
            (
                Endpoint::Messages,
                r#"{"model":"m","max_tokens":5,"stream":"yes"}"#,
                "stream",
            ),
            (
                Endpoint::Responses,
                r#"{"model":"m","max_output_tokens":[1]}"#,
                "max_output_tokens",
            ),
        ] {
            let (refusal, msg) = inspect(endpoint, body.as_bytes()).unwrap_err();
            assert_eq!(refusal, Refusal::BadRequest, "{body}");
            assert!(msg.contains(want), "{body}: {msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
        }
        let long = format!(r#"{{"model":"{}","max_tokens":1}}"#, "m".repeat(257));
        assert!(inspect(Endpoint::Messages, long.as_bytes()).is_err());
    }

    #[test]
    fn only_the_pinned_provider_and_model() {
        let p = Policy {
            provider: Provider::Anthropic,
            model: "claude-pinned".into(),
            any_api: false,
        };
        assert!(p.allows(Endpoint::Messages, Some("claude-pinned")).is_ok());
        assert!(p.allows(Endpoint::Models, None).is_ok());
        assert_eq!(
            p.allows(Endpoint::Messages, Some("claude-other"))
                .unwrap_err()
                .0,
            Refusal::ModelNotAllowed
        );
        assert_eq!(
            p.allows(Endpoint::Messages, Some("claude-pinned "))
                .unwrap_err()
                .0,
            Refusal::ModelNotAllowed
        );
        assert_eq!(
            p.allows(Endpoint::ChatCompletions, Some("claude-pinned"))
                .unwrap_err()
                .0,
            Refusal::ProviderNotAllowed
        );
        assert_eq!(worst_case_tokens(100, Some(50), 9), 150);
        assert_eq!(worst_case_tokens(100, None, 9), 109);
        assert_eq!(worst_case_tokens(usize::MAX, Some(u64::MAX), 0), u64::MAX);
    }

    /// What a body brings that it does not hold is found wherever it is; inline data is
    /// not such input.
    #[test]
    fn input_the_body_does_not_hold_is_found() {
        let unbounded = |v: serde_json::Value| {
            inspect(Endpoint::Responses, v.to_string().as_bytes())
                .unwrap()
                .unbounded_input
        };
        for v in [
            serde_json::json!({"model": "m", "previous_response_id": "resp_1", "input": "hi"}),
            serde_json::json!({"model": "m", "conversation": "conv_1"}),
            serde_json::json!({"model": "m", "conversation": {"id": "conv_1"}}),
            serde_json::json!({"model": "m", "prompt": {"id": "pmpt_1"}}),
            serde_json::json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
            serde_json::json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}),
            serde_json::json!({"model": "m", "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            serde_json::json!({"model": "m", "tools": [{"type": "file_search"}]}),
            serde_json::json!({"model": "m", "mcp_servers": [{"type": "url", "url": "https://mcp"}]}),
            // What a tool's result or the rest of a tool-call turn brings still counts.
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}, {"type": "document", "source": {"type": "file", "file_id": "file-1"}}]}]}),
            serde_json::json!({"model": "m", "input": {"url": "https://x/a.pdf"}}),
        ] {
            assert!(unbounded(v.clone()), "{v}");
        }
        for v in [
            serde_json::json!({"model": "m", "input": "fetch https://example.com for me"}),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
            serde_json::json!({"model": "m", "previous_response_id": null, "conversation": ""}),
            serde_json::json!({"model": "m", "tools": [{"type": "function", "name": "exec", "parameters": {"type": "object"}}]}),
            // The model's own earlier tool call, and the schemas of tools and of output.
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "http_fetch", "input": {"url": "https://example.org/"}}]}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"type": "url", "file_id": "file-1"}}]}]}),
            serde_json::json!({"model": "m", "tools": [{"name": "http_fetch", "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}, "examples": [{"url": "https://x"}]}}]}),
            serde_json::json!({"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"link": {"type": "url", "default": "http://x"}}}}}]}),
            serde_json::json!({"model": "m", "text": {"format": {"type": "json_schema", "name": "o", "schema": {"properties": {"url": {"const": "https://x"}}}}}}),
            serde_json::json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"examples": [{"image_url": "https://x"}]}}}}),
        ] {
            assert!(!unbounded(v.clone()), "{v}");
        }
    }

    /// `n` completions multiply the cap; `n` out of range and background responses are
    /// refused.
    #[test]
    fn choices_multiply_the_cap_and_background_is_refused() {
        let chat =
            |v: serde_json::Value| inspect(Endpoint::ChatCompletions, v.to_string().as_bytes());
        assert_eq!(
            chat(serde_json::json!({"model": "m", "max_tokens": 10, "n": 4}))
                .unwrap()
                .max_output,
            Some(40)
        );
        assert_eq!(
            chat(serde_json::json!({"model": "m", "n": 4}))
                .unwrap()
                .max_output,
            None
        );
        for n in [
            serde_json::json!(0),
            serde_json::json!(129),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("2"),
        ] {
            assert!(
                chat(serde_json::json!({"model": "m", "max_tokens": 10, "n": n})).is_err(),
                "{n}"
            );
        }
        let (_, why) = inspect(
            Endpoint::Responses,
            br#"{"model": "m", "background": true}"#,
        )
        .unwrap_err();
        assert!(why.contains("background"), "{why}");
        assert!(inspect(
            Endpoint::Responses,
            br#"{"model": "m", "background": false}"#
        )
        .is_ok());
    }
}
