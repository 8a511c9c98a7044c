use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::*;

fn principal() -> Principal {
    Principal {
        kind: "agent".into(),
        id: "ag_test".into(),
        name: Some("flood".into()),
    }
}

/// A denied connection attempt to `host`, as the egress proxy records it.
fn connect(host: &str, reason: &str) -> Event {
    let mut e = Event::new(
        EventType::AgentNetConnect,
        principal(),
        Resource {
            kind: "host".into(),
            name: format!("{host}:443"),
        },
        "connect",
        Outcome::Denied,
    )
    .with_detail("host", host)
    .with_detail("reason", reason);
    e.trace_id = Some("tr_test".into());
    e
}

fn limits(window_ms: u64, per_key: u32, per_window: u32, keys: u32) -> Limits {
    Limits {
        window_ms,
        per_key,
        per_window,
        keys,
        ..Limits::default()
    }
}

/// Feeds events at given offsets (ms from the start) and finishes; returns everything
/// written, in order.
struct Feed {
    limiter: Limiter,
    t0: Instant,
    w0: SystemTime,
    out: Vec<Event>,
}

impl Feed {
    fn new(limits: Limits) -> Feed {
        limits.validate().expect("test limits are valid");
        Feed {
            limiter: Limiter::new(limits),
            t0: Instant::now(),
            w0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            out: Vec::new(),
        }
    }

    fn at(&mut self, ms: u64, event: Event) {
        let d = Duration::from_millis(ms);
        self.limiter
            .admit_at(event, self.t0 + d, self.w0 + d, &mut self.out);
    }

    fn finish(mut self) -> (Vec<Event>, LimiterStats) {
        self.limiter.finish(&mut self.out);
        (self.out, self.limiter.stats())
    }
}

fn is_summary(e: &Event) -> bool {
    e.action == SUMMARY_ACTION
}

fn is_limit(e: &Event, which: &str) -> bool {
    e.action == LIMIT_ACTION && e.resource.name == which
}

fn count(e: &Event) -> u64 {
    e.details["count"].as_u64().expect("a summary has a count")
}

/// Per resource: events written verbatim plus the counts of key-scoped summaries; kind-
/// and all-scoped summaries under `"*kind"` and `"*all"`.
fn accounted(out: &[Event]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in out {
        if e.action == LIMIT_ACTION {
            continue;
        }
        if is_summary(e) {
            let slot = match e.details["scope"].as_str() {
                Some("key") => e.resource.name.clone(),
                Some("kind") => "*kind".into(),
                Some("all") => "*all".into(),
                other => panic!("scope {other:?}"),
            };
            *m.entry(slot).or_default() += count(e);
        } else {
            *m.entry(e.resource.name.clone()).or_default() += 1;
        }
    }
    m
}

fn total(out: &[Event]) -> u64 {
    accounted(out).values().sum()
}

#[test]
fn parses_every_setting_and_keeps_defaults_for_the_rest() {
    let d = Limits::default();
    d.validate().unwrap();
    for (text, want) in [
        ("", d),
        (" ", d),
        (
            "window=2s",
            Limits {
                window_ms: 2000,
                ..d
            },
        ),
        (
            "window=250ms,per-key=2",
            Limits {
                window_ms: 250,
                per_key: 2,
                ..d
            },
        ),
        (
            "per-window=7, keys=3 ,events=50,bytes=64KiB",
            Limits {
                per_window: 7,
                keys: 3,
                budget_events: 50,
                budget_bytes: 64 << 10,
                ..d
            },
        ),
        (
            "bytes=2MiB",
            Limits {
                budget_bytes: 2 << 20,
                ..d
            },
        ),
        (
            "bytes=1GiB",
            Limits {
                budget_bytes: 1 << 30,
                ..d
            },
        ),
        (
            "bytes=20000",
            Limits {
                budget_bytes: 20000,
                ..d
            },
        ),
    ] {
        assert_eq!(text.parse::<Limits>().unwrap(), want, "{text:?}");
    }
    let shown = d.to_string();
    assert_eq!(shown.parse::<Limits>().unwrap(), d, "{shown}");
}

