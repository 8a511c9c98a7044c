//! The SPEC §7 event shape: what callers build ([`Event`]) and what is stored ([`Record`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AuditError;

/// The kind of an audit event, serialized as SPEC §7's dotted name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "auth.login")]
    AuthLogin,
    #[serde(rename = "auth.logout")]
    AuthLogout,
    #[serde(rename = "auth.failure")]
    AuthFailure,
    #[serde(rename = "agent.create")]
    AgentCreate,
    #[serde(rename = "agent.delete")]
    AgentDelete,
    #[serde(rename = "agent.start")]
    AgentStart,
    #[serde(rename = "agent.stop")]
    AgentStop,
    #[serde(rename = "agent.capability.invoke")]
    AgentCapabilityInvoke,
    #[serde(rename = "agent.capability.denied")]
    AgentCapabilityDenied,
    #[serde(rename = "agent.tool.invoke")]
    AgentToolInvoke,
    #[serde(rename = "agent.secret.access")]
    AgentSecretAccess,
    #[serde(rename = "agent.net.connect")]
    AgentNetConnect,
    #[serde(rename = "mesh.message.send")]
    MeshMessageSend,
    #[serde(rename = "rbac.permission.denied")]
    RbacPermissionDenied,
    #[serde(rename = "sandbox.escape.attempt")]
    SandboxEscapeAttempt,
    #[serde(rename = "policy.violation")]
    PolicyViolation,
    #[serde(rename = "resource.exhausted")]
    ResourceExhausted,
}

impl EventType {
    /// Every event type, in SPEC §7 order.
    pub const ALL: [EventType; 17] = [
        EventType::AuthLogin,
        EventType::AuthLogout,
        EventType::AuthFailure,
        EventType::AgentCreate,
        EventType::AgentDelete,
        EventType::AgentStart,
        EventType::AgentStop,
        EventType::AgentCapabilityInvoke,
        EventType::AgentCapabilityDenied,
        EventType::AgentToolInvoke,
        EventType::AgentSecretAccess,
        EventType::AgentNetConnect,
        EventType::MeshMessageSend,
        EventType::RbacPermissionDenied,
        EventType::SandboxEscapeAttempt,
        EventType::PolicyViolation,
        EventType::ResourceExhausted,
    ];

    /// The SPEC §7 dotted name, e.g. `"agent.capability.invoke"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AuthLogin => "auth.login",
            EventType::AuthLogout => "auth.logout",
            EventType::AuthFailure => "auth.failure",
            EventType::AgentCreate => "agent.create",
            EventType::AgentDelete => "agent.delete",
            EventType::AgentStart => "agent.start",
            EventType::AgentStop => "agent.stop",
            EventType::AgentCapabilityInvoke => "agent.capability.invoke",
            EventType::AgentCapabilityDenied => "agent.capability.denied",
            EventType::AgentToolInvoke => "agent.tool.invoke",
            EventType::AgentSecretAccess => "agent.secret.access",
            EventType::AgentNetConnect => "agent.net.connect",
            EventType::MeshMessageSend => "mesh.message.send",
            EventType::RbacPermissionDenied => "rbac.permission.denied",
            EventType::SandboxEscapeAttempt => "sandbox.escape.attempt",
            EventType::PolicyViolation => "policy.violation",
            EventType::ResourceExhausted => "resource.exhausted",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| AuditError::UnknownEventType(shorten(s)))
    }
}

/// How the audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    /// `"success"`, `"denied"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "denied" => Ok(Outcome::Denied),
            "error" => Ok(Outcome::Error),
            other => Err(AuditError::UnknownOutcome(shorten(other))),
        }
    }
}

/// Who acted: a user, an API key, an agent...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What was acted on: a capability, a secret, a host...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

/// An audit event as a caller builds it; `seq` and `timestamp` are assigned
/// by [`AuditLog::append`](crate::AuditLog::append).
///
/// Secrets must never be put in any field (SPEC §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_type: EventType,
    pub principal: Principal,
    pub resource: Resource,
    pub action: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub details: Map<String, Value>,
    #[serde(rename = "sourceIP", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Event {
    /// An event with empty details and no source IP, request or trace id.
    pub fn new(
        event_type: EventType,
        principal: Principal,
        resource: Resource,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Event {
        Event {
            event_type,
            principal,
            resource,
            action: action.into(),
            outcome,
            details: Map::new(),
            source_ip: None,
            request_id: None,
            trace_id: None,
        }
    }

    /// The event with every form of a granted secret replaced by `[REDACTED:NAME]` in each
    /// of its texts (principal, resource, action, every string and key of its details); the
    /// fields the log gives meaning to (type, outcome, ids) are spawn's own.
    #[must_use]
    pub fn redacted(mut self, r: &spawn_redact::Redactor) -> Event {
        if r.is_empty() {
            return self;
        }
        for text in [
            &mut self.principal.kind,
            &mut self.principal.id,
            &mut self.resource.kind,
            &mut self.resource.name,
            &mut self.action,
        ] {
            *text = r.redact_str(text);
        }
        if let Some(name) = &mut self.principal.name {
            *name = r.redact_str(name);
        }
        let mut details = Value::Object(std::mem::take(&mut self.details));
        r.redact_json(&mut details);
        if let Value::Object(map) = details {
            self.details = map;
        }
        self
    }

    /// Adds one entry to `details`.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Event {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// One stored line of the log: the event plus the fields the log assigns.
///
/// `prev_hash` and `hash` are reserved for the hash chain (SPEC §7); this
/// version never writes them, and reads them when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    pub timestamp: String,
    #[serde(flatten)]
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Untrusted text quoted in an error message is cut to this many characters.
const MAX_QUOTED_CHARS: usize = 64;

fn shorten(s: &str) -> String {
    s.chars().take(MAX_QUOTED_CHARS).collect()
}

#[cfg(test)]
mod tests;
