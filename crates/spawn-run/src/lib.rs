//! One run's lifecycle, the same for every front end (the CLI's local mode, `spawnd`): a
//! run is created (its identity and the audit events of its start prepared), started (its
//! network made, the sandbox built and its start on record before the command runs),
//! and finished (its report, its stop and whatever the audit limits held back, on record).
//!
//! ```no_run
//! # use spawn_run::{Run, RunRequest};
//! # fn f(spec: spawn_policy::RunSpec) -> Result<(), spawn_run::RunError> {
//! let run = Run::create(RunRequest {
//!     spec,
//!     home: "/root/.spawn".into(),
//!     audit_limits: Default::default(),
//!     run_id: None,
//!     agent_id: None,
//! })?;
//! let finished = run.execute(&mut |warning| eprintln!("spawn: warning: {warning}"));
//! # Ok(()) }
//! ```
//!
//! The sandbox relays the agent's stdio to this process's own descriptors (see
//! `spawn_sandbox::stdio`). Everything a run writes to the audit log goes through the
//! run's [`Limits`](spawn_audit::Limits).

#![forbid(unsafe_code)]

mod egress;
pub mod egress_config;
mod error;
mod fullnet;
mod gateway;

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use spawn_audit::{AuditLog, Event, EventType, Limiter, Limits, Outcome, Principal, Resource};
use spawn_policy::{NetPolicy, RunSpec, RuntimeKind, SecretGrant};
use spawn_redact::Redactor;
use spawn_sandbox::{Observer, Report, RunOptions, SecretEnv};

use egress_config::GrantedValue;
pub use error::RunError;
pub use gateway::{credential_variable, exhausted_reason, load_replay, Replay};

/// What `net: full` means, said at start and recorded in the audit log.
pub const FULL_NET_WARNING: &str = "net policy full gives the agent direct network access, \
     routed by the host: no egress proxy, no allowlist, private addresses reachable, \
     connections not audited (the host's own addresses, its loopback and the cloud \
     metadata addresses stay out of reach)";

/// What the container runtime is, said at start.
pub const CONTAINER_WARNING: &str = "the container runtime is for development: the agent \
     shares the host's kernel with only namespaces and seccomp between them; use gvisor or \
     firecracker for untrusted agents";

/// What a front end asks to run.
#[derive(Debug)]
pub struct RunRequest {
    /// The resolved policy and command.
    pub spec: RunSpec,
    /// spawn's state directory (`$SPAWN_HOME`): the audit log is `home/audit/audit.jsonl`.
    pub home: PathBuf,
    /// How much of the log the run's events may take.
    pub audit_limits: Limits,
    /// The run's id when a front end assigned it already (`spawnd`: the API's `tr_…`, so
    /// that the run's audit events carry it as their `traceId`); else a new one.
    pub run_id: Option<String>,
    /// The agent's id, likewise (`ag_…`, the API's agent).
    pub agent_id: Option<String>,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its identity is assigned and its start prepared; nothing runs yet.
    Created,
    /// It ran (or failed to) and everything about it is on record.
    Finished,
}

/// A run, created and not yet started.
#[derive(Debug)]
pub struct Run {
    spec: RunSpec,
    run_id: String,
    home: PathBuf,
    auditor: Auditor,
    limits: Limits,
    resolver: Option<Box<dyn SecretResolver>>,
    replay: Option<gateway::Replay>,
    on_ended: OnEnded,
}

/// A front end's hook into a run ([`Run::on_started`], [`Run::on_ended`]), called at most
/// once; its `Debug` says only whether it is set.
struct Hook<F: ?Sized>(Option<Box<F>>);

impl<F: ?Sized> std::fmt::Debug for Hook<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hook(set)"
        } else {
            "Hook(none)"
        })
    }
}

/// The front end's [`Run::on_started`].
type OnStarted = Hook<dyn FnOnce() + Send>;
/// The front end's [`Run::on_ended`].
type OnEnded = Hook<dyn FnOnce(&Finished) + Send>;

/// A granted secret's value as a front end's store gives it: wiped when dropped.
pub type SecretValue = zeroize::Zeroizing<Vec<u8>>;

/// Resolves a run's granted secrets at its start, from the front end's store. A run that
/// grants secrets and has none does not start.
pub trait SecretResolver: Send + std::fmt::Debug {
    /// The value of each grant, in order, or why it cannot be had (a reason that never
    /// holds a value).
    fn resolve(
        &mut self,
        namespace: &str,
        grants: &[SecretGrant],
    ) -> Vec<Result<SecretValue, String>>;
}

/// A run that has ended, however it ended.
#[derive(Debug)]
pub struct Finished {
    /// `tr_…`: the run's id, its audit events' `traceId`.
    pub run_id: String,
    /// What ran, as resolved.
    pub spec: RunSpec,
    /// The sandbox's report, or why the run could not run (its start and stop are on
    /// record either way, with the error).
    pub result: Result<Report, RunError>,
    /// Part of the run's audit trail could not be written (the run itself went on).
    pub audit_failed: Option<String>,
    /// Why the run was stopped by a limit of its own (its model budget), if it was.
    pub stopped: Option<String>,
    /// A replay: where it left the recording (`Some(None)`: it did not).
    pub replay: Option<Option<String>>,
}

