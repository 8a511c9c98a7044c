//! The Agent manifest (SPEC §3) as typed values.
//!
//! Every struct refuses unknown fields. Quantities, durations and references stay strings as
//! written (so a manifest can be shown or stored as the user wrote it); `validate` checks
//! them and `resolve` turns them into numbers. Lists are read through [`crate::bounded`] so
//! YAML aliases cannot multiply them.

use serde::{Deserialize, Serialize};

use crate::spec::{NetPolicy, RuntimeKind};

/// The only `apiVersion` this crate reads.
pub const API_VERSION: &str = "spawn.dev/v1";

/// The `kind` of an Agent manifest.
pub const KIND_AGENT: &str = "Agent";

/// At most this many command arguments. Far above real use, low enough that validating them
/// is instant.
pub(crate) const MAX_COMMAND_ARGS: usize = 4096;

/// At most this many bytes per argument: Linux's `MAX_ARG_STRLEN` (32 pages), beyond which
/// `execve` fails with `E2BIG` anyway.
pub(crate) const MAX_ARG_BYTES: usize = 128 * 1024;

/// At most this many bytes for the whole command line: half of Linux's usual `ARG_MAX`
/// (2 MiB with an 8 MiB stack), leaving room for the environment.
pub(crate) const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// `capabilities.exec.languages` entries; the known set has 12.
pub(crate) const MAX_LANGUAGES: usize = 32;

/// `capabilities.net.allowlist` entries. A policy of thousands of domains is really
/// `egress-only`; the cap bounds proxy matching time.
pub(crate) const MAX_ALLOWLIST: usize = 1024;

/// `capabilities.net.denylist` entries, for the same reason.
pub(crate) const MAX_DENYLIST: usize = 1024;

/// Bytes per allow/deny entry while parsing: four times the longest domain name, enough for
/// any Unicode spelling of a valid name; the exact rule is checked afterwards.
pub(crate) const MAX_PATTERN_BYTES: usize = 4 * crate::names::MAX_DOMAIN_BYTES;

/// `capabilities.fs.mounts` entries. Each is a kernel mount; hundreds are already unusual.
pub(crate) const MAX_MOUNTS: usize = 256;

/// `capabilities.secrets` entries.
pub(crate) const MAX_SECRETS: usize = 256;

/// Bytes per path (mount source or target): Linux's `PATH_MAX`.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Bytes for short fields inside list entries (volume names, quotas, modes, secret names):
/// far more than any valid value, so the precise rule can report it.
pub(crate) const MAX_SHORT_BYTES: usize = 1024;

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Agent {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND_AGENT`].
    pub kind: String,
    /// Name and namespace.
    pub metadata: Metadata,
    /// What to run and with which capabilities.
    pub spec: AgentSpec,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// A DNS label.
    pub name: String,
    /// A DNS label; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    /// argv of a command agent; absent for the built-in loop.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounded::opt_strings::<_, MAX_COMMAND_ARGS, MAX_ARG_BYTES>"
    )]
    pub command: Option<Vec<String>>,
    /// The model provider the agent may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    /// Instructions for the built-in loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Isolation and resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// What the agent may do; everything is off unless listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Budget of the built-in loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// `spec.model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Model {
    /// Which API family.
    pub provider: ModelProvider,
    /// The pinned model; requests for another model are refused.
    pub name: String,
    /// Base URL of a compatible server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `store://NAME` or `vault://path#key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `spec.model.provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelProvider {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's API.
    Openai,
    /// Canned responses, for tests.
    Scripted,
}

/// `spec.sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sandbox {
    /// The isolation technology; gVisor when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Root filesystem source; `host` = the read-only host system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceLimits>,
    /// Wall clock for the whole run (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `spec.sandbox.resources`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceLimits {
    /// CPUs: `"1"`, `"0.5"`, `"500m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Bytes: `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Maximum number of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Size of the writable scratch space: `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

/// `spec.capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    /// Code execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCapability>,
    /// Network access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetCapability>,
    /// Filesystem mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsCapability>,
    /// Secrets exposed as environment variables.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::list::<_, SecretRef, MAX_SECRETS>"
    )]
    pub secrets: Vec<SecretRef>,
}

/// `spec.capabilities.exec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecCapability {
    /// On when the block is present, unless `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Languages the agent may run.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::strings::<_, MAX_LANGUAGES, MAX_SHORT_BYTES>"
    )]
    pub languages: Vec<String>,
    /// Wall clock per execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Memory per execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// `spec.capabilities.net`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetCapability {
    /// `none` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<NetPolicy>,
    /// Domain patterns reachable under `restricted`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::strings::<_, MAX_ALLOWLIST, MAX_PATTERN_BYTES>"
    )]
    pub allowlist: Vec<String>,
    /// Domain patterns, IPs, CIDRs and IPv4 globs that are never reachable.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::strings::<_, MAX_DENYLIST, MAX_PATTERN_BYTES>"
    )]
    pub denylist: Vec<String>,
    /// Requests per period through the egress proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Refuse plain-text HTTP through the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_tls: Option<bool>,
    /// Connections the run may hold open through the egress proxy at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// DNS queries of the run the proxy answers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dns_queries: Option<u32>,
}

/// `spec.capabilities.net.rateLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests allowed per period.
    pub requests: u64,
    /// The period (`1m`).
    pub per: String,
}

/// `spec.capabilities.fs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FsCapability {
    /// Mounts, in order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::list::<_, Mount, MAX_MOUNTS>"
    )]
    pub mounts: Vec<Mount>,
}

/// One entry of `spec.capabilities.fs.mounts`: exactly one of `source` and `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// A host path; relative paths are relative to the manifest's directory.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounded::opt_string::<_, MAX_PATH_BYTES>"
    )]
    pub source: Option<String>,
    /// A named per-run volume.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounded::opt_string::<_, MAX_SHORT_BYTES>"
    )]
    pub name: Option<String>,
    /// Absolute path inside the sandbox.
    #[serde(deserialize_with = "crate::bounded::string::<_, MAX_PATH_BYTES>")]
    pub path: String,
    /// `ro` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MountMode>,
    /// Size limit of a named volume.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounded::opt_string::<_, MAX_SHORT_BYTES>"
    )]
    pub quota: Option<String>,
}

/// `mode` of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Read-only.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

/// One entry of `spec.capabilities.secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    /// Environment variable that receives the secret.
    #[serde(deserialize_with = "crate::bounded::string::<_, MAX_SHORT_BYTES>")]
    pub name: String,
    /// `store://NAME` or `vault://path#key`.
    #[serde(deserialize_with = "crate::bounded::string::<_, MAX_SHORT_BYTES>")]
    pub from: String,
    /// How the agent gets it: `env` (the default: the variable `name`) or `file` (the
    /// file `/run/secrets/NAME` on a tmpfs of the run's own, readable by the agent only;
    /// not in the environment).
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub delivery: Option<SecretDelivery>,
    /// The hosts it is meant for (domain patterns, as in the allowlist): recorded with
    /// each resolution; the egress proxy will refuse it elsewhere.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::bounded::strings::<_, MAX_SECRET_HOSTS, MAX_PATTERN_BYTES>"
    )]
    pub hosts: Vec<String>,
}

/// Most `hosts` one secret may be bound to.
pub const MAX_SECRET_HOSTS: usize = 64;

/// How a granted secret reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretDelivery {
    /// An environment variable.
    #[default]
    Env,
    /// A file under `/run/secrets`.
    File,
}

/// `spec.limits`, the budget of the built-in loop.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Loop iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Model tokens, input and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Spend in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
}
