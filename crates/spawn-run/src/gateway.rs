//! A run's model gateway (`spec.model`, SPEC §6a): the provider's credential, resolved
//! here and never given to the sandbox; the run's placeholder, given instead; the
//! gateway's listener on the host end of the run's link (bound before the sandbox exists,
//! served once it does: the native runtime wants a single-threaded process until then);
//! each call an audit event and a trace step, its content kept beside the log; and the
//! run stopped when its budget is spent.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use spawn_audit::{AuditLog, Event, EventType, Limiter, Limits, Outcome, Principal, Resource};
use spawn_gateway::budget::{self, Budget, Exhausted, Price, Which};
use spawn_gateway::errors::Provider;
use spawn_gateway::request::Policy;
use spawn_gateway::server::{CallRecord, Config, Events, Gateway, Upstream};
use spawn_gateway::token::Placeholder;
use spawn_policy::{ModelProvider, ModelSpec};
use spawn_redact::Redactor;
use spawn_sandbox::{SecretEnv, Stop};
use zeroize::Zeroizing;

use crate::error::RunError;

/// The most content of a run's model calls kept on disk (requests and answers together);
/// past it, calls are still recorded, without their content.
pub const MAX_TRACE_CONTENT: u64 = 256 << 20;

/// The provider's default base URL.
fn default_endpoint(provider: ModelProvider) -> &'static str {
    match provider {
        ModelProvider::Openai => "https://api.openai.com",
        ModelProvider::Anthropic | ModelProvider::Scripted => "https://api.anthropic.com",
    }
}

/// The variable in spawn's own environment that holds the provider's key by default.
pub fn credential_variable(provider: ModelProvider) -> &'static str {
    match provider {
        ModelProvider::Openai => "OPENAI_API_KEY",
        ModelProvider::Anthropic | ModelProvider::Scripted => "ANTHROPIC_API_KEY",
    }
}

fn provider_name(p: ModelProvider) -> &'static str {
    match p {
        ModelProvider::Anthropic => "anthropic",
        ModelProvider::Openai => "openai",
        ModelProvider::Scripted => "scripted",
    }
}

/// The gateway, prepared before the sandbox: listening, not yet served.
pub(crate) struct Prepared {
    listener: std::net::TcpListener,
    config: Config,
    /// What the agent is given: the placeholder, in both providers' variables.
    pub(crate) secret_env: Vec<SecretEnv>,
    /// And the base URLs and the agents' switches.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stop: Arc<Stop>,
    events: Arc<RunEvents>,
    /// The built-in loop, run once the gateway is served.
    agent_loop: Option<spawn_gateway::agent::Loop>,
    step_by_step: bool,
}

/// The built-in loop's sandbox command: the tool runner.
pub(crate) fn tool_runner_command() -> Vec<String> {
    vec![
        "python3".to_owned(),
        "-c".to_owned(),
        include_str!("tool_runner.py").to_owned(),
    ]
}

/// The gateway being served; [`Serving::finish`] stops it.
pub(crate) struct Serving {
    gateway: Gateway,
    events: Arc<RunEvents>,
    agent_loop: Option<(spawn_gateway::tools::ToolQueue, std::thread::JoinHandle<()>)>,
}