impl Finished {
    /// [`RunState::Finished`].
    pub fn state(&self) -> RunState {
        RunState::Finished
    }
}

impl Run {
    /// Creates the run: its ids, and the audit events of its start (written once the
    /// sandbox exists, before the command can start).
    pub fn create(request: RunRequest) -> Result<Run, RunError> {
        let RunRequest {
            spec,
            home,
            audit_limits,
            run_id: given_run_id,
            agent_id: given_agent_id,
        } = request;
        if spec.runtime == RuntimeKind::Firecracker {
            return Err(RunError::Unsupported(
                "runtime firecracker is not supported yet by this build of spawn (and this host has no hardware virtualization); run with --runtime gvisor, native or container".into(),
            ));
        }
        audit_limits
            .validate()
            .map_err(|e| RunError::Audit(e.to_string()))?;
        let id =
            |prefix: &str| spawn_audit::new_id(prefix).map_err(|e| RunError::Audit(e.to_string()));
        let given = |v: Option<String>, prefix: &str| match v {
            Some(v) if is_id(&v, prefix) => Ok(v),
            Some(_) => Err(RunError::Unsupported(format!(
                "a given {prefix}_ id is not one (URL-safe, at most 64 characters)"
            ))),
            None => id(prefix),
        };
        let run_id = given(given_run_id, "tr")?;
        let agent_id = given(given_agent_id, "ag")?;
        let mut auditor = Auditor {
            dir: home.join("audit"),
            log: None,
            start: Vec::new(),
            principal: Principal {
                kind: "agent".into(),
                id: agent_id,
                name: Some(spec.name.clone()),
            },
            trace_id: run_id.clone(),
            failed: None,
            limiter: Limiter::new(audit_limits),
            on_started: Hook(None),
            redactor: None,
            gateway: GatewayState::None,
        };
        let argv0 = match (&spec.agent_loop, spec.command.first()) {
            (Some(_), _) => "(the built-in loop's tool runner)".to_owned(),
            (None, first) => first.cloned().unwrap_or_default(),
        };
        let start = auditor
            .event(
                EventType::AgentStart,
                "sandbox",
                spec.runtime.as_str(),
                "start",
                Outcome::Success,
            )
            .with_detail("runtime", spec.runtime.as_str())
            .with_detail("namespace", spec.namespace.clone())
            .with_detail("net", spec.net.policy.as_str())
            .with_detail(
                "envNames",
                spec.env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            )
            .with_detail(
                "mounts",
                spec.mounts
                    .iter()
                    .map(|m| m.target.display().to_string())
                    .collect::<Vec<_>>(),
            );
        let invoke = auditor
            .event(
                EventType::AgentCapabilityInvoke,
                "capability",
                "exec",
                "execute",
                Outcome::Success,
            )
            .with_detail("command", argv0)
            .with_detail("argc", spec.command.len())
            .with_detail("codeHash", command_hash(&spec.command))
            .with_detail("languages", spec.languages.clone());
        auditor.start = vec![start, invoke];
        if spec.net.policy == NetPolicy::Full {
            let full = auditor
                .event(
                    EventType::AgentCapabilityInvoke,
                    "capability",
                    "net",
                    "full-access",
                    Outcome::Success,
                )
                .with_detail("policy", "full")
                .with_detail("warning", FULL_NET_WARNING);
            auditor.start.push(full);
        }
        Ok(Run {
            spec,
            run_id,
            home,
            auditor,
            limits: audit_limits,
            resolver: None,
            replay: None,
            on_ended: Hook(None),
        })
    }

    /// Where the run's granted secrets are resolved at its start.
    pub fn set_secret_resolver(&mut self, resolver: Box<dyn SecretResolver>) {
        self.resolver = Some(resolver);
    }

    /// Makes the run a replay of a recorded one: its model calls are answered from the
    /// recording, and where the run leaves it is reported ([`Finished::replay`]).
    pub fn set_replay(&mut self, replay: gateway::Replay) {
        self.replay = Some(replay);
    }

    /// `tr_…`.
    pub fn id(&self) -> &str {
        &self.run_id
    }

    /// [`RunState::Created`].
    pub fn state(&self) -> RunState {
        RunState::Created
    }

    /// The resolved policy and command.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Has `f` called once the sandbox exists and its command is about to start. From
    /// then on the front end may start threads of its own (the native runtime needs a
    /// single-threaded process only until its sandbox exists): work for after the run can
    /// be begun there, while the run goes on. Never called for a run whose sandbox was
    /// not made.
    pub fn on_started(&mut self, f: impl FnOnce() + Send + 'static) {
        self.auditor.on_started = Hook(Some(Box::new(f)));
    }

