//! `SPAWN_AUDIT_LIMITS` on arbitrary UTF-8, and the limiter's accounting on arbitrary event
//! sequences: the parser never panics and accepts only valid limits that print back to
//! themselves; for any sequence of events and times, every event admitted is written
//! verbatim or counted in exactly one summary, and a limit is never reported twice.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use spawn_audit::{Event, EventType, Limiter, Limits, Outcome, Principal, Resource};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the half of the target.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(limits) = text.parse::<Limits>() {
            limits.validate().expect("a parsed value is valid");
            let again: Limits = limits.to_string().parse().expect("printed limits parse");
            assert_eq!(again, limits);
        }
        return;
    }
    // Small limits so that every path is reached: each byte is one event (its low 4 bits
    // pick one of 16 keys over 4 resources, 2 reasons and 2 outcomes, its high 4 bits how
    // far time moves on first, in steps of 30 ms, against windows of 100 ms).
    let limits: Limits = "window=100ms,per-key=2,per-window=5,keys=3,events=20,bytes=16KiB"
        .parse()
        .unwrap();
    let mut limiter = Limiter::new(limits);
    let start = Instant::now();
    let wall = SystemTime::now();
    let mut at = Duration::ZERO;
    let mut out = Vec::new();
    let mut admitted: HashMap<(String, &str, &str), u64> = HashMap::new();
    for &b in rest {
        at += Duration::from_millis(u64::from(b >> 4) * 30);
        let resource = format!("h{}.test:80", b & 3);
        let reason = if b & 4 == 0 { "not-allowlisted" } else { "blocked-address" };
        let outcome = if b & 8 == 0 { Outcome::Denied } else { Outcome::Error };
        *admitted
            .entry((resource.clone(), reason, outcome.as_str()))
            .or_default() += 1;
        let e = Event::new(
            EventType::AgentNetConnect,
            Principal {
                kind: "agent".into(),
                id: "ag_fuzz".into(),
                name: None,
            },
            Resource {
                kind: "host".into(),
                name: resource,
            },
            "connect",
            outcome,
        )
        .with_detail("reason", reason);
        limiter.admit_at(e, start + at, wall + at, &mut out);
    }
    limiter.finish(&mut out);
    let stats = limiter.stats();
    assert_eq!(stats.admitted, rest.len() as u64);
    assert_eq!(stats.verbatim + stats.held, stats.admitted);
    // Count what was written back into the events it stands for.
    let mut by_key: HashMap<(String, String, String), u64> = HashMap::new();
    let (mut by_kind, mut rest_count, mut limit_events) = (0u64, 0u64, HashMap::new());
    for e in &out {
        let v = serde_json::to_value(e).unwrap();
        match v["action"].as_str().unwrap() {
            "connect" => {
                *by_key
                    .entry((
                        v["resource"]["name"].as_str().unwrap().to_owned(),
                        v["details"]["reason"].as_str().unwrap().to_owned(),
                        v["outcome"].as_str().unwrap().to_owned(),
                    ))
                    .or_default() += 1;
            }
            "audit.summary" => {
                let count = v["details"]["count"].as_u64().unwrap();
                assert!(count > 0);
                let k = &v["details"]["summarized"];
                match v["details"]["scope"].as_str().unwrap() {
                    "key" => {
                        *by_key
                            .entry((
                                k["resource"].as_str().unwrap().to_owned(),
                                k["reason"].as_str().unwrap().to_owned(),
                                k["outcome"].as_str().unwrap().to_owned(),
                            ))
                            .or_default() += count;
                    }
                    "kind" => by_kind += count,
                    "all" => rest_count += count,
                    other => panic!("scope {other}"),
                }
            }
            "audit.limit" => {
                let name = v["resource"]["name"].as_str().unwrap().to_owned();
                *limit_events.entry(name).or_insert(0u32) += 1;
            }
            other => panic!("action {other}"),
        }
    }
    assert!(limit_events.values().all(|&n| n == 1), "{limit_events:?}");
    // Events of a key written or summarized by name never exceed what was admitted of it;
    // what is missing is in the kind and catch-all summaries, exactly.
    let mut missing = 0u64;
    for ((resource, reason, outcome), n) in &admitted {
        let got = by_key
            .remove(&(resource.clone(), (*reason).to_owned(), (*outcome).to_owned()))
            .unwrap_or(0);
        assert!(got <= *n, "{resource} {reason} {outcome}: {got} > {n}");
        missing += n - got;
    }
    assert!(by_key.is_empty(), "written but never admitted: {by_key:?}");
    assert_eq!(missing, by_kind + rest_count);
});
