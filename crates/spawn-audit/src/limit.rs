//! Per-run limits on what a run's events may take of the log: repeats aggregated per
//! window, a budget per run, and an event whenever either is reached — never a silent drop.
//!
//! A [`Limiter`] sits in front of one writer of one run's events (the run's `spawn`, or
//! the egress proxy for that run). Events are grouped by a *repeat key*: event type,
//! action, outcome, resource type and name, and `details.reason`. In each window
//! ([`Limits::window_ms`]) the first [`Limits::per_key`] events of a key are written
//! verbatim, at most [`Limits::per_window`] in all; the rest are counted, and when the
//! window ends (the next event or [`Limiter::tick`] after it, or [`Limiter::finish`]) one
//! `audit.summary` event per key names the key, the count and the first and last time.
//! A window tracks at most [`Limits::keys`] keys by name; events of further keys are
//! counted per *kind* (the key without the resource's name), at most `keys` kinds, and
//! the rest in one catch-all count, so that many distinct destinations cannot make the
//! summaries themselves a flood.
//!
//! Everything written (verbatim events, summaries, limit events) is charged to the run's
//! budget ([`Limits::budget_events`], [`Limits::budget_bytes`]). When an event would pass
//! it, one `audit.limit` event says so; from then on events are only counted, and
//! [`Limiter::finish`] writes their summaries at the run's end. The first time the rate
//! limit holds an event back in a run, one `audit.limit` event says that too.
//!
//! Accounting is exact: for every key, the events written verbatim plus the counts of
//! its summaries equal the events admitted.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::format_rfc3339;
use crate::encode::MAX_EVENT_BYTES;
use crate::error::AuditError;
use crate::event::{Event, EventType, Outcome, Principal, Resource};

/// `action` of an event summarizing events held back.
pub const SUMMARY_ACTION: &str = "audit.summary";
/// `action` of the event saying a limit was reached.
pub const LIMIT_ACTION: &str = "audit.limit";

/// What one stored line costs besides the event's own JSON: `{"seq":N,"timestamp":"…",`
/// and the newline (at most 20 digits of seq and a 24-character timestamp): 67 bytes; and
/// the chain's `,"prevHash":"sha256:…","hash":"sha256:…"`: 166.
const RECORD_OVERHEAD: usize = 68 + 166;

/// How much of the log a run's events may take (one writer's share; see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Length of a window, in milliseconds.
    pub window_ms: u64,
    /// Events of one repeat key written verbatim per window.
    pub per_key: u32,
    /// Events written verbatim per window, all keys together.
    pub per_window: u32,
    /// Keys tracked by name per window (and kinds, beyond them).
    pub keys: u32,
    /// Events a run's writer may write in all.
    pub budget_events: u64,
    /// Bytes a run's writer may write in all.
    pub budget_bytes: u64,
}

impl Default for Limits {
    /// 5 s windows, 5 verbatim per key and 100 per window, 64 keys, and a budget of
    /// 10,000 events or 8 MiB: at most about 2.3k lines a minute under a flood (a few
    /// hundred kB), and a flood of hours stops at the budget.
    fn default() -> Limits {
        Limits {
            window_ms: 5_000,
            per_key: 5,
            per_window: 100,
            keys: 64,
            budget_events: 10_000,
            budget_bytes: 8 << 20,
        }
    }
}

/// Bounds of each setting (inclusive): no setting can turn a limit off.
const WINDOW_MS: (u64, u64) = (100, 60_000);
const PER_KEY: (u64, u64) = (1, 10_000);
const PER_WINDOW: (u64, u64) = (1, 100_000);
const KEYS: (u64, u64) = (1, 4_096);
const BUDGET_EVENTS: (u64, u64) = (10, 100_000_000);
const BUDGET_BYTES: (u64, u64) = (16 << 10, 64 << 30);

