//! Abuse limits of one daemon: a token bucket per principal (429 with `Retry-After` when it
//! is empty) and a lock-out of sources that keep presenting invalid keys. Both are in
//! memory, per daemon; both hold at most [`MAX_TRACKED`] entries (the oldest are dropped),
//! so that a flood of principals or addresses cannot grow them without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Most principals or sources tracked at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Requests per principal.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> RateLimiter {
        RateLimiter {
            rate: f64::from(limits.requests_per_second),
            burst: f64::from(limits.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `who` at `now`: `Ok`, or how long until one is allowed.
    pub fn take(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(who) {
            // Full buckets are the ones to forget: they hold no debt.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let b = buckets.entry(who.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[derive(Debug)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Sources presenting invalid keys.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    window: Duration,
    lock_for: Duration,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

impl Lockout {
    pub fn new(limits: &Limits) -> Lockout {
        Lockout {
            max_failures: limits.auth_failures,
            window: Duration::from_secs(limits.auth_failure_window_seconds),
            lock_for: Duration::from_secs(limits.lockout_seconds),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` stays locked out, if it is.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let sources = self.sources.lock().ok()?;
        let until = sources.get(&ip)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Notes a failed authentication from `ip`; returns the lock-out it starts, if any.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut sources = self.sources.lock().ok()?;
        if sources.len() >= MAX_TRACKED && !sources.contains_key(&ip) {
            let window = self.window;
            sources.retain(|_, f| {
                f.locked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(f.window_start) < window
            });
            if sources.len() >= MAX_TRACKED {
                sources.clear();
            }
        }
        let f = sources.entry(ip).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if now.saturating_duration_since(f.window_start) >= self.window {
            f.count = 0;
            f.window_start = now;
        }
        f.count = f.count.saturating_add(1);
        if f.count >= self.max_failures {
            f.locked_until = Some(now + self.lock_for);
            f.count = 0;
            f.window_start = now;
            return Some(self.lock_for);
        }
        None
    }
}

/// Seconds for `Retry-After`: at least 1, rounded up.
pub fn retry_after(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limits() -> Limits {
        Limits {
            requests_per_second: 2,
            burst: 3,
            auth_failures: 3,
            auth_failure_window_seconds: 10,
            lockout_seconds: 60,
            ..Limits::default()
        }
    }

    #[test]
    fn a_principal_gets_its_burst_then_its_rate() {
        let r = RateLimiter::new(&limits());
        let t = Instant::now();
        for _ in 0..3 {
            r.take("alice", t).unwrap();
        }
        let wait = r.take("alice", t).unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Others are not affected.
        r.take("bob", t).unwrap();
        // Half a second later: one more (2 per second).
        r.take("alice", t + Duration::from_millis(500)).unwrap();
        assert!(r.take("alice", t + Duration::from_millis(500)).is_err());
        // Never more than the burst saved up.
        let later = t + Duration::from_secs(3600);
        for _ in 0..3 {
            r.take("alice", later).unwrap();
        }
        assert!(r.take("alice", later).is_err());
    }

    #[test]
    fn repeated_failures_lock_a_source_out_for_a_while() {
        let l = Lockout::new(&limits());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t = Instant::now();
        assert_eq!(l.failed(ip, t), None);
        assert_eq!(l.failed(ip, t), None);
        assert!(l.locked(ip, t).is_none());
        assert_eq!(l.failed(ip, t), Some(Duration::from_secs(60)));
        assert!(l.locked(ip, t + Duration::from_secs(59)).is_some());
        assert!(l.locked(ip, t + Duration::from_secs(60)).is_none());
        assert!(l.locked(other, t).is_none());
        // Failures spread beyond the window do not add up.
        let u = t + Duration::from_secs(100);
        assert_eq!(l.failed(other, u), None);
        assert_eq!(l.failed(other, u + Duration::from_secs(11)), None);
        assert_eq!(l.failed(other, u + Duration::from_secs(22)), None);
        assert!(l.locked(other, u + Duration::from_secs(22)).is_none());
    }

    #[test]
    fn a_flood_of_sources_does_not_grow_without_bound() {
        let l = Lockout::new(&limits());
        let t = Instant::now();
        for i in 0..(u32::try_from(MAX_TRACKED).unwrap() + 10) {
            l.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.sources.lock().unwrap().len() <= MAX_TRACKED);
        let r = RateLimiter::new(&limits());
        for i in 0..(MAX_TRACKED + 10) {
            let _ = r.take(&i.to_string(), t);
        }
        assert!(r.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
        assert_eq!(retry_after(Duration::from_millis(2001)), 3);
    }
}
