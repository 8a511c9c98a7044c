//! The egress proxy against a direct connection and against Debian's `squid` with the same
//! one-domain allowlist, on loopback: requests per second (small responses, 32 keep-alive
//! connections, `wrk`), latency of one connection at a time (p50/p99, `wrk --latency`),
//! and a 100 MB download (`curl`). Also the proxy without its per-run caps and host-address
//! check (`Proxy::unbounded_baseline`), to show what they cost.
//!
//! It runs in a network namespace of its own (re-executing this binary, which unshares one
//! before any thread exists),
//! where `11.0.0.1`, in a second namespace behind a veth link, stands for a public server
//! (the proxy refuses the host's own addresses, as it must) and a DNS server written here
//! answers `allowed.test`.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::case::require;

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const OURS: &str = "127.0.0.1:3128";
const SQUID: &str = "127.0.0.1:3129";
/// The proxy without its issue-14 boundaries (host addresses, caps), for comparison.
const BASELINE: &str = "127.0.0.1:3130";
/// Size of the download case.
const BIG: usize = 100 << 20;

/// Runs the inner benchmark in a new network namespace and returns its results.
pub fn run(seconds: u64) -> Result<Value> {
    let wrk = require("wrk", "wrk")?;
    let squid = require("squid", "squid")?;
    let curl = require("curl", "curl")?;
    let out = tempfile::NamedTempFile::new()?;
    let exe = std::env::current_exe()?;
    let status = Command::new(exe)
        .args(["--net-inner"])
        .arg(out.path())
        .args(["--net-seconds", &seconds.to_string()])
        .env("SPAWN_BENCH_WRK", &wrk)
        .env("SPAWN_BENCH_SQUID", &squid)
        .env("SPAWN_BENCH_CURL", &curl)
        .status()
        .context("run the network benchmark")?;
    if !status.success() {
        bail!("the network benchmark failed");
    }
    let text = std::fs::read_to_string(out.path())?;
    Ok(serde_json::from_str(&text)?)
}

/// Inside the namespace: servers up, every measurement, results to `out`.
pub fn inner(out: &Path, seconds: u64) -> Result<()> {
    spawn_egress::testing::own_network(&[UPSTREAM])
        .context("a network namespace of the benchmark's own (iproute2)")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dns = dns_server()?;
    rt.block_on(upstream())?;
    // Our proxy: the run is the benchmark's own address (wrk and curl connect from it).
    let proxy = spawn_egress::Proxy::new(spawn_egress::Resolver::with_nameserver(dns));
    let rules = spawn_policy::net::NetRules::from_capability(&spawn_policy::NetCapability {
        policy: Some(spawn_policy::NetPolicy::Restricted),
        allowlist: vec!["allowed.test".into()],
        ..Default::default()
    })?;
    let _registration = proxy.register(
        "127.0.0.1".parse()?,
        "tr_bench",
        rules.clone(),
        Arc::new(Quiet),
    )?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(OURS))?;
    let serving = proxy.clone();
    rt.spawn(async move { serving.serve(listener).await });
    // The baseline: the same proxy without the host-address check and with the largest
    // caps, as it was before issue 14.
    let baseline =
        spawn_egress::Proxy::unbounded_baseline(spawn_egress::Resolver::with_nameserver(dns));
    let mut uncapped = rules;
    uncapped.max_connections = spawn_policy::net::MAX_CONNECTIONS;
    uncapped.max_dns_queries = spawn_policy::net::MAX_DNS_QUERIES;
    let _baseline_registration =
        baseline.register("127.0.0.1".parse()?, "tr_base", uncapped, Arc::new(Quiet))?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(BASELINE))?;
    rt.spawn(async move { baseline.serve(listener).await });
    let squid = Squid::start()?;

    let direct = format!("http://{UPSTREAM}");
    let url = "http://allowed.test";
    let mut results = serde_json::Map::new();
    for (name, target, via) in [
        ("direct", direct.as_str(), None),
        ("spawn proxy", url, Some(OURS)),
        ("proxy, no caps", url, Some(BASELINE)),
        ("squid", url, Some(SQUID)),
    ] {
        // Warm up (connections, caches), then measure.
        wrk(target, via, 8, 1)?;
        let rps = wrk(target, via, 32, seconds)?.0;
        let (_, p50, p99) = wrk(target, via, 1, seconds)?;
        let mbps = download(&format!("{target}/big"), via)?;
        results.insert(
            name.to_owned(),
            json!({ "rps": rps, "p50_us": p50, "p99_us": p99, "download_mb_s": mbps }),
        );
    }
    drop(squid);
    std::fs::write(out, serde_json::to_vec(&Value::Object(results))?)?;
    Ok(())
}

/// The proxy's events are not the benchmark's business.
struct Quiet;

impl spawn_egress::Observer for Quiet {
    fn attempt(&self, _: &spawn_egress::Attempt) -> bool {
        true
    }
    fn closed(&self, _: &spawn_egress::Closed) {}
}