impl Serving {
    /// Stops serving (the loop ended) and makes what it recorded durable; what could not
    /// be recorded, and where a replay left its recording.
    pub(crate) fn finish(self) -> (Option<String>, Option<String>) {
        // A loop still running (its sandbox ended first) gets no more results; with the
        // gateway gone, its model call fails: it ends.
        if let Some((queue, _)) = &self.agent_loop {
            queue.close(125);
        }
        drop(self.gateway);
        if let Some((_, thread)) = self.agent_loop {
            let _ = thread.join();
        }
        let mut rec = self
            .events
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        rec.limiter.finish(&mut out);
        self.events.write(&mut rec, out);
        if let Some(log) = &mut rec.log {
            if let Err(e) = log.sync() {
                rec.failed.get_or_insert(e.to_string());
            }
        }
        let failed = rec
            .failed
            .take()
            .map(|e| format!("the model gateway's audit events: {e}"));
        drop(rec);
        let diverged = self
            .events
            .diverged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (failed, diverged)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// Where the run's gateway records go.
pub(crate) struct Recording {
    pub(crate) audit_dir: PathBuf,
    pub(crate) trace_dir: PathBuf,
    pub(crate) principal: Principal,
    pub(crate) trace_id: String,
    pub(crate) limits: Limits,
    pub(crate) redactor: Option<Arc<Redactor>>,
}

/// Who answers the run's model calls.
pub(crate) enum Answers {
    /// The manifest's provider, with its credential (none for the scripted provider).
    Provider(Option<Zeroizing<String>>),
    /// A recorded run.
    Replay(Replay),
}

/// Everything the gateway needs that is not the network: the credential (already
/// resolved), the script, the price.
pub(crate) fn prepare(
    spec: &spawn_policy::RunSpec,
    model: &ModelSpec,
    answers: Answers,
    address: SocketAddr,
    sandbox: Option<std::net::IpAddr>,
    recording: Recording,
    prices: &spawn_gateway::prices::Prices,
) -> Result<Prepared, RunError> {
    let (credential, replay) = match answers {
        Answers::Provider(c) => (c, None),
        Answers::Replay(r) => (None, Some(r)),
    };
    let gateway_err = |m: String| RunError::Gateway(m);
    let step_by_step = replay.as_ref().is_some_and(|r| r.step_by_step);
    let (replay_calls, replay_tools) = match replay {
        Some(r) => (Some(r.calls), Some(r.tools)),
        None => (None, None),
    };
    let upstream = match (replay_calls, model.provider) {
        (Some(calls), _) => Upstream::Replay(Arc::new(spawn_gateway::server::Replayed::new(calls))),
        (None, provider) => match provider {
        ModelProvider::Scripted => {
            let path = model
                .script
                .as_deref()
                .ok_or_else(|| gateway_err("the scripted provider has no file of answers".into()))?;
            let text = read_script(path)?;
            let script = spawn_gateway::scripted::Script::parse(&text).map_err(|e| {
                gateway_err(format!("the scripted provider's {}: {e}", path.display()))
            })?;
            Upstream::Scripted(script)
        }
        p => Upstream::Http {
            base: model
                .endpoint
                .clone()
                .unwrap_or_else(|| default_endpoint(p).to_owned()),
            credential: credential.ok_or_else(|| {
                gateway_err(format!(
                    "no credential for the {} provider: set {} in spawn's environment, or give spec.model.credential",
                    provider_name(p),
                    credential_variable(p)
                ))
            })?,
        },
        },
    };
    let price = match model.provider {
        ModelProvider::Scripted => Some(Price {
            input_per_mtok_micros: 0,
            output_per_mtok_micros: 0,
        }),
        p => prices.get(provider_name(p), &model.name),
    };
    if model.max_cost_micros.is_some() && price.is_none() {
        return Err(gateway_err(format!(
            "spec.limits.maxCostUsd needs the price of {} ({}): add it to {}",
            model.name,
            provider_name(model.provider),
            prices.source()
        )));
    }
    let (placeholder, token) = Placeholder::mint().map_err(|e| gateway_err(e.to_string()))?;
    let listener = std::net::TcpListener::bind(address).map_err(|e| {
        gateway_err(format!(
            "listen on {address} for the run's model gateway: {e}"
        ))
    })?;
    let stop = Arc::new(Stop::new().map_err(|e| gateway_err(e.to_string()))?);
    let url = format!("http://{address}");
    let env = vec![
        ("ANTHROPIC_BASE_URL".to_owned(), url.clone()),
        ("OPENAI_BASE_URL".to_owned(), format!("{url}/v1")),
        // Claude Code: no traffic but the model's (else it calls api.anthropic.com with
        // the key it was given), and the pinned model as named.
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        ),
        (
            "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP".to_owned(),
            "1".to_owned(),
        ),
        ("SPAWN_MODEL".to_owned(), model.name.clone()),
    ];
    let secret_env = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
        .into_iter()
        .map(|name| SecretEnv::new(name, Zeroizing::new(token.as_bytes().to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| gateway_err(e.to_string()))?;
    let budget = Budget::new(budget::Limits {
        tokens: model.max_tokens,
        cost_micros: model.max_cost_micros,
        steps: model.max_steps,
    });
    let events = Arc::new(RunEvents {
        recording: Mutex::new(Recorder {
            log: None,
            limiter: Limiter::new(recording.limits),
            content_bytes: 0,
            failed: None,
        }),
        r: recording,
        provider: model.provider,
        stop: stop.clone(),
        budget: budget.clone(),
        tools: std::sync::atomic::AtomicU64::new(0),
        replay_tools,
        diverged: Mutex::new(None),
    });
    events.keep_spec(spec);
    let recorder = events.clone();
    let mut env = env;
    let mut peers: Vec<std::net::IpAddr> = sandbox.into_iter().collect();
    let agent_loop = match &spec.agent_loop {
        Some(l) => {
            let queue = spawn_gateway::tools::ToolQueue::new();
            // The loop calls the gateway from the host end.
            peers.push(address.ip());
            env.push((
                "SPAWN_TOOLS_URL".to_owned(),
                format!("{url}/spawn/v1/tools"),
            ));
            let mut read_roots = vec![PathBuf::from("/workspace")];
            let mut write_roots = read_roots.clone();
            for m in &spec.mounts {
                read_roots.push(m.target.clone());
                if m.writable {
                    write_roots.push(m.target.clone());
                }
            }
            Some(spawn_gateway::agent::Loop {
                api: match model.provider {
                    ModelProvider::Openai => Provider::OpenAi,
                    ModelProvider::Anthropic | ModelProvider::Scripted => Provider::Anthropic,
                },
                model: model.name.clone(),
                instructions: l.instructions.clone(),
                gateway: address,
                key: Zeroizing::new(token.to_string()),
                queue,
                grants: spawn_gateway::agent::Grants {
                    languages: spec.languages.clone(),
                    exec_timeout: l.exec_timeout,
                    exec_memory: l.exec_memory,
                    net: spec.net.policy != spawn_policy::NetPolicy::None,
                    read_roots,
                    write_roots,
                },
                max_steps: model
                    .max_steps
                    .unwrap_or(spawn_gateway::agent::DEFAULT_MAX_STEPS),
            })
        }
        None => None,
    };
    let config = Config {
        policy: Policy {
            provider: match model.provider {
                ModelProvider::Openai => Provider::OpenAi,
                ModelProvider::Anthropic | ModelProvider::Scripted => Provider::Anthropic,
            },
            model: model.name.clone(),
            any_api: model.provider == ModelProvider::Scripted,
        },
        upstream,
        placeholder,
        budget,
        price,
        peers,
        tools: agent_loop.as_ref().map(|l| l.queue.clone()),
        redactor: events.r.redactor.clone(),
        events,
        timeout: spawn_gateway::server::UPSTREAM_TIMEOUT,
    };
    Ok(Prepared {
        listener,
        config,
        secret_env,
        env,
        stop,
        events: recorder,
        agent_loop,
        step_by_step,
    })
}

fn read_script(path: &Path) -> Result<String, RunError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| {
        RunError::Gateway(format!("the scripted provider's {}: {e}", path.display()))
    })?;
    let mut text = String::new();
    f.take(spawn_gateway::scripted::MAX_SCRIPT_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            RunError::Gateway(format!("the scripted provider's {}: {e}", path.display()))
        })?;
    Ok(text)
}

