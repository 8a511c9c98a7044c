//! `spawn-bench`: start-to-exit wall time of spawn's runtimes against named baselines,
//! measured in one run with interleaved rounds. See README.md for how to read it.

mod audit;
mod audit_db;
mod bwrap;
mod case;
mod gateway;
mod net;
mod report;
mod runc;
mod secrets;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::case::Case;
use crate::report::{CaseResult, Target};
use crate::stats::Summary;

/// Rounds run before measuring (page cache, binaries, lazy kernel state); not counted.
const WARMUP_ROUNDS: usize = 5;

const BARE: &str = "true (bare)";
const BWRAP: &str = "bwrap (comparable)";
const SPAWN_NATIVE: &str = "spawn native";
const RUNSC_DO_PTRACE: &str = "runsc do (ptrace)";
const SPAWN_GVISOR_PTRACE: &str = "spawn gvisor (ptrace)";
const RUNSC_DO_NODIRECTFS: &str = "runsc do --directfs=false (ptrace)";
const RUNSC_DO_SYSTRAP: &str = "runsc do (systrap)";
const SPAWN_GVISOR_SYSTRAP: &str = "spawn gvisor (systrap)";
const RUNC_RUN: &str = "runc run (same bundle)";
/// The same, with the kernel's cgroup migration lock primed as spawn primes it: what is
/// left of the difference is spawn's own work.
const RUNC_RUN_PRIMED: &str = "runc run, cgroup lock primed";
const SPAWN_CONTAINER: &str = "spawn container";

/// `python3 -c pass`: a realistic short command (an interpreter's start, hundreds of
/// file lookups and mappings).
const PY_BARE: &str = "python3 -c pass (bare)";
const PY_NATIVE: &str = "spawn native: python3 -c pass";
const PY_RUNC: &str = "runc run: python3 -c pass";
const PY_RUNC_PRIMED: &str = "runc run, primed: python3 -c pass";
const PY_CONTAINER: &str = "spawn container: python3 -c pass";
const PY_RUNSC_PTRACE: &str = "runsc do (ptrace): python3 -c pass";
const PY_GVISOR_PTRACE: &str = "spawn gvisor (ptrace): python3 -c pass";
const PY_RUNSC_NODIRECTFS: &str = "runsc do --directfs=false (ptrace): python3 -c pass";
const PY_RUNSC_SYSTRAP: &str = "runsc do (systrap): python3 -c pass";
const PY_GVISOR_SYSTRAP: &str = "spawn gvisor (systrap): python3 -c pass";
/// A small file-tree walk (syscall-heavy: a stat per file), for the platform choice.
const WALK_GVISOR_PTRACE: &str = "spawn gvisor (ptrace): walk";
const WALK_GVISOR_SYSTRAP: &str = "spawn gvisor (systrap): walk";
const WALK: &str = "import os; print(sum(len(f) for _, _, f in os.walk('/usr/lib/python3')))";

