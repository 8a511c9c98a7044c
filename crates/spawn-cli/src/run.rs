//! `spawn run`: resolve the policy, run the sandbox, audit it, report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use spawn_audit::{AuditLog, Event, EventType, Limiter, Limits, Outcome, Principal, Resource};
use spawn_policy::{NetPolicy, Overrides, RunSpec, RuntimeKind};
use spawn_sandbox::{native, ExecFailure, Observer, Report, RunOptions};

use crate::{RunArgs, EXIT_SPAWN_FAILED};

/// What `net: full` means, said at start and recorded in the audit log.
const FULL_NET_WARNING: &str = "net policy full gives the agent direct network access, \
     routed by the host: no egress proxy, no allowlist, private addresses reachable, \
     connections not audited (the host's own addresses, its loopback and the cloud \
     metadata addresses stay out of reach)";

pub(crate) fn main(args: &RunArgs, home: &Path) -> ExitCode {
    match run(args, home) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spawn: {e:#}");
            ExitCode::from(EXIT_SPAWN_FAILED)
        }
    }
}

fn parse_kind<T: std::str::FromStr>(value: &Option<String>) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    value
        .as_deref()
        .map(|v| v.parse::<T>().map_err(|e| anyhow::anyhow!("{e}")))
        .transpose()
}

/// What of spawn's own is never a mount source: its state (`$SPAWN_HOME`, with the audit
/// log), the runtimes' state and bundles (`/dev/shm/spawn`), and its binaries.
fn protected_paths(home: &Path) -> Vec<PathBuf> {
    let real = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let mut paths = vec![
        real(std::path::absolute(home).unwrap_or_else(|_| home.to_owned())),
        real(PathBuf::from(spawn_sandbox::container::BASE)),
    ];
    if let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) {
        for sibling in ["spawn-init", "spawn-egress"] {
            paths.push(real(exe.with_file_name(sibling)));
        }
        paths.push(exe);
    }
    paths
}

fn resolve(args: &RunArgs, home: &Path) -> anyhow::Result<RunSpec> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let agent = args
        .file
        .as_deref()
        .map(spawn_policy::load_agent)
        .transpose()?;
    let base_dir: PathBuf = match &args.file {
        Some(f) => f
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    cwd.clone()
                } else {
                    cwd.join(p)
                }
            })
            .unwrap_or_else(|| cwd.clone()),
        None => cwd.clone(),
    };
    let overrides = Overrides {
        runtime: parse_kind::<RuntimeKind>(&args.runtime)?,
        net: parse_kind::<NetPolicy>(&args.net)?,
        allow: args.allow.clone(),
        deny: args.deny.clone(),
        memory: args.memory.clone(),
        pids: args.pids,
        cpu: args.cpu.clone(),
        timeout: args.timeout.clone(),
        mounts: args.mounts.clone(),
        secrets: args.secrets.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        command: args.command.clone(),
    };
    Ok(spawn_policy::resolve(
        agent.as_ref(),
        &base_dir,
        &cwd,
        &overrides,
        &protected_paths(home),
    )?)
}

/// Where the operator sets the audit limits of every run (`spawn_audit::Limits` syntax:
/// `window=5s,per-key=5,per-window=100,keys=64,events=10000,bytes=8MiB`, any subset).
const LIMITS_ENV: &str = "SPAWN_AUDIT_LIMITS";

/// The audit limits of this run: the defaults, or `SPAWN_AUDIT_LIMITS`; a value that does
/// not parse or is out of bounds stops the run (never runs without limits).
fn audit_limits() -> anyhow::Result<Limits> {
    match std::env::var(LIMITS_ENV) {
        Ok(text) => text
            .parse::<Limits>()
            .with_context(|| format!("{LIMITS_ENV} is not valid")),
        Err(std::env::VarError::NotPresent) => Ok(Limits::default()),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{LIMITS_ENV} is not UTF-8"),
    }
}

/// Writes audit events as the run goes; a failed append is reported, never silent.
///
/// The run's own events (start, exec, stop, resources exhausted: one each) are always
/// written; what the agent can repeat (blocked system calls) goes through the limiter.
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

    fn append(&mut self, events: Vec<Event>) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
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
        log.append(&events).map(drop).map_err(|e| e.to_string())
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
    /// Nothing runs unless its start is on record.
    fn created(&mut self) -> Result<(), String> {
        let start = std::mem::take(&mut self.start);
        self.try_emit_all(start)
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
        }
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