impl Prepared {
    /// Serves it (once the sandbox exists), and starts the built-in loop if the run is one.
    pub(crate) fn serve(self) -> Result<Serving, RunError> {
        let gateway = Gateway::serve(self.listener, self.config)
            .map_err(|e| RunError::Gateway(e.to_string()))?;
        let agent_loop = match self.agent_loop {
            Some(l) => {
                let queue = l.queue.clone();
                let mut observer = LoopObserver {
                    events: self.events.clone(),
                    step_by_step: self.step_by_step,
                };
                let thread = std::thread::Builder::new()
                    .name("spawn-agent-loop".into())
                    .spawn(move || {
                        let code = match l.run(&mut observer) {
                            spawn_gateway::agent::End::Finished(_) => 0,
                            spawn_gateway::agent::End::Failed(_) => 1,
                        };
                        l.queue.close(code);
                    })
                    .map_err(|e| RunError::Gateway(format!("start the agent loop: {e}")))?;
                Some((queue, thread))
            }
            None => None,
        };
        Ok(Serving {
            gateway,
            events: self.events,
            agent_loop,
        })
    }
}

/// The loop's decisions, to the user (stdout, redacted) and to the record (an
/// `agent.tool.invoke` event per call, its content beside the log).
struct LoopObserver {
    events: Arc<RunEvents>,
    step_by_step: bool,
}

