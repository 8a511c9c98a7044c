//! Counting events in an audit trail where some were aggregated by the audit limits:
//! an event counts once if written verbatim, and `count` times if an `audit.summary`
//! of scope `key` or `kind` stands for it. A catch-all summary (scope `all`) names no
//! event type; [`tally`] reports how many events such summaries hold so a caller can
//! insist there are none.

#![allow(dead_code)]

use serde_json::Value;

/// What is known of an event or of the events a summary stands for.
pub struct Seen<'a> {
    pub event_type: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    /// `details.reason`, if any.
    pub reason: Option<&'a str>,
    /// The resource's name; `None` for a summary of a whole kind.
    pub resource: Option<&'a str>,
}

/// The events of `events` that `want` picks, verbatim and summarized.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub verbatim: u64,
    pub summarized: u64,
    /// Events in catch-all summaries (of no known type), whatever `want` says.
    pub unknown: u64,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.verbatim + self.summarized
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn tally(events: &[Value], want: impl Fn(&Seen) -> bool) -> Tally {
    let mut t = Tally::default();
    for e in events {
        if e["action"] == "audit.summary" {
            let count = e["details"]["count"].as_u64().expect("a summary's count");
            let k = &e["details"]["summarized"];
            if k.is_null() {
                t.unknown += count;
                continue;
            }
            let seen = Seen {
                event_type: s(&k["eventType"]),
                action: s(&k["action"]),
                outcome: s(&k["outcome"]),
                reason: k["reason"].as_str(),
                resource: k["resource"].as_str(),
            };
            if want(&seen) {
                t.summarized += count;
            }
        } else {
            let seen = Seen {
                event_type: s(&e["eventType"]),
                action: s(&e["action"]),
                outcome: s(&e["outcome"]),
                reason: e["details"]["reason"].as_str(),
                resource: e["resource"]["name"].as_str(),
            };
            if want(&seen) {
                t.verbatim += 1;
            }
        }
    }
    t
}

/// Network events refused with `reason`, verbatim and summarized.
pub fn refusals(events: &[Value], reason: &str) -> Tally {
    tally(events, |e| {
        e.event_type == "agent.net.connect" && e.reason == Some(reason)
    })
}
