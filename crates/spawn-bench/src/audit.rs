//! What the audit limits cost per event, against the plain append they sit in front of,
//! measured in the same run: a proxy's `agent.net.connect` event appended to a log on
//! disk one at a time (as `spawn-egress` writes them), without a limiter, through a
//! limiter that lets every event through (its bookkeeping on the write path), and through
//! the default limits under a flood of repeats (most events only counted).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spawn_audit::{AuditLog, Event, EventType, Limiter, Limits, Outcome, Principal, Resource};

/// Events per measurement.
const EVENTS: usize = 20_000;
/// Measurements per case, interleaved (A, B, C, A, B, C, …); the median is reported.
const ROUNDS: usize = 7;

pub const PLAIN: &str = "append, no limiter";
pub const PASS_THROUGH: &str = "limiter, all written";
pub const FLOOD: &str = "limiter (defaults), a flood";

/// Median nanoseconds per event of each case, by name.
pub fn run() -> Result<Vec<(&'static str, f64)>> {
    let dir = tempfile::tempdir().context("create a directory for the audit bench")?;
    let all_written: Limits = "per-key=10000,per-window=100000,events=100000000,bytes=64GiB"
        .parse()
        .context("the pass-through limits")?;
    let cases: [(&'static str, Option<Limits>, bool); 3] = [
        (PLAIN, None, false),
        (PASS_THROUGH, Some(all_written), false),
        (FLOOD, Some(Limits::default()), true),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..=ROUNDS {
        for (i, (name, limits, flood)) in cases.iter().enumerate() {
            let log_dir = dir.path().join(format!("{i}-{round}"));
            let took = one(&log_dir, *limits, *flood).with_context(|| name.to_string())?;
            // The first round warms the page cache and the allocator; not counted.
            if round > 0 {
                samples[i].push(took.as_nanos() as f64 / EVENTS as f64);
            }
            std::fs::remove_dir_all(&log_dir).ok();
        }
    }
    Ok(cases
        .iter()
        .zip(samples)
        .map(|((name, _, _), mut s)| {
            s.sort_by(f64::total_cmp);
            (*name, s[s.len() / 2])
        })
        .collect())
}

/// `EVENTS` events written one by one to a new log in `dir`.
fn one(dir: &std::path::Path, limits: Option<Limits>, flood: bool) -> Result<Duration> {
    let mut log = AuditLog::open(dir)?;
    let mut limiter = limits.map(Limiter::new);
    let mut out = Vec::new();
    let start = Instant::now();
    for i in 0..EVENTS {
        // A flood repeats one refusal (every fifth to a name of its own); otherwise the
        // events go round 64 destinations (as many keys as a window tracks by name).
        let host = match (flood, i % 5) {
            (true, 4) => format!("h{i}.denied.test"),
            (true, _) => "denied.test".to_owned(),
            (false, _) => format!("h{}.denied.test", i % 64),
        };
        let e = event(&host);
        match &mut limiter {
            None => {
                log.append(std::slice::from_ref(&e))?;
            }
            Some(l) => {
                l.admit(e, &mut out);
                log.append(&out)?;
                out.clear();
            }
        }
    }
    if let Some(l) = &mut limiter {
        l.finish(&mut out);
        log.append(&out)?;
        if !flood {
            anyhow::ensure!(
                l.stats().verbatim == EVENTS as u64,
                "the pass-through limits held events back: {:?}",
                l.stats()
            );
        }
    }
    Ok(start.elapsed())
}

pub(crate) fn event(host: &str) -> Event {
    Event::new(
        EventType::AgentNetConnect,
        Principal {
            kind: "agent".into(),
            id: "ag_benchbenchbenchbenchbenchbe".into(),
            name: Some("run".into()),
        },
        Resource {
            kind: "host".into(),
            name: format!("{host}:80"),
        },
        "connect",
        Outcome::Denied,
    )
    .with_detail("host", host)
    .with_detail("port", 80)
    .with_detail("via", "proxy")
    .with_detail("address", serde_json::Value::Null)
    .with_detail("decision", "deny")
    .with_detail("reason", "not-allowlisted")
    .with_detail("detail", format!("{host} is not on the run's allowlist"))
}

/// Events of the chain bench (issue 10: a million).
pub const CHAIN_EVENTS: usize = 1_000_000;
/// Events per durable batch (one append and one `fdatasync`): a group commit.
pub const CHAIN_BATCH: usize = 1_000;

/// The hash chain at scale: `CHAIN_EVENTS` events appended in durable batches of
/// `CHAIN_BATCH` (appended per second), then the whole log verified (records per second).
pub fn chain() -> Result<(f64, f64)> {
    let dir = tempfile::tempdir().context("create a directory for the chain bench")?;
    let mut log = AuditLog::open(dir.path())?;
    let batch: Vec<Event> = (0..CHAIN_BATCH)
        .map(|i| event(&format!("h{}.denied.test", i % 64)))
        .collect();
    let start = Instant::now();
    for _ in 0..CHAIN_EVENTS / CHAIN_BATCH {
        log.append(&batch)?;
        log.sync()?;
    }
    let appended = CHAIN_EVENTS as f64 / start.elapsed().as_secs_f64();
    let file = std::fs::File::open(log.path())?;
    let start = Instant::now();
    let v = spawn_audit::chain::verify(std::io::BufReader::with_capacity(1 << 20, file), true)?;
    let verified = v.records as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        v.intact() && v.records == CHAIN_EVENTS as u64,
        "the bench's own log does not verify: {v:?}"
    );
    Ok((appended, verified))
}