impl Limits {
    /// Checks every setting is within its bounds, `per_key` not above `per_window`, and
    /// the byte budget room for at least one largest event.
    pub fn validate(&self) -> Result<(), AuditError> {
        let check = |name: &str, v: u64, (lo, hi): (u64, u64)| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(AuditError::Limits(format!(
                    "{name}={v} is outside {lo}..={hi}"
                )))
            }
        };
        check("window", self.window_ms, WINDOW_MS)?;
        check("per-key", u64::from(self.per_key), PER_KEY)?;
        check("per-window", u64::from(self.per_window), PER_WINDOW)?;
        check("keys", u64::from(self.keys), KEYS)?;
        check("events", self.budget_events, BUDGET_EVENTS)?;
        check("bytes", self.budget_bytes, BUDGET_BYTES)?;
        if self.per_key > self.per_window {
            return Err(AuditError::Limits(format!(
                "per-key={} is above per-window={}",
                self.per_key, self.per_window
            )));
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// `window=5s,per-key=5,per-window=100,keys=64,events=10000,bytes=8MiB`: any of the
/// settings, each at most once, the others at their defaults. Durations take `ms` or `s`;
/// byte counts a plain number, `KiB`, `MiB` or `GiB`. Anything else is refused.
impl FromStr for Limits {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Limits, AuditError> {
        let bad = |msg: String| AuditError::Limits(msg.chars().take(160).collect());
        let mut limits = Limits::default();
        let mut seen = Vec::new();
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} is not name=value")))?;
            let (name, value) = (name.trim(), value.trim());
            if seen.contains(&name) {
                return Err(bad(format!("{name} is given twice")));
            }
            seen.push(name);
            let number = |text: &str| {
                // Plain ASCII digits only: no sign, no blank, no underscore.
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("{name}={value:?} is not a number")));
                }
                text.parse::<u64>()
                    .map_err(|_| bad(format!("{name}={value:?} is too large")))
            };
            let small = |v: u64| {
                u32::try_from(v).map_err(|_| bad(format!("{name}={value:?} is too large")))
            };
            match name {
                "window" => {
                    limits.window_ms = if let Some(ms) = value.strip_suffix("ms") {
                        number(ms)?
                    } else if let Some(s) = value.strip_suffix('s') {
                        number(s)?
                            .checked_mul(1000)
                            .ok_or_else(|| bad(format!("{name}={value:?} is too large")))?
                    } else {
                        return Err(bad(format!("{name}={value:?} needs a unit, ms or s")));
                    }
                }
                "per-key" => limits.per_key = small(number(value)?)?,
                "per-window" => limits.per_window = small(number(value)?)?,
                "keys" => limits.keys = small(number(value)?)?,
                "events" => limits.budget_events = number(value)?,
                "bytes" => {
                    let (digits, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30)]
                        .into_iter()
                        .find_map(|(unit, shift)| value.strip_suffix(unit).map(|d| (d, shift)))
                        .unwrap_or((value, 0));
                    limits.budget_bytes = number(digits)?
                        .checked_mul(1 << shift)
                        .ok_or_else(|| bad(format!("{name}={value:?} is too large")))?;
                }
                other => {
                    return Err(bad(format!(
                    "unknown setting {other:?} (window, per-key, per-window, keys, events, bytes)"
                )))
                }
            }
        }
        limits.validate()?;
        Ok(limits)
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window={}ms,per-key={},per-window={},keys={},events={},bytes={}",
            self.window_ms,
            self.per_key,
            self.per_window,
            self.keys,
            self.budget_events,
            self.budget_bytes
        )
    }
}

/// A repeat key without the resource's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    event_type: EventType,
    action: String,
    outcome: Outcome,
    resource_type: String,
    reason: Option<String>,
}

/// What makes two events repeats of each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    resource: String,
}

impl Key {
    fn of(event: &Event) -> Key {
        Key {
            kind: Kind {
                event_type: event.event_type,
                action: event.action.clone(),
                outcome: event.outcome,
                resource_type: event.resource.kind.clone(),
                reason: match event.details.get("reason") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                    None => None,
                },
            },
            resource: event.resource.name.clone(),
        }
    }
}

/// Events held back: how many, and when the first and last came.
#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first: SystemTime,
    last: SystemTime,
}

impl Tally {
    fn add(tally: &mut Option<Tally>, at: SystemTime) {
        match tally {
            Some(t) => {
                t.count += 1;
                t.last = at;
            }
            None => {
                *tally = Some(Tally {
                    count: 1,
                    first: at,
                    last: at,
                })
            }
        }
    }
}

/// One key in the current window.
#[derive(Debug, Default)]
struct KeyState {
    verbatim: u32,
    held: Option<Tally>,
}

/// How far a summary's name goes.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Key,
    Kind,
    All,
}

/// What a summary is to count: a key, a kind, or the catch-all.
#[derive(Debug)]
enum Held {
    Key(Key),
    Kind(Kind),
    All,
}

