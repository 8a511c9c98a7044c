//! The built-in agent loop (a manifest with `model` and `instructions` and no `command`):
//! outside the sandbox, it asks the model (through the run's own gateway, so that the
//! policy, the budget and the trace are the same as for any agent) what to do, checks each
//! tool call against the tool's JSON Schema and the granted capabilities, has the sandbox's
//! tool runner ([`crate::tools`]) execute it inside the one sandbox of the run, and gives
//! the result back to the model, until the model calls `finish`, answers without a tool
//! call, or the run's budget ends it.
//!
//! Tools follow the capabilities: `exec` (code in a granted language only), `http_fetch`
//! (with a network policy; through the egress proxy like any request of the sandbox's),
//! `fs_read` / `fs_write` / `fs_list` (the workspace and the granted mounts; writes only
//! where the mount is `rw`), and `finish`.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::errors::Provider;
use crate::tools::{ToolError, ToolQueue};

/// The most output tokens the loop asks for per model call.
pub const MAX_OUTPUT_TOKENS: u64 = 4096;
/// The longest code an `exec` call may carry.
pub const MAX_CODE_BYTES: u64 = 256 << 10;
/// The most a file written by `fs_write` may hold.
pub const MAX_WRITE_BYTES: u64 = 1 << 20;
/// The most model calls a run without `limits.maxSteps` makes.
pub const DEFAULT_MAX_STEPS: u64 = 50;
/// The longest a tool result given back to the model is (characters of its JSON).
pub const MAX_RESULT_CHARS: usize = 64 << 10;

/// What the loop may use.
#[derive(Debug, Clone)]
pub struct Grants {
    /// `capabilities.exec.languages` (no `exec` tool when empty).
    pub languages: Vec<String>,
    pub exec_timeout: Duration,
    pub exec_memory: Option<u64>,
    /// A network policy other than `none` (the `http_fetch` tool).
    pub net: bool,
    /// Where `fs_read` and `fs_list` may look, and where `fs_write` may write.
    pub read_roots: Vec<PathBuf>,
    pub write_roots: Vec<PathBuf>,
}

/// One tool call as the loop made it.
#[derive(Debug, Clone)]
pub struct ToolRecord {
    /// The model call it came from.
    pub step: u64,
    pub tool: String,
    pub input: Value,
    /// The result given back to the model.
    pub output: Value,
    /// Refused before it ran (schema, capability): what was wrong.
    pub refused: Option<String>,
    pub duration: Duration,
}

/// What the loop tells its run.
pub trait Observer: Send {
    /// A line for the user (the model's words, a call, a result).
    fn say(&mut self, line: &str);
    /// A tool call is done.
    fn tool(&mut self, record: &ToolRecord);
    /// Before each model call after the first (`spawn replay --step-by-step` waits here).
    fn before_step(&mut self, _step: u64) {}
}

/// How a loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `finish` was called (its summary), or the model answered without a tool call.
    Finished(String),
    /// The model's API refused or failed (its status and message).
    Failed(String),
}

