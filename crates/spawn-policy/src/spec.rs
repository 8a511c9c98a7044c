//! The resolved, runtime-neutral description of one sandboxed run.
//!
//! A [`RunSpec`] is what every runtime consumes: the manifest after validation, with the
//! command-line overrides applied, every quantity turned into a number and every relative
//! path resolved. Runtimes never look at the manifest itself, so there is exactly one place
//! (this crate) where policy is interpreted.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

/// Which isolation technology runs the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// gVisor's user-space kernel (`runsc`). The default.
    Gvisor,
    /// A microVM per run.
    Firecracker,
    /// An OCI container runtime (`crun`/`runc`); development only.
    Container,
    /// spawn's own sandbox built directly on kernel primitives.
    Native,
}

impl RuntimeKind {
    /// Every runtime, in the order `spawn doctor` lists them.
    pub const ALL: [RuntimeKind; 4] = [
        RuntimeKind::Gvisor,
        RuntimeKind::Firecracker,
        RuntimeKind::Container,
        RuntimeKind::Native,
    ];

    /// The name used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Gvisor => "gvisor",
            RuntimeKind::Firecracker => "firecracker",
            RuntimeKind::Container => "container",
            RuntimeKind::Native => "native",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeKind {
    type Err = PolicyError;

    /// Accepts exactly the names of [`RuntimeKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuntimeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| PolicyError::Value {
                message: format!(
                    "unknown runtime {s:?} (expected gvisor, firecracker, container or native)"
                ),
            })
    }
}

/// `capabilities.net.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetPolicy {
    /// Loopback only.
    #[default]
    None,
    /// Egress to allowlisted domains through the egress proxy.
    Restricted,
    /// Any public destination through the egress proxy.
    EgressOnly,
    /// Direct network access.
    Full,
}

impl NetPolicy {
    /// Every policy, from the most to the least restrictive.
    pub const ALL: [NetPolicy; 4] = [
        NetPolicy::None,
        NetPolicy::Restricted,
        NetPolicy::EgressOnly,
        NetPolicy::Full,
    ];

    /// Whether all of the run's traffic goes through the egress proxy (`restricted`,
    /// `egress-only`).
    pub fn is_proxied(self) -> bool {
        matches!(self, NetPolicy::Restricted | NetPolicy::EgressOnly)
    }

    /// The name used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NetPolicy::None => "none",
            NetPolicy::Restricted => "restricted",
            NetPolicy::EgressOnly => "egress-only",
            NetPolicy::Full => "full",
        }
    }
}

impl std::fmt::Display for NetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetPolicy {
    type Err = PolicyError;

    /// Accepts exactly the names of [`NetPolicy::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == s)
            .ok_or_else(|| PolicyError::Value {
                message: format!(
                    "unknown network policy {s:?} (expected none, restricted, egress-only or full)"
                ),
            })
    }
}

/// Resource limits, as plain numbers. `None` means "the runtime's default", never "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
    /// CPU limit in thousandths of a CPU (`"1"` = 1000, `"500m"` = 500).
    pub cpu_millis: Option<u64>,
    /// Size of the writable scratch space (`/tmp`) in bytes.
    pub disk_bytes: Option<u64>,
}

/// Where a mount's contents come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host path, absolute and already resolved against the manifest's directory.
    Host(PathBuf),
    /// A fresh per-run tmpfs (a named volume such as `workspace`), with an optional quota.
    Tmpfs {
        /// The volume's name from the manifest.
        name: String,
        /// Size limit in bytes.
        quota_bytes: Option<u64>,
    },
}

/// One entry of `capabilities.fs.mounts` (or `--mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// What is mounted.
    pub source: MountSource,
    /// Absolute path inside the sandbox, normalized (no `.`/`..`, no trailing slash).
    pub target: PathBuf,
    /// `mode: rw`.
    pub writable: bool,
}