/// What a [`Limiter`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Events given to [`Limiter::admit`] (not [`Limiter::admit_always`]).
    pub admitted: u64,
    /// Of those, written verbatim.
    pub verbatim: u64,
    /// Of those, held back and counted (in a summary written or still to be written).
    pub held: u64,
    /// Summaries written.
    pub summaries: u64,
    /// Every event written, summaries and limit events included.
    pub written_events: u64,
    /// Their approximate size in the log.
    pub written_bytes: u64,
    /// Whether the budget was reached.
    pub exhausted: bool,
}

/// The limits of one writer of one run's events. Not thread-safe by itself: keep it next
/// to the [`AuditLog`](crate::AuditLog) it feeds, under the same lock.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    window_start: Option<Instant>,
    window_verbatim: u32,
    exact: HashMap<Key, KeyState>,
    kinds: HashMap<Kind, Tally>,
    rest: Option<Tally>,
    /// Who summaries and limit events are about: the first event's principal and trace.
    principal: Option<Principal>,
    trace_id: Option<String>,
    rate_reported: bool,
    stats: LimiterStats,
}

impl Limiter {
    /// A limiter with `limits` (checked by the caller with [`Limits::validate`]; a value
    /// from [`Limits::from_str`] or [`Limits::default`] is).
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            window_start: None,
            window_verbatim: 0,
            exact: HashMap::new(),
            kinds: HashMap::new(),
            rest: None,
            principal: None,
            trace_id: None,
            rate_reported: false,
            stats: LimiterStats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What it has done so far.
    pub fn stats(&self) -> LimiterStats {
        self.stats
    }

    /// Decides on `event` now; pushes onto `out` what is to be written, in order (maybe
    /// nothing, maybe a previous window's summaries, a limit event, the event itself).
    pub fn admit(&mut self, event: Event, out: &mut Vec<Event>) {
        self.admit_at(event, Instant::now(), SystemTime::now(), out);
    }

    /// [`Limiter::admit`] at a given time (`now` for windows, `wall` for the summaries'
    /// first and last times).
    pub fn admit_at(&mut self, event: Event, now: Instant, wall: SystemTime, out: &mut Vec<Event>) {
        self.stats.admitted += 1;
        self.learn(&event);
        self.roll(now, out);
        let key = Key::of(&event);
        let room = self.exact.len() < self.limits.keys as usize;
        let verbatim_so_far = match self.exact.get(&key) {
            Some(state) => Some(state.verbatim),
            None if room => Some(0),
            None => None,
        };
        let rate_ok = verbatim_so_far.is_some_and(|v| v < self.limits.per_key)
            && self.window_verbatim < self.limits.per_window;
        if !self.stats.exhausted && rate_ok {
            let size = encoded_len(&event);
            if self.fits(size) {
                self.exact.entry(key).or_default().verbatim += 1;
                self.window_verbatim += 1;
                self.stats.verbatim += 1;
                self.charge(size);
                out.push(event);
                return;
            }
            self.exhaust(size, out);
        } else if !self.stats.exhausted && !self.rate_reported {
            self.rate_reported = true;
            let e = self.rate_event(&key);
            self.push_within_budget(e, out);
        }
        self.hold(key, verbatim_so_far.is_some(), wall);
    }

    /// Writes `event` whatever the limits (a run's start and stop: one each per run),
    /// charging it to the budget; its window's summaries come first if it ended.
    pub fn admit_always(&mut self, event: Event, out: &mut Vec<Event>) {
        self.learn(&event);
        self.roll(Instant::now(), out);
        self.push(event, out);
    }

    /// Writes the summaries of a window that has ended (call it now and then when events
    /// may stop coming for a while).
    pub fn tick(&mut self, out: &mut Vec<Event>) {
        self.roll(Instant::now(), out);
    }