/// Targets are reported as PASS/FAIL; missing one does not change the exit status.
const TARGETS: &[Target] = &[
    Target::Ratio {
        label: "ratio spawn/bwrap",
        case: SPAWN_NATIVE,
        baseline: BWRAP,
        max: 1.0,
    },
    Target::MedianBelow {
        label: "spawn native median",
        case: SPAWN_NATIVE,
        max_ms: 10.0,
    },
    Target::Ratio {
        label: "ratio spawn gvisor/runsc do (ptrace)",
        case: SPAWN_GVISOR_PTRACE,
        baseline: RUNSC_DO_PTRACE,
        max: 1.10,
    },
    Target::Ratio {
        label: "ratio spawn gvisor/runsc do --directfs=false (ptrace)",
        case: SPAWN_GVISOR_PTRACE,
        baseline: RUNSC_DO_NODIRECTFS,
        max: 1.10,
    },
    Target::Ratio {
        label: "ratio spawn gvisor/runsc do (systrap)",
        case: SPAWN_GVISOR_SYSTRAP,
        baseline: RUNSC_DO_SYSTRAP,
        max: 1.10,
    },
    Target::Ratio {
        label: "ratio spawn container/runc run",
        case: SPAWN_CONTAINER,
        baseline: RUNC_RUN,
        max: 1.10,
    },
    Target::Shown {
        label: "spawn container/runc run, primed",
        case: SPAWN_CONTAINER,
        baseline: RUNC_RUN_PRIMED,
    },
    Target::Ratio {
        label: "python: spawn gvisor/runsc do (ptrace)",
        case: PY_GVISOR_PTRACE,
        baseline: PY_RUNSC_PTRACE,
        max: 1.10,
    },
    Target::Ratio {
        label: "python: spawn gvisor/runsc do --directfs=false (ptrace)",
        case: PY_GVISOR_PTRACE,
        baseline: PY_RUNSC_NODIRECTFS,
        max: 1.10,
    },
    Target::Ratio {
        label: "python: spawn gvisor/runsc do (systrap)",
        case: PY_GVISOR_SYSTRAP,
        baseline: PY_RUNSC_SYSTRAP,
        max: 1.10,
    },
    Target::Ratio {
        label: "python: spawn container/runc run",
        case: PY_CONTAINER,
        baseline: PY_RUNC,
        max: 1.10,
    },
    Target::Shown {
        label: "python: spawn container/runc run, primed",
        case: PY_CONTAINER,
        baseline: PY_RUNC_PRIMED,
    },
];

#[derive(Debug, Parser)]
#[command(
    name = "spawn-bench",
    about = "Sandbox start-to-exit benchmark of spawn"
)]
struct Cli {
    /// Measured rounds; each runs every case once, in order.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Measured rounds of the OCI runtime cases (gVisor and container; each start takes
    /// tens to hundreds of milliseconds), their `python3 -c pass` cases included.
    #[arg(long, default_value_t = 60)]
    oci_rounds: usize,
    /// Measured rounds of the other short-command cases (bare and native `python3 -c
    /// pass`, a file-tree walk on each gVisor platform; up to seconds each).
    #[arg(long, default_value_t = 20)]
    command_rounds: usize,
    /// The spawn binary to measure.
    #[arg(long, default_value = "target/release/spawn")]
    spawn: PathBuf,
    /// Also write the numbers (and every sample) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the egress proxy benchmark.
    #[arg(long)]
    no_net: bool,
    /// Only run the egress proxy benchmark.
    #[arg(long)]
    net_only: bool,
    /// Only the start-to-exit cases whose name contains this text (and the targets both
    /// of whose cases remain), e.g. `--only container` or `--only "(ptrace)"`; repeatable.
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Only run the audit limits benchmark.
    #[arg(long)]
    audit_only: bool,
    /// Only run the spawnd benchmark (authenticated GET against healthz, runs/s through
    /// the API against the CLI).
    #[arg(long)]
    server_only: bool,
    /// Only run the secrets benchmark (seals/opens, resolutions, redaction throughput).
    #[arg(long)]
    secrets_only: bool,
    /// Only run the model gateway benchmark (added latency, requests per second).
    #[arg(long)]
    gateway_only: bool,
    /// Seconds per wrk measurement of the egress proxy benchmark.
    #[arg(long, default_value_t = 5)]
    net_seconds: u64,
    /// (internal) Run the proxy benchmark here, in the namespace made for it.
    #[arg(long, hide = true, value_name = "FILE")]
    net_inner: Option<PathBuf>,
    /// Only write the bwrap baseline's seccomp filter to this file (for profiling the
    /// baseline by hand: `bwrap … --seccomp 9 true 9<FILE`) and exit.
    #[arg(long, value_name = "FILE")]
    write_seccomp: Option<PathBuf>,
    /// Only write the runc baseline's bundle for `true` under this directory (on tmpfs),
    /// print the `runc run` command line that runs it, and exit (for profiling by hand).
    #[arg(long, value_name = "DIR")]
    write_runc_bundle: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.write_seccomp {
        return bwrap::write_seccomp(path);
    }
    if let Some(dir) = &cli.write_runc_bundle {
        let case = runc::case(RUNC_RUN, &runc::find()?, dir, "true", &["true"])?;
        println!("{}", case.command_line());
        return Ok(());
    }
    if let Some(out) = &cli.net_inner {
        return net::inner(out, cli.net_seconds);
    }
    if cli.net_only {
        return net_bench(&cli, None);
    }
    if cli.audit_only {
        let mut json = serde_json::json!({});
        audit_bench(&mut json)?;
        return write_json(&cli, json);
    }
    if cli.server_only {
        let mut json = serde_json::json!({});
        server_bench(&cli, &mut json)?;
        return write_json(&cli, json);
    }
    if cli.secrets_only {
        let mut json = serde_json::json!({});
        secrets_bench(&mut json)?;
        return write_json(&cli, json);
    }
    if cli.gateway_only {
        let mut json = serde_json::json!({});
        gateway_bench(&mut json)?;
        return write_json(&cli, json);
    }
    if cli.rounds == 0 || cli.oci_rounds == 0 || cli.command_rounds == 0 {
        bail!("--rounds, --oci-rounds and --command-rounds must be at least 1");
    }
    if !cli.spawn.is_file() {
        bail!(
            "spawn binary not found at {}: build it with `cargo build --release -p spawn-cli` or pass --spawn",
            cli.spawn.display()
        );
    }
    let bwrap = bwrap::find()?;

