//! The `scripted` provider: answers from a file, in order, for tests and offline demos. The
//! n-th model call of a run gets the n-th answer, rendered in the API the client spoke
//! (Messages, Chat Completions or Responses; a JSON body, or its server-sent events when the
//! call asked for a stream), so that any client — the official SDKs included — reads it as
//! it would a provider's.
//!
//! The file (YAML, or JSON which is YAML too):
//!
//! ```yaml
//! responses:
//!   - text: "I will write the script."
//!     tools:                                  # tool calls, in order
//!       - { name: fs_write, input: { path: /workspace/a.py, content: "print(1)" } }
//!   - text: "Done."
//!     usage: { input: 120, output: 8 }        # optional; else estimated (bytes / 4)
//! ```

use serde::Deserialize;
use serde_json::{json, Value};

use crate::budget::Usage;
use crate::request::{Endpoint, Inspected};

/// The most answers a script holds.
pub const MAX_ANSWERS: usize = 10_000;
/// The largest script file.
pub const MAX_SCRIPT_BYTES: usize = 16 << 20;

/// A scripted answer, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub tools: Vec<ToolCall>,
    #[serde(default)]
    pub usage: Option<ScriptUsage>,
}

/// A tool call the model makes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub name: String,
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// Usage as a script states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptUsage {
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    responses: Vec<Answer>,
}

/// A run's script.
#[derive(Debug, Clone)]
pub struct Script {
    answers: Vec<Answer>,
}

/// What the gateway sends back for one call.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub stream: bool,
    pub usage: Usage,
}

impl Script {
    /// Reads a script; what is wrong with it, with line and column.
    pub fn parse(text: &str) -> Result<Script, String> {
        if text.len() > MAX_SCRIPT_BYTES {
            return Err(format!("a script is at most {MAX_SCRIPT_BYTES} bytes"));
        }
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })?;
        if file.responses.is_empty() {
            return Err("responses: a script needs at least one".into());
        }
        if file.responses.len() > MAX_ANSWERS {
            return Err(format!("responses: at most {MAX_ANSWERS}"));
        }
        for (i, a) in file.responses.iter().enumerate() {
            if a.text.is_none() && a.tools.is_empty() {
                return Err(format!("responses[{i}]: neither text nor tools"));
            }
            for (j, t) in a.tools.iter().enumerate() {
                let ok = !t.name.is_empty()
                    && t.name.len() <= 64
                    && t.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(format!(
                        "responses[{i}].tools[{j}].name: 1 to 64 letters, digits, _ or -"
                    ));
                }
                if !t.input.is_object() {
                    return Err(format!("responses[{i}].tools[{j}].input: not a mapping"));
                }
            }
        }
        Ok(Script {
            answers: file.responses,
        })
    }

    /// The answers, in order.
    pub fn answers(&self) -> &[Answer] {
        &self.answers
    }

    /// The answer to the `number`-th call (from 1) to `endpoint`, asked as `asked`.
    pub fn answer(
        &self,
        endpoint: Endpoint,
        asked: &Inspected,
        number: u64,
    ) -> Result<Rendered, String> {
        let index = usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX);
        let answer = self.answers.get(index).ok_or_else(|| {
            format!(
                "the scripted provider has {} answers and this is call {number}",
                self.answers.len()
            )
        })?;
        Ok(render(endpoint, asked, answer, number))
    }
}

/// The answer's usage: as scripted, or estimated.
fn usage_of(answer: &Answer) -> Usage {
    match answer.usage {
        Some(u) => Usage {
            input_tokens: u.input,
            output_tokens: u.output,
        },
        None => {
            let out = answer.text.as_deref().map_or(0, str::len)
                + answer
                    .tools
                    .iter()
                    .map(|t| t.name.len() + t.input.to_string().len())
                    .sum::<usize>();
            Usage {
                input_tokens: 10,
                output_tokens: (out as u64).div_ceil(4).max(1),
            }
        }
    }
}

