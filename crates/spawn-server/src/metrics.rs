//! `/metrics` in Prometheus' text format: requests by status, their latencies, runs by
//! state (from the database: the cluster's), this daemon's supervisors, and the denials.
//!
//! Written here rather than with a metrics crate: a dozen atomic counters and one
//! histogram, exposed in a text format of a few lines, need no registry; the format is
//! checked by a test against Prometheus' exposition rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    pub auth_failures: AtomicU64,
    pub rbac_denials: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl Metrics {
    /// Notes one answered request.
    pub fn request(&self, status: u16, took: Duration) {
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The exposition: these counters, `runs` (state → count), `supervisors` and the
    /// audit sinks.
    pub fn render(
        &self,
        runs: &[(String, i64)],
        supervisors: usize,
        sinks: &[spawn_sinks::SinkStatus],
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP spawnd_http_requests_total HTTP requests answered, by status."
        );
        let _ = writeln!(out, "# TYPE spawnd_http_requests_total counter");
        if let Ok(m) = self.by_status.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(out, "spawnd_http_requests_total{{status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP spawnd_http_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(out, "# TYPE spawnd_http_request_duration_seconds histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "spawnd_http_request_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "spawnd_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "spawnd_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "spawnd_http_request_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP spawnd_runs Runs in the shared state, by state."
        );
        let _ = writeln!(out, "# TYPE spawnd_runs gauge");
        for state in [
            "queued",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "interrupted",
        ] {
            let n = runs.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "spawnd_runs{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP spawnd_supervisors Run supervisors (sandboxes) this daemon started that are running.");
        let _ = writeln!(out, "# TYPE spawnd_supervisors gauge");
        let _ = writeln!(out, "spawnd_supervisors {supervisors}");
        for (name, help, v) in [
            (
                "spawnd_auth_failures_total",
                "Failed authentications.",
                &self.auth_failures,
            ),
            (
                "spawnd_rbac_denials_total",
                "Requests RBAC refused.",
                &self.rbac_denials,
            ),
            (
                "spawnd_rate_limited_total",
                "Requests refused by the abuse limits.",
                &self.rate_limited,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        render_sinks(&mut out, sinks);
        out
    }
}

/// The audit sinks' series, labelled by sink name (names are `[a-z0-9_-]`, so the label
/// values need no escaping). A sink that never delivered has no last-success sample.
fn render_sinks(out: &mut String, sinks: &[spawn_sinks::SinkStatus]) {
    if sinks.is_empty() {
        return;
    }
    type Value = fn(&spawn_sinks::SinkStatus) -> Option<f64>;
    let families: [(&str, &str, &str, Value); 4] = [
        (
            "spawn_audit_sink_backlog",
            "gauge",
            "Audit records in the log after the sink's cursor.",
            |s| Some(s.backlog as f64),
        ),
        (
            "spawn_audit_sink_delivered_total",
            "counter",
            "Audit records the sink acknowledged.",
            |s| Some(s.delivered as f64),
        ),
        (
            "spawn_audit_sink_failures_total",
            "counter",
            "Failed deliveries to the sink (retried).",
            |s| Some(s.failures as f64),
        ),
        (
            "spawn_audit_sink_last_success_timestamp_seconds",
            "gauge",
            "When the sink last acknowledged a batch.",
            |s| s.last_success,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in sinks {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{sink=\"{}\"}} {v}", s.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_exposition_follows_the_text_format() {
        let m = Metrics::default();
        m.request(200, Duration::from_micros(300));
        m.request(200, Duration::from_millis(3));
        m.request(404, Duration::from_secs(10));
        m.rbac_denials.fetch_add(2, Ordering::Relaxed);
        let sinks = [
            spawn_sinks::SinkStatus {
                name: "siem".into(),
                backlog: 7,
                delivered: 12,
                failures: 3,
                last_success: Some(1_768_473_000.5),
            },
            spawn_sinks::SinkStatus {
                name: "dead-hook".into(),
                backlog: 19,
                delivered: 0,
                failures: 9,
                last_success: None,
            },
        ];
        let text = m.render(&[("running".into(), 3)], 1, &sinks);
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            // name{labels} value: the name is declared, the value a number.
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(typed.contains(family), "{line}");
        }
        assert!(text.contains("spawnd_http_requests_total{status=\"200\"} 2"));
        assert!(text.contains("spawnd_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("spawnd_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("spawnd_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("spawnd_runs{state=\"running\"} 3"));
        assert!(text.contains("spawnd_runs{state=\"queued\"} 0"));
        assert!(text.contains("spawnd_rbac_denials_total 2"));
        assert!(text.contains("spawnd_supervisors 1"));
        assert!(text.contains("spawn_audit_sink_backlog{sink=\"siem\"} 7\n"));
        assert!(text.contains("spawn_audit_sink_backlog{sink=\"dead-hook\"} 19\n"));
        assert!(text.contains("spawn_audit_sink_delivered_total{sink=\"siem\"} 12\n"));
        assert!(text.contains("spawn_audit_sink_failures_total{sink=\"dead-hook\"} 9\n"));
        assert!(text.contains(
            "spawn_audit_sink_last_success_timestamp_seconds{sink=\"siem\"} 1768473000.5\n"
        ));
        assert!(!text.contains("timestamp_seconds{sink=\"dead-hook\"}"));
        // Without sinks, no sink families.
        assert!(!m.render(&[], 0, &[]).contains("spawn_audit_sink"));
    }
}
