//! What a model call used, read from the provider's answer as it passes — a JSON body, or a
//! stream of server-sent events relayed chunk by chunk, never held whole — so the budget
//! settles at the provider's own count:
//!
//! - Anthropic Messages: `usage.input_tokens` (plus `cache_creation_input_tokens` and
//!   `cache_read_input_tokens`) and `usage.output_tokens`; streamed, `message_start`'s
//!   `message.usage`, then `message_delta`'s `usage.output_tokens` (cumulative).
//! - OpenAI Chat Completions: `usage.prompt_tokens`, `usage.completion_tokens` (streamed:
//!   the last chunk's, with `stream_options.include_usage`).
//! - OpenAI Responses: `usage.input_tokens`, `usage.output_tokens` (streamed:
//!   `response.completed`'s `response.usage`).
//!
//! An answer whose usage cannot be read (a line past [`MAX_LINE`], no usage at all) gives
//! `None`: the caller settles at the worst case it reserved.

use serde_json::Value;

use crate::budget::Usage;
use crate::request::Endpoint;

/// The longest line of a stream taken (an event's data beyond it is not read).
pub const MAX_LINE: usize = 1 << 20;

/// Reads the usage of one answer, fed as it passes.
#[derive(Debug)]
pub struct Meter {
    endpoint: Endpoint,
    /// The unfinished line of a stream.
    line: Vec<u8>,
    /// The current event's data lines, joined.
    data: Vec<u8>,
    input: Option<u64>,
    output: Option<u64>,
    /// A line was too long: what follows cannot be trusted to be read whole.
    broken: bool,
}

impl Meter {
    pub fn new(endpoint: Endpoint) -> Meter {
        Meter {
            endpoint,
            line: Vec::new(),
            data: Vec::new(),
            input: None,
            output: None,
            broken: false,
        }
    }

    /// The usage in a whole JSON answer (not streamed).
    pub fn of_body(endpoint: Endpoint, body: &[u8]) -> Option<Usage> {
        let mut m = Meter::new(endpoint);
        let v: Value = serde_json::from_slice(body).ok()?;
        m.take(&v);
        m.usage()
    }

    /// The next bytes of a streamed answer (server-sent events).
    pub fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.broken = true;
            }
        }
    }

    /// The end of the stream (an event not ended by a blank line is taken too).
    pub fn finish(&mut self) -> Option<Usage> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.event_done();
        self.usage()
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.event_done();
            return;
        }
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            if self.data.len() + rest.len() <= MAX_LINE {
                self.data.extend_from_slice(rest);
            } else {
                self.broken = true;
            }
        }
        // `event:`, `id:`, `retry:` and comments: the data says what it is.
    }

    fn event_done(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&data) {
            self.take(&v);
        }
    }

    /// Takes what `v` (an answer, or one event's data) says of the usage.
    fn take(&mut self, v: &Value) {
        let n = |v: &Value| v.as_u64();
        match self.endpoint {
            Endpoint::Messages => {
                let usage = match v["type"].as_str() {
                    Some("message_start") => &v["message"]["usage"],
                    _ => &v["usage"],
                };
                if let Some(i) = n(&usage["input_tokens"]) {
                    let cached = n(&usage["cache_creation_input_tokens"]).unwrap_or(0)
                        + n(&usage["cache_read_input_tokens"]).unwrap_or(0);
                    self.input = Some(i.saturating_add(cached));
                }
                if let Some(o) = n(&usage["output_tokens"]) {
                    self.output = Some(o);
                }
            }
            Endpoint::ChatCompletions => {
                if let Some(i) = n(&v["usage"]["prompt_tokens"]) {
                    self.input = Some(i);
                }
                if let Some(o) = n(&v["usage"]["completion_tokens"]) {
                    self.output = Some(o);
                }
            }
            Endpoint::Responses => {
                let usage = match v["type"].as_str() {
                    Some(t) if t.starts_with("response.") => &v["response"]["usage"],
                    _ => &v["usage"],
                };
                if let Some(i) = n(&usage["input_tokens"]) {
                    self.input = Some(i);
                }
                if let Some(o) = n(&usage["output_tokens"]) {
                    self.output = Some(o);
                }
            }
            Endpoint::CountTokens | Endpoint::Models | Endpoint::WarmUp => {}
        }
    }

    /// What was read: `None` unless both counts were, and nothing was cut.
    pub fn usage(&self) -> Option<Usage> {
        if self.broken {
            return None;
        }
        Some(Usage {
            input_tokens: self.input?,
            output_tokens: self.output?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Anthropic's stream as its API documents it (event lines, data lines, pings).
    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    const CHAT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\r\n\r\ndata: [DONE]\r\n\r\n";
    const RESPONSES: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":3,\"total_tokens\":10}}}\n\n";

    fn streamed(endpoint: Endpoint, text: &str, cut: usize) -> Option<Usage> {
        let mut m = Meter::new(endpoint);
        for chunk in text.as_bytes().chunks(cut) {
            m.push(chunk);
        }
        m.finish()
    }

    #[test]
    fn streams_are_read_however_they_are_cut() {
        let u = |i, o| {
            Some(Usage {
                input_tokens: i,
                output_tokens: o,
            })
        };
        for cut in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                streamed(Endpoint::Messages, ANTHROPIC, cut),
                u(30, 15),
                "{cut}"
            );
            assert_eq!(
                streamed(Endpoint::ChatCompletions, CHAT, cut),
                u(9, 12),
                "{cut}"
            );
            assert_eq!(
                streamed(Endpoint::Responses, RESPONSES, cut),
                u(7, 3),
                "{cut}"
            );
        }
        // The last event without its blank line still counts.
        let unended = ANTHROPIC.trim_end();
        assert_eq!(streamed(Endpoint::Messages, unended, 5), u(30, 15));
    }

    #[test]
    fn bodies_are_read_and_what_cannot_be_is_none() {
        let body = br#"{"id":"msg","usage":{"input_tokens":4,"output_tokens":6}}"#;
        assert_eq!(
            Meter::of_body(Endpoint::Messages, body),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 6
            })
        );
        let chat = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert_eq!(
            Meter::of_body(Endpoint::ChatCompletions, chat).map(|u| u.output_tokens),
            Some(2)
        );
        for (endpoint, body) in [
            (Endpoint::Messages, &b"not json"[..]),
            (
                Endpoint::Messages,
                br#"{"usage":{"input_tokens":-1,"output_tokens":2}}"#,
            ),
            (
                Endpoint::Messages,
                br#"{"usage":{"input_tokens":"1","output_tokens":2}}"#,
            ),
            (
                Endpoint::Messages,
                br#"{"usage":{"input_tokens":1.5,"output_tokens":2}}"#,
            ),
            (Endpoint::ChatCompletions, br#"{"usage":null}"#),
            (Endpoint::Responses, br#"{"usage":{"input_tokens":1}}"#),
        ] {
            assert_eq!(
                Meter::of_body(endpoint, body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A stream with a line past the longest taken: unknown (settled at the worst case).
        let mut m = Meter::new(Endpoint::ChatCompletions);
        m.push(b"data: ");
        m.push(&vec![b'x'; MAX_LINE + 10]);
        m.push(b"\n\n");
        m.push(CHAT.as_bytes());
        assert_eq!(m.finish(), None);
    }
}
