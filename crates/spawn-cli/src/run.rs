//! `spawn run`: resolve the policy, hand the run to `spawn_run`, report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use spawn_audit::Limits;
use spawn_policy::{NetPolicy, Overrides, RunSpec, RuntimeKind};
use spawn_run::{Run, RunError, RunRequest};
use spawn_sandbox::{native, ExecFailure, Report};

use crate::{RunArgs, EXIT_SPAWN_FAILED};

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

fn run(args: &RunArgs, home: &Path) -> anyhow::Result<ExitCode> {
    let spec = resolve(args, home)?;
    let created_ms = spawn_store::now_ms();
    let run = create_local(spec, home)?;
    let (finished, recorder) = execute_local(run, home, created_ms)?;
    let spec = &finished.spec;
    let argv0 = spec.command.first().cloned().unwrap_or_default();
    let code = match &finished.result {
        Ok(report) => {
            report_human(spec, report, &argv0);
            if let Some(why) = &finished.stopped {
                eprintln!("spawn: {why}: the run was stopped");
            }
            if args.json {
                let mut result = json_result(&finished.run_id, spec, Ok(report));
                if let Some(why) = &finished.stopped {
                    result["stopReason"] = json!(why);
                }
                print_result(&result);
            }
            u8::try_from(report.exit_code).unwrap_or(EXIT_SPAWN_FAILED)
        }
        Err(e) => {
            if args.json {
                print_result(&json_result(&finished.run_id, spec, Err(e)));
            }
            eprintln!("spawn: {e}");
            EXIT_SPAWN_FAILED
        }
    };
    conclude(&finished, recorder, created_ms);
    Ok(ExitCode::from(code))
}

/// A local run of `spec` (its ids new, the audit limits of `SPAWN_AUDIT_LIMITS`).
fn create_local(spec: RunSpec, home: &Path) -> anyhow::Result<Run> {
    Ok(Run::create(RunRequest {
        spec,
        home: home.to_owned(),
        audit_limits: audit_limits()?,
        run_id: None,
        agent_id: None,
    })?)
}

/// Runs `run` to its end as a local run: the secrets' resolver (and no core files while
/// spawn holds secrets or a model's credential), its warnings said, its record in the local
/// store begun once the sandbox exists and written as the run ends (it was created at
/// `created_ms`).
fn execute_local(
    mut run: Run,
    home: &Path,
    created_ms: i64,
) -> anyhow::Result<(spawn_run::Finished, crate::local::Recorder)> {
    let model_secret = run
        .spec()
        .model
        .as_ref()
        .is_some_and(|m| m.credential.is_some());
    if !run.spec().secrets.is_empty() || run.spec().model.is_some() {
        // spawn holds the values from here on (the relay's redactor, the agent's
        // environment until the sandbox starts, the model's credential for the run's
        // gateway): a crash of spawn leaves no core file.
        crate::secrets::no_core_files()?;
    }
    if !run.spec().secrets.is_empty() || model_secret {
        run.set_secret_resolver(Box::new(crate::secrets::LocalResolver {
            home: home.to_owned(),
        }));
    }
    let mut recorder = crate::local::Recorder::new(home);
    run.on_started(recorder.opener());
    run.on_ended(recorder.ender(created_ms));
    for warning in run.warnings() {
        eprintln!("spawn: warning: {warning}");
    }
    let finished = run.execute(&mut |w| eprintln!("spawn: warning: {w}"));
    Ok((finished, recorder))
}

/// A local run's end: what its audit trail missed is said, and it is recorded.
fn conclude(finished: &spawn_run::Finished, recorder: crate::local::Recorder, created_ms: i64) {
    if let Some(f) = &finished.audit_failed {
        eprintln!("spawn: warning: part of this run's audit trail could not be written: {f}");
    }
    recorder.record(finished, created_ms);
}

/// The `--json` result line on stdout; a stdout that refuses it (its reader went away, a
/// full disk) is said on stderr, and the run's exit status stands.
fn print_result(result: &Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{result}").and_then(|()| out.flush()) {
        eprintln!("spawn: could not write the result to stdout: {e}");
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

fn json_result(run_id: &str, spec: &RunSpec, result: Result<&Report, &RunError>) -> Value {
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

/// `spawn replay TRACE_ID`: the recorded run again, in a fresh sandbox, its model calls
/// answered from the recording.
pub(crate) fn replay(
    home: &Path,
    trace_id: &str,
    step_by_step: bool,
    runtime: Option<&str>,
) -> ExitCode {
    let go = || -> anyhow::Result<ExitCode> {
        let (mut spec, mut recorded) = spawn_run::load_replay(home, trace_id)?;
        if let Some(r) = runtime {
            spec.runtime = r
                .parse::<RuntimeKind>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        recorded.step_by_step = step_by_step;
        let (calls, tools) = recorded.counts();
        eprintln!(
            "spawn: replaying {trace_id} ({calls} model calls, {tools} tool calls recorded) in a new {} sandbox",
            spec.runtime.as_str()
        );
        let created_ms = spawn_store::now_ms();
        let mut run = create_local(spec, home)?;
        run.set_replay(recorded);
        let (finished, recorder) = execute_local(run, home, created_ms)?;
        let argv0 = finished.spec.command.first().cloned().unwrap_or_default();
        let code = match &finished.result {
            Ok(report) => {
                report_human(&finished.spec, report, &argv0);
                match finished.replay.as_ref().and_then(Option::as_ref) {
                    None => {
                        println!("replay: {} is identical to {trace_id}", finished.run_id);
                        0
                    }
                    Some(why) => {
                        println!(
                            "replay: {} diverged from {trace_id}: {why}",
                            finished.run_id
                        );
                        1
                    }
                }
            }
            Err(e) => {
                eprintln!("spawn: {e}");
                EXIT_SPAWN_FAILED
            }
        };
        conclude(&finished, recorder, created_ms);
        Ok(ExitCode::from(code))
    };
    match go() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spawn: {e:#}");
            ExitCode::from(EXIT_SPAWN_FAILED)
        }
    }
}