    /// Has `f` called with the run's end as [`Run::execute`] returns it, but for
    /// [`Finished::audit_failed`] (always `None` there), while the run's last audit events
    /// are made durable: the front end's record of the end can be written meanwhile.
    /// Called for every run, on the thread that executes it.
    pub fn on_ended(&mut self, f: impl FnOnce(&Finished) + Send + 'static) {
        self.on_ended = Hook(Some(Box::new(f)));
    }

    /// What the run's user must be told before it starts (its runtime or network is
    /// weaker than the default).
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.spec.runtime == RuntimeKind::Container {
            w.push(CONTAINER_WARNING);
        }
        if self.spec.net.policy == NetPolicy::Full {
            w.push(FULL_NET_WARNING);
        }
        w
    }

    /// Runs it to the end: its network, its sandbox, its audit. Blocks until the run is
    /// over; `warn` hears what goes wrong without stopping the run.
    pub fn execute(self, warn: &mut dyn FnMut(&str)) -> Finished {
        let Run {
            spec,
            run_id,
            home,
            mut auditor,
            limits,
            mut resolver,
            mut replay,
            on_ended,
        } = self;
        let replaying = replay.is_some();
        // The network (and the proxy's account of it) lasts until the run's stop is on
        // record, as it did for the CLI.
        let mut options = None;
        let mut stop = None;
        let secret_env = resolve_secrets(&spec, &mut resolver, &mut auditor).and_then(
            |(secret_env, mut granted)| {
                // A replay answers from the recording: no provider, no credential.
                let credential = if replaying {
                    None
                } else {
                    model_credential(&spec, &mut resolver, &mut auditor)?
                };
                if let Some(c) = &credential {
                    // Never given to the agent; redacted wherever it might show.
                    granted.push(GrantedValue {
                        name: "MODEL_CREDENTIAL".into(),
                        value: zeroize::Zeroizing::new(c.as_bytes().to_vec()),
                    });
                }
                Ok((secret_env, granted, credential))
            },
        );
        drop(resolver);
        let result = secret_env.and_then(|(mut secret_env, granted, credential)| {
            let redactor = redactor_of(&granted)?;
            // From here on, every event of the run's, and the output, is redacted.
            auditor.redactor.clone_from(&redactor);
            let network = network(&spec, &run_id, &auditor, limits, granted, warn)?;
            // The model gateway, listening on the host end of the run's link; served once
            // the sandbox exists.
            let mut run_spec = std::borrow::Cow::Borrowed(&spec);
            if let Some(model) = &spec.model {
                let address = network
                    .as_ref()
                    .and_then(|n| n.gateway())
                    .ok_or_else(|| RunError::Gateway("the run's link has no gateway address".into()))?;
                let prices = spawn_gateway::prices::Prices::load(&home).map_err(RunError::Gateway)?;
                let answers = match replay.take() {
                    Some(r) => gateway::Answers::Replay(r),
                    None => gateway::Answers::Provider(credential),
                };
                let prepared = gateway::prepare(
                    &spec,
                    model,
                    answers,
                    address,
                    network.as_ref().and_then(|n| n.sandbox_address()),
                    gateway::Recording {
                        audit_dir: auditor.dir.clone(),
                        trace_dir: home.join("traces"),
                        principal: auditor.principal.clone(),
                        trace_id: run_id.clone(),
                        limits,
                        redactor: redactor.clone(),
                    },
                    &prices,
                )?;
                let mut with_env = spec.clone();
                if spec.agent_loop.is_some() {
                    with_env.command = gateway::tool_runner_command();
                }
                with_env.env.retain(|(k, _)| !prepared.env.iter().any(|(n, _)| n == k));
                with_env.env.extend(prepared.env.iter().cloned());
                run_spec = std::borrow::Cow::Owned(with_env);
                if let Some(s) = secret_env
                    .iter()
                    .find(|s| prepared.secret_env.iter().any(|p| p.name() == s.name()))
                {
                    return Err(RunError::Gateway(format!(
                        "secret {} would be the model's real key in the sandbox: with spec.model the agent gets a placeholder in that variable, and the gateway holds the key (give it as spec.model.credential)",
                        s.name()
                    )));
                }
                let mut prepared = prepared;
                secret_env.append(&mut prepared.secret_env);
                stop = Some(prepared.stop.clone());
                auditor.gateway = GatewayState::Prepared(Box::new(prepared));
            }
            let options = options.insert(RunOptions {
                run_id: run_id.clone(),
                network: network.map(|n| n as Arc<dyn spawn_sandbox::Network>),
                secret_env: Arc::new(secret_env),
                redactor,
                stop: stop.clone(),
                no_stdin: spec.agent_loop.is_some(),
            });
            let spec = run_spec.as_ref();
            match spec.runtime {
                RuntimeKind::Container => {
                    spawn_sandbox::container::run(spec, options, &mut auditor)
                }
                RuntimeKind::Gvisor => {
                    spawn_sandbox::container::run_gvisor(spec, options, &mut auditor)
                }
                _ => spawn_sandbox::run(spec, options, &mut auditor),
            }
            .map_err(RunError::from)
        });
        // The gateway stops serving (calls in flight are cut off) before the run's end is
        // recorded; what it could not record is the run's audit failure.
        let (failed, diverged) = std::mem::take(&mut auditor.gateway).finish();
        if let Some(failed) = failed {
            auditor.failed.get_or_insert(failed);
        }
        let stopped = stop.and_then(|s| s.reason());
        // An error's text may quote what the agent wrote or named.
        let result = match &auditor.redactor {
            Some(r) => result.map_err(|e| redacted_error(e, r)),
            None => result,
        };
        match &result {
            Ok(report) => {
                auditor.finish_limits();
                audit_stop(&mut auditor, spec.runtime, report);
            }
            Err(e) => {
                // If the sandbox never came to exist, its start was not recorded: record
                // the attempt and its failure.
                if let Some(start) = auditor.start.first().cloned() {
                    let start = Event {
                        outcome: Outcome::Error,
                        ..start
                    }
                    .with_detail("error", e.to_string());
                    auditor.start.clear();
                    auditor.emit(start);
                }
                auditor.finish_limits();
                let stop = auditor
                    .event(
                        EventType::AgentStop,
                        "sandbox",
                        spec.runtime.as_str(),
                        "stop",
                        Outcome::Error,
                    )
                    .with_detail("error", e.to_string());
                auditor.emit(stop);
            }
        }
        drop(options);
        let mut finished = Finished {
            run_id,
            spec,
            result,
            audit_failed: None,
            stopped,
            replay: replaying.then_some(diverged),
        };
        if let Some(f) = on_ended.0 {
            f(&finished);
        }
        // The run's last events are durable before its end is reported.
        auditor.sync();
        finished.audit_failed = auditor.failed;
        finished
    }
}