/// Every way to turn a limit off or make it meaningless is refused.
#[test]
fn refuses_malformed_and_unbounded_settings() {
    for text in [
        "window",
        "window=",
        "window=5",
        "window=0s",
        "window=99ms",
        "window=61s",
        "window=-1s",
        "window=1.5s",
        "window=+5s",
        "window=18446744073709551615s",
        "per-key=0",
        "per-key=-1",
        "per-key=1_0",
        "per-key= ",
        "per-key=4294967296",
        "per-key=200,per-window=100",
        "per-window=0",
        "keys=0",
        "keys=100000",
        "events=0",
        "events=9",
        "events=100000001",
        "bytes=0",
        "bytes=1KiB",
        "bytes=65GiB",
        "bytes=18446744073709551615GiB",
        "bytes=1kb",
        "bytes=1 MiB",
        "window=1s,window=2s",
        "budget=10",
        "Window=1s",
        "per_key=1",
        "window=1s;keys=2",
    ] {
        let err = text.parse::<Limits>().expect_err(text);
        assert!(matches!(err, AuditError::Limits(_)), "{text:?}: {err}");
    }
}

#[test]
fn below_the_limits_everything_is_written_as_is() {
    let mut f = Feed::new(limits(1000, 5, 100, 64));
    let mut sent = Vec::new();
    for i in 0..5u64 {
        for host in ["a.test", "b.test"] {
            let e = connect(host, "allowlist");
            sent.push(e.clone());
            f.at(i * 10, e);
        }
    }
    let (out, stats) = f.finish();
    assert_eq!(out, sent);
    assert_eq!(stats.verbatim, 10);
    assert_eq!(stats.held, 0);
    assert_eq!(stats.summaries, 0);
    assert!(!stats.exhausted);
}

/// The first `per_key` of a window verbatim, the rest counted; the window's summary comes
/// with the next window's first event, names the key and counts exactly.
#[test]
fn repeats_are_counted_per_window_and_summarized() {
    let mut f = Feed::new(limits(1000, 3, 100, 64));
    for i in 0..10 {
        f.at(i * 10, connect("x.test", "allowlist"));
    }
    assert_eq!(f.out.len(), 4, "3 verbatim and one rate-limit event");
    assert!(f.out[..3].iter().all(|e| e.action == "connect"));
    assert!(is_limit(&f.out[3], "rate"), "{:?}", f.out[3]);
    assert_eq!(f.out[3].details["limit"], "rate");
    assert_eq!(f.out[3].details["first"]["resource"], "x.test:443");
    assert_eq!(f.out[3].event_type, EventType::ResourceExhausted);
    assert_eq!(f.out[3].trace_id.as_deref(), Some("tr_test"));

    // Next window: the summary of the 7 held back, then the event itself.
    f.at(1500, connect("x.test", "allowlist"));
    assert_eq!(f.out.len(), 6);
    let s = &f.out[4];
    assert!(is_summary(s), "{s:?}");
    assert_eq!(s.event_type, EventType::AgentNetConnect);
    assert_eq!(s.outcome, Outcome::Denied);
    assert_eq!(s.resource.name, "x.test:443");
    assert_eq!(s.principal, principal());
    assert_eq!(s.trace_id.as_deref(), Some("tr_test"));
    assert_eq!(s.details["scope"], "key");
    assert_eq!(count(s), 7);
    assert_eq!(s.details["summarized"]["action"], "connect");
    assert_eq!(s.details["summarized"]["reason"], "allowlist");
    assert_eq!(s.details["summarized"]["eventType"], "agent.net.connect");
    assert_eq!(s.details["first"], "2027-01-15T08:00:00.030Z");
    assert_eq!(s.details["last"], "2027-01-15T08:00:00.090Z");
    assert_eq!(s.details["final"], false);
    assert_eq!(f.out[5].action, "connect");

    // One rate-limit event per run, not per window.
    for i in 0..10 {
        f.at(1600 + i, connect("x.test", "allowlist"));
    }
    let (out, stats) = f.finish();
    assert_eq!(out.iter().filter(|e| is_limit(e, "rate")).count(), 1);
    let last = out.last().unwrap();
    assert!(
        is_summary(last) && last.details["final"] == true,
        "{last:?}"
    );
    assert_eq!(count(last), 8);
    assert_eq!(total(&out), 21);
    assert_eq!(stats.admitted, 21);
    assert_eq!(stats.verbatim + stats.held, 21);
}