/// The loop's settings.
pub struct Loop {
    /// Whose API the loop speaks (the scripted provider answers Anthropic's).
    pub api: Provider,
    pub model: String,
    pub instructions: String,
    /// The run's gateway and placeholder.
    pub gateway: SocketAddr,
    pub key: Zeroizing<String>,
    pub queue: ToolQueue,
    pub grants: Grants,
    pub max_steps: u64,
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("api", &self.api)
            .field("model", &self.model)
            .field("gateway", &self.gateway)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// The tools offered under `grants`, as (name, description, JSON Schema of the input).
pub fn tools(grants: &Grants) -> Vec<(&'static str, &'static str, Value)> {
    let mut t = Vec::new();
    if !grants.languages.is_empty() {
        t.push((
            "exec",
            "Run code inside the sandbox (working directory /workspace). Returns exitCode, stdout and stderr.",
            json!({"type": "object", "additionalProperties": false,
                   "required": ["language", "code"],
                   "properties": {
                       "language": {"type": "string", "enum": grants.languages},
                       "code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_BYTES}}}),
        ));
    }
    if grants.net {
        t.push((
            "http_fetch",
            "Fetch a URL from inside the sandbox, through its egress proxy (the run's network policy applies).",
            json!({"type": "object", "additionalProperties": false, "required": ["url"],
                   "properties": {
                       "url": {"type": "string", "pattern": "^https?://", "maxLength": 8192},
                       "method": {"type": "string", "enum": ["GET", "HEAD", "POST"]},
                       "body": {"type": "string", "maxLength": MAX_WRITE_BYTES}}}),
        ));
    }
    let path = json!({"type": "string", "pattern": "^/", "maxLength": 4096});
    t.push((
        "fs_read",
        "Read a text file in /workspace or a granted mount.",
        json!({"type": "object", "additionalProperties": false, "required": ["path"],
               "properties": {"path": path}}),
    ));
    t.push((
        "fs_write",
        "Write a text file in /workspace or a writable granted mount (replacing it).",
        json!({"type": "object", "additionalProperties": false, "required": ["path", "content"],
               "properties": {"path": path, "content": {"type": "string", "maxLength": MAX_WRITE_BYTES}}}),
    ));
    t.push((
        "fs_list",
        "List a directory in /workspace or a granted mount.",
        json!({"type": "object", "additionalProperties": false, "required": ["path"],
               "properties": {"path": path}}),
    ));
    t.push((
        "finish",
        "End the task, with a summary of what was done.",
        json!({"type": "object", "additionalProperties": false, "required": ["summary"],
               "properties": {"summary": {"type": "string", "maxLength": 65536}}}),
    ));
    t
}

/// `path` lexically normalised (it is absolute: the schema says so), or `None` when it
/// leaves `/` or holds a NUL.
fn normalise(path: &str) -> Option<PathBuf> {
    if path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn under(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// Checks a call against its schema and the grants; the input the runner gets (paths
/// normalised, the limits it applies added), or why it is refused.
pub fn check(tool: &str, input: &Value, grants: &Grants) -> Result<Value, String> {
    let Some((_, _, schema)) = tools(grants).into_iter().find(|(n, _, _)| *n == tool) else {
        return Err(format!(
            "there is no tool {tool:?} in this run (its capabilities do not grant it)"
        ));
    };
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| format!("the tool's schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(input)
        .take(5)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "invalid arguments for {tool}: {}",
            errors.join("; ")
        ));
    }
    let mut input = input.clone();
    match tool {
        "fs_read" | "fs_list" | "fs_write" => {
            let raw = input["path"].as_str().unwrap_or_default();
            let path = normalise(raw).ok_or_else(|| format!("{raw:?} is not a path"))?;
            let roots = if tool == "fs_write" {
                &grants.write_roots
            } else {
                &grants.read_roots
            };
            if !under(&path, roots) {
                return Err(format!(
                    "{} is outside {} ({})",
                    path.display(),
                    if tool == "fs_write" {
                        "where this run may write"
                    } else {
                        "what this run may read"
                    },
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            input["path"] = json!(path);
            input["_limits"] =
                json!({"roots": {"read": grants.read_roots, "write": grants.write_roots}});
        }
        "exec" => {
            input["_limits"] = json!({"timeout": grants.exec_timeout.as_secs_f64(),
                                      "memory": grants.exec_memory});
        }
        _ => {}
    }
    Ok(input)
}

/// A model answer, as the loop reads it from either API.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    /// (call id, tool name, arguments; arguments that are not JSON are `Err` of the text).
    calls: Vec<(String, String, Result<Value, String>)>,
}

fn read_answer(api: Provider, body: &Value) -> Result<Answer, String> {
    let mut a = Answer::default();
    match api {
        Provider::Anthropic => {
            let content = body["content"]
                .as_array()
                .ok_or("the answer has no content")?;
            for block in content {
                match block["type"].as_str() {
                    Some("text") => a.text.push_str(block["text"].as_str().unwrap_or("")),
                    Some("tool_use") => a.calls.push((
                        block["id"].as_str().unwrap_or("").to_owned(),
                        block["name"].as_str().unwrap_or("").to_owned(),
                        Ok(block["input"].clone()),
                    )),
                    _ => {}
                }
            }
        }
        Provider::OpenAi => {
            let m = &body["choices"][0]["message"];
            if m.is_null() {
                return Err("the answer has no choices".into());
            }
            a.text = m["content"].as_str().unwrap_or("").to_owned();
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                let args = c["function"]["arguments"].as_str().unwrap_or("");
                a.calls.push((
                    c["id"].as_str().unwrap_or("").to_owned(),
                    c["function"]["name"].as_str().unwrap_or("").to_owned(),
                    serde_json::from_str(args).map_err(|_| args.to_owned()),
                ));
            }
        }
    }
    Ok(a)
}

const SYSTEM: &str =
    "You are an agent working inside spawn, a sandbox. Use the tools to do the task; \
files you make belong in /workspace. When the task is done, call finish with a summary.";

/// A value's JSON, cut for a line of output.
pub fn shown(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        s
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}… ({} characters)", s.chars().count())
    }
}

impl Loop {
    fn request(&self, messages: &[Value]) -> Value {
        let tools = tools(&self.grants);
        match self.api {
            Provider::Anthropic => json!({
                "model": self.model, "max_tokens": MAX_OUTPUT_TOKENS, "system": SYSTEM,
                "messages": messages,
                "tools": tools.iter().map(|(n, d, s)| json!({"name": n, "description": d, "input_schema": s})).collect::<Vec<_>>(),
            }),
            Provider::OpenAi => {
                let mut all = vec![json!({"role": "system", "content": SYSTEM})];
                all.extend_from_slice(messages);
                json!({
                    "model": self.model, "max_completion_tokens": MAX_OUTPUT_TOKENS,
                    "messages": all,
                    "tools": tools.iter().map(|(n, d, s)| json!({"type": "function",
                        "function": {"name": n, "description": d, "parameters": s}})).collect::<Vec<_>>(),
                })
            }
        }
    }

    fn call_model(&self, agent: &ureq::Agent, body: &Value) -> Result<Value, String> {
        let path = match self.api {
            Provider::Anthropic => "/v1/messages",
            Provider::OpenAi => "/v1/chat/completions",
        };
        let r = agent
            .post(&format!("http://{}{path}", self.gateway))
            .set("x-api-key", &self.key)
            .set("anthropic-version", "2023-06-01")
            .send_json(body.clone());
        match r {
            Ok(r) => r
                .into_json::<Value>()
                .map_err(|e| format!("the model's answer is not JSON: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let msg = v["error"]["message"].as_str().unwrap_or("").to_owned();
                Err(format!("the model's API answered {code}: {msg}"))
            }
            Err(e) => Err(format!("the model's API could not be reached: {e}")),
        }
    }

    /// Runs the loop to its end.
    pub fn run(&self, obs: &mut dyn Observer) -> End {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(900))
            .build();
        let mut messages = vec![json!({"role": "user", "content": self.instructions})];
        for step in 1..=self.max_steps {
            if step > 1 {
                obs.before_step(step);
            }
            let body = self.request(&messages);
            let answer = match self.call_model(&agent, &body).and_then(|v| {
                let a = read_answer(self.api, &v)?;
                Ok((v, a))
            }) {
                Ok(a) => a,
                Err(e) => {
                    obs.say(&format!("[{step}] {e}"));
                    return End::Failed(e);
                }
            };
            let (raw, answer) = answer;
            if !answer.text.trim().is_empty() {
                obs.say(&format!("[{step}] model: {}", answer.text.trim()));
            }
            // The assistant's turn, as the API wants it back.
            match self.api {
                Provider::Anthropic => {
                    messages.push(json!({"role": "assistant", "content": raw["content"]}))
                }
                Provider::OpenAi => {
                    let mut m = raw["choices"][0]["message"].clone();
                    if let Some(o) = m.as_object_mut() {
                        o.retain(|k, _| matches!(k.as_str(), "role" | "content" | "tool_calls"));
                    }
                    messages.push(m);
                }
            }
            if answer.calls.is_empty() {
                return End::Finished(answer.text.trim().to_owned());
            }
            let mut results = Vec::new();
            let mut finished = None;
            for (id, name, args) in answer.calls {
                let started = Instant::now();
                let args_shown = match &args {
                    Ok(v) => shown(v, 400),
                    Err(t) => format!("{t:?} (not JSON)"),
                };
                obs.say(&format!("[{step}] tool {name} {args_shown}"));
                let input = args.clone().unwrap_or(Value::Null);
                let checked = match &args {
                    Ok(v) => check(&name, v, &self.grants),
                    Err(_) => Err(format!("the arguments of {name} are not JSON")),
                };
                let (output, refused) = match checked {
                    Err(why) => (json!({"error": why}), Some(why)),
                    Ok(_) if name == "finish" => {
                        let summary = input["summary"].as_str().unwrap_or("").to_owned();
                        finished = Some(summary);
                        (json!({"ok": true}), None)
                    }
                    Ok(runner_input) => {
                        let wait = self.grants.exec_timeout + Duration::from_secs(30);
                        match self.queue.call(&name, runner_input, wait) {
                            Ok(v) => (v, None),
                            Err(ToolError::Timeout) => {
                                (json!({"error": "the tool did not answer in time"}), None)
                            }
                            Err(ToolError::Gone) => {
                                let why = "the sandbox's tool runner is gone (the sandbox ended)";
                                obs.say(&format!("[{step}] {why}"));
                                return End::Failed(why.into());
                            }
                        }
                    }
                };
                obs.say(&format!("[{step}] result: {}", shown(&output, 400)));
                let record = ToolRecord {
                    step,
                    tool: name.clone(),
                    input,
                    output: output.clone(),
                    refused,
                    duration: started.elapsed(),
                };
                obs.tool(&record);
                let mut content = output.to_string();
                if content.len() > MAX_RESULT_CHARS {
                    content = shown(&output, MAX_RESULT_CHARS);
                }
                let is_error = record.refused.is_some() || output.get("error").is_some();
                results.push((id, content, is_error));
            }
            match self.api {
                Provider::Anthropic => messages.push(json!({"role": "user", "content":
                    results.iter().map(|(id, c, e)| json!({"type": "tool_result", "tool_use_id": id,
                        "content": c, "is_error": e})).collect::<Vec<_>>()})),
                Provider::OpenAi => {
                    for (id, c, _) in &results {
                        messages.push(json!({"role": "tool", "tool_call_id": id, "content": c}));
                    }
                }
            }
            if let Some(summary) = finished {
                obs.say(&format!("[{step}] finished: {summary}"));
                return End::Finished(summary);
            }
        }
        End::Failed(format!(
            "the loop made {} model calls without finishing",
            self.max_steps
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn grants() -> Grants {
        Grants {
            languages: vec!["python".into()],
            exec_timeout: Duration::from_secs(5),
            exec_memory: Some(1 << 28),
            net: false,
            read_roots: vec!["/workspace".into(), "/data".into()],
            write_roots: vec!["/workspace".into()],
        }
    }

    /// Each tool's hostile arguments are refused before anything runs, saying what is wrong.
    #[test]
    fn calls_are_checked_against_schema_and_grants() {
        let g = grants();
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "exec",
                json!({"language": "bash", "code": "ls"}),
                "language",
            ),
            ("exec", json!({"language": "python"}), "code"),
            ("exec", json!({"language": "python", "code": ""}), "code"),
            ("exec", json!({"language": "python", "code": 7}), "code"),
            (
                "exec",
                json!({"language": "python", "code": "1", "sudo": true}),
                "sudo",
            ),
            ("exec", json!("print(1)"), "object"),
            ("exec", Value::Null, "object"),
            ("http_fetch", json!({"url": "http://x"}), "no tool"),
            ("rm_rf", json!({}), "no tool"),
            ("fs_read", json!({"path": "etc/passwd"}), "path"),
            ("fs_read", json!({"path": "/etc/passwd"}), "outside"),
            (
                "fs_read",
                json!({"path": "/workspace/../etc/passwd"}),
                "outside",
            ),
            (
                "fs_read",
                json!({"path": "/workspace/../../../.."}),
                "not a path",
            ),
            ("fs_read", json!({"path": "/workspacex/a"}), "outside"),
            (
                "fs_read",
                json!({"path": "/workspace/a\u{0}b"}),
                "not a path",
            ),
            (
                "fs_write",
                json!({"path": "/data/x", "content": "a"}),
                "may write",
            ),
            ("fs_write", json!({"path": "/workspace/x"}), "content"),
            ("fs_list", json!({"path": ["/workspace"]}), "path"),
            ("finish", json!({}), "summary"),
        ];
        for (tool, input, says) in cases {
            let e = check(tool, &input, &g).unwrap_err();
            assert!(e.contains(says), "{tool} {input}: {e}");
        }
        let ok = check("fs_read", &json!({"path": "/workspace/./a/../b.txt"}), &g).unwrap();
        assert_eq!(ok["path"], "/workspace/b.txt");
        assert_eq!(ok["_limits"]["roots"]["write"], json!(["/workspace"]));
        let ok = check(
            "exec",
            &json!({"language": "python", "code": "print(1)"}),
            &g,
        )
        .unwrap();
        assert_eq!(ok["_limits"]["timeout"], 5.0);
        assert!(check("fs_read", &json!({"path": "/data"}), &g).is_ok());
        assert!(check("finish", &json!({"summary": "done"}), &g).is_ok());
    }

    #[test]
    fn answers_of_both_apis_are_read() {
        let a = read_answer(
            Provider::Anthropic,
            &json!({"content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t1", "name": "exec", "input": {"a": 1}}]}),
        )
        .unwrap();
        assert_eq!(a.text, "hi");
        assert_eq!(
            a.calls,
            vec![("t1".into(), "exec".into(), Ok(json!({"a": 1})))]
        );
        let o = read_answer(
            Provider::OpenAi,
            &json!({"choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "exec", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "exec", "arguments": "{not json"}}]}}]}),
        )
        .unwrap();
        assert_eq!(o.calls[0].2, Ok(json!({"a": 1})));
        assert_eq!(o.calls[1].2, Err("{not json".into()));
        assert!(read_answer(Provider::OpenAi, &json!({})).is_err());
        assert!(read_answer(Provider::Anthropic, &json!({"content": 1})).is_err());
    }
}