/// The granted secrets' values, from `resolver`, each access an `agent.secret.access`
/// event (never the value): written with the run's start when all were had; written at
/// once, and the run refused, when one was not.
/// Also the values by their variables' names, to be redacted (copies, wiped when dropped).
fn resolve_secrets(
    spec: &RunSpec,
    resolver: &mut Option<Box<dyn SecretResolver>>,
    auditor: &mut Auditor,
) -> Result<(Vec<SecretEnv>, Vec<GrantedValue>), RunError> {
    if spec.secrets.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let Some(resolver) = resolver.as_mut() else {
        return Err(RunError::Secrets(
            "this run grants secrets, and what started it has no way to resolve them".into(),
        ));
    };
    let mut values = resolver.resolve(&spec.namespace, &spec.secrets).into_iter();
    let mut out = Vec::with_capacity(spec.secrets.len());
    let mut events = Vec::with_capacity(spec.secrets.len());
    let mut failed = None;
    let mut granted = Vec::new();
    for grant in &spec.secrets {
        let name = secret_name(&grant.source);
        let name = name.as_str();
        let got = match values.next() {
            Some(Ok(v)) => {
                granted.push(GrantedValue {
                    name: grant.env.clone(),
                    value: v.clone(),
                });
                match grant.delivery {
                    spawn_policy::SecretDelivery::Env => SecretEnv::new(&grant.env, v),
                    spawn_policy::SecretDelivery::File => SecretEnv::file(&grant.env, v),
                }
                .map_err(|e| e.to_string())
            }
            Some(Err(e)) => Err(e),
            None => Err("no value was given for it".into()),
        };
        let outcome = if got.is_ok() {
            Outcome::Success
        } else {
            Outcome::Error
        };
        let mut event = auditor
            .event(
                EventType::AgentSecretAccess,
                "secret",
                name,
                "resolve",
                outcome,
            )
            .with_detail("env", grant.env.clone())
            .with_detail("source", grant.source.to_string())
            .with_detail("namespace", spec.namespace.clone())
            .with_detail(
                "as",
                match grant.delivery {
                    spawn_policy::SecretDelivery::Env => "env",
                    spawn_policy::SecretDelivery::File => "file",
                },
            );
        if !grant.hosts.is_empty() {
            event = event.with_detail("hosts", grant.hosts.clone());
        }
        match got {
            Ok(s) => out.push(s),
            Err(e) => {
                event = event.with_detail("error", e.clone());
                failed.get_or_insert(format!(
                    "secret {} ({}) could not be resolved: {e}",
                    grant.env, grant.source
                ));
            }
        }
        events.push(event);
    }
    match failed {
        None => {
            auditor.start.extend(events);
            Ok((out, granted))
        }
        Some(reason) => {
            for e in events {
                auditor.emit(e);
            }
            Err(RunError::Secrets(reason))
        }
    }
}

