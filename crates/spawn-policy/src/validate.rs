//! The rules of SPEC §3 that types alone cannot express.
//!
//! `validate` checks everything a manifest says, including the parts spawn cannot enforce
//! yet (those are refused later, by `resolve`): `spawn validate` accepts any manifest that is
//! correct by the contract. The per-field checks are shared with the command-line overrides.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::PolicyError;
use crate::manifest::{
    Agent, Capabilities, ExecCapability, FsCapability, Limits, Model, Mount, NetCapability,
    ResourceLimits, Sandbox, SecretRef, API_VERSION, KIND_AGENT, MAX_ALLOWLIST, MAX_ARG_BYTES,
    MAX_COMMAND_ARGS, MAX_COMMAND_BYTES, MAX_DENYLIST, MAX_LANGUAGES, MAX_MOUNTS, MAX_PATH_BYTES,
    MAX_SECRETS,
};
use crate::names::{self, plain_path, quote};
use crate::paths;
use crate::quantity::{self, format_bytes, format_duration, MI, TI};
use crate::spec::NetPolicy;

/// Memory below this cannot start a language runtime; a typo like `512` (bytes) for `512Mi`
/// is caught instead of killing the agent at once.
pub(crate) const MIN_MEMORY_BYTES: u64 = 4 * MI;
/// No single sandbox gets more than this.
pub(crate) const MAX_MEMORY_BYTES: u64 = TI;
/// Smallest disk or volume quota.
pub(crate) const MIN_DISK_BYTES: u64 = MI;
/// Largest disk or volume quota.
pub(crate) const MAX_DISK_BYTES: u64 = TI;
/// Largest task count (the kernel's default `pid_max` is 32768 per namespace on small hosts,
/// 4 million on large ones).
pub(crate) const MAX_PIDS: u64 = 100_000;
/// Largest CPU limit, in thousandths of a CPU: 1024 CPUs.
pub(crate) const MAX_CPU_MILLIS: u64 = 1024 * 1000;
/// Smallest CPU limit, in thousandths of a CPU: the kernel's smallest quota is 1 ms per
/// period, and spawn's period is 100 ms (a smaller limit was the kernel's `EINVAL`, exit 125).
pub(crate) const MIN_CPU_MILLIS: u64 = 10;
/// Longest timeout: 30 days. A run is ephemeral; longer means a mistake.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Longest `instructions` text: the manifest's own limit.
const MAX_INSTRUCTIONS_BYTES: usize = crate::MAX_MANIFEST_BYTES;
/// Longest `image` reference.
const MAX_IMAGE_BYTES: usize = 4096;
/// `--env` entries.
pub(crate) const MAX_ENV_VARS: usize = 256;
/// Bytes per environment value, as for a command argument (Linux's `MAX_ARG_STRLEN`).
pub(crate) const MAX_ENV_VALUE_BYTES: usize = MAX_ARG_BYTES;

/// Languages `capabilities.exec.languages` may list.
pub(crate) const LANGUAGES: [&str; 12] = [
    "python",
    "bash",
    "sh",
    "node",
    "javascript",
    "typescript",
    "ruby",
    "go",
    "rust",
    "java",
    "c",
    "cpp",
];

/// Environment-variable prefixes the agent may not set: `LD_` changes what the dynamic
/// loader loads into every process; `SPAWN_` is spawn's own configuration.
const RESERVED_ENV_PREFIXES: [&str; 2] = ["LD_", "SPAWN_"];

/// Checks every rule of SPEC §3 on a parsed manifest. Returns the first broken rule.
pub(crate) fn validate(agent: &Agent) -> Result<(), PolicyError> {
    if agent.api_version != API_VERSION {
        return Err(PolicyError::invalid(
            "apiVersion",
            format!(
                "{} is not supported (use {API_VERSION})",
                quote(&agent.api_version)
            ),
        ));
    }
    if agent.kind != KIND_AGENT {
        return Err(PolicyError::invalid(
            "kind",
            format!(
                "{} is not an Agent (use kind: {KIND_AGENT})",
                quote(&agent.kind)
            ),
        ));
    }
    label("metadata.name", &agent.metadata.name)?;
    if let Some(namespace) = &agent.metadata.namespace {
        label("metadata.namespace", namespace)?;
    }
    let spec = &agent.spec;
    if let Some(command) = &spec.command {
        check_command("spec.command", command)?;
    }
    if let Some(model) = &spec.model {
        validate_model(model)?;
    }
    if let Some(instructions) = &spec.instructions {
        check_text("spec.instructions", instructions, MAX_INSTRUCTIONS_BYTES)?;
    }
    if let Some(sandbox) = &spec.sandbox {
        validate_sandbox(sandbox)?;
    }
    if let Some(capabilities) = &spec.capabilities {
        validate_capabilities(capabilities)?;
    }
    if let Some(limits) = &spec.limits {
        validate_limits(limits)?;
    }
    Ok(())
}