    let tmp = tempfile::tempdir().context("create temporary directory")?;
    let seccomp = tmp.path().join("seccomp.bpf");
    bwrap::write_seccomp(&seccomp)?;
    let spawn_home = tmp.path().join("spawn-home");
    std::fs::create_dir(&spawn_home).context("create SPAWN_HOME")?;

    // Add later cases here (and their targets above): each is a named command line.
    let cases = vec![
        Case::new(BARE, "/bin/true"),
        bwrap::case(BWRAP, &bwrap, &seccomp, &["true"])?,
        Case::new(SPAWN_NATIVE, &cli.spawn)
            .args(["run", "--runtime", "native", "--", "true"])
            .env("SPAWN_HOME", &spawn_home),
    ];

    // gVisor against `runsc do` on the same platform, for each platform a host without
    // hardware virtualization has (ptrace, systrap): both start a sandbox with gVisor's
    // kernel and run the command in it with no network; runsc do shares the host's root
    // (its defaults: directfs on) where spawn builds its own (directfs off).
    let runsc = case::require("runsc", "runsc")?;
    let runsc_root = tmp.path().join("runsc-root");
    std::fs::create_dir(&runsc_root).context("create the runsc state directory")?;
    let runsc_do = |name: &str, platform: &str, argv: &[&str]| {
        // `platform` may carry more flags: "ptrace --directfs=false".
        let mut flags = platform.split(' ');
        let platform = flags.next().unwrap_or(platform);
        Case::new(name, &runsc)
            .args(flags)
            .args([
                "--network=none",
                &format!("--platform={platform}"),
                "--root",
            ])
            .args([&runsc_root])
            .args(["do"])
            .args(argv)
    };
    let spawn_on = |name: &str, runtime: &str, platform: Option<&str>, argv: &[&str]| {
        let case = Case::new(name, &cli.spawn)
            .args(["run", "--runtime", runtime, "--"])
            .args(argv)
            .env("SPAWN_HOME", &spawn_home);
        match platform {
            Some(p) => case.env("SPAWN_GVISOR_PLATFORM", p),
            None => case,
        }
    };
    // The container runtime against a bare `runc run` of the same bundle running the
    // command directly (spawn adds its init, the seccomp listener and its bookkeeping).
    let runc = runc::find()?;
    let bundles = tempfile::Builder::new()
        .prefix("spawn-bench-")
        .tempdir_in("/dev/shm")
        .context("create a bundle directory on /dev/shm (tmpfs)")?;
    // The system interpreter everywhere (the host's PATH may lead to a wrapper script).
    let py = ["/usr/bin/python3", "-c", "pass"];
    let oci_cases = vec![
        runsc_do(RUNSC_DO_PTRACE, "ptrace", &["true"]),
        spawn_on(SPAWN_GVISOR_PTRACE, "gvisor", Some("ptrace"), &["true"]),
        runsc_do(RUNSC_DO_NODIRECTFS, "ptrace --directfs=false", &["true"]),
        runsc_do(RUNSC_DO_SYSTRAP, "systrap", &["true"]),
        spawn_on(SPAWN_GVISOR_SYSTRAP, "gvisor", Some("systrap"), &["true"]),
        runc::case(RUNC_RUN, &runc, bundles.path(), "true", &["true"])?,
        runc::case(
            RUNC_RUN_PRIMED,
            &runc,
            bundles.path(),
            "true-primed",
            &["true"],
        )?
        .primed(),
        spawn_on(SPAWN_CONTAINER, "container", None, &["true"]),
        // The container's python runs with them: tens of milliseconds each, where 20 samples
        // (two blocks) leave the median at the mercy of one slow block.
        runc::case(PY_RUNC, &runc, bundles.path(), "python", &py)?,
        runc::case(PY_RUNC_PRIMED, &runc, bundles.path(), "python-primed", &py)?.primed(),
        spawn_on(PY_CONTAINER, "container", None, &py),
        // gVisor's python cases too: ~0.2 s each, and `runsc do`'s starts are bimodal here
        // (a tenth to a quarter of them ~90 ms slower), so two blocks of ten left its median
        // to the share of slow runs in them (one run's python ratio read 1.121, the next
        // run's 1.084).
        runsc_do(PY_RUNSC_PTRACE, "ptrace", &py),
        spawn_on(PY_GVISOR_PTRACE, "gvisor", Some("ptrace"), &py),
        runsc_do(PY_RUNSC_NODIRECTFS, "ptrace --directfs=false", &py),
        runsc_do(PY_RUNSC_SYSTRAP, "systrap", &py),
        spawn_on(PY_GVISOR_SYSTRAP, "gvisor", Some("systrap"), &py),
    ];
    let walk = ["/usr/bin/python3", "-c", WALK];
    let command_cases = vec![
        Case::new(PY_BARE, "/usr/bin/python3").args(["-c", "pass"]),
        spawn_on(PY_NATIVE, "native", None, &py),
        spawn_on(WALK_GVISOR_PTRACE, "gvisor", Some("ptrace"), &walk),
        spawn_on(WALK_GVISOR_SYSTRAP, "gvisor", Some("systrap"), &walk),
    ];