/// `answer` in the shape of `endpoint`'s API.
pub fn render(endpoint: Endpoint, asked: &Inspected, answer: &Answer, number: u64) -> Rendered {
    let usage = usage_of(answer);
    let model = asked.model.as_str();
    let body = match (endpoint, asked.stream) {
        (Endpoint::ChatCompletions, false) => chat_json(model, answer, usage, number)
            .to_string()
            .into_bytes(),
        (Endpoint::ChatCompletions, true) => chat_sse(model, answer, usage, number),
        (Endpoint::Responses, false) => responses_json(model, answer, usage, number)
            .to_string()
            .into_bytes(),
        (Endpoint::Responses, true) => responses_sse(model, answer, usage, number),
        (_, false) => messages_json(model, answer, usage, number)
            .to_string()
            .into_bytes(),
        (_, true) => messages_sse(model, answer, usage, number),
    };
    Rendered {
        body,
        stream: asked.stream,
        usage,
    }
}

fn sse(out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
    if let Some(e) = event {
        out.extend_from_slice(format!("event: {e}\n").as_bytes());
    }
    out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
}

fn messages_json(model: &str, a: &Answer, u: Usage, n: u64) -> Value {
    let mut content = Vec::new();
    if let Some(t) = &a.text {
        content.push(json!({"type": "text", "text": t}));
    }
    for (i, t) in a.tools.iter().enumerate() {
        content.push(
            json!({"type": "tool_use", "id": format!("toolu_spawn_{n}_{i}"),
                            "name": t.name, "input": t.input}),
        );
    }
    json!({
        "id": format!("msg_spawn_{n}"), "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": if a.tools.is_empty() { "end_turn" } else { "tool_use" },
        "stop_sequence": null,
        "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens},
    })
}

fn messages_sse(model: &str, a: &Answer, u: Usage, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    sse(
        &mut out,
        Some("message_start"),
        &json!({"type": "message_start", "message": {
        "id": format!("msg_spawn_{n}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": u.input_tokens, "output_tokens": 1}}}),
    );
    let mut index = 0;
    if let Some(t) = &a.text {
        sse(
            &mut out,
            Some("content_block_start"),
            &json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "text", "text": ""}}),
        );
        sse(
            &mut out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta",
            "index": index, "delta": {"type": "text_delta", "text": t}}),
        );
        sse(
            &mut out,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    for (i, t) in a.tools.iter().enumerate() {
        sse(
            &mut out,
            Some("content_block_start"),
            &json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "tool_use",
            "id": format!("toolu_spawn_{n}_{i}"), "name": t.name, "input": {}}}),
        );
        sse(
            &mut out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta",
            "index": index, "delta": {"type": "input_json_delta", "partial_json": t.input.to_string()}}),
        );
        sse(
            &mut out,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    sse(
        &mut out,
        Some("message_delta"),
        &json!({"type": "message_delta",
        "delta": {"stop_reason": if a.tools.is_empty() { "end_turn" } else { "tool_use" },
                  "stop_sequence": null},
        "usage": {"output_tokens": u.output_tokens}}),
    );
    sse(
        &mut out,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    out
}

fn chat_usage(u: Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens.saturating_add(u.output_tokens)})
}

