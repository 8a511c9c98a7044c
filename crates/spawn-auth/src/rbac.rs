//! RBAC (SPEC §9): Kubernetes-style Roles and RoleBindings, namespaced, deny by default.
//!
//! A Role is a set of permissions — (resource, verb) pairs — in its namespace. A RoleBinding
//! grants one Role (of its namespace, or a built-in one) to subjects (Users and
//! ServiceAccounts, the principals API keys are bound to) in its namespace; a binding in the
//! namespace `*` (made by `spawnd init` for the first admin) grants in every namespace.
//! What a principal may do in a namespace is the union of what its bindings grant there;
//! anything else is denied. Nobody can grant what they do not hold ([`check_grant`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::AuthError;

/// The API version of Role and RoleBinding documents.
pub const API_VERSION: &str = "spawn.dev/v1";
/// The namespace of bindings that hold in every namespace.
pub const ALL_NAMESPACES: &str = "*";
/// Largest Role or RoleBinding document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most rules in a Role, subjects in a RoleBinding, entries in a rule's lists.
pub const MAX_ENTRIES: usize = 256;

/// What may be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Delete,
    Start,
    Stop,
}

impl Verb {
    pub const ALL: [Verb; 7] = [
        Verb::Get,
        Verb::List,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
        Verb::Start,
        Verb::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Start => "start",
            Verb::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What it may be done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Agents,
    /// An agent's (and its runs') output.
    AgentLogs,
    /// Runs (`tasks` in seed 001's example).
    Runs,
    Secrets,
    Keys,
    Roles,
    RoleBindings,
    Audit,
}

impl Resource {
    pub const ALL: [Resource; 8] = [
        Resource::Agents,
        Resource::AgentLogs,
        Resource::Runs,
        Resource::Secrets,
        Resource::Keys,
        Resource::Roles,
        Resource::RoleBindings,
        Resource::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Agents => "agents",
            Resource::AgentLogs => "agents/logs",
            Resource::Runs => "runs",
            Resource::Secrets => "secrets",
            Resource::Keys => "keys",
            Resource::Roles => "roles",
            Resource::RoleBindings => "rolebindings",
            Resource::Audit => "audit",
        }
    }

    /// A resource as written in a rule; `tasks` is another name of `runs`.
    pub fn parse(s: &str) -> Option<Resource> {
        if s == "tasks" {
            return Some(Resource::Runs);
        }
        Resource::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A set of (resource, verb) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(BTreeSet<(Resource, Verb)>);

impl Permissions {
    pub fn none() -> Permissions {
        Permissions::default()
    }

    pub fn all() -> Permissions {
        let mut p = Permissions::none();
        for r in Resource::ALL {
            for v in Verb::ALL {
                p.0.insert((r, v));
            }
        }
        p
    }

    /// `verbs` on each of `resources`.
    pub fn of(resources: &[Resource], verbs: &[Verb]) -> Permissions {
        let mut p = Permissions::none();
        for r in resources {
            for v in verbs {
                p.0.insert((*r, *v));
            }
        }
        p
    }

    pub fn allows(&self, resource: Resource, verb: Verb) -> bool {
        self.0.contains(&(resource, verb))
    }

    pub fn add(&mut self, other: &Permissions) {
        self.0.extend(other.0.iter().copied());
    }

    /// What `self` has that `holder` does not.
    pub fn beyond(&self, holder: &Permissions) -> Vec<(Resource, Verb)> {
        self.0.difference(&holder.0).copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Resource, Verb)> + '_ {
        self.0.iter().copied()
    }
}

/// The five built-in roles (SPEC §9), cluster-wide names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    /// Everything.
    Admin,
    /// Manage agents and runs, read logs; no secrets, keys or RBAC changes.
    Operator,
    /// Create and run agents, read their logs, in the namespace it is bound in.
    Developer,
    /// Read-only: agents, logs, runs, roles and bindings; not secrets, keys or audit.
    Viewer,
    /// Logs, runs (traces) and audit events, read-only.
    Auditor,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 5] = [
        BuiltinRole::Admin,
        BuiltinRole::Operator,
        BuiltinRole::Developer,
        BuiltinRole::Viewer,
        BuiltinRole::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "admin",
            BuiltinRole::Operator => "operator",
            BuiltinRole::Developer => "developer",
            BuiltinRole::Viewer => "viewer",
            BuiltinRole::Auditor => "auditor",
        }
    }

    pub fn parse(name: &str) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn permissions(self) -> Permissions {
        use Resource::*;
        use Verb::*;
        match self {
            BuiltinRole::Admin => Permissions::all(),
            BuiltinRole::Operator => {
                let mut p = Permissions::of(
                    &[Agents, Runs],
                    &[Get, List, Create, Update, Delete, Start, Stop],
                );
                p.add(&Permissions::of(&[AgentLogs], &[Get, List]));
                p
            }
            BuiltinRole::Developer => {
                let mut p = Permissions::of(&[Agents], &[Get, List, Create, Update, Start, Stop]);
                p.add(&Permissions::of(&[Runs], &[Get, List, Create, Stop]));
                p.add(&Permissions::of(&[AgentLogs], &[Get, List]));
                p
            }
            BuiltinRole::Viewer => Permissions::of(
                &[Agents, AgentLogs, Runs, Roles, RoleBindings],
                &[Get, List],
            ),
            BuiltinRole::Auditor => Permissions::of(&[AgentLogs, Runs, Audit], &[Get, List]),
        }
    }

    /// The role as rules, as stored and shown.
    pub fn rules(self) -> Vec<Rule> {
        rules_of(&self.permissions())
    }
}