/// The model's real credential (`spec.model`): from the front end's store or Vault
/// (`spec.model.credential`, an `agent.secret.access` event), else the provider's usual
/// variable in spawn's own environment. Never given to the sandbox. `None` for the scripted
/// provider or a run without a model.
fn model_credential(
    spec: &RunSpec,
    resolver: &mut Option<Box<dyn SecretResolver>>,
    auditor: &mut Auditor,
) -> Result<Option<zeroize::Zeroizing<String>>, RunError> {
    let Some(model) = &spec.model else {
        return Ok(None);
    };
    if model.provider == spawn_policy::ModelProvider::Scripted {
        return Ok(None);
    }
    let text = |v: &[u8]| -> Result<zeroize::Zeroizing<String>, String> {
        let s = std::str::from_utf8(v).map_err(|_| "it is not UTF-8 text".to_owned())?;
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("it is empty or holds spaces or control characters".into());
        }
        Ok(zeroize::Zeroizing::new(s.to_owned()))
    };
    let Some(source) = &model.credential else {
        let var = gateway::credential_variable(model.provider);
        return match std::env::var_os(var) {
            Some(v) => text(v.as_encoded_bytes()).map(Some).map_err(|e| {
                RunError::Gateway(format!("the model's credential in {var}: {e}"))
            }),
            None => Err(RunError::Gateway(format!(
                "no credential for the model: set {var} in spawn's environment, or give spec.model.credential (store://NAME or vault://PATH#KEY)"
            ))),
        };
    };
    let Some(resolver) = resolver.as_mut() else {
        return Err(RunError::Secrets(
            "spec.model.credential names a secret, and what started this run has no way to resolve it".into(),
        ));
    };
    let grant = SecretGrant {
        env: "spec.model.credential".into(),
        source: source.clone(),
        delivery: spawn_policy::SecretDelivery::Env,
        hosts: Vec::new(),
    };
    let got = resolver
        .resolve(&spec.namespace, std::slice::from_ref(&grant))
        .into_iter()
        .next()
        .unwrap_or_else(|| Err("no value was given for it".into()))
        .and_then(|v| text(&v));
    let name = secret_name(source);
    let mut event = auditor
        .event(
            EventType::AgentSecretAccess,
            "secret",
            &name,
            "resolve",
            if got.is_ok() {
                Outcome::Success
            } else {
                Outcome::Error
            },
        )
        .with_detail("source", source.to_string())
        .with_detail("namespace", spec.namespace.clone())
        .with_detail("for", "model gateway (never given to the agent)");
    match got {
        Ok(v) => {
            auditor.start.push(event);
            Ok(Some(v))
        }
        Err(e) => {
            event = event.with_detail("error", e.clone());
            auditor.emit(event);
            Err(RunError::Secrets(format!(
                "the model's credential ({source}) could not be resolved: {e}"
            )))
        }
    }
}

/// A secret's name in its `agent.secret.access` event: the store's name, or Vault's
/// `PATH#KEY`.
fn secret_name(source: &spawn_policy::SecretSource) -> String {
    match source {
        spawn_policy::SecretSource::Store(name) => name.clone(),
        spawn_policy::SecretSource::Vault { path, key } => format!("{path}#{key}"),
    }
}

/// `e`, or its text redacted when that quotes a granted value.
fn redacted_error(e: RunError, r: &Redactor) -> RunError {
    let text = e.to_string();
    let redacted = r.redact_str(&text);
    if redacted == text {
        e
    } else {
        RunError::Redacted(redacted)
    }
}

/// The redactor of the granted values (`None` when none is granted); a run whose secrets
/// cannot be redacted does not start.
fn redactor_of(granted: &[GrantedValue]) -> Result<Option<Arc<Redactor>>, RunError> {
    if granted.is_empty() {
        return Ok(None);
    }
    Redactor::new(
        granted
            .iter()
            .map(|g| (g.name.as_str(), g.value.as_slice())),
    )
    .map(|r| Some(Arc::new(r)))
    .map_err(|e| RunError::Secrets(e.to_string()))
}

/// The run's own network namespace and link, for as long as the run lasts: restricted /
/// egress-only through the egress proxy, full routed by the host. A run whose network
/// cannot be made does not run (never on the host's).
fn network(
    spec: &RunSpec,
    run_id: &str,
    auditor: &Auditor,
    limits: Limits,
    granted: Vec<GrantedValue>,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<Arc<dyn RunNetwork>>, RunError> {
    let gateway = spec.model.is_some();
    Ok(match spec.net.policy {
        NetPolicy::None if gateway => Some(Arc::new(fullnet::DirectNetwork::gateway_only(run_id)?)),
        NetPolicy::None => None,
        NetPolicy::Full => Some(Arc::new(fullnet::DirectNetwork::start(
            run_id, warn, gateway,
        )?)),
        NetPolicy::Restricted | NetPolicy::EgressOnly => {
            Some(Arc::new(egress::EgressNetwork::start(
                &spec.net,
                run_id,
                auditor.dir.clone(),
                auditor.principal.clone(),
                limits,
                granted,
                gateway,
            )?))
        }
    })
}

/// A run's network as the run sees it: the sandbox's, and the sandbox end's address (the
/// only peer the gateway serves).
pub(crate) trait RunNetwork: spawn_sandbox::Network {
    fn sandbox_address(&self) -> Option<std::net::IpAddr>;
}

/// The run's gateway through its life.
#[derive(Default)]
enum GatewayState {
    #[default]
    None,
    /// Listening; served once the sandbox exists.
    Prepared(Box<gateway::Prepared>),
    Serving(gateway::Serving),
    /// It could not be served: the run was stopped.
    Failed(String),
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GatewayState::None => "None",
            GatewayState::Prepared(_) => "Prepared",
            GatewayState::Serving(_) => "Serving",
            GatewayState::Failed(_) => "Failed",
        })
    }
}

