use super::*;
use serde_json::json;

fn spec_event() -> Event {
    Event {
        event_type: EventType::AgentCapabilityInvoke,
        principal: Principal {
            kind: "agent".into(),
            id: "ag_abc123".into(),
            name: Some("researcher".into()),
        },
        resource: Resource {
            kind: "capability".into(),
            name: "exec".into(),
        },
        action: "execute".into(),
        outcome: Outcome::Success,
        details: json!({"language": "python", "codeHash": "sha256:…"})
            .as_object()
            .cloned()
            .unwrap(),
        source_ip: Some("10.0.0.5".into()),
        request_id: Some("req_xyz789".into()),
        trace_id: Some("tr_…".into()),
    }
}

/// SPEC §7's example, key for key.
#[test]
fn record_matches_spec_example() {
    let record = Record {
        seq: 42,
        timestamp: "2026-01-15T10:30:00Z".into(),
        event: spec_event(),
        prev_hash: Some("sha256:…".into()),
        hash: Some("sha256:…".into()),
    };
    let want = json!({"seq": 42, "timestamp": "2026-01-15T10:30:00Z", "eventType": "agent.capability.invoke",
     "principal": {"type": "agent", "id": "ag_abc123", "name": "researcher"},
     "resource": {"type": "capability", "name": "exec"}, "action": "execute",
     "outcome": "success", "details": {"language": "python", "codeHash": "sha256:…"},
     "sourceIP": "10.0.0.5", "requestId": "req_xyz789", "traceId": "tr_…",
     "prevHash": "sha256:…", "hash": "sha256:…"});
    assert_eq!(serde_json::to_value(&record).unwrap(), want);
    let back: Record = serde_json::from_value(want).unwrap();
    assert_eq!(back, record);
}

#[test]
fn none_fields_are_omitted() {
    let event = Event::new(
        EventType::AuthFailure,
        Principal {
            kind: "apikey".into(),
            id: "key_1".into(),
            name: None,
        },
        Resource {
            kind: "api".into(),
            name: "/v1/agents".into(),
        },
        "authenticate",
        Outcome::Denied,
    );
    let record = Record {
        seq: 1,
        timestamp: "2026-01-15T10:30:00.000Z".into(),
        event,
        prev_hash: None,
        hash: None,
    };
    let value = serde_json::to_value(&record).unwrap();
    assert_eq!(
        value,
        json!({"seq": 1, "timestamp": "2026-01-15T10:30:00.000Z", "eventType": "auth.failure",
         "principal": {"type": "apikey", "id": "key_1"},
         "resource": {"type": "api", "name": "/v1/agents"}, "action": "authenticate",
         "outcome": "denied", "details": {}})
    );
    assert_eq!(serde_json::from_value::<Record>(value).unwrap(), record);
}

#[test]
fn event_type_names_match_spec() {
    let spec = "auth.login, auth.logout, auth.failure, agent.create, agent.delete, \
        agent.start, agent.stop, agent.capability.invoke, agent.capability.denied, \
        agent.tool.invoke, agent.secret.access, agent.net.connect, mesh.message.send, \
        rbac.permission.denied, sandbox.escape.attempt, policy.violation, resource.exhausted";
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, spec.split(", ").collect::<Vec<_>>());
    for t in EventType::ALL {
        assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        assert_eq!(
            serde_json::from_value::<EventType>(json!(t.as_str())).unwrap(),
            t
        );
        assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
        assert_eq!(t.to_string(), t.as_str());
    }
    assert!(matches!(
        "agent.explode".parse::<EventType>(),
        Err(AuditError::UnknownEventType(s)) if s == "agent.explode"
    ));
    assert!(serde_json::from_value::<EventType>(json!("AgentStart")).is_err());
}

#[test]
fn outcome_names_match_spec() {
    for (o, name) in [
        (Outcome::Success, "success"),
        (Outcome::Denied, "denied"),
        (Outcome::Error, "error"),
    ] {
        assert_eq!(o.as_str(), name);
        assert_eq!(serde_json::to_value(o).unwrap(), json!(name));
        assert_eq!(name.parse::<Outcome>().unwrap(), o);
    }
    assert!("Success".parse::<Outcome>().is_err());
}

#[test]
fn unknown_names_are_shortened_in_errors() {
    let long = "x".repeat(10_000);
    match long.parse::<EventType>() {
        Err(AuditError::UnknownEventType(s)) => assert_eq!(s.len(), MAX_QUOTED_CHARS),
        other => panic!("{other:?}"),
    }
}