/// A noisy key does not hide another: the quiet one's events all come through verbatim,
/// and each key is summarized under its own name.
#[test]
fn one_noisy_key_does_not_hide_another() {
    let mut f = Feed::new(limits(1000, 5, 100, 64));
    let mut quiet = 0;
    for i in 0..5000u64 {
        f.at(i / 10, connect("noisy.test", "allowlist"));
        if i % 1000 == 999 {
            f.at(i / 10, connect("quiet.test", "denylist"));
            quiet += 1;
        }
    }
    let (out, _) = f.finish();
    let verbatim_quiet = out
        .iter()
        .filter(|e| e.action == "connect" && e.resource.name == "quiet.test:443")
        .count();
    assert_eq!(verbatim_quiet, quiet);
    let by = accounted(&out);
    assert_eq!(by["noisy.test:443"], 5000);
    assert_eq!(by["quiet.test:443"], 5);
    // Bounded: 5 verbatim per window of the noisy key, a summary per window, one limit.
    assert!(out.len() < 40, "{} events written", out.len());
}

/// The same host with another reason or outcome is another key.
#[test]
fn reason_and_outcome_separate_keys() {
    let mut f = Feed::new(limits(1000, 1, 100, 64));
    for _ in 0..3 {
        f.at(0, connect("x.test", "allowlist"));
        f.at(0, connect("x.test", "rate-limit"));
        let mut ok = connect("x.test", "allowlist");
        ok.outcome = Outcome::Success;
        ok.details.remove("reason");
        f.at(0, ok);
    }
    let (out, _) = f.finish();
    let verbatim = out.iter().filter(|e| e.action == "connect").count();
    assert_eq!(verbatim, 3, "one of each key");
    let summaries: Vec<_> = out.iter().filter(|e| is_summary(e)).collect();
    assert_eq!(summaries.len(), 3);
    assert!(summaries.iter().all(|s| count(s) == 2));
}

/// Many distinct keys: the per-window cap holds, keys beyond `keys` are counted by kind,
/// kinds beyond `keys` in the catch-all; every event is accounted for.
#[test]
fn distinct_keys_cannot_flood_through_summaries() {
    let mut f = Feed::new(limits(1000, 2, 10, 4));
    for i in 0..1000u64 {
        f.at(i, connect(&format!("h{i}.test"), "allowlist"));
    }
    // Kinds: the reason differs, so each is a kind of its own.
    for i in 0..20u64 {
        f.at(999, connect(&format!("r{i}.test"), &format!("reason-{i}")));
    }
    let (out, stats) = f.finish();
    let verbatim = out.iter().filter(|e| e.action == "connect").count();
    assert_eq!(
        verbatim, 4,
        "4 keys tracked, once each (per-key 2, but one event each)"
    );
    let summaries: Vec<_> = out.iter().filter(|e| is_summary(e)).collect();
    assert!(
        summaries.len() <= 2 * 4 + 1,
        "{} summaries: {summaries:#?}",
        summaries.len()
    );
    let scope = |s: &str| summaries.iter().filter(|e| e.details["scope"] == s).count();
    assert_eq!(scope("kind"), 4);
    assert_eq!(scope("all"), 1);
    let all = summaries
        .iter()
        .find(|e| e.details["scope"] == "all")
        .unwrap();
    assert_eq!(all.resource.name, "*");
    assert!(all.details["summarized"].is_null());
    let kind = summaries
        .iter()
        .find(|e| e.details["scope"] == "kind")
        .unwrap();
    assert_eq!(kind.resource.name, "*");
    assert_eq!(kind.details["summarized"]["action"], "connect");
    assert!(kind.details["summarized"].get("resource").is_none());
    assert_eq!(total(&out), 1020);
    assert_eq!(stats.admitted, 1020);
}

#[test]
fn the_per_window_cap_holds_across_keys() {
    let mut f = Feed::new(limits(1000, 5, 10, 64));
    for i in 0..50u64 {
        f.at(0, connect(&format!("h{i}.test"), "allowlist"));
    }
    let (out, _) = f.finish();
    assert_eq!(out.iter().filter(|e| e.action == "connect").count(), 10);
    assert_eq!(total(&out), 50);
}