impl GatewayState {
    /// Stops serving; what could not be recorded, and where a replay diverged.
    fn finish(self) -> (Option<String>, Option<String>) {
        match self {
            GatewayState::None | GatewayState::Prepared(_) => (None, None),
            GatewayState::Serving(s) => s.finish(),
            GatewayState::Failed(e) => (Some(e), None),
        }
    }
}

/// Writes audit events as the run goes; a failed append is reported, never silent.
///
/// The run's own events (start, exec, stop, resources exhausted: one each) are always
/// written; what the agent can repeat (blocked system calls) goes through the limiter.
#[derive(Debug)]
struct Auditor {
    /// `$SPAWN_HOME/audit`, opened when the first events are written.
    dir: PathBuf,
    log: Option<AuditLog>,
    principal: Principal,
    trace_id: String,
    /// `agent.start` and the exec invocation, written once the sandbox exists.
    start: Vec<Event>,
    failed: Option<String>,
    limiter: Limiter,
    on_started: OnStarted,
    /// The granted secrets, redacted from every event written once they are resolved.
    redactor: Option<Arc<Redactor>>,
    /// The run's model gateway.
    gateway: GatewayState,
}

impl Auditor {
    /// Writes one of the run's own events (never held back).
    fn emit(&mut self, event: Event) {
        if let Err(e) = self.try_emit_all(vec![event]) {
            self.failed.get_or_insert(e);
        }
    }

    /// Writes an event the agent can cause again and again, through the limits.
    fn emit_limited(&mut self, event: Event) {
        let mut out = Vec::new();
        self.limiter.admit(self.traced(event), &mut out);
        if let Err(e) = self.append(out) {
            self.failed.get_or_insert(e);
        }
    }

    /// The run is ending: the summaries of whatever the limits held back.
    fn finish_limits(&mut self) {
        let mut out = Vec::new();
        self.limiter.finish(&mut out);
        if let Err(e) = self.append(out) {
            self.failed.get_or_insert(e);
        }
    }

    fn traced(&self, e: Event) -> Event {
        Event {
            trace_id: Some(self.trace_id.clone()),
            ..e
        }
    }

    /// Appends the run's own events as one batch (one lock, one write), charged to the
    /// budget but never held back.
    fn try_emit_all(&mut self, events: Vec<Event>) -> Result<(), String> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let e = self.traced(e);
            self.limiter.admit_always(e, &mut out);
        }
        self.append(out)
    }

    /// Makes what was appended durable (`fdatasync`); a failure is the run's audit failure.
    fn sync(&mut self) {
        if let Some(log) = &mut self.log {
            if let Err(e) = log.sync() {
                self.failed.get_or_insert(with_source(&e));
            }
        }
    }

    fn append(&mut self, mut events: Vec<Event>) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(r) = &self.redactor {
            events = events.into_iter().map(|e| e.redacted(r)).collect();
        }
        let log = match &mut self.log {
            Some(log) => log,
            None => self.log.insert(AuditLog::open(&self.dir).map_err(|e| {
                format!(
                    "cannot open the audit log under {}: {e}",
                    self.dir.display()
                )
            })?),
        };
        log.append(&events).map(drop).map_err(|e| with_source(&e))
    }

    fn event(&self, t: EventType, kind: &str, name: &str, action: &str, outcome: Outcome) -> Event {
        Event::new(
            t,
            self.principal.clone(),
            Resource {
                kind: kind.into(),
                name: name.into(),
            },
            action,
            outcome,
        )
    }
}

impl Observer for Auditor {
    /// Nothing runs unless its start is on record, durably (no audit, no action).
    fn created(&mut self) -> Result<(), String> {
        let start = std::mem::take(&mut self.start);
        self.try_emit_all(start)?;
        match &mut self.log {
            Some(log) => log.sync().map_err(|e| with_source(&e)),
            None => Ok(()),
        }
    }

    fn started(&mut self, _host_pid: i32, _host_uid: u32) {
        // The sandbox exists: threads are allowed from here on.
        if let GatewayState::Prepared(prepared) = std::mem::take(&mut self.gateway) {
            let stop = prepared.stop.clone();
            self.gateway = match prepared.serve() {
                Ok(serving) => GatewayState::Serving(serving),
                Err(e) => {
                    let why = format!("the run's model gateway could not be served: {e}");
                    let _ = stop.stop(&why);
                    GatewayState::Failed(why)
                }
            };
        }
        if let Some(f) = self.on_started.0.take() {
            f();
        }
    }