fn label(field: &str, value: &str) -> Result<(), PolicyError> {
    names::check_dns_label(value).map_err(|m| PolicyError::invalid(field, m))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), PolicyError> {
    if value.trim().is_empty() {
        return Err(PolicyError::invalid(field, "cannot be empty"));
    }
    if value.len() > max {
        return Err(PolicyError::invalid(
            field,
            format!("is longer than {max} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(PolicyError::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

fn validate_model(model: &Model) -> Result<(), PolicyError> {
    names::check_model_name(&model.name).map_err(|m| PolicyError::invalid("spec.model.name", m))?;
    if let Some(endpoint) = &model.endpoint {
        if model.provider == crate::ModelProvider::Scripted {
            // The scripted provider's file of answers, relative to the manifest.
            check_text("spec.model.endpoint", endpoint, 4096)?;
            if endpoint.contains("://") {
                return Err(PolicyError::invalid(
                    "spec.model.endpoint",
                    "the scripted provider's endpoint is a file of answers (a path), not a URL",
                ));
            }
        } else {
            names::check_http_url(endpoint)
                .map_err(|m| PolicyError::invalid("spec.model.endpoint", m))?;
        }
    }
    if let Some(credential) = &model.credential {
        names::check_secret_ref(credential)
            .map_err(|m| PolicyError::invalid("spec.model.credential", m))?;
    }
    Ok(())
}

fn validate_sandbox(sandbox: &Sandbox) -> Result<(), PolicyError> {
    if let Some(image) = &sandbox.image {
        check_text("spec.sandbox.image", image, MAX_IMAGE_BYTES)?;
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PolicyError::invalid(
                "spec.sandbox.image",
                format!("{} contains whitespace", quote(image)),
            ));
        }
    }
    if let Some(resources) = &sandbox.resources {
        validate_resources(resources)?;
    }
    if let Some(timeout) = &sandbox.timeout {
        check_timeout("spec.sandbox.timeout", timeout)?;
    }
    Ok(())
}

fn validate_resources(resources: &ResourceLimits) -> Result<(), PolicyError> {
    if let Some(cpu) = &resources.cpu {
        check_cpu("spec.sandbox.resources.cpu", cpu)?;
    }
    if let Some(memory) = &resources.memory {
        check_memory("spec.sandbox.resources.memory", memory)?;
    }
    if let Some(pids) = resources.pids {
        check_pids("spec.sandbox.resources.pids", pids)?;
    }
    if let Some(disk) = &resources.disk {
        check_disk("spec.sandbox.resources.disk", disk)?;
    }
    Ok(())
}

fn validate_capabilities(capabilities: &Capabilities) -> Result<(), PolicyError> {
    if let Some(exec) = &capabilities.exec {
        validate_exec(exec)?;
    }
    if let Some(net) = &capabilities.net {
        validate_net(net)?;
    }
    if let Some(fs) = &capabilities.fs {
        validate_fs(fs)?;
    }
    validate_secrets(&capabilities.secrets)
}

fn validate_exec(exec: &ExecCapability) -> Result<(), PolicyError> {
    let field = "spec.capabilities.exec.languages";
    if exec.languages.len() > MAX_LANGUAGES {
        return Err(too_many(field, MAX_LANGUAGES));
    }
    let mut seen = HashSet::new();
    for (i, language) in exec.languages.iter().enumerate() {
        let item = format!("{field}[{i}]");
        if !LANGUAGES.contains(&language.as_str()) {
            return Err(PolicyError::invalid(
                item,
                format!(
                    "{} is not a known language (one of {})",
                    quote(language),
                    LANGUAGES.join(", ")
                ),
            ));
        }
        if !seen.insert(language.as_str()) {
            return Err(PolicyError::invalid(
                item,
                format!("{} is listed twice", quote(language)),
            ));
        }
    }
    if let Some(timeout) = &exec.timeout {
        check_timeout("spec.capabilities.exec.timeout", timeout)?;
    }
    if let Some(memory) = &exec.memory {
        check_memory("spec.capabilities.exec.memory", memory)?;
    }
    Ok(())
}

pub(crate) fn validate_net(net: &NetCapability) -> Result<(), PolicyError> {
    let policy = net.policy.unwrap_or_default();
    let field = "spec.capabilities.net.allowlist";
    if net.allowlist.len() > MAX_ALLOWLIST {
        return Err(too_many(field, MAX_ALLOWLIST));
    }
    for (i, entry) in net.allowlist.iter().enumerate() {
        names::check_domain_pattern(entry)
            .map_err(|m| PolicyError::invalid(format!("{field}[{i}]"), m))?;
    }
    if !net.allowlist.is_empty() && policy != NetPolicy::Restricted {
        return Err(PolicyError::invalid(
            field,
            format!(
                "the allowlist only applies to policy restricted, not {}",
                policy.as_str()
            ),
        ));
    }
    let field = "spec.capabilities.net.denylist";
    if net.denylist.len() > MAX_DENYLIST {
        return Err(too_many(field, MAX_DENYLIST));
    }
    for (i, entry) in net.denylist.iter().enumerate() {
        names::check_deny_pattern(entry)
            .map_err(|m| PolicyError::invalid(format!("{field}[{i}]"), m))?;
    }
    let proxied = policy.is_proxied();
    let proxy_only = [
        ("denylist", !net.denylist.is_empty()),
        ("rateLimit", net.rate_limit.is_some()),
        ("requireTls", net.require_tls.is_some()),
        ("maxConnections", net.max_connections.is_some()),
        ("maxDnsQueries", net.max_dns_queries.is_some()),
    ];
    for (name, present) in proxy_only {
        if present && !proxied {
            return Err(PolicyError::invalid(
                format!("spec.capabilities.net.{name}"),
                format!(
                    "only applies to policy restricted or egress-only (traffic through the \
                     egress proxy), not {}",
                    policy.as_str()
                ),
            ));
        }
    }
    if let Some(rate) = &net.rate_limit {
        if rate.requests == 0 {
            return Err(PolicyError::invalid(
                "spec.capabilities.net.rateLimit.requests",
                "must be more than 0",
            ));
        }
        check_timeout("spec.capabilities.net.rateLimit.per", &rate.per)?;
    }
    let caps = [
        (
            "maxConnections",
            net.max_connections,
            crate::net::MAX_CONNECTIONS,
        ),
        (
            "maxDnsQueries",
            net.max_dns_queries,
            crate::net::MAX_DNS_QUERIES,
        ),
    ];
    for (name, value, max) in caps {
        if let Some(n) = value {
            if n == 0 || n > max {
                return Err(PolicyError::invalid(
                    format!("spec.capabilities.net.{name}"),
                    format!("must be from 1 to {max}, not {n}"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_fs(fs: &FsCapability) -> Result<(), PolicyError> {
    if fs.mounts.len() > MAX_MOUNTS {
        return Err(too_many("spec.capabilities.fs.mounts", MAX_MOUNTS));
    }
    let mut targets = HashSet::new();
    for (i, mount) in fs.mounts.iter().enumerate() {
        let field = format!("spec.capabilities.fs.mounts[{i}]");
        let target = validate_mount(&field, mount)?;
        if !targets.insert(target.clone()) {
            return Err(duplicate_target(&format!("{field}.path"), &target));
        }
    }
    Ok(())
}

/// Checks one manifest mount and returns its normalized target.
fn validate_mount(field: &str, mount: &Mount) -> Result<PathBuf, PolicyError> {
    let target = paths::mount_target(&mount.path)
        .map_err(|m| PolicyError::invalid(format!("{field}.path"), m))?;
    match (&mount.source, &mount.name) {
        (Some(_), Some(_)) => {
            return Err(PolicyError::invalid(
                field,
                "give either source (a host path) or name (a per-run volume), not both",
            ))
        }
        (None, None) => {
            return Err(PolicyError::invalid(
                field,
                "needs source (a host path) or name (a per-run volume)",
            ))
        }
        (Some(source), None) => {
            let source_field = format!("{field}.source");
            if source.is_empty() {
                return Err(PolicyError::invalid(source_field, "cannot be empty"));
            }
            if source.len() > MAX_PATH_BYTES {
                return Err(PolicyError::invalid(
                    source_field,
                    format!("a path is at most {MAX_PATH_BYTES} bytes"),
                ));
            }
            if source.contains('\0') {
                return Err(PolicyError::invalid(source_field, "contains a NUL byte"));
            }
            // Checked here too (not only when resolving) so that `spawn validate` refuses
            // what `spawn run` would refuse.
            let path = std::path::Path::new(source);
            if path.is_relative() && paths::escapes(path) {
                return Err(PolicyError::invalid(
                    source_field,
                    format!("mount source {source:?} escapes the manifest's directory"),
                ));
            }
            if mount.quota.is_some() {
                return Err(PolicyError::invalid(
                    format!("{field}.quota"),
                    "a quota only applies to a named volume (name:), not to a host path",
                ));
            }
        }
        (None, Some(name)) => {
            label(&format!("{field}.name"), name)?;
            if let Some(quota) = &mount.quota {
                check_disk(&format!("{field}.quota"), quota)?;
            }
        }
    }
    Ok(target)
}

pub(crate) fn duplicate_target(field: &str, target: &std::path::Path) -> PolicyError {
    PolicyError::invalid(
        field,
        format!("{} is mounted more than once", plain_path(target)),
    )
}

fn validate_secrets(secrets: &[SecretRef]) -> Result<(), PolicyError> {
    if secrets.len() > MAX_SECRETS {
        return Err(too_many("spec.capabilities.secrets", MAX_SECRETS));
    }
    let mut seen = HashSet::new();
    for (i, secret) in secrets.iter().enumerate() {
        let field = format!("spec.capabilities.secrets[{i}]");
        check_env_name(&format!("{field}.name"), &secret.name)?;
        if !seen.insert(secret.name.as_str()) {
            return Err(PolicyError::invalid(
                format!("{field}.name"),
                format!("{} is listed twice", quote(&secret.name)),
            ));
        }
        names::check_secret_ref(&secret.from)
            .map_err(|m| PolicyError::invalid(format!("{field}.from"), m))?;
        for (j, host) in secret.hosts.iter().enumerate() {
            names::check_domain_pattern(host)
                .map_err(|m| PolicyError::invalid(format!("{field}.hosts[{j}]"), m))?;
        }
    }
    Ok(())
}

fn validate_limits(limits: &Limits) -> Result<(), PolicyError> {
    if limits.max_steps == Some(0) {
        return Err(PolicyError::invalid(
            "spec.limits.maxSteps",
            "must be more than 0",
        ));
    }
    if limits.max_tokens == Some(0) {
        return Err(PolicyError::invalid(
            "spec.limits.maxTokens",
            "must be more than 0",
        ));
    }
    if let Some(cost) = limits.max_cost_usd {
        if !cost.is_finite() || cost < 0.0 {
            return Err(PolicyError::invalid(
                "spec.limits.maxCostUsd",
                format!("{cost} is not a finite amount of at least 0"),
            ));
        }
    }
    Ok(())
}

fn too_many(field: &str, max: usize) -> PolicyError {
    PolicyError::invalid(field, format!("has more than {max} entries"))
}

// ---- Checks shared with the command-line overrides ----

/// argv: non-empty, a non-empty program, no NUL, bounded count and sizes.
pub(crate) fn check_command(field: &str, command: &[String]) -> Result<(), PolicyError> {
    let Some(program) = command.first() else {
        return Err(PolicyError::invalid(
            field,
            "cannot be empty (give at least the program to run)",
        ));
    };
    if program.is_empty() {
        return Err(PolicyError::invalid(
            format!("{field}[0]"),
            "the program name cannot be empty",
        ));
    }
    if command.len() > MAX_COMMAND_ARGS {
        return Err(PolicyError::invalid(
            field,
            format!("has more than {MAX_COMMAND_ARGS} arguments"),
        ));
    }
    let mut total = 0usize;
    for (i, arg) in command.iter().enumerate() {
        if arg.len() > MAX_ARG_BYTES {
            return Err(PolicyError::invalid(
                format!("{field}[{i}]"),
                format!("is longer than {} bytes", MAX_ARG_BYTES),
            ));
        }
        if arg.contains('\0') {
            return Err(PolicyError::invalid(
                format!("{field}[{i}]"),
                "contains a NUL byte",
            ));
        }
        total = total.saturating_add(arg.len());
    }
    if total > MAX_COMMAND_BYTES {
        return Err(PolicyError::invalid(
            field,
            format!("adds up to more than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn range_error(field: &str, value: &str, bound: &str, limit: String) -> PolicyError {
    PolicyError::invalid(field, format!("{} is {bound} {limit}", quote(value)))
}

fn check_bytes_in(field: &str, value: &str, min: u64, max: u64) -> Result<u64, PolicyError> {
    let n = quantity::bytes(value).map_err(|m| PolicyError::invalid(field, m))?;
    if n < min {
        return Err(range_error(
            field,
            value,
            "below the minimum of",
            format_bytes(min),
        ));
    }
    if n > max {
        return Err(range_error(
            field,
            value,
            "above the maximum of",
            format_bytes(max),
        ));
    }
    Ok(n)
}

/// Memory: a quantity from 4Mi to 1Ti.
pub(crate) fn check_memory(field: &str, value: &str) -> Result<u64, PolicyError> {
    check_bytes_in(field, value, MIN_MEMORY_BYTES, MAX_MEMORY_BYTES)
}

/// Disk or volume quota: a quantity from 1Mi to 1Ti.
pub(crate) fn check_disk(field: &str, value: &str) -> Result<u64, PolicyError> {
    check_bytes_in(field, value, MIN_DISK_BYTES, MAX_DISK_BYTES)
}

/// Tasks: 1 to 100000.
pub(crate) fn check_pids(field: &str, pids: u64) -> Result<u64, PolicyError> {
    if pids == 0 || pids > MAX_PIDS {
        return Err(PolicyError::invalid(
            field,
            format!("{pids} is not between 1 and {MAX_PIDS}"),
        ));
    }
    Ok(pids)
}

/// CPU: at least 10m (a hundredth of a CPU), at most 1024 CPUs. Returns thousandths of a
/// CPU.
pub(crate) fn check_cpu(field: &str, value: &str) -> Result<u64, PolicyError> {
    let millis = quantity::cpu_millis(value).map_err(|m| PolicyError::invalid(field, m))?;
    if millis == 0 {
        return Err(PolicyError::invalid(
            field,
            format!("{} must be more than 0", quote(value)),
        ));
    }
    if millis < MIN_CPU_MILLIS {
        return Err(range_error(
            field,
            value,
            "below the minimum of",
            format!("{MIN_CPU_MILLIS}m"),
        ));
    }
    if millis > MAX_CPU_MILLIS {
        return Err(range_error(
            field,
            value,
            "above the maximum of",
            format!("{} CPUs", MAX_CPU_MILLIS / 1000),
        ));
    }
    Ok(millis)
}

/// Timeout or period: more than 0, at most 30 days.
pub(crate) fn check_timeout(field: &str, value: &str) -> Result<Duration, PolicyError> {
    let d = quantity::duration(value).map_err(|m| PolicyError::invalid(field, m))?;
    if d.is_zero() {
        return Err(PolicyError::invalid(
            field,
            format!("{} must be more than 0", quote(value)),
        ));
    }
    if d > MAX_TIMEOUT {
        return Err(range_error(
            field,
            value,
            "above the maximum of",
            format_duration(MAX_TIMEOUT),
        ));
    }
    Ok(d)
}

/// An environment-variable name the agent may set.
pub(crate) fn check_env_name(field: &str, name: &str) -> Result<(), PolicyError> {
    names::check_identifier(name).map_err(|m| PolicyError::invalid(field, m))?;
    if let Some(prefix) = RESERVED_ENV_PREFIXES
        .iter()
        .find(|prefix| name.starts_with(*prefix))
    {
        let why = if *prefix == "LD_" {
            "they change what the dynamic loader loads"
        } else {
            "they configure spawn itself"
        };
        return Err(PolicyError::invalid(
            field,
            format!("{name}: names starting with {prefix} cannot be set ({why})"),
        ));
    }
    Ok(())
}

/// `K=V` from `--env`.
pub(crate) fn check_env_entry(field: &str, entry: &str) -> Result<(String, String), PolicyError> {
    let Some((name, value)) = entry.split_once('=') else {
        return Err(PolicyError::invalid(
            field,
            format!("{} is not NAME=VALUE", quote(entry)),
        ));
    };
    check_env_name(field, name)?;
    if value.contains('\0') {
        return Err(PolicyError::invalid(
            field,
            format!("the value of {name} contains a NUL byte"),
        ));
    }
    if value.len() > MAX_ENV_VALUE_BYTES {
        return Err(PolicyError::invalid(
            field,
            format!("the value of {name} is longer than {MAX_ENV_VALUE_BYTES} bytes"),
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}