/// The budget: one event when reached, nothing verbatim after it (not even in new
/// windows), and the summaries of everything held back at the end.
#[test]
fn the_budget_is_announced_then_only_counted() {
    let mut l = limits(100, 5, 100, 64);
    l.budget_events = 20;
    let mut f = Feed::new(l);
    let mut n = 0;
    for i in 0..10_000u64 {
        // A new key every 10 events, a new window every 50: never rate-limited alone.
        f.at(i * 2, connect(&format!("h{}.test", i / 10), "allowlist"));
        n += 1;
    }
    let before_finish = f.out.len();
    let (out, stats) = f.finish();
    let budget: Vec<_> = out.iter().filter(|e| is_limit(e, "budget")).collect();
    assert_eq!(budget.len(), 1, "one budget event");
    assert_eq!(budget[0].details["limit"], "events");
    assert_eq!(budget[0].details["budgetEvents"], 20);
    assert_eq!(budget[0].event_type, EventType::ResourceExhausted);
    let at = out.iter().position(|e| is_limit(e, "budget")).unwrap();
    assert!(
        out[at..].iter().all(|e| e.action != "connect"),
        "nothing verbatim after the budget"
    );
    assert!(
        before_finish <= 22,
        "{before_finish} written before the end"
    );
    let finals: Vec<_> = out[before_finish..].iter().collect();
    assert!(finals
        .iter()
        .all(|e| is_summary(e) && e.details["final"] == true));
    assert!(finals.len() <= 2 * 64 + 1);
    assert!(finals.iter().all(|e| e.details["budgetReached"] == true));
    assert_eq!(total(&out), n);
    assert!(stats.exhausted);
}

/// A window's summaries are charged like any event: those that would pass the budget
/// are not written then (the budget event says where it stopped, exactly at the budget)
/// but at the run's end, counted on; nothing is lost.
#[test]
fn window_summaries_stop_at_the_budget_and_the_rest_come_at_the_end() {
    for budget in [10u64, 11, 12, 15, 16, 17] {
        let mut l = limits(100, 1, 100, 8);
        l.budget_events = budget;
        let mut f = Feed::new(l);
        // Window 1: 8 keys, each written once and held back twice (8 verbatim, 8 keys
        // to summarize at its end).
        for i in 0..24u64 {
            f.at(i, connect(&format!("h{}.test", i % 8), "allowlist"));
        }
        // Window 2 and 3: the same keys again; the first event of window 2 ends window 1.
        for i in 0..48u64 {
            f.at(
                150 + i * 3,
                connect(&format!("h{}.test", i % 8), "allowlist"),
            );
        }
        let (out, stats) = f.finish();
        let at = out
            .iter()
            .position(|e| is_limit(e, "budget"))
            .unwrap_or_else(|| panic!("budget {budget}: reached"));
        assert_eq!(at as u64, budget, "budget {budget}: written before it");
        assert_eq!(out[at].details["writtenEvents"], budget, "budget {budget}");
        assert_eq!(out[at].details["limit"], "events", "budget {budget}");
        assert!(
            out[at + 1..]
                .iter()
                .all(|e| is_summary(e) && e.details["final"] == true),
            "budget {budget}: {:#?}",
            &out[at + 1..]
        );
        assert_eq!(
            total(&out),
            72,
            "budget {budget}: every event accounted for"
        );
        let by = accounted(&out);
        for i in 0..8 {
            assert_eq!(by[&format!("h{i}.test:443")], 9, "budget {budget}: h{i}");
        }
        assert!(stats.exhausted);
    }
}

#[test]
fn the_byte_budget_counts_what_events_take() {
    let mut l = limits(100, 1000, 100_000, 64);
    l.budget_bytes = 16 << 10;
    let mut f = Feed::new(l);
    let big = "x".repeat(1000);
    for i in 0..100u64 {
        f.at(
            i,
            connect("x.test", "allowlist").with_detail("detail", big.as_str()),
        );
    }
    let (out, stats) = f.finish();
    let budget = out
        .iter()
        .find(|e| is_limit(e, "budget"))
        .expect("budget event");
    assert_eq!(budget.details["limit"], "bytes");
    let verbatim = out.iter().filter(|e| e.action == "connect").count();
    assert!((10..=16).contains(&verbatim), "{verbatim} verbatim");
    assert!(stats.written_bytes <= (16 << 10) + 4096, "{stats:?}");
    assert_eq!(total(&out), 100);
}

#[test]
fn start_and_stop_are_always_written_and_charged() {
    let mut l = limits(1000, 1, 1, 64);
    l.budget_events = 10;
    let mut limiter = Limiter::new(l);
    let mut out = Vec::new();
    for _ in 0..30 {
        limiter.admit(connect("x.test", "allowlist"), &mut out);
    }
    let stop = Event::new(
        EventType::AgentStop,
        principal(),
        Resource {
            kind: "sandbox".into(),
            name: "native".into(),
        },
        "stop",
        Outcome::Success,
    );
    for _ in 0..20 {
        limiter.admit_always(stop.clone(), &mut out);
    }
    assert_eq!(out.iter().filter(|e| e.action == "stop").count(), 20);
    limiter.finish(&mut out);
    assert!(limiter.stats().written_events >= 20);
    assert_eq!(total(&out) - 20, 30, "the stops are not admitted events");
}