    fn denied(&mut self, syscall: &str, first: bool) {
        // One event per kind of blocked call; the totals go into agent.stop.
        if first {
            let e = self
                .event(
                    EventType::AgentCapabilityDenied,
                    "syscall",
                    syscall,
                    "syscall",
                    Outcome::Denied,
                )
                .with_detail("syscall", syscall)
                .with_detail("reason", "not allowed by the sandbox's seccomp policy");
            self.emit_limited(e);
            // A call that only a way out of the sandbox needs is also said as such, for
            // whoever alerts on escapes (SPEC §7).
            if let Some(what) = escape_only(syscall) {
                let e = self
                    .event(
                        EventType::SandboxEscapeAttempt,
                        "syscall",
                        syscall,
                        "syscall",
                        Outcome::Denied,
                    )
                    .with_detail("syscall", syscall)
                    .with_detail("technique", what);
                self.emit_limited(e);
            }
        }
    }
}

/// The system calls an agent has no use for but to leave its sandbox or reach past it,
/// and what each is for: a denied one is also a `sandbox.escape.attempt`.
fn escape_only(syscall: &str) -> Option<&'static str> {
    Some(match syscall {
        "mount" | "umount2" | "pivot_root" | "chroot" | "move_mount" | "open_tree" | "fsopen"
        | "fsconfig" | "fsmount" | "fspick" | "mount_setattr" => "change the mount table",
        "unshare" | "setns" => "enter or make namespaces",
        "ptrace" | "process_vm_readv" | "process_vm_writev" | "pidfd_getfd" => {
            "reach into another process"
        }
        "init_module" | "finit_module" | "delete_module" | "kexec_load" | "kexec_file_load" => {
            "load kernel code"
        }
        "bpf" | "perf_event_open" | "userfaultfd" => "a kernel attack surface",
        "keyctl" | "add_key" | "request_key" => "the kernel keyring",
        "open_by_handle_at" | "name_to_handle_at" => "open files by handle, past the mounts",
        "iopl" | "ioperm" => "raw hardware I/O",
        "reboot" | "swapon" | "swapoff" => "the host itself",
        _ => return None,
    })
}