fn chat_tool_calls(a: &Answer, n: u64, streamed: bool) -> Vec<Value> {
    a.tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut v = json!({"id": format!("call_spawn_{n}_{i}"), "type": "function",
                               "function": {"name": t.name, "arguments": t.input.to_string()}});
            if streamed {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

fn chat_json(model: &str, a: &Answer, u: Usage, n: u64) -> Value {
    let mut message = json!({"role": "assistant", "content": a.text, "refusal": null});
    if !a.tools.is_empty() {
        message["tool_calls"] = json!(chat_tool_calls(a, n, false));
    }
    json!({
        "id": format!("chatcmpl-spawn-{n}"), "object": "chat.completion", "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": if a.tools.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": chat_usage(u),
    })
}

fn chat_sse(model: &str, a: &Answer, u: Usage, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-spawn-{n}"), "object": "chat.completion.chunk",
               "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    sse(
        &mut out,
        None,
        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    );
    if let Some(t) = &a.text {
        sse(&mut out, None, &chunk(json!({"content": t}), Value::Null));
    }
    if !a.tools.is_empty() {
        sse(
            &mut out,
            None,
            &chunk(
                json!({"tool_calls": chat_tool_calls(a, n, true)}),
                Value::Null,
            ),
        );
    }
    let finish = if a.tools.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    sse(&mut out, None, &chunk(json!({}), json!(finish)));
    sse(
        &mut out,
        None,
        &json!({"id": format!("chatcmpl-spawn-{n}"), "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [], "usage": chat_usage(u)}),
    );
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn responses_output(a: &Answer, n: u64) -> Vec<Value> {
    let mut output = Vec::new();
    if let Some(t) = &a.text {
        output.push(
            json!({"type": "message", "id": format!("msg_spawn_{n}"), "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}]}),
        );
    }
    for (i, t) in a.tools.iter().enumerate() {
        output.push(
            json!({"type": "function_call", "id": format!("fc_spawn_{n}_{i}"),
            "call_id": format!("call_spawn_{n}_{i}"), "name": t.name,
            "arguments": t.input.to_string(), "status": "completed"}),
        );
    }
    output
}

fn responses_json(model: &str, a: &Answer, u: Usage, n: u64) -> Value {
    json!({
        "id": format!("resp_spawn_{n}"), "object": "response", "created_at": 0,
        "status": "completed", "model": model, "output": responses_output(a, n),
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                  "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    })
}

fn responses_sse(model: &str, a: &Answer, u: Usage, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut ev = |out: &mut Vec<u8>, kind: &str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse(out, Some(kind), &v);
    };
    let done = responses_json(model, a, u, n);
    let mut created = done.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    ev(
        &mut out,
        "response.created",
        json!({"response": created.clone()}),
    );
    ev(
        &mut out,
        "response.in_progress",
        json!({"response": created}),
    );
    for (index, item) in responses_output(a, n).into_iter().enumerate() {
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        let message = item["type"] == "message";
        if message {
            added["content"] = json!([]);
        } else {
            added["arguments"] = json!("");
        }
        ev(
            &mut out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        let id = item["id"].clone();
        if message {
            let text = item["content"][0]["text"].clone();
            ev(
                &mut out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            ev(
                &mut out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "delta": text, "logprobs": []}),
            );
            ev(
                &mut out,
                "response.output_text.done",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "text": text, "logprobs": []}),
            );
            ev(
                &mut out,
                "response.content_part.done",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": item["content"][0].clone()}),
            );
        } else {
            ev(
                &mut out,
                "response.function_call_arguments.delta",
                json!({"item_id": id,
                "output_index": index, "delta": item["arguments"].clone()}),
            );
            ev(
                &mut out,
                "response.function_call_arguments.done",
                json!({"item_id": id,
                "output_index": index, "arguments": item["arguments"].clone()}),
            );
        }
        ev(
            &mut out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }
    ev(&mut out, "response.completed", json!({"response": done}));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::usage::Meter;

    fn asked(stream: bool) -> Inspected {
        Inspected {
            model: "m-1".into(),
            max_output: Some(100),
            stream,
            unbounded_input: false,
        }
    }

    /// Every rendering carries the scripted usage where the gateway's own meter reads it,
    /// streamed or not, in each API.
    #[test]
    fn every_rendering_is_metered_as_scripted() {
        let s = Script::parse(
            "responses:\n  - text: hi\n    tools: [{name: exec, input: {code: 'print(1)'}}]\n    usage: {input: 7, output: 3}\n",
        )
        .unwrap();
        for endpoint in [
            Endpoint::Messages,
            Endpoint::ChatCompletions,
            Endpoint::Responses,
        ] {
            for stream in [false, true] {
                let r = s.answer(endpoint, &asked(stream), 1).unwrap();
                let read = if stream {
                    let mut m = Meter::new(endpoint);
                    m.push(&r.body);
                    m.finish()
                } else {
                    Meter::of_body(endpoint, &r.body)
                };
                assert_eq!(
                    read,
                    Some(Usage {
                        input_tokens: 7,
                        output_tokens: 3
                    }),
                    "{endpoint:?} stream={stream}: {}",
                    String::from_utf8_lossy(&r.body)
                );
            }
        }
        assert!(s
            .answer(Endpoint::Messages, &asked(false), 2)
            .unwrap_err()
            .contains("1 answers"));
    }

    #[test]
    fn bad_scripts_are_refused_with_where() {
        for (text, says) in [
            ("responses: []", "at least one"),
            ("responses:\n  - {}\n", "neither text nor tools"),
            ("responses:\n  - text: a\n    extra: 1\n", "line 3"),
            ("responses:\n  - tools: [{name: 'a b'}]\n", "tools[0].name"),
            (
                "responses:\n  - tools: [{name: a, input: [1]}]\n",
                "not a mapping",
            ),
            ("other: 1", "unknown field"),
            ("responses: [ {text: 'a'", "line"),
        ] {
            let e = Script::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