/// Everything a runtime needs to run one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// `metadata.name` (a DNS label), or `"run"` for a bare command.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The runtime that must run it. Never silently replaced by another.
    pub runtime: RuntimeKind,
    /// argv; never empty.
    pub command: Vec<String>,
    /// Extra environment for the agent (manifest, then `--env`), in order.
    /// The runtime adds only a minimal PATH/HOME/LANG/TERM.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (absolute). Default: `/workspace`.
    pub workdir: Option<PathBuf>,
    /// Limits.
    pub resources: Resources,
    /// Wall-clock limit for the whole run.
    pub timeout: Option<Duration>,
    /// Network policy and its rules (allowlist, denylist, rate limit, requireTls).
    pub net: crate::net::NetRules,
    /// Mounts, in manifest order then `--mount` order.
    pub mounts: Vec<MountSpec>,
    /// Languages granted by `capabilities.exec` (informational for the native runtime).
    pub languages: Vec<String>,
    /// Secrets granted (manifest, then `--secret`): resolved at the run's start, each
    /// given to the agent as an environment variable, and to nothing else.
    pub secrets: Vec<SecretGrant>,
    /// `spec.model`: the model the agent may use through spawn's model gateway, and the
    /// run's budget for it (`None`: no gateway, and no model endpoint reachable).
    pub model: Option<ModelSpec>,
    /// The built-in agent loop (`spec.instructions`, no command): `command` is then empty
    /// and the run's tool runner is given by spawn-run.
    pub agent_loop: Option<LoopSpec>,
}

/// How long one `exec` call of the built-in loop may take when the manifest does not say.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The built-in agent loop's part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopSpec {
    /// `spec.instructions`: the task.
    pub instructions: String,
    /// `capabilities.exec.timeout`: each `exec` call's.
    pub exec_timeout: Duration,
    /// `capabilities.exec.memory`: each `exec` call's address space.
    pub exec_memory: Option<u64>,
}

/// The model a run may use, as resolved (SPEC §6a).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Whose API.
    pub provider: crate::ModelProvider,
    /// The pinned model: every other is refused.
    pub name: String,
    /// The provider's base URL (`None`: the provider's own); for `scripted`, never set.
    pub endpoint: Option<String>,
    /// The scripted provider's answers (`scripted` only): an absolute path on the host.
    pub script: Option<PathBuf>,
    /// Where the real credential comes from (`None`: the provider's usual variable in
    /// spawn's own environment; the scripted provider needs none).
    pub credential: Option<SecretSource>,
    /// `limits.maxSteps`: model calls.
    pub max_steps: Option<u64>,
    /// `limits.maxTokens`: tokens in and out, all calls together.
    pub max_tokens: Option<u64>,
    /// `limits.maxCostUsd`, in micro-dollars (rounded down).
    pub max_cost_micros: Option<u64>,
}

/// A secret granted to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretGrant {
    /// The environment variable that receives it (with [`SecretDelivery::File`], the
    /// name of its file under `/run/secrets`).
    pub env: String,
    /// Where its value comes from.
    pub source: SecretSource,
    /// An environment variable, or a file.
    pub delivery: crate::SecretDelivery,
    /// The hosts it is meant for (recorded; empty: not bound).
    pub hosts: Vec<String>,
}

/// Where a granted secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretSource {
    /// `store://NAME`: spawn's own store, in the run's namespace.
    Store(String),
    /// `vault://PATH#KEY`: the key `KEY` of the HashiCorp Vault KV v2 secret at the API
    /// path `PATH` (`MOUNT/data/…`).
    Vault { path: String, key: String },
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Store(name) => write!(f, "store://{name}"),
            SecretSource::Vault { path, key } => write!(f, "vault://{path}#{key}"),
        }
    }
}

impl RunSpec {
    /// `command` with nothing else granted: what `spawn run --runtime R -- COMMAND` without
    /// a manifest or other flags resolves to (named `run`, no network, no mounts, default
    /// limits). A starting point for callers that build a spec in code.
    pub fn bare(runtime: RuntimeKind, command: Vec<String>) -> RunSpec {
        RunSpec {
            name: "run".to_owned(),
            namespace: "default".to_owned(),
            runtime,
            command,
            env: vec![],
            workdir: None,
            resources: Resources::default(),
            timeout: None,
            net: crate::net::NetRules::plain(NetPolicy::None),
            mounts: vec![],
            languages: vec![],
            secrets: vec![],
            model: None,
            agent_loop: None,
        }
    }
}