/// An audit error and what caused it ("cannot write audit log …: No space left on
/// device").
fn with_source(e: &spawn_audit::AuditError) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn command_hash(command: &[String]) -> String {
    let mut h = Sha256::new();
    for arg in command {
        h.update((arg.len() as u64).to_le_bytes());
        h.update(arg.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn audit_stop(auditor: &mut Auditor, runtime: RuntimeKind, report: &Report) {
    let outcome = if report.kill_reason.is_some() || report.exec_failure.is_some() {
        Outcome::Error
    } else {
        Outcome::Success
    };
    let mut stop = auditor
        .event(
            EventType::AgentStop,
            "sandbox",
            runtime.as_str(),
            "stop",
            outcome,
        )
        .with_detail("exitCode", report.exit_code)
        .with_detail("durationMs", report.duration.as_secs_f64() * 1000.0)
        .with_detail("blockedSyscalls", report.blocked_syscalls)
        .with_detail("hostUid", report.host_uid);
    if let Some(sig) = report.signal {
        stop = stop.with_detail("signal", sig);
    }
    if let Some(peak) = report.peak_memory_bytes {
        stop = stop.with_detail("peakMemoryBytes", peak);
    }
    if let Some(reason) = report.kill_reason {
        stop = stop.with_detail("killReason", reason.as_str());
    }
    if report.pids_limit_hits > 0 {
        stop = stop.with_detail("pidsLimitHits", report.pids_limit_hits);
    }
    if let Some(l) = report.landlock {
        stop = stop.with_detail("landlock", l.as_str());
    }
    if let Some(e) = &report.output_error {
        stop = stop.with_detail("outputError", e.as_str());
    }
    auditor.emit(stop);
    if report.pids_limit_hits > 0 {
        let e = auditor
            .event(
                EventType::ResourceExhausted,
                "sandbox",
                "pids",
                "fork",
                Outcome::Denied,
            )
            .with_detail("reason", "pids limit reached")
            .with_detail("refusedForks", report.pids_limit_hits);
        auditor.emit(e);
    }
    if let Some(
        reason @ (spawn_sandbox::KillReason::Timeout | spawn_sandbox::KillReason::OutOfMemory),
    ) = report.kill_reason
    {
        let e = auditor
            .event(
                EventType::ResourceExhausted,
                "sandbox",
                reason.as_str(),
                "kill",
                Outcome::Denied,
            )
            .with_detail("reason", reason.as_str());
        auditor.emit(e);
    }
}

/// Whether `v` is an id of `prefix`: `prefix_` and 1–60 lowercase letters and digits.
fn is_id(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| {
            !r.is_empty()
                && r.len() <= 60
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(runtime: RuntimeKind, home: &std::path::Path) -> RunRequest {
        RunRequest {
            spec: RunSpec::bare(runtime, vec!["true".into()]),
            home: home.to_owned(),
            audit_limits: Limits::default(),
            run_id: None,
            agent_id: None,
        }
    }

    /// An error that quotes a granted value (or its base64) is said redacted; one that
    /// does not is kept as it was.
    #[test]
    fn errors_that_quote_a_value_are_redacted() {
        let r = Redactor::new([("TOKEN", b"tok-e7Q2-zz".as_slice())]).unwrap();
        let e = redacted_error(
            RunError::Network("cannot reach tok-e7Q2-zz.example".into()),
            &r,
        );
        assert_eq!(e.to_string(), "cannot reach [REDACTED:TOKEN].example");
        let e = redacted_error(RunError::Unsupported("dG9rLWU3UTItenp=".into()), &r);
        assert!(!e.to_string().contains("dG9rLWU3UTItenp"), "{e}");
        let e = redacted_error(RunError::Audit("no value here".into()), &r);
        assert!(matches!(e, RunError::Audit(_)));
    }

    /// The front end hears the run's end once, as `execute` returns it, before the audit
    /// trail is made durable (so without its verdict on that trail).
    #[test]
    fn the_end_is_handed_over_before_the_audit_trail_is_made_durable() {
        let home = tempfile::tempdir().unwrap();
        // The audit log cannot be opened (its directory is a file): the trail fails.
        std::fs::write(home.path().join("audit"), b"").unwrap();
        let mut req = request(RuntimeKind::Native, home.path());
        // A granted secret and no resolver: the run fails before its sandbox.
        req.spec.secrets = vec![spawn_policy::SecretGrant {
            env: "TOKEN".into(),
            source: spawn_policy::SecretSource::Store("token".into()),
            delivery: spawn_policy::SecretDelivery::Env,
            hosts: Vec::new(),
        }];
        let mut run = Run::create(req).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard = std::sync::Arc::clone(&seen);
        run.on_ended(move |f| {
            heard.lock().unwrap().push((
                f.run_id.clone(),
                f.result.as_ref().err().map(ToString::to_string),
                f.audit_failed.clone(),
            ));
        });
        let finished = run.execute(&mut |_| {});
        let error = finished.result.as_ref().err().map(ToString::to_string);
        assert!(error.is_some(), "the run was meant to fail");
        assert!(
            finished.audit_failed.is_some(),
            "the trail was meant to fail"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(finished.run_id.clone(), error, None)]
        );
    }

    #[test]
    fn given_ids_are_kept_and_foreign_ones_refused() {
        let home = tempfile::tempdir().unwrap();
        let mut req = request(RuntimeKind::Native, home.path());
        req.run_id = Some("tr_abc123".into());
        req.agent_id = Some("ag_xyz".into());
        let run = Run::create(req).unwrap();
        assert_eq!(run.id(), "tr_abc123");
        for (run_id, agent_id) in [
            (Some("tr_"), None),
            (Some("ag_abc"), None),
            (Some("tr_ABC"), None),
            (Some("tr_a\nb"), None),
            (None, Some("tr_abc")),
            (None, Some("ag_../x")),
        ] {
            let mut req = request(RuntimeKind::Native, home.path());
            req.run_id = run_id.map(Into::into);
            req.agent_id = agent_id.map(Into::into);
            assert!(Run::create(req).is_err(), "{run_id:?} {agent_id:?}");
        }
    }

    #[test]
    fn a_created_run_has_its_ids_and_writes_nothing_yet() {
        let home = tempfile::tempdir().unwrap();
        let run = Run::create(request(RuntimeKind::Native, home.path())).unwrap();
        assert!(
            run.id().starts_with("tr_") && run.id().len() == 29,
            "{}",
            run.id()
        );
        assert!(run.auditor.principal.id.starts_with("ag_"));
        assert_eq!(run.state(), RunState::Created);
        assert!(run.warnings().is_empty());
        // Its start is written once the sandbox exists, not before.
        assert!(!home.path().join("audit").exists());
    }

    #[test]
    fn weaker_runtimes_and_networks_are_said_before_the_run() {
        let home = tempfile::tempdir().unwrap();
        let run = Run::create(request(RuntimeKind::Container, home.path())).unwrap();
        assert_eq!(run.warnings(), vec![CONTAINER_WARNING]);
        let mut req = request(RuntimeKind::Native, home.path());
        req.spec.net.policy = NetPolicy::Full;
        let run = Run::create(req).unwrap();
        assert_eq!(run.warnings(), vec![FULL_NET_WARNING]);
        // And on record with the run's start.
        assert!(run.auditor.start.iter().any(|e| e.action == "full-access"));
    }

    #[test]
    fn what_cannot_run_here_is_refused_at_creation() {
        let home = tempfile::tempdir().unwrap();
        let err = Run::create(request(RuntimeKind::Firecracker, home.path())).unwrap_err();
        assert!(matches!(err, RunError::Unsupported(_)), "{err}");
        let mut req = request(RuntimeKind::Native, home.path());
        // Limits out of bounds (a window of 1 ms) never reach a run.
        req.audit_limits.window_ms = 1;
        let err = Run::create(req).unwrap_err();
        assert!(matches!(err, RunError::Audit(_)), "{err}");
    }
}