/// `wrk` against `target` (through the proxy `via`, with absolute-URI requests):
/// (requests/s, p50 µs, p99 µs).
fn wrk(target: &str, via: Option<&str>, conns: u32, seconds: u64) -> Result<(f64, f64, f64)> {
    let bin = std::env::var("SPAWN_BENCH_WRK").unwrap_or_else(|_| "wrk".into());
    let mut cmd = Command::new(bin);
    cmd.args(["--latency", "-t", if conns > 1 { "2" } else { "1" }])
        .args(["-c", &conns.to_string(), "-d", &format!("{seconds}s")]);
    let script = tempfile::NamedTempFile::new()?;
    match via {
        Some(proxy) => {
            // wrk connects to the proxy and asks for the absolute URI.
            writeln!(
                script.as_file(),
                "wrk.path = \"{target}/\"\nwrk.headers[\"Host\"] = \"allowed.test\""
            )?;
            cmd.arg("-s")
                .arg(script.path())
                .arg(format!("http://{proxy}"));
        }
        None => {
            writeln!(script.as_file(), "wrk.headers[\"Host\"] = \"allowed.test\"")?;
            cmd.arg("-s").arg(script.path()).arg(format!("{target}/"));
        }
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors through {via:?}:\n{text}");
    }
    parse_wrk(&text)
}

/// wrk's `--latency` output: (requests/s, p50 µs, p99 µs).
pub(crate) fn parse_wrk(text: &str) -> Result<(f64, f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let pct = |p: &str| -> Result<f64> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(str::trim)
            .with_context(|| format!("no {p} in wrk's output:\n{text}"))?;
        micros(v).with_context(|| format!("latency {v:?}"))
    };
    Ok((rps, pct("50%")?, pct("99%")?))
}

/// `123.45us`, `1.20ms`, `2.00s` in microseconds.
fn micros(v: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * mul)
}

/// Median MB/s of three 100 MB downloads with curl.
fn download(url: &str, via: Option<&str>) -> Result<f64> {
    let bin = std::env::var("SPAWN_BENCH_CURL").unwrap_or_else(|_| "curl".into());
    let mut speeds = Vec::new();
    for _ in 0..3 {
        let mut cmd = Command::new(&bin);
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{size_download}"]);
        match via {
            Some(proxy) => {
                cmd.args(["-x", &format!("http://{proxy}"), url]);
            }
            None => {
                cmd.args(["-H", "Host: allowed.test", url]);
            }
        }
        let started = Instant::now();
        let out = cmd.output().context("run curl")?;
        let secs = started.elapsed().as_secs_f64();
        let size: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if size != BIG {
            bail!(
                "curl got {size} bytes of {url} via {via:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        speeds.push(BIG as f64 / 1e6 / secs);
    }
    speeds.sort_by(f64::total_cmp);
    Ok(speeds[1])
}

/// Squid with the same allowlist, names from a hosts file (it has no other resolver here).
struct Squid {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Squid {
    fn start() -> Result<Squid> {
        let dir = tempfile::tempdir()?;
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("{UPSTREAM} allowed.test\n"))?;
        let conf = dir.path().join("squid.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "http_port {SQUID}\n\
                 acl allowed dstdomain allowed.test\n\
                 http_access allow allowed\n\
                 http_access deny all\n\
                 hosts_file {hosts}\n\
                 dns_nameservers 127.0.0.1\n\
                 cache deny all\n\
                 cache_mem 8 MB\n\
                 access_log none\n\
                 cache_log {d}/cache.log\n\
                 pid_filename {d}/squid.pid\n\
                 coredump_dir {d}\n\
                 shutdown_lifetime 0 seconds\n\
                 workers 1\n",
                hosts = hosts.display()
            ),
        )?;
        let bin = std::env::var("SPAWN_BENCH_SQUID").unwrap_or_else(|_| "squid".into());
        let child = Command::new(bin)
            .args(["-N", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start squid")?;
        // Ready when it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(SQUID).is_ok() {
                return Ok(Squid { child, _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "squid did not start; see {}",
            dir.path().join("cache.log").display()
        )
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream: `/` answers `ok`, `/big` 100 MB, over keep-alive HTTP/1.1.
async fn upstream() -> Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(spawn_egress::testing::world_tcp((UPSTREAM, 80))?)?;
    let big = bytes::Bytes::from(vec![b'x'; BIG]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let big = big.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = if req.uri().path().starts_with("/big") {
                            big.clone()
                        } else {
                            bytes::Bytes::from_static(b"ok")
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// Answers `allowed.test` with the upstream's address (TTL 60 s), NXDOMAIN for the rest.
fn dns_server() -> Result<SocketAddr> {
    Ok(spawn_egress::testing::dns_server(60, |name| {
        (name == "allowed.test").then(|| vec![UPSTREAM])
    })?)
}