impl spawn_gateway::agent::Observer for LoopObserver {
    fn say(&mut self, line: &str) {
        use std::io::Write as _;
        let line = match &self.events.r.redactor {
            Some(r) => r.redact_str(line),
            None => line.to_owned(),
        };
        // Terminal escapes and other controls the model wrote are shown, not obeyed.
        let line: String = line
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    fn before_step(&mut self, step: u64) {
        use std::io::{BufRead as _, Write as _};
        if !self.step_by_step {
            return;
        }
        // spawn's stdin is its own here: the loop's sandbox is given none.
        eprint!("spawn: replay: press Enter for step {step} ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }

    fn tool(&mut self, record: &spawn_gateway::agent::ToolRecord) {
        let number = self
            .events
            .tools
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let outcome = if record.refused.is_some() {
            Outcome::Denied
        } else if record.output.get("error").is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        let mut content = serde_json::json!({
            "step": record.step, "tool": record.tool, "input": record.input,
            "output": record.output,
        });
        if let Some(r) = &self.events.r.redactor {
            r.redact_json(&mut content);
        }
        let mut e = self
            .events
            .event(
                EventType::AgentToolInvoke,
                "tool",
                &record.tool,
                "invoke",
                outcome,
            )
            .with_detail("step", record.step)
            .with_detail("call", number)
            .with_detail("gen_ai.operation.name", "execute_tool")
            .with_detail("gen_ai.tool.name", record.tool.clone())
            .with_detail("durationMs", record.duration.as_secs_f64() * 1000.0);
        if record.tool == "exec" {
            let code = record.input["code"].as_str().unwrap_or("");
            e = e
                .with_detail("language", record.input["language"].as_str().unwrap_or(""))
                .with_detail(
                    "codeHash",
                    format!("sha256:{}", hex(&Sha256::digest(code.as_bytes()))),
                );
        }
        if let Some(why) = &record.refused {
            e = e.with_detail("reason", why.clone());
        }
        if let Some(recorded) = &self.events.replay_tools {
            let index = usize::try_from(number - 1).unwrap_or(usize::MAX);
            match recorded.get(index) {
                None => self.events.diverge(format!(
                    "step {}: tool call {number} ({}) is one the recorded run did not make",
                    record.step, record.tool
                )),
                Some(r) if r["tool"] != content["tool"] || r["input"] != content["input"] => {
                    self.events.diverge(format!(
                        "step {}: tool call {number} differs: recorded {} {}, now {} {}",
                        record.step,
                        r["tool"].as_str().unwrap_or(""),
                        spawn_gateway::agent::shown(&r["input"], 200),
                        record.tool,
                        spawn_gateway::agent::shown(&content["input"], 200)
                    ))
                }
                Some(r) if r["output"] != content["output"] => self.events.diverge(format!(
                    "step {}: the result of {} (tool call {number}) differs: recorded {}, now {}",
                    record.step,
                    record.tool,
                    spawn_gateway::agent::shown(&r["output"], 300),
                    spawn_gateway::agent::shown(&content["output"], 300)
                )),
                Some(_) => {}
            }
        }
        let bytes = format!("{content}\n").into_bytes();
        match self.events.keep("tools", number, &bytes) {
            Some(d) => e = e.with_detail("contentSha256", d),
            None => e = e.with_detail("contentKept", false),
        }
        self.events.emit(e, true);
    }
}

struct Recorder {
    log: Option<AuditLog>,
    limiter: Limiter,
    content_bytes: u64,
    failed: Option<String>,
}

/// The run's ear for its gateway: audit events, trace content, and the stop.
struct RunEvents {
    r: Recording,
    recording: Mutex<Recorder>,
    provider: ModelProvider,
    stop: Arc<Stop>,
    budget: Budget,
    /// Tool calls of the built-in loop so far.
    tools: std::sync::atomic::AtomicU64,
    /// Replaying: the recorded run's tool calls, in order.
    replay_tools: Option<Vec<serde_json::Value>>,
    /// Replaying: the first place the run left the recording.
    diverged: Mutex<Option<String>>,
}

impl RunEvents {
    fn event(&self, t: EventType, kind: &str, name: &str, action: &str, outcome: Outcome) -> Event {
        Event {
            trace_id: Some(self.r.trace_id.clone()),
            ..Event::new(
                t,
                self.r.principal.clone(),
                Resource {
                    kind: kind.into(),
                    name: name.into(),
                },
                action,
                outcome,
            )
        }
    }

    fn emit(&self, event: Event, always: bool) {
        let mut rec = self
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        if always {
            rec.limiter.admit_always(event, &mut out);
        } else {
            rec.limiter.admit(event, &mut out);
        }
        self.write(&mut rec, out);
    }

    /// Appends what the limiter let through, redacted (the log opened at the first
    /// write); a failure is kept for the run's report.
    fn write(&self, rec: &mut Recorder, out: Vec<Event>) {
        if out.is_empty() {
            return;
        }
        let out: Vec<Event> = match &self.r.redactor {
            Some(r) => out.into_iter().map(|e| e.redacted(r)).collect(),
            None => out,
        };
        let log = match &mut rec.log {
            Some(l) => Ok(l),
            None => AuditLog::open(&self.r.audit_dir).map(|l| rec.log.insert(l)),
        };
        if let Err(e) = log.and_then(|l| l.append(&out)) {
            rec.failed.get_or_insert(e.to_string());
        }
    }

    /// Keeps the call's content (request and answer) beside the log, `0600` in a `0700`
    /// directory of the run's; its digest goes in the event. `None` past the run's cap.
    fn keep_content(&self, record: &CallRecord) -> Option<String> {
        let mut content = Vec::with_capacity(record.request.len() + record.response.len() + 64);
        content.extend_from_slice(
            serde_json::json!({"endpoint": record.endpoint.name(), "status": record.status,
                               "stream": record.stream})
            .to_string()
            .trim_end_matches('}')
            .as_bytes(),
        );
        content.extend_from_slice(b",\"request\":");
        content.extend_from_slice(&json_text(&record.request));
        content.extend_from_slice(b",\"response\":");
        content.extend_from_slice(&json_text(&record.response));
        content.extend_from_slice(b"}\n");
        self.keep("model", record.number, &content)
    }

    /// Keeps what replay needs to run the agent again: the resolved run (the values of
    /// `--env` left out: they may be anything), as `traces/RUN/run.json`.
    fn keep_spec(&self, spec: &spawn_policy::RunSpec) {
        let mut spec = spec.clone();
        for (_, v) in &mut spec.env {
            v.clear();
        }
        if let Ok(text) = serde_json::to_vec_pretty(&spec) {
            let _ = write_private(&self.r.trace_dir.join(&self.r.trace_id), "run.json", &text);
        }
    }

    /// Notes where a replay left the recording (the first place only).
    fn diverge(&self, what: String) {
        let mut d = self
            .diverged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.is_none() {
            let e = self
                .event(
                    EventType::PolicyViolation,
                    "replay",
                    &self.r.trace_id,
                    "diverge",
                    Outcome::Error,
                )
                .with_detail("reason", what.clone());
            *d = Some(what);
            drop(d);
            self.emit(e, true);
        }
    }

    /// Keeps `content` as `traces/RUN/KIND/NUMBER.json` (`0600` in `0700` directories of
    /// the run's); its digest, or `None` past the run's cap or when it cannot be written.
    fn keep(&self, kind: &str, number: u64, content: &[u8]) -> Option<String> {
        {
            let mut rec = self
                .recording
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if rec.content_bytes + content.len() as u64 > MAX_TRACE_CONTENT {
                return None;
            }
            rec.content_bytes += content.len() as u64;
        }
        let digest = format!("sha256:{}", hex(&Sha256::digest(content)));
        let dir = self.r.trace_dir.join(&self.r.trace_id).join(kind);
        write_private(&dir, &format!("{number:06}.json"), content)
            .ok()
            .map(|()| digest)
    }
}

/// Writes a new file `name` (`0600`) in `dir` (made `0700` where missing); never replaces
/// one.
fn write_private(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?
        .write_all(content)
}

/// A body as a JSON value: itself when it is JSON, else a string of it (a stream of
/// server-sent events, an HTML error page).
fn json_text(bytes: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() {
        return bytes.to_vec();
    }
    serde_json::to_vec(&String::from_utf8_lossy(bytes)).unwrap_or_else(|_| b"null".to_vec())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn which_name(w: Which) -> &'static str {
    match w {
        Which::Tokens => "tokens",
        Which::Cost => "cost",
        Which::Steps => "steps",
    }
}

/// What a limit is called in the manifest.
pub fn limit_field(w: Which) -> &'static str {
    match w {
        Which::Tokens => "maxTokens",
        Which::Cost => "maxCostUsd",
        Which::Steps => "maxSteps",
    }
}

/// The stop's reason, as the run reports it.
pub fn exhausted_reason(why: &Exhausted) -> String {
    match why.which {
        Which::Cost => format!(
            "the run reached its model budget (limits.maxCostUsd {:.6}: {:.6} used or reserved)",
            why.limit as f64 / 1e6,
            why.used as f64 / 1e6
        ),
        w => format!(
            "the run reached its model budget (limits.{} {}: {} used or reserved)",
            limit_field(w),
            why.limit,
            why.used
        ),
    }
}

impl Events for RunEvents {
    fn diverged(&self, what: String) {
        self.diverge(what);
    }

    fn call(&self, record: CallRecord) {
        let model = record.model.clone().unwrap_or_default();
        let (t, outcome) = match (&record.refusal, record.status) {
            (Some(_), _) => (EventType::AgentCapabilityDenied, Outcome::Denied),
            (None, s) if s < 300 => (EventType::AgentCapabilityInvoke, Outcome::Success),
            (None, _) => (EventType::AgentCapabilityInvoke, Outcome::Error),
        };
        let op = match record.endpoint {
            spawn_gateway::request::Endpoint::Messages
            | spawn_gateway::request::Endpoint::ChatCompletions => "chat",
            spawn_gateway::request::Endpoint::Responses => "generate_content",
            spawn_gateway::request::Endpoint::CountTokens => "count_tokens",
            spawn_gateway::request::Endpoint::Models => "list_models",
            spawn_gateway::request::Endpoint::WarmUp => "warm_up",
        };
        let mut e = self
            .event(t, "model", &model, op, outcome)
            .with_detail("call", record.number)
            .with_detail("gen_ai.operation.name", op)
            .with_detail("gen_ai.provider.name", provider_name(self.provider))
            .with_detail("gen_ai.request.model", model.clone())
            .with_detail("status", record.status)
            .with_detail("stream", record.stream)
            .with_detail("durationMs", record.latency.as_secs_f64() * 1000.0);
        if let Some(fb) = record.first_byte {
            e = e.with_detail("firstByteMs", fb.as_secs_f64() * 1000.0);
        }
        if let Some(u) = record.usage {
            e = e
                .with_detail("gen_ai.usage.input_tokens", u.input_tokens)
                .with_detail("gen_ai.usage.output_tokens", u.output_tokens);
        }
        if record.counted != (0, 0) {
            e = e
                .with_detail("countedTokens", record.counted.0)
                .with_detail("costUsd", record.counted.1 as f64 / 1e6);
        }
        if let Some((r, m)) = &record.refusal {
            e = e
                .with_detail("reason", m.clone())
                .with_detail("error.type", r.code());
        }
        if let Some(b) = &record.broken {
            e = e.with_detail("broken", b.clone());
        }
        e = e.with_detail("responseBytes", record.response_bytes);
        match self.keep_content(&record) {
            Some(digest) => e = e.with_detail("contentSha256", digest),
            None => e = e.with_detail("contentKept", false),
        }
        // Model calls are bounded by the run's budget; refusals (which an agent can repeat
        // without limit) go through the audit limits.
        self.emit(e, record.refusal.is_none());
    }

    fn exhausted(&self, why: Exhausted) {
        let reason = exhausted_reason(&why);
        // Calls refused together stop the run once, and say so once.
        if self.stop.stop(&reason) {
            let (tokens, cost, steps) = self.budget.used();
            let e = self
                .event(
                    EventType::ResourceExhausted,
                    "model",
                    which_name(why.which),
                    "stop",
                    Outcome::Denied,
                )
                .with_detail("limit", limit_field(why.which))
                .with_detail("reason", reason.clone())
                .with_detail("usedTokens", tokens)
                .with_detail("usedCostUsd", cost as f64 / 1e6)
                .with_detail("usedSteps", steps);
            self.emit(e, true);
        }
    }
}

/// A recorded run to replay (`spawn replay`).
#[derive(Debug)]
pub struct Replay {
    calls: Vec<spawn_gateway::server::Recorded>,
    tools: Vec<serde_json::Value>,
    /// The recorded run's id.
    pub source: String,
    /// Wait for Enter before each model call after the first.
    pub step_by_step: bool,
}

impl Replay {
    /// Model calls and tool calls recorded.
    pub fn counts(&self) -> (usize, usize) {
        (self.calls.len(), self.tools.len())
    }
}

/// The run `trace_id` as recorded under `home/traces`: what ran, and its calls; what is
/// missing or unreadable is said.
pub fn load_replay(
    home: &Path,
    trace_id: &str,
) -> Result<(spawn_policy::RunSpec, Replay), RunError> {
    let bad = |m: String| RunError::Gateway(format!("replay {trace_id}: {m}"));
    if !trace_id.starts_with("tr_")
        || trace_id.len() > 64
        || !trace_id[3..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(bad("not a run id (tr_…)".into()));
    }
    let dir = home.join("traces").join(trace_id);
    let spec_text = std::fs::read(dir.join("run.json")).map_err(|e| {
        bad(format!(
            "{}: {e} (only runs with spec.model are recorded for replay)",
            dir.join("run.json").display()
        ))
    })?;
    let spec: spawn_policy::RunSpec =
        serde_json::from_slice(&spec_text).map_err(|e| bad(format!("run.json: {e}")))?;
    let read_dir = |kind: &str| -> Result<Vec<serde_json::Value>, RunError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir.join(kind)) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(bad(format!("{kind}: {e}"))),
        };
        files.sort();
        files
            .iter()
            .map(|f| {
                std::fs::read(f)
                    .map_err(|e| bad(format!("{}: {e}", f.display())))
                    .and_then(|b| {
                        serde_json::from_slice(&b).map_err(|e| bad(format!("{}: {e}", f.display())))
                    })
            })
            .collect()
    };
    let calls = read_dir("model")?
        .into_iter()
        .filter(|c| {
            c["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|c| {
            let endpoint = spawn_gateway::request::Endpoint::from_name(c["endpoint"].as_str()?)?;
            endpoint.is_model_call().then_some(())?;
            let response = match &c["response"] {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                v => v.to_string().into_bytes(),
            };
            Some(spawn_gateway::server::Recorded {
                endpoint,
                stream: c["stream"].as_bool().unwrap_or(false),
                request: c["request"].clone(),
                response,
            })
        })
        .collect::<Vec<_>>();
    if calls.is_empty() {
        return Err(bad("the recorded run made no model call to replay".into()));
    }
    let tools = read_dir("tools")?;
    Ok((
        spec,
        Replay {
            calls,
            tools,
            source: trace_id.to_owned(),
            step_by_step: false,
        },
    ))
}