/// One rule of a Role: `verbs` on `resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub resources: Vec<Resource>,
    pub verbs: Vec<Verb>,
}

/// The shortest honest rules for `p`: one rule per resource.
fn rules_of(p: &Permissions) -> Vec<Rule> {
    Resource::ALL
        .into_iter()
        .filter_map(|r| {
            let verbs: Vec<Verb> = Verb::ALL.into_iter().filter(|v| p.allows(r, *v)).collect();
            (!verbs.is_empty()).then(|| Rule {
                resources: vec![r],
                verbs,
            })
        })
        .collect()
}

/// A Role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub namespace: String,
    pub name: String,
    pub rules: Vec<Rule>,
}

impl Role {
    pub fn permissions(&self) -> Permissions {
        let mut p = Permissions::none();
        for rule in &self.rules {
            p.add(&Permissions::of(&rule.resources, &rule.verbs));
        }
        p
    }
}

/// The kind of a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectKind {
    User,
    ServiceAccount,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }

    pub fn parse(s: &str) -> Option<SubjectKind> {
        match s {
            "User" => Some(SubjectKind::User),
            "ServiceAccount" => Some(SubjectKind::ServiceAccount),
            _ => None,
        }
    }
}

/// Who a binding grants to: a principal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// A RoleBinding: `role` (a Role of `namespace`, or a built-in role) granted to `subjects`
/// in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleBinding {
    pub namespace: String,
    pub name: String,
    pub role: String,
    pub subjects: Vec<Subject>,
}