    let keep = |cases: Vec<Case>| -> Vec<Case> {
        if cli.only.is_empty() {
            return cases;
        }
        cases
            .into_iter()
            .filter(|c| cli.only.iter().any(|o| c.name.contains(o.as_str())))
            .collect()
    };
    let (cases, oci_cases, command_cases) = (keep(cases), keep(oci_cases), keep(command_cases));
    if cases.is_empty() && oci_cases.is_empty() && command_cases.is_empty() {
        bail!("--only {:?} matches no case", cli.only);
    }
    let mut samples = measure(&cases, cli.rounds)?;
    samples.extend(measure(&oci_cases, cli.oci_rounds)?);
    samples.extend(measure(&command_cases, cli.command_rounds)?);
    runc::remove_cgroup_parents();
    let results = cases
        .iter()
        .chain(&oci_cases)
        .chain(&command_cases)
        .zip(samples)
        .map(|(case, samples)| {
            let summary = Summary::of(&samples).context("no samples")?;
            Ok(CaseResult {
                name: case.name.clone(),
                cmdline: case.cmdline(),
                samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
                summary,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let verdicts = TARGETS
        .iter()
        .filter(|t| {
            t.cases()
                .iter()
                .all(|c| results.iter().any(|r| r.name == *c))
        })
        .map(|t| t.check(&results))
        .collect::<Result<Vec<_>>>()?;

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let header = format!(
        "spawn-bench: sandbox start-to-exit, N={} runs per case (OCI runtime cases and their python: {}; other short commands: {}) in blocks of {BLOCK} (shuffled, first run of each block not counted), {cpus} CPUs",
        cli.rounds, cli.oci_rounds, cli.command_rounds
    );
    report::print(&header, &results, &verdicts);
    let mut json = report::to_json(cli.rounds, WARMUP_ROUNDS, cpus, &results, &verdicts);
    audit_bench(&mut json)?;
    secrets_bench(&mut json)?;
    gateway_bench(&mut json)?;
    server_bench(&cli, &mut json)?;
    if cli.no_net {
        return write_json(&cli, json);
    }
    net_bench(&cli, Some(json))
}

/// What the audit limits cost per event against a plain append; the figures join `json`.
fn server_bench(cli: &Cli, json: &mut serde_json::Value) -> Result<()> {
    let figures = server::run(&cli.spawn, cli.net_seconds)?;
    json["server"] = figures
        .into_iter()
        .map(|(n, v)| (n, serde_json::json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(())
}

/// Issue 12's figures: what the model gateway adds to a call (p50/p99, JSON and
/// streamed) against the same provider called directly, and requests per second each way.
fn gateway_bench(json: &mut serde_json::Value) -> Result<()> {
    let f = gateway::run()?;
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!();
    println!("spawn-bench: model gateway (POST /v1/messages to a provider on loopback, directly and through the gateway, alternated call by call; keep-alive HTTP/1.1)");
    println!("{:<34} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    for (name, p50, p99) in [
        ("direct (JSON)", f.direct_p50, f.direct_p99),
        ("through the gateway (JSON)", f.gateway_p50, f.gateway_p99),
        ("direct (stream)", f.stream_direct_p50, f.stream_direct_p99),
        (
            "through the gateway (stream)",
            f.stream_gateway_p50,
            f.stream_gateway_p99,
        ),
    ] {
        println!("{name:<34} {p50:>9.0} {p99:>9.0}");
    }
    for (what, p50, p99) in [
        (
            "JSON",
            f.gateway_p50 - f.direct_p50,
            f.gateway_p99 - f.direct_p99,
        ),
        (
            "stream",
            f.stream_gateway_p50 - f.stream_direct_p50,
            f.stream_gateway_p99 - f.stream_direct_p99,
        ),
    ] {
        println!(
            "{:<34} {p50:>9.0} {p99:>9.0}  (targets <= 300 / <= 1000)  {}",
            format!("added by the gateway ({what})"),
            pass(p50 <= 300.0 && p99 <= 1000.0)
        );
    }
    println!(
        "{:<34} {:>9.0} /s direct, {:.0} /s through the gateway (16 connections): ratio {:.3}",
        "requests per second",
        f.direct_rps,
        f.gateway_rps,
        f.gateway_rps / f.direct_rps
    );
    json["gateway"] = serde_json::json!({
        "direct_p50_us": f.direct_p50, "direct_p99_us": f.direct_p99,
        "gateway_p50_us": f.gateway_p50, "gateway_p99_us": f.gateway_p99,
        "stream_direct_p50_us": f.stream_direct_p50, "stream_direct_p99_us": f.stream_direct_p99,
        "stream_gateway_p50_us": f.stream_gateway_p50, "stream_gateway_p99_us": f.stream_gateway_p99,
        "direct_rps": f.direct_rps, "gateway_rps": f.gateway_rps,
    });
    Ok(())
}

/// Issue 11's figures: seals and opens per core, resolutions, redaction against a plain
/// copy of the same stream.
fn secrets_bench(json: &mut serde_json::Value) -> Result<()> {
    let f = secrets::run()?;
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!();
    println!("spawn-bench: secrets (AES-256-GCM seals/opens of a 40-byte value on one core; Secrets::get from SQLite; redaction of 1 GiB in 64 KiB chunks with 20 secrets)");
    println!("{:<32} {:>10.0} /s", "sealed", f.seals_per_s);
    println!(
        "{:<32} {:>10.0} /s  (target >= 100000 per core)  {}",
        "opened",
        f.opens_per_s,
        pass(f.opens_per_s >= 100_000.0)
    );
    println!(
        "{:<32} {:>10.0} /s",
        "resolved (store, key, value)", f.resolved_per_s
    );
    println!("{:<32} {:>10.0} MiB/s", "plain copy", f.copy_mib_s);
    println!("{:<32} {:>10.0} MiB/s", "redaction", f.redact_mib_s);
    let ratio = f.redact_mib_s / f.copy_mib_s;
    println!(
        "{:<32} {:>10.3}  (target >= 0.5)  {}",
        "ratio redaction/plain copy",
        ratio,
        pass(ratio >= 0.5)
    );
    json["secrets"] = serde_json::json!({
        "seals_per_s": f.seals_per_s,
        "opens_per_s": f.opens_per_s,
        "resolved_per_s": f.resolved_per_s,
        "copy_mib_s": f.copy_mib_s,
        "redact_mib_s": f.redact_mib_s,
    });
    Ok(())
}

fn audit_bench(json: &mut serde_json::Value) -> Result<()> {
    let figures = audit::run()?;
    let get = |name: &str| {
        figures
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |(_, ns)| *ns)
    };
    println!();
    println!("spawn-bench: audit events appended one at a time to a log on disk (median of 7 rounds of 20000)");
    for (name, ns) in &figures {
        println!("{name:<32} {:>8.0} ns/event", ns);
    }
    let ratio = get(audit::PASS_THROUGH) / get(audit::PLAIN);
    // No target: the issue asks for the cost to be measured. Most of it is sizing each
    // event for the byte budget (one more serialization).
    println!("{:<32} {:.3}", "ratio limiter/plain append", ratio);
    println!(
        "{:<32} {:.0} ns/event",
        "added by the limiter",
        get(audit::PASS_THROUGH) - get(audit::PLAIN)
    );
    println!(
        "{:<32} {:.3}",
        "ratio flood/plain append",
        get(audit::FLOOD) / get(audit::PLAIN)
    );
    json["audit"] = figures
        .iter()
        .map(|(n, ns)| ((*n).to_owned(), serde_json::json!({ "ns_per_event": ns })))
        .collect::<serde_json::Map<_, _>>()
        .into();
    // The chain at scale (issue 10's targets; its baseline, SQLite's insert rate for the
    // same rows, waits for the log in the state database).
    let (appended, verified) = audit::chain()?;
    println!();
    println!(
        "spawn-bench: the hash chain, {} events appended in durable batches of {} (one fdatasync each), then verified",
        audit::CHAIN_EVENTS,
        audit::CHAIN_BATCH
    );
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "{:<32} {:>10.0} events/s  (target >= 100000)   {}",
        "appended (chained, durable)",
        appended,
        pass(appended >= 100_000.0)
    );
    println!(
        "{:<32} {:>10.0} events/s  (target >= 1000000)  {}",
        "verified",
        verified,
        pass(verified >= 1_000_000.0)
    );
    json["audit"]["chain"] = serde_json::json!({
        "events": audit::CHAIN_EVENTS,
        "batch": audit::CHAIN_BATCH,
        "appended_per_s": appended,
        "verified_per_s": verified,
    });
    // The log in the state database: the store's chained ingest against SQLite's own
    // insert rate for the same rows without the chain, in this run.
    let db = audit_db::run()?;
    println!();
    println!(
        "spawn-bench: the audit log in SQLite, {} records copied from the log file by spawn_store::Ingest ({} per durable transaction), against the same rows inserted without the chain",
        audit::CHAIN_EVENTS,
        db.per_commit
    );
    println!(
        "{:<32} {:>10.0} records/s  (target >= 100000)  {}",
        "stored (chained, durable)",
        db.chained,
        pass(db.chained >= 100_000.0)
    );
    println!(
        "{:<32} {:>10.0} rows/s",
        "baseline: SQLite bare insert", db.bare
    );
    println!(
        "{:<32} {:>10.3}  (target >= 0.5)  {}",
        "ratio chained/bare",
        db.chained / db.bare,
        pass(db.chained / db.bare >= 0.5)
    );
    json["audit"]["database"] = serde_json::json!({
        "records": audit::CHAIN_EVENTS,
        "per_commit": db.per_commit,
        "stored_per_s": db.chained,
        "bare_insert_per_s": db.bare,
        "ratio": db.chained / db.bare,
    });
    Ok(())
}

fn write_json(cli: &Cli, json: serde_json::Value) -> Result<()> {
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The egress proxy against a direct connection and squid; its figures join `json`.
fn net_bench(cli: &Cli, json: Option<serde_json::Value>) -> Result<()> {
    let net = net::run(cli.net_seconds)?;
    let get = |case: &str, key: &str| net[case][key].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "spawn-bench: egress proxy on loopback (HTTP, 2-byte responses; wrk {}s per figure; 100 MB download with curl)",
        cli.net_seconds
    );
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>14}",
        "case", "req/s (c32)", "p50 (c1)", "p99 (c1)", "100 MB, MB/s"
    );
    for case in ["direct", "spawn proxy", "proxy, no caps", "squid"] {
        println!(
            "{case:<16} {:>12.0} {:>8.0}us {:>8.0}us {:>14.0}",
            get(case, "rps"),
            get(case, "p50_us"),
            get(case, "p99_us"),
            get(case, "download_mb_s")
        );
    }
    let ratio = get("spawn proxy", "rps") / get("squid", "rps");
    let added_p50 = get("spawn proxy", "p50_us") - get("direct", "p50_us");
    let added_p99 = get("spawn proxy", "p99_us") - get("direct", "p99_us");
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "{:<32} {:<10.3} {:<22} {}",
        "ratio spawn proxy/squid req/s",
        ratio,
        "(target >= 1.00)",
        verdict(ratio >= 1.0)
    );
    println!(
        "{:<32} {:<10} {:<22} {}",
        "added p50 latency",
        format!("{added_p50:.0} us"),
        "(target < 200 us)",
        verdict(added_p50 < 200.0)
    );
    println!("{:<32} {added_p99:.0} us", "added p99 latency");
    println!(
        "{:<32} {:.3}",
        "ratio caps on/off req/s",
        get("spawn proxy", "rps") / get("proxy, no caps", "rps")
    );
    println!(
        "{:<32} {:.0} us",
        "added p50 by caps + host check",
        get("spawn proxy", "p50_us") - get("proxy, no caps", "p50_us")
    );
    let mut json = json.unwrap_or_else(|| serde_json::json!({}));
    json["net"] = net;
    write_json(cli, json)
}

/// Runs the warm-up rounds, then `rounds` rounds of every case in turn (A, B, C, A, B, C,
/// …) so that noise from other work on the machine spreads evenly over the cases.
/// Runs per block: a case runs this many times in a row (after one unmeasured run), so the
/// deferred kernel work a sandbox leaves behind (network namespace clean-up runs later on a
/// kworker) is paid by the same case, as it would be in real use, not by whichever other
/// case happens to come next. Blocks of the cases alternate in a shuffled order to spread
/// the machine's noise over all of them.
const BLOCK: usize = 10;

fn measure(cases: &[Case], rounds: usize) -> Result<Vec<Vec<Duration>>> {
    for _ in 0..WARMUP_ROUNDS {
        for case in cases {
            case.run_once()?;
        }
    }
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    while samples.iter().any(|s| s.len() < rounds) {
        rng.shuffle(&mut order);
        for &i in &order {
            cases[i].run_once()?;
            for _ in 0..BLOCK.min(rounds - samples[i].len()) {
                samples[i].push(cases[i].run_once()?);
            }
        }
    }
    Ok(samples)
}

/// A tiny deterministic PRNG for the run order (reproducible, no dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = usize::try_from(self.next() % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }
}