    /// The run ends: summaries of every event held back and not yet summarized, the
    /// budget notwithstanding (at most `2 × keys + 1` of them).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.summarize(true, out);
        self.window_start = None;
        self.window_verbatim = 0;
    }

    fn learn(&mut self, event: &Event) {
        if self.principal.is_none() {
            self.principal = Some(event.principal.clone());
            self.trace_id.clone_from(&event.trace_id);
        }
    }

    /// Starts a new window when the current one has ended, writing its summaries first
    /// unless the budget is used up (they are then kept for [`Limiter::finish`]).
    fn roll(&mut self, now: Instant, out: &mut Vec<Event>) {
        match self.window_start {
            None => self.window_start = Some(now),
            Some(start) if now.saturating_duration_since(start) >= self.limits.window() => {
                self.window_start = Some(now);
                self.window_verbatim = 0;
                if self.stats.exhausted {
                    // Counts go on; no key may be written verbatim again.
                    return;
                }
                self.summarize(false, out);
                if self.stats.written_events >= self.limits.budget_events
                    || self.stats.written_bytes >= self.limits.budget_bytes
                {
                    self.exhaust(0, out);
                }
            }
            Some(_) => {}
        }
    }

    fn fits(&self, size: usize) -> bool {
        self.stats.written_events < self.limits.budget_events
            && self.stats.written_bytes.saturating_add(size as u64) <= self.limits.budget_bytes
    }

    fn charge(&mut self, size: usize) {
        self.stats.written_events += 1;
        self.stats.written_bytes = self.stats.written_bytes.saturating_add(size as u64);
    }

    fn push(&mut self, event: Event, out: &mut Vec<Event>) {
        let size = encoded_len(&event);
        self.charge(size);
        out.push(event);
    }

    /// Writes `event` if the budget has room for it, else says the budget is reached;
    /// whether it was written.
    fn push_within_budget(&mut self, event: Event, out: &mut Vec<Event>) -> bool {
        let size = encoded_len(&event);
        if self.fits(size) {
            self.charge(size);
            out.push(event);
            true
        } else {
            self.exhaust(size, out);
            false
        }
    }

    /// Counts a held-back event under its key, its kind, or the catch-all.
    fn hold(&mut self, key: Key, tracked: bool, wall: SystemTime) {
        self.stats.held += 1;
        if tracked {
            Tally::add(&mut self.exact.entry(key).or_default().held, wall);
            return;
        }
        if let Some(t) = self.kinds.get_mut(&key.kind) {
            t.count += 1;
            t.last = wall;
        } else if self.kinds.len() < self.limits.keys as usize {
            self.kinds.insert(
                key.kind,
                Tally {
                    count: 1,
                    first: wall,
                    last: wall,
                },
            );
        } else {
            Tally::add(&mut self.rest, wall);
        }
    }

    /// The budget is reached: one event saying so; from now on, counts only.
    fn exhaust(&mut self, size: usize, out: &mut Vec<Event>) {
        if self.stats.exhausted {
            return;
        }
        self.stats.exhausted = true;
        let limit = if self.stats.written_events >= self.limits.budget_events {
            "events"
        } else {
            "bytes"
        };
        let e = self
            .audit_event("budget", Outcome::Denied)
            .with_detail("limit", limit)
            .with_detail("budgetEvents", self.limits.budget_events)
            .with_detail("budgetBytes", self.limits.budget_bytes)
            .with_detail("writtenEvents", self.stats.written_events)
            .with_detail("writtenBytes", self.stats.written_bytes)
            .with_detail("refusedEventBytes", size)
            .with_detail(
                "then",
                "further events of this run are counted, not written; their summaries follow at the run's end",
            );
        self.push(e, out);
    }

    fn rate_event(&self, key: &Key) -> Event {
        self.audit_event("rate", Outcome::Denied)
            .with_detail("limit", "rate")
            .with_detail("windowMs", self.limits.window_ms)
            .with_detail("perKey", self.limits.per_key)
            .with_detail("perWindow", self.limits.per_window)
            .with_detail("first", summarized(&key.kind, Some(&key.resource)))
            .with_detail(
                "then",
                "repeats beyond the limits are counted; each window's summaries name their keys",
            )
    }

    /// An event about the audit trail itself (`resource.exhausted`, resource `audit`).
    fn audit_event(&self, name: &str, outcome: Outcome) -> Event {
        let mut e = Event::new(
            EventType::ResourceExhausted,
            self.principal.clone().unwrap_or_else(|| Principal {
                kind: "system".into(),
                id: "spawn".into(),
                name: None,
            }),
            Resource {
                kind: "audit".into(),
                name: name.into(),
            },
            LIMIT_ACTION,
            outcome,
        );
        e.trace_id.clone_from(&self.trace_id);
        e
    }

    /// One summary per key, kind and the catch-all with events held back; clears them.
    ///
    /// A window's summaries are charged to the budget like any event: when the next one
    /// would pass it, the budget is reached there and the summaries not written are kept
    /// (counting on) for the run's end. The final summaries are written whatever the
    /// budget.
    fn summarize(&mut self, last: bool, out: &mut Vec<Event>) {
        let mut keys: Vec<(Key, Tally)> = self
            .exact
            .drain()
            .filter_map(|(k, s)| s.held.map(|t| (k, t)))
            .collect();
        // In the order they were first held back: a reader sees them as they came.
        keys.sort_by_key(|(_, t)| t.first);
        let mut kinds: Vec<(Kind, Tally)> = self.kinds.drain().collect();
        kinds.sort_by_key(|(_, t)| t.first);
        let pending = keys
            .into_iter()
            .map(|(k, t)| (Held::Key(k), t))
            .chain(kinds.into_iter().map(|(k, t)| (Held::Kind(k), t)))
            .chain(self.rest.take().map(|t| (Held::All, t)));
        let mut kept = false;
        for (held, tally) in pending {
            if kept {
                self.keep(held, tally);
                continue;
            }
            let e = match &held {
                Held::Key(key) => self.summary(
                    Scope::Key,
                    Some(&key.kind),
                    Some(&key.resource),
                    tally,
                    last,
                ),
                Held::Kind(kind) => self.summary(Scope::Kind, Some(kind), None, tally, last),
                Held::All => self.summary(Scope::All, None, None, tally, last),
            };
            if last {
                self.push(e, out);
            } else if !self.push_within_budget(e, out) {
                kept = true;
                self.keep(held, tally);
                continue;
            }
            self.stats.summaries += 1;
        }
    }

    /// Puts back a tally whose summary was not written, for [`Limiter::finish`].
    fn keep(&mut self, held: Held, tally: Tally) {
        match held {
            Held::Key(key) => self.exact.entry(key).or_default().held = Some(tally),
            Held::Kind(kind) => {
                self.kinds.insert(kind, tally);
            }
            Held::All => self.rest = Some(tally),
        }
    }

    fn summary(
        &self,
        scope: Scope,
        kind: Option<&Kind>,
        resource: Option<&str>,
        tally: Tally,
        last: bool,
    ) -> Event {
        let mut e = match kind {
            Some(k) => {
                let mut e = Event::new(
                    k.event_type,
                    self.principal.clone().unwrap_or_else(|| Principal {
                        kind: "system".into(),
                        id: "spawn".into(),
                        name: None,
                    }),
                    Resource {
                        kind: k.resource_type.clone(),
                        name: resource.unwrap_or("*").to_owned(),
                    },
                    SUMMARY_ACTION,
                    k.outcome,
                );
                e.trace_id.clone_from(&self.trace_id);
                e
            }
            None => {
                let mut e = self.audit_event("*", Outcome::Denied);
                e.action = SUMMARY_ACTION.into();
                e
            }
        };
        e.details = Map::new();
        e = e
            .with_detail(
                "scope",
                match scope {
                    Scope::Key => "key",
                    Scope::Kind => "kind",
                    Scope::All => "all",
                },
            )
            .with_detail(
                "summarized",
                kind.map_or(Value::Null, |k| summarized(k, resource)),
            )
            .with_detail("count", tally.count)
            .with_detail("first", wall_rfc3339(tally.first))
            .with_detail("last", wall_rfc3339(tally.last))
            .with_detail("windowMs", self.limits.window_ms)
            .with_detail("final", last)
            .with_detail("budgetReached", self.stats.exhausted);
        e
    }
}

/// What a summary stands for, in the summarized events' own terms.
fn summarized(kind: &Kind, resource: Option<&str>) -> Value {
    let mut v = json!({
        "eventType": kind.event_type.as_str(),
        "action": kind.action,
        "outcome": kind.outcome.as_str(),
        "resourceType": kind.resource_type,
    });
    if let Some(r) = resource {
        v["resource"] = r.into();
    }
    if let Some(reason) = &kind.reason {
        v["reason"] = reason.as_str().into();
    }
    v
}

fn wall_rfc3339(t: SystemTime) -> String {
    format_rfc3339(time::OffsetDateTime::from(t))
}

/// About what `event` takes in the log: its JSON plus [`RECORD_OVERHEAD`], capped as the
/// log caps a line.
pub(crate) fn encoded_len(event: &Event) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing an Event cannot fail (string keys only); a failure counts as the cap.
    match serde_json::to_writer(&mut count, event) {
        Ok(()) => (count.0 + RECORD_OVERHEAD).min(MAX_EVENT_BYTES + 1),
        Err(_) => MAX_EVENT_BYTES + 1,
    }
}

#[cfg(test)]
mod tests;