/// A parsed Role or RoleBinding document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Role(Role),
    RoleBinding(RoleBinding),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoleDoc {
    api_version: String,
    kind: String,
    metadata: MetaDoc,
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BindingDoc {
    api_version: String,
    kind: String,
    metadata: MetaDoc,
    subjects: Vec<SubjectDoc>,
    role_ref: RoleRefDoc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaDoc {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    resources: Vec<String>,
    verbs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDoc {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRefDoc {
    kind: String,
    name: String,
}

/// Only the `kind` of a document, to dispatch on.
#[derive(Debug, Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

/// The `kind` of a YAML document (`None` if it has none or is not a mapping).
pub fn kind_of(text: &str) -> Option<String> {
    serde_yaml_ng::from_str::<KindOnly>(text).ok()?.kind
}

/// Parses one Role or RoleBinding document (YAML; JSON is YAML too). Unknown fields,
/// verbs, resources and kinds are errors with their line and column.
pub fn parse_document(text: &str) -> Result<Document, AuthError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(AuthError::invalid(format!(
            "the document is {} bytes, more than the {MAX_DOCUMENT_BYTES} allowed",
            text.len()
        )));
    }
    match kind_of(text).as_deref() {
        Some("Role") => {
            let doc: RoleDoc = serde_yaml_ng::from_str(text).map_err(AuthError::yaml)?;
            check_head(&doc.api_version, &doc.kind, "Role")?;
            let (namespace, name) = meta(&doc.metadata)?;
            if BuiltinRole::parse(&name).is_some() {
                return Err(AuthError::invalid(format!(
                    "metadata.name: {name} is a built-in role; give the Role another name"
                )));
            }
            bounded("rules", doc.rules.len())?;
            let mut rules = Vec::with_capacity(doc.rules.len());
            for (i, r) in doc.rules.iter().enumerate() {
                bounded("resources", r.resources.len())?;
                bounded("verbs", r.verbs.len())?;
                rules.push(Rule {
                    resources: expand(
                        &r.resources,
                        &format!("rules[{i}].resources"),
                        Resource::parse,
                        &Resource::ALL,
                    )?,
                    verbs: expand(
                        &r.verbs,
                        &format!("rules[{i}].verbs"),
                        Verb::parse,
                        &Verb::ALL,
                    )?,
                });
            }
            Ok(Document::Role(Role {
                namespace,
                name,
                rules,
            }))
        }
        Some("RoleBinding") => {
            let doc: BindingDoc = serde_yaml_ng::from_str(text).map_err(AuthError::yaml)?;
            check_head(&doc.api_version, &doc.kind, "RoleBinding")?;
            let (namespace, name) = meta(&doc.metadata)?;
            if doc.role_ref.kind != "Role" {
                return Err(AuthError::invalid(format!(
                    "roleRef.kind: {:?} is not Role",
                    doc.role_ref.kind
                )));
            }
            spawn_policy::check_dns_label(&doc.role_ref.name)
                .map_err(|m| AuthError::invalid(format!("roleRef.name: {m}")))?;
            bounded("subjects", doc.subjects.len())?;
            if doc.subjects.is_empty() {
                return Err(AuthError::invalid("subjects: a binding needs at least one"));
            }
            let mut subjects = Vec::with_capacity(doc.subjects.len());
            for (i, s) in doc.subjects.iter().enumerate() {
                let kind = SubjectKind::parse(&s.kind).ok_or_else(|| {
                    AuthError::invalid(format!(
                        "subjects[{i}].kind: {:?} is not User or ServiceAccount",
                        s.kind
                    ))
                })?;
                check_principal(&s.name)
                    .map_err(|m| AuthError::invalid(format!("subjects[{i}].name: {m}")))?;
                subjects.push(Subject {
                    kind,
                    name: s.name.clone(),
                });
            }
            subjects.sort();
            subjects.dedup();
            Ok(Document::RoleBinding(RoleBinding {
                namespace,
                name,
                role: doc.role_ref.name,
                subjects,
            }))
        }
        Some(other) => Err(AuthError::invalid(format!(
            "kind: {other:?} is not Role or RoleBinding"
        ))),
        None => Err(AuthError::invalid("the document has no kind")),
    }
}

fn check_head(api_version: &str, kind: &str, want: &str) -> Result<(), AuthError> {
    if api_version != API_VERSION {
        return Err(AuthError::invalid(format!(
            "apiVersion: {api_version:?} is not {API_VERSION}"
        )));
    }
    debug_assert_eq!(kind, want);
    Ok(())
}

fn meta(m: &MetaDoc) -> Result<(String, String), AuthError> {
    spawn_policy::check_dns_label(&m.name)
        .map_err(|e| AuthError::invalid(format!("metadata.name: {e}")))?;
    let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
    spawn_policy::check_dns_label(&namespace)
        .map_err(|e| AuthError::invalid(format!("metadata.namespace: {e}")))?;
    Ok((namespace, m.name.clone()))
}

fn bounded(what: &str, n: usize) -> Result<(), AuthError> {
    if n > MAX_ENTRIES {
        return Err(AuthError::invalid(format!(
            "{what}: {n} entries, more than the {MAX_ENTRIES} allowed"
        )));
    }
    Ok(())
}

/// Each entry parsed, `*` meaning all; an unknown entry is an error naming it.
fn expand<T: Copy + Ord>(
    entries: &[String],
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
    all: &[T],
) -> Result<Vec<T>, AuthError> {
    if entries.is_empty() {
        return Err(AuthError::invalid(format!("{field}: empty")));
    }
    let mut out = BTreeSet::new();
    for e in entries {
        if e == "*" {
            out.extend(all.iter().copied());
        } else {
            out.insert(
                parse(e)
                    .ok_or_else(|| AuthError::invalid(format!("{field}: {e:?} is not known")))?,
            );
        }
    }
    Ok(out.into_iter().collect())
}

/// Longest principal name.
pub const MAX_PRINCIPAL_BYTES: usize = 253;

/// A principal's name: 1–253 printable ASCII characters without spaces (an e-mail address,
/// a DNS-style name); nothing that could pass for another in a log or a terminal.
pub fn check_principal(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PRINCIPAL_BYTES {
        return Err(format!(
            "a principal's name is 1 to {MAX_PRINCIPAL_BYTES} characters"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a principal's name is printable ASCII without spaces".into());
    }
    Ok(())
}

/// Refuses a grant of `granted` by a principal holding `holder` (in the namespace the Role
/// or RoleBinding is written to): nobody grants a permission they do not hold. The error
/// names what is missing.
pub fn check_grant(holder: &Permissions, granted: &Permissions) -> Result<(), AuthError> {
    let missing = granted.beyond(holder);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(r, v)| format!("{} {}", v.as_str(), r.as_str()))
        .collect();
    Err(AuthError::Escalation(list.join(", ")))
}

/// What `bindings` (a principal's, from any namespace) grant in `namespace`; `role` finds
/// a non-built-in Role by (namespace, name). A binding to a Role that does not exist grants
/// nothing.
pub fn permissions_in<'a>(
    bindings: impl IntoIterator<Item = &'a RoleBinding>,
    namespace: &str,
    role: impl Fn(&str, &str) -> Option<Role>,
) -> Permissions {
    let mut p = Permissions::none();
    for b in bindings {
        if b.namespace != namespace && b.namespace != ALL_NAMESPACES {
            continue;
        }
        if let Some(builtin) = BuiltinRole::parse(&b.role) {
            p.add(&builtin.permissions());
        } else if let Some(r) = role(&b.namespace, &b.role) {
            p.add(&r.permissions());
        }
    }
    p
}

/// Splits a multi-document YAML text at its `---` lines: each document with the 1-based
/// line it starts on (to report errors where they are). Empty documents are dropped.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

#[cfg(test)]
mod tests;
