//! Questions asked of the log (`spawn audit query`, `spawn audit capabilities`): which
//! records match a filter, and per capability how often an agent used it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Which records to keep; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `eventType` is one of these (none: any).
    pub types: Vec<String>,
    /// The principal is this agent (`ag_…` id, or its name).
    pub agent: Option<String>,
    /// The principal is this one: `type/name` (`User/alice`), or an id or a name.
    pub principal: Option<String>,
    pub outcome: Option<String>,
    /// At or after this timestamp (the log's form, see [`crate::rfc3339_ago`]).
    pub since: Option<String>,
    /// Before this timestamp.
    pub until: Option<String>,
    pub trace: Option<String>,
    /// Found anywhere in the stored line, case-insensitively.
    pub text: Option<String>,
}

impl Filter {
    /// Whether `record` (parsed from `line`) matches.
    pub fn matches(&self, record: &Value, line: &str) -> bool {
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let p = &record["principal"];
        if !self.types.is_empty() && !self.types.iter().any(|t| record["eventType"] == **t) {
            return false;
        }
        if let Some(a) = &self.agent {
            if p["type"] != "agent" || (p["id"] != **a && p["name"] != **a) {
                return false;
            }
        }
        if let Some(want) = &self.principal {
            let full = format!("{}/{}", s(&p["type"]), s(&p["name"]));
            let by_id = format!("{}/{}", s(&p["type"]), s(&p["id"]));
            if ![full, by_id, s(&p["id"]), s(&p["name"])].contains(want) {
                return false;
            }
        }
        if self
            .outcome
            .as_ref()
            .is_some_and(|o| record["outcome"] != **o)
        {
            return false;
        }
        let ts = s(&record["timestamp"]);
        if self
            .since
            .as_ref()
            .is_some_and(|t| ts.as_str() < t.as_str())
        {
            return false;
        }
        if self
            .until
            .as_ref()
            .is_some_and(|t| ts.as_str() >= t.as_str())
        {
            return false;
        }
        if self
            .trace
            .as_ref()
            .is_some_and(|t| record["traceId"] != **t)
        {
            return false;
        }
        if let Some(t) = &self.text {
            if !line.to_lowercase().contains(&t.to_lowercase()) {
                return false;
            }
        }
        true
    }
}

/// How one capability was used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityUse {
    pub capability: String,
    /// Uses, allowed and denied (a summary counts as its count).
    pub count: u64,
    pub denied: u64,
    /// The latest use's timestamp.
    pub last_use: String,
}