fn run(args: &RunArgs, home: &Path) -> anyhow::Result<ExitCode> {
    let spec = resolve(args, home)?;
    match spec.runtime {
        RuntimeKind::Native => {}
        RuntimeKind::Container => eprintln!(
            "spawn: warning: the container runtime is for development: the agent shares the host's kernel \
             with only namespaces and seccomp between them; use gvisor or firecracker for untrusted agents"
        ),
        RuntimeKind::Gvisor => {}
        RuntimeKind::Firecracker => bail!(
            "runtime firecracker is not supported yet by this build of spawn (and this host has no hardware virtualization); run with --runtime gvisor, native or container"
        ),
    }
    let limits = audit_limits()?;
    let run_id = spawn_audit::new_id("tr")?;
    let agent_id = spawn_audit::new_id("ag")?;
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
        limiter: Limiter::new(limits),
    };
    let argv0 = spec.command.first().cloned().unwrap_or_default();
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
        .with_detail("command", argv0.clone())
        .with_detail("argc", spec.command.len())
        .with_detail("codeHash", command_hash(&spec.command))
        .with_detail("languages", spec.languages.clone());
    // Written by `created` while the sandbox is built; the command cannot start before.
    auditor.start = vec![start, invoke];
    if spec.net.policy == NetPolicy::Full {
        eprintln!("spawn: warning: {FULL_NET_WARNING}");
        auditor.start.push(
            auditor
                .event(
                    EventType::AgentCapabilityInvoke,
                    "capability",
                    "net",
                    "full-access",
                    Outcome::Success,
                )
                .with_detail("policy", "full")
                .with_detail("warning", FULL_NET_WARNING),
        );
    }

    // The run's own network namespace and link, for as long as the run lasts (dropped
    // after it): restricted / egress-only through the egress proxy, full routed by the
    // host. A run whose network cannot be made does not run (never on the host's).
    let network: Option<Arc<dyn spawn_sandbox::Network>> = match spec.net.policy {
        NetPolicy::None => None,
        NetPolicy::Full => Some(Arc::new(
            crate::fullnet::FullNetwork::start(&run_id).map_err(|e| anyhow::anyhow!("{e:#}"))?,
        )),
        NetPolicy::Restricted | NetPolicy::EgressOnly => Some(Arc::new(
            crate::egress::EgressNetwork::start(
                &spec.net,
                &run_id,
                auditor.dir.clone(),
                auditor.principal.clone(),
                limits,
            )
            .map_err(|e| anyhow::anyhow!("{e:#}"))?,
        )),
    };
    let options = RunOptions {
        run_id: run_id.clone(),
        network,
    };
    let result = match spec.runtime {
        RuntimeKind::Container => spawn_sandbox::container::run(&spec, &options, &mut auditor),
        RuntimeKind::Gvisor => spawn_sandbox::container::run_gvisor(&spec, &options, &mut auditor),
        _ => spawn_sandbox::run(&spec, &options, &mut auditor),
    };
    let code = match &result {
        Ok(report) => {
            auditor.finish_limits();
            audit_stop(&mut auditor, spec.runtime, report);
            report_human(&spec, report, &argv0);
            if args.json {
                println!("{}", json_result(&run_id, &spec, Ok(report)));
            }
            u8::try_from(report.exit_code).unwrap_or(EXIT_SPAWN_FAILED)
        }
        Err(e) => {
            // If the sandbox never came to exist, its start was not recorded: record the
            // attempt and its failure.
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
            if args.json {
                println!("{}", json_result(&run_id, &spec, Err(e)));
            }
            eprintln!("spawn: {e}");
            EXIT_SPAWN_FAILED
        }
    };
    if let Some(f) = auditor.failed {
        eprintln!("spawn: warning: part of this run's audit trail could not be written: {f}");
    }
    Ok(ExitCode::from(code))
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

fn report_human(spec: &RunSpec, report: &Report, argv0: &str) {
    match report.exec_failure {
        Some(ExecFailure::NotFound) => {
            eprintln!("spawn: {argv0}: command not found in the sandbox")
        }
        Some(ExecFailure::NotExecutable(errno)) => eprintln!(
            "spawn: {argv0}: cannot be executed in the sandbox ({})",
            std::io::Error::from_raw_os_error(errno)
        ),
        None => {}
    }
    if let Some(e) = &report.output_error {
        eprintln!("spawn: warning: part of the agent's output was lost: {e}");
    }
    match report.kill_reason {
        Some(spawn_sandbox::KillReason::Timeout) => eprintln!(
            "spawn: the run exceeded its timeout of {} and was killed",
            humantime(spec.timeout.unwrap_or(native::defaults::TIMEOUT))
        ),
        Some(spawn_sandbox::KillReason::OutOfMemory) => eprintln!(
            "spawn: the run exceeded its memory limit of {} bytes and was killed",
            spec.resources
                .memory_bytes
                .unwrap_or(native::defaults::MEMORY_BYTES)
        ),
        _ => {}
    }
}

fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}

fn json_result(
    run_id: &str,
    spec: &RunSpec,
    result: Result<&Report, &spawn_sandbox::SandboxError>,
) -> Value {
    match result {
        Ok(r) => json!({
            "runId": run_id,
            "runtime": spec.runtime.as_str(),
            "exitCode": r.exit_code,
            "signal": r.signal,
            "durationMs": r.duration.as_secs_f64() * 1000.0,
            "peakMemoryBytes": r.peak_memory_bytes,
            "blockedSyscalls": r.blocked_syscalls,
            "blockedByName": r.blocked_by_name,
            "killReason": r.kill_reason.map(|k| k.as_str()),
            "oomKills": r.oom_kills,
            "pidsLimitHits": r.pids_limit_hits,
            "landlock": r.landlock.map(|l| l.as_str()),
            "hostUid": r.host_uid,
            "execError": r.exec_failure.map(|f| match f {
                ExecFailure::NotFound => "not found".to_owned(),
                ExecFailure::NotExecutable(e) => std::io::Error::from_raw_os_error(e).to_string(),
            }),
        }),
        Err(e) => json!({
            "runId": run_id,
            "runtime": spec.runtime.as_str(),
            "exitCode": i32::from(EXIT_SPAWN_FAILED),
            "error": e.to_string(),
        }),
    }
}
