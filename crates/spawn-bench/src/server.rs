//! `spawnd` measured on loopback, each figure beside its baseline in the same run:
//!
//! - an authenticated `GET` of an agent (key checksum, hash lookup, `last_used`, bindings,
//!   RBAC, the agent's row) against the unauthenticated `/healthz`, with `wrk` (target:
//!   at least half the healthz rate, p99 under 5 ms);
//! - runs per second of `true` on `native` through the API (queued, claimed, a supervisor
//!   per run, output stored) against the same number through the local CLI
//!   at the same concurrency (target: at least 0.8×).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Runs measured each way, and at once.
const RUNS: usize = 120;
const CONCURRENCY: usize = 4;

/// The figures, printed as they come: (name, value).
pub fn run(spawn: &Path, seconds: u64) -> Result<Vec<(String, f64)>> {
    let spawnd = spawn.with_file_name("spawnd");
    if !spawnd.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p spawn-server`",
            spawnd.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("spawn.yaml");
    // The abuse limits would refuse wrk's load: the bench measures the work of a request.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nhome: {}\nlimits:\n  requestsPerSecond: 1000000\n  burst: 1000000\n  maxRunsPerHost: {CONCURRENCY}\n",
            dir.path().join("home").display()
        ),
    )?;
    let init = Command::new(&spawnd)
        .arg("--config")
        .arg(&config)
        .arg("init")
        .output()
        .context("spawnd init")?;
    if !init.status.success() {
        bail!("spawnd init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let key = String::from_utf8(init.stdout)?.trim().to_owned();
    let mut child = Command::new(&spawnd)
        .arg("--config")
        .arg(&config)
        .env("SPAWND_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .context("start spawnd")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("spawnd's stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("spawnd said {line:?}"))?
        .to_owned();
    let result = measure(spawn, &addr, &key, seconds);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn measure(spawn: &Path, addr: &str, key: &str, seconds: u64) -> Result<Vec<(String, f64)>> {
    let agent = ureq::AgentBuilder::new().build();
    let manifest = "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: bot, namespace: bench}\nspec:\n  command: [\"true\"]\n  sandbox: {runtime: native}\n";
    agent
        .put(&format!("http://{addr}/v1/namespaces/bench/agents/bot"))
        .set("X-API-Key", key)
        .send_string(manifest)
        .context("create the agent")?;
    let mut figures = Vec::new();
    println!();
    println!("spawn-bench: spawnd on loopback (wrk, 16 connections, {seconds} s each; runs: {RUNS}, {CONCURRENCY} at a time)");
    let (h_rps, h_p50, h_p99) = wrk(&format!("http://{addr}/healthz"), None, seconds)?;
    let (a_rps, a_p50, a_p99) = wrk(
        &format!("http://{addr}/v1/namespaces/bench/agents/bot"),
        Some(key),
        seconds,
    )?;
    println!(
        "{:<40} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us",
        "GET /healthz (no auth)", h_rps, h_p50, h_p99
    );
    println!(
        "{:<40} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us",
        "GET agent (API key, RBAC)", a_rps, a_p50, a_p99
    );
    let ratio = a_rps / h_rps;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "{:<40} {:.3}      (target >= 0.5)        {}",
        "ratio authed GET/healthz",
        ratio,
        verdict(ratio >= 0.5)
    );
    println!(
        "{:<40} {:.2} ms  (target < 5 ms)        {}",
        "authed GET p99",
        a_p99 / 1000.0,
        verdict(a_p99 < 5000.0)
    );
    figures.extend([
        ("healthz_rps".to_owned(), h_rps),
        ("agent_get_rps".to_owned(), a_rps),
        ("agent_get_p99_us".to_owned(), a_p99),
        ("agent_get_ratio".to_owned(), ratio),
    ]);

    // Runs/s: the CLI at CONCURRENCY processes, then the API (the daemon supervises
    // CONCURRENCY at once).
    let cli_rate = cli_runs(spawn)?;
    let api_rate = api_runs(&agent, addr, key)?;
    println!(
        "{:<40} {:>9.1} runs/s",
        "local CLI: spawn run --runtime native true", cli_rate
    );
    println!(
        "{:<40} {:>9.1} runs/s",
        "API: POST run, supervised, to its end", api_rate
    );
    let r = api_rate / cli_rate;
    println!(
        "{:<40} {:.3}      (target >= 0.8)        {}",
        "ratio API/CLI runs per second",
        r,
        verdict(r >= 0.8)
    );
    figures.extend([
        ("cli_runs_per_s".to_owned(), cli_rate),
        ("api_runs_per_s".to_owned(), api_rate),
        ("api_cli_ratio".to_owned(), r),
    ]);
    Ok(figures)
}

fn cli_runs(spawn: &Path) -> Result<f64> {
    let home = tempfile::tempdir()?;
    let started = Instant::now();
    let mut left = RUNS;
    while left > 0 {
        let n = left.min(CONCURRENCY);
        let children: Vec<_> = (0..n)
            .map(|_| {
                Command::new(spawn)
                    .args(["run", "--runtime", "native", "--", "true"])
                    .env("SPAWN_HOME", home.path())
                    .env_remove("SPAWN_SERVER")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for mut c in children {
            if !c.wait()?.success() {
                bail!("a local run failed");
            }
        }
        left -= n;
    }
    Ok(RUNS as f64 / started.elapsed().as_secs_f64())
}

fn api_runs(agent: &ureq::Agent, addr: &str, key: &str) -> Result<f64> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let v: serde_json::Value = agent
            .post(&format!("http://{addr}/v1/namespaces/bench/runs"))
            .set("X-API-Key", key)
            .send_json(serde_json::json!({"agent": "bot"}))
            .context("queue a run")?
            .into_json()?;
        ids.push(v["id"].as_str().context("a run id")?.to_owned());
    }
    for id in &ids {
        loop {
            let v: serde_json::Value = agent
                .get(&format!("http://{addr}/v1/namespaces/bench/runs/{id}"))
                .set("X-API-Key", key)
                .call()?
                .into_json()?;
            match v["state"].as_str() {
                Some("succeeded") => break,
                Some("queued") | Some("running") => std::thread::sleep(Duration::from_millis(5)),
                other => bail!("run {id} ended {other:?}: {v}"),
            }
        }
    }
    Ok(RUNS as f64 / started.elapsed().as_secs_f64())
}

/// `wrk` GETs of `url` (with the API key, if any): (requests/s, p50 µs, p99 µs).
fn wrk(url: &str, key: Option<&str>, seconds: u64) -> Result<(f64, f64, f64)> {
    let bin = std::env::var("SPAWN_BENCH_WRK").unwrap_or_else(|_| "wrk".into());
    let mut cmd = Command::new(bin);
    cmd.args([
        "--latency",
        "-t",
        "2",
        "-c",
        "16",
        "-d",
        &format!("{seconds}s"),
    ]);
    // The key goes in a script (0600), not in wrk's argv, where other users would see it.
    let script = tempfile::NamedTempFile::new()?;
    if let Some(k) = key {
        use std::io::Write as _;
        writeln!(script.as_file(), "wrk.headers[\"X-API-Key\"] = \"{k}\"")?;
        cmd.arg("-s").arg(script.path());
    }
    let out = cmd
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors on {url}:\n{text}");
    }
    crate::net::parse_wrk(&text)
}