/// Per capability (`agent.capability.invoke` / `.denied`, by resource name; network
/// connections as `net`), from the matching records.
pub fn capabilities<'a>(records: impl IntoIterator<Item = &'a Value>) -> Vec<CapabilityUse> {
    let mut by: BTreeMap<String, CapabilityUse> = BTreeMap::new();
    for r in records {
        let name = match r["eventType"].as_str() {
            Some("agent.capability.invoke" | "agent.capability.denied") => {
                r["resource"]["name"].as_str().unwrap_or("?").to_owned()
            }
            Some("agent.net.connect") => "net".to_owned(),
            _ => continue,
        };
        // A summary of held-back repeats stands for its count.
        let n = if r["action"] == crate::SUMMARY_ACTION {
            r["details"]["count"].as_u64().unwrap_or(1)
        } else {
            1
        };
        let e = by.entry(name.clone()).or_insert_with(|| CapabilityUse {
            capability: name,
            ..CapabilityUse::default()
        });
        e.count += n;
        if r["outcome"] == "denied" {
            e.denied += n;
        }
        let ts = r["details"]["last"]
            .as_str()
            .or_else(|| r["timestamp"].as_str())
            .unwrap_or("");
        if ts > e.last_use.as_str() {
            e.last_use = ts.to_owned();
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(t: &str, kind: &str, id: &str, name: &str, outcome: &str, res: &str, ts: &str) -> Value {
        json!({"seq": 1, "timestamp": ts, "eventType": t,
               "principal": {"type": kind, "id": id, "name": name},
               "resource": {"type": "capability", "name": res}, "action": "execute",
               "outcome": outcome, "details": {}, "traceId": "tr_1"})
    }

    #[test]
    fn every_condition_must_hold() {
        let r = rec(
            "agent.capability.denied",
            "agent",
            "ag_1",
            "researcher",
            "denied",
            "mount",
            "2026-01-02T00:00:00.000Z",
        );
        let line = r.to_string();
        let yes = [
            Filter::default(),
            Filter {
                types: vec!["agent.capability.denied".into(), "x".into()],
                ..Filter::default()
            },
            Filter {
                agent: Some("ag_1".into()),
                ..Filter::default()
            },
            Filter {
                agent: Some("researcher".into()),
                ..Filter::default()
            },
            Filter {
                principal: Some("agent/researcher".into()),
                ..Filter::default()
            },
            Filter {
                outcome: Some("denied".into()),
                ..Filter::default()
            },
            Filter {
                since: Some("2026-01-02T00:00:00.000Z".into()),
                ..Filter::default()
            },
            Filter {
                until: Some("2026-01-02T00:00:00.001Z".into()),
                ..Filter::default()
            },
            Filter {
                trace: Some("tr_1".into()),
                ..Filter::default()
            },
            Filter {
                text: Some("MOUNT".into()),
                ..Filter::default()
            },
        ];
        for f in yes {
            assert!(f.matches(&r, &line), "{f:?}");
        }
        let no = [
            Filter {
                types: vec!["agent.start".into()],
                ..Filter::default()
            },
            Filter {
                agent: Some("ag_2".into()),
                ..Filter::default()
            },
            Filter {
                principal: Some("User/researcher".into()),
                ..Filter::default()
            },
            Filter {
                outcome: Some("success".into()),
                ..Filter::default()
            },
            Filter {
                since: Some("2026-01-02T00:00:00.001Z".into()),
                ..Filter::default()
            },
            Filter {
                until: Some("2026-01-02T00:00:00.000Z".into()),
                ..Filter::default()
            },
            Filter {
                trace: Some("tr_2".into()),
                ..Filter::default()
            },
            Filter {
                text: Some("ptrace".into()),
                ..Filter::default()
            },
        ];
        for f in no {
            assert!(!f.matches(&r, &line), "{f:?}");
        }
        // A User is not an agent, whatever its name.
        let u = rec(
            "auth.failure",
            "User",
            "alice",
            "ag_1",
            "denied",
            "x",
            "2026-01-02T00:00:00.000Z",
        );
        assert!(!Filter {
            agent: Some("ag_1".into()),
            ..Filter::default()
        }
        .matches(&u, ""));
    }

    #[test]
    fn capabilities_count_uses_denials_and_summaries() {
        let ts = |s: u32| format!("2026-01-02T00:00:{s:02}.000Z");
        let mut summary = rec(
            "agent.capability.denied",
            "agent",
            "ag_1",
            "a",
            "denied",
            "mount",
            &ts(9),
        );
        summary["action"] = json!(crate::SUMMARY_ACTION);
        summary["details"] = json!({"count": 40, "last": ts(30)});
        let records = [
            rec(
                "agent.capability.invoke",
                "agent",
                "ag_1",
                "a",
                "success",
                "exec",
                &ts(1),
            ),
            rec(
                "agent.capability.invoke",
                "agent",
                "ag_1",
                "a",
                "success",
                "exec",
                &ts(5),
            ),
            rec(
                "agent.capability.denied",
                "agent",
                "ag_1",
                "a",
                "denied",
                "mount",
                &ts(3),
            ),
            summary,
            rec(
                "agent.net.connect",
                "agent",
                "ag_1",
                "a",
                "denied",
                "evil.test:443",
                &ts(4),
            ),
            rec(
                "agent.start",
                "agent",
                "ag_1",
                "a",
                "success",
                "native",
                &ts(0),
            ),
        ];
        let uses = capabilities(&records);
        assert_eq!(
            uses,
            vec![
                CapabilityUse {
                    capability: "exec".into(),
                    count: 2,
                    denied: 0,
                    last_use: ts(5)
                },
                CapabilityUse {
                    capability: "mount".into(),
                    count: 41,
                    denied: 41,
                    last_use: ts(30)
                },
                CapabilityUse {
                    capability: "net".into(),
                    count: 1,
                    denied: 1,
                    last_use: ts(4)
                },
            ]
        );
    }
}