/// Whatever the mix of keys and timing, verbatim + summarized == admitted, per key for
/// keys summarized by name, and in total.
#[test]
fn accounting_is_exact_under_any_mix() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..50 {
        let l = Limits {
            window_ms: 100 + next() % 900,
            per_key: 1 + (next() % 5) as u32,
            per_window: 5 + (next() % 50) as u32,
            keys: 1 + (next() % 8) as u32,
            budget_events: 10 + next() % 200,
            budget_bytes: 16 << 10 << (next() % 4),
        };
        let mut f = Feed::new(l);
        let mut sent: BTreeMap<String, u64> = BTreeMap::new();
        let mut t = 0;
        let n = 500 + next() % 3000;
        for _ in 0..n {
            t += next() % 7;
            let host = format!("h{}.test", next() % 12);
            let reason = ["allowlist", "denylist", "rate-limit"][(next() % 3) as usize];
            *sent.entry(format!("{host}:443")).or_default() += 1;
            f.at(t, connect(&host, reason));
        }
        let (out, stats) = f.finish();
        assert_eq!(total(&out), n, "round {round}: {l}");
        assert_eq!(stats.verbatim + stats.held, n, "round {round}");
        let by = accounted(&out);
        let anonymous =
            by.get("*kind").copied().unwrap_or(0) + by.get("*all").copied().unwrap_or(0);
        for (host, &want) in &sent {
            let got = by.get(host).copied().unwrap_or(0);
            assert!(
                got <= want && want - got <= anonymous,
                "round {round}: {host}: sent {want}, accounted {got} by name, {anonymous} by kind"
            );
        }
        if anonymous == 0 {
            for (host, &want) in &sent {
                assert_eq!(by.get(host).copied().unwrap_or(0), want, "round {round}");
            }
        }
        // Nothing is written beyond the budget but the budget's own event and the final
        // summaries: whatever came before the budget event fits in it.
        let verbatim = out.iter().filter(|e| e.action == "connect").count() as u64;
        assert!(verbatim <= l.budget_events, "round {round}");
        if let Some(at) = out.iter().position(|e| is_limit(e, "budget")) {
            assert!(
                at as u64 <= l.budget_events,
                "round {round}: {at} before it"
            );
            let said = &out[at].details;
            assert!(
                said["writtenEvents"].as_u64() <= Some(l.budget_events),
                "round {round}"
            );
            assert!(
                said["writtenBytes"].as_u64() <= Some(l.budget_bytes),
                "round {round}"
            );
            assert!(
                out[at + 1..]
                    .iter()
                    .all(|e| is_summary(e) && e.details["final"] == true),
                "round {round}: only the final summaries after the budget event"
            );
        }
    }
}

#[test]
fn tick_summarizes_an_ended_window_without_new_events() {
    let mut limiter = Limiter::new(limits(100, 1, 10, 64));
    let mut out = Vec::new();
    for _ in 0..5 {
        limiter.admit(connect("x.test", "allowlist"), &mut out);
    }
    assert_eq!(out.len(), 2, "one verbatim and the rate event");
    limiter.tick(&mut out);
    assert_eq!(out.len(), 2, "the window has not ended");
    std::thread::sleep(Duration::from_millis(120));
    limiter.tick(&mut out);
    assert_eq!(out.len(), 3);
    assert!(is_summary(&out[2]));
    assert_eq!(count(&out[2]), 4);
    limiter.finish(&mut out);
    assert_eq!(out.len(), 3, "nothing left to summarize");
}

#[test]
fn events_sizes_are_estimated_within_the_line_cap() {
    let e = connect("x.test", "allowlist");
    let mut line = Vec::new();
    crate::encode::encode_line(
        u64::MAX,
        &crate::now_rfc3339(),
        &e,
        crate::chain::GENESIS,
        &mut line,
    )
    .unwrap();
    let est = encoded_len(&e);
    assert!(
        est >= line.len() && est <= line.len() + 40,
        "{est} vs {}",
        line.len()
    );
    let huge = e.with_detail("detail", "y".repeat(200_000));
    assert_eq!(encoded_len(&huge), MAX_EVENT_BYTES + 1);
}
