//! The way the built-in agent loop's tool calls reach the run's sandbox. The loop runs
//! outside the sandbox; inside it, for the whole run, runs one tool runner (the sandbox's
//! command) that asks the run's gateway for the next call, executes it in the sandbox, and
//! posts the result back — over the run's link, to the gateway's port, the one destination
//! every runtime's sandbox already has. So every tool call executes inside the one sandbox
//! of the run, on every runtime, with no channel into the sandbox but the one out of it.
//!
//! - `POST /spawn/v1/tools/next`: the next call (`{"id", "tool", "input"}`), or
//!   `{"wait": true}` after a while without one (ask again), or `{"exit": CODE}` when the
//!   loop is done (the runner exits with that code, ending the run).
//! - `POST /spawn/v1/tools/result`: `{"id", "output"}`, the call's result as the runner
//!   saw it (untrusted: it comes from inside the sandbox, and goes to the model as such).
//!
//! Both take the run's placeholder key, like the model endpoints.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How long a runner's request for the next call waits before it is told to ask again.
pub const POLL: Duration = Duration::from_secs(20);
/// The largest result a runner may post.
pub const MAX_RESULT_BYTES: usize = 4 << 20;

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    pending: VecDeque<(u64, String, Value)>,
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<Value>>,
    exit: Option<i32>,
}

/// The queue between the loop and the runner.
#[derive(Debug, Clone, Default)]
pub struct ToolQueue {
    state: Arc<Mutex<State>>,
    ready: Arc<tokio::sync::Notify>,
}

/// Why a call got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("the sandbox's tool runner did not answer in time")]
    Timeout,
    #[error("the sandbox's tool runner is gone")]
    Gone,
}

impl ToolQueue {
    pub fn new() -> ToolQueue {
        ToolQueue::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `tool` with `input` in the sandbox and waits (blocking: the loop's own
    /// thread) for its result, at most `timeout`.
    pub fn call(&self, tool: &str, input: Value, timeout: Duration) -> Result<Value, ToolError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut s = self.state();
            if s.exit.is_some() {
                return Err(ToolError::Gone);
            }
            s.next_id += 1;
            let id = s.next_id;
            s.pending.push_back((id, tool.to_owned(), input));
            s.waiting.insert(id, tx);
        }
        self.ready.notify_waiters();
        self.ready.notify_one();
        // The oneshot is awaited from this (non-async) thread with a deadline.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(rx.blocking_recv());
        });
        match done_rx.recv_timeout(timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ToolError::Gone),
            Err(_) => Err(ToolError::Timeout),
        }
    }

    /// The loop is done: the runner exits with `code` (calls still waiting get no result).
    pub fn close(&self, code: i32) {
        let mut s = self.state();
        s.exit.get_or_insert(code);
        s.waiting.clear();
        drop(s);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// The runner's next call, `{"wait": true}` after [`POLL`], or `{"exit": CODE}`.
    pub async fn next(&self) -> Value {
        let deadline = tokio::time::Instant::now() + POLL;
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state();
                if let Some(code) = s.exit {
                    return json!({"exit": code});
                }
                if let Some((id, tool, input)) = s.pending.pop_front() {
                    return json!({"id": id, "tool": tool, "input": input});
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return json!({"wait": true});
            }
        }
    }

    /// The runner's result for call `id`; `false` when no call of that id waits.
    pub fn complete(&self, id: u64, output: Value) -> bool {
        match self.state().waiting.remove(&id) {
            Some(tx) => tx.send(output).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_call_waits_for_its_result_and_close_ends_the_runner() {
        let q = ToolQueue::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runner = q.clone();
        let t = std::thread::spawn(move || {
            rt.block_on(async move {
                let mut seen = Vec::new();
                loop {
                    let v = runner.next().await;
                    if v.get("exit").is_some() {
                        seen.push(v);
                        break;
                    }
                    let id = v["id"].as_u64().unwrap();
                    assert!(!runner.complete(id + 100, json!("stray")));
                    assert!(runner.complete(id, json!({"echo": v["input"].clone()})));
                    seen.push(v);
                }
                seen
            })
        });
        let r = q
            .call("exec", json!({"code": "1"}), Duration::from_secs(10))
            .unwrap();
        assert_eq!(r, json!({"echo": {"code": "1"}}));
        let r = q
            .call(
                "fs_list",
                json!({"path": "/workspace"}),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(r["echo"]["path"], "/workspace");
        q.close(3);
        let seen = t.join().unwrap();
        assert_eq!(seen.last().unwrap(), &json!({"exit": 3}));
        assert_eq!(
            q.call("exec", json!({}), Duration::from_secs(1)),
            Err(ToolError::Gone)
        );
    }

    #[test]
    fn a_runner_that_never_answers_times_out() {
        let q = ToolQueue::new();
        assert_eq!(
            q.call("exec", json!({}), Duration::from_millis(50)),
            Err(ToolError::Timeout)
        );
    }
}
