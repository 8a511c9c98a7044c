//! From a manifest and the command line to a [`RunSpec`].
//!
//! Precedence: a command-line flag replaces the manifest's value; `--mount` entries come after
//! the manifest's mounts. Anything the manifest or the flags ask for that spawn cannot enforce
//! yet is refused with "not supported yet", never dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::PolicyError;
use crate::manifest::NetCapability;
use crate::manifest::{Agent, ExecCapability, Mount, MountMode, ResourceLimits, MAX_MOUNTS};
use crate::names;
use crate::names::{plain_path, quote};
use crate::net::NetRules;
use crate::paths::{self, Confine};
use crate::spec::{
    MountSource, MountSpec, NetPolicy, Resources, RunSpec, RuntimeKind, SecretGrant, SecretSource,
};
use crate::validate::{self, MAX_ENV_VARS};

/// The run name when there is no manifest.
const DEFAULT_NAME: &str = "run";

/// The namespace when the manifest names none.
const DEFAULT_NAMESPACE: &str = "default";

/// The only `spec.sandbox.image` implemented: the read-only host system.
const IMAGE_HOST: &str = "host";

/// Command-line flags of `spawn run` (SPEC §4), as typed. Each one replaces the manifest's
/// value; `mounts` are added after the manifest's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--runtime`.
    pub runtime: Option<RuntimeKind>,
    /// `--net`.
    pub net: Option<NetPolicy>,
    /// `--allow DOMAIN`, repeated.
    pub allow: Vec<String>,
    /// `--deny PATTERN`, repeated.
    pub deny: Vec<String>,
    /// `--memory 512Mi`.
    pub memory: Option<String>,
    /// `--pids N`.
    pub pids: Option<u64>,
    /// `--cpu N`.
    pub cpu: Option<String>,
    /// `--timeout 30s`.
    pub timeout: Option<String>,
    /// `--mount SRC:DST[:ro|rw]`, repeated; read-only unless `:rw`.
    pub mounts: Vec<String>,
    /// `--secret NAME`, repeated.
    pub secrets: Vec<String>,
    /// `--env K=V`, repeated.
    pub env: Vec<String>,
    /// `--workdir DIR` (absolute).
    pub workdir: Option<String>,
    /// The command after `--`.
    pub command: Vec<String>,
}

/// Resolves a manifest (or none, for a bare `spawn run -- CMD`) and the command-line
/// overrides into the [`RunSpec`] a runtime runs.
///
/// `base_dir` is the manifest's directory (relative manifest mount sources resolve against
/// it); `cwd` the current directory (relative `--mount` sources resolve against it). Mount
/// sources must exist and be reached through no symlink; none may be, be under, or hold
/// one of the `protected` host paths (spawn's state, its runtimes' state, its binaries).
/// Mount targets may not lie inside a host tree of the sandbox ([`crate::layout`]) or
/// inside another host mount, where a mount point would have to be made on the host.
pub fn resolve(
    agent: Option<&Agent>,
    base_dir: &Path,
    cwd: &Path,
    overrides: &Overrides,
    protected: &[PathBuf],
) -> Result<RunSpec, PolicyError> {
    if let Some(agent) = agent {
        // The fields are public: never trust that the caller went through `parse_agent`.
        validate::validate(agent)?;
    }
    if let Some(agent) = agent {
        check_unsupported_manifest(agent)?;
    }
    // The built-in loop: instructions and a model, no command (manifest or `--`).
    let agent_loop = agent
        .filter(|a| a.spec.command.is_none() && overrides.command.is_empty())
        .and_then(|a| a.spec.instructions.clone());
    if let (Some(a), false) = (agent, overrides.command.is_empty()) {
        if a.spec.instructions.is_some() && a.spec.command.is_none() {
            return Err(PolicyError::invalid(
                "spec.instructions",
                "are for the built-in loop, and a command was given after --: remove one",
            ));
        }
    }
    let command = if agent_loop.is_some() {
        // spawn-run gives the loop's sandbox its tool runner.
        Vec::new()
    } else {
        resolve_command(agent, overrides)?
    };

    let spec = agent.map(|a| &a.spec);
    let sandbox = spec.and_then(|s| s.sandbox.as_ref());
    let capabilities = spec.and_then(|s| s.capabilities.as_ref());
    let exec = capabilities.and_then(|c| c.exec.as_ref());
    let resources = resolve_resources(sandbox.and_then(|s| s.resources.as_ref()), exec, overrides)?;
    let timeout = match &overrides.timeout {
        Some(timeout) => Some(validate::check_timeout("--timeout", timeout)?),
        None => {
            let run = sandbox
                .and_then(|s| s.timeout.as_deref())
                .map(|t| validate::check_timeout("spec.sandbox.timeout", t))
                .transpose()?;
            let per_exec = exec
                .and_then(|e| e.timeout.as_deref())
                .map(|t| validate::check_timeout("spec.capabilities.exec.timeout", t))
                .transpose()?;
            // The loop's sandbox lives for the whole run; exec's timeout is per call.
            if agent_loop.is_some() {
                run
            } else {
                smaller(run, per_exec)
            }
        }
    };

    let manifest_mounts = capabilities
        .and_then(|c| c.fs.as_ref())
        .map(|fs| fs.mounts.as_slice())
        .unwrap_or_default();
    let mounts = resolve_mounts(
        manifest_mounts,
        &absolute(base_dir, cwd),
        &overrides.mounts,
        cwd,
        protected,
    )?;

    let env = resolve_env(&overrides.env)?;
    let secrets = resolve_secrets(
        capabilities
            .map(|c| c.secrets.as_slice())
            .unwrap_or_default(),
        overrides,
        &env,
    )?;
    Ok(RunSpec {
        name: agent.map_or_else(|| DEFAULT_NAME.to_owned(), |a| a.metadata.name.clone()),
        namespace: agent
            .and_then(|a| a.metadata.namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        runtime: overrides
            .runtime
            .or(sandbox.and_then(|s| s.runtime))
            .unwrap_or(RuntimeKind::Gvisor),
        command,
        env,
        workdir: overrides
            .workdir
            .as_deref()
            .map(|w| paths::sandbox_path(w).map_err(|m| PolicyError::invalid("--workdir", m)))
            .transpose()?,
        resources,
        timeout,
        net: resolve_net(capabilities.and_then(|c| c.net.as_ref()), overrides)?,
        mounts,
        languages: exec.map(|e| e.languages.clone()).unwrap_or_default(),
        secrets,
        model: agent
            .and_then(|a| a.spec.model.as_ref().map(|m| (m, a.spec.limits.as_ref())))
            .map(|(m, limits)| resolve_model(m, limits, &absolute(base_dir, cwd)))
            .transpose()?,
        agent_loop: agent_loop
            .map(|instructions| -> Result<crate::LoopSpec, PolicyError> {
                Ok(crate::LoopSpec {
                    instructions,
                    exec_timeout: exec
                        .and_then(|e| e.timeout.as_deref())
                        .map(|t| validate::check_timeout("spec.capabilities.exec.timeout", t))
                        .transpose()?
                        .unwrap_or(crate::spec::DEFAULT_EXEC_TIMEOUT),
                    exec_memory: exec
                        .and_then(|e| e.memory.as_deref())
                        .map(|m| validate::check_memory("spec.capabilities.exec.memory", m))
                        .transpose()?,
                })
            })
            .transpose()?,
    })
}

/// `spec.model` and `spec.limits`: a scripted provider's file relative to the manifest,
/// the credential's source, the cost in micro-dollars.
fn resolve_model(
    model: &crate::Model,
    limits: Option<&crate::Limits>,
    base_dir: &Path,
) -> Result<crate::ModelSpec, PolicyError> {
    use crate::ModelProvider;
    let (endpoint, script) = match (model.provider, &model.endpoint) {
        (ModelProvider::Scripted, Some(path)) => (None, Some(base_dir.join(path))),
        (ModelProvider::Scripted, None) => {
            return Err(PolicyError::invalid(
                "spec.model.endpoint",
                "the scripted provider needs its file of answers (endpoint: ./answers.yaml)",
            ))
        }
        (_, endpoint) => (endpoint.clone(), None),
    };
    let credential = model
        .credential
        .as_deref()
        .map(|c| secret_source("spec.model.credential", c))
        .transpose()?;
    if model.provider == ModelProvider::Scripted && credential.is_some() {
        return Err(PolicyError::invalid(
            "spec.model.credential",
            "the scripted provider takes no credential",
        ));
    }
    let max_cost_micros = limits.and_then(|l| l.max_cost_usd).map(usd_to_micros);
    Ok(crate::ModelSpec {
        provider: model.provider,
        name: model.name.clone(),
        endpoint,
        script,
        credential,
        max_steps: limits.and_then(|l| l.max_steps),
        max_tokens: limits.and_then(|l| l.max_tokens),
        max_cost_micros,
    })
}

/// Dollars (validated finite and at least 0) as whole micro-dollars, rounded down (a
/// limit errs on spending less); `as` saturates past `u64::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn usd_to_micros(usd: f64) -> u64 {
    (usd * 1_000_000.0).floor().max(0.0) as u64
}

/// `store://NAME` or `vault://PATH#KEY`, as the source of a secret (a granted secret's
/// `from`, or the model's `credential`).
fn secret_source(field: &str, from: &str) -> Result<SecretSource, PolicyError> {
    match (from.strip_prefix("store://"), from.strip_prefix("vault://")) {
        (Some(name), _) => {
            names::check_identifier(name).map_err(|m| {
                PolicyError::invalid(field, format!("the store's secret name: {m}"))
            })?;
            Ok(SecretSource::Store(name.to_owned()))
        }
        (None, Some(rest)) => {
            names::check_secret_ref(from).map_err(|m| PolicyError::invalid(field, m))?;
            let (path, key) = rest
                .split_once('#')
                .ok_or_else(|| PolicyError::invalid(field, "no #KEY"))?;
            Ok(SecretSource::Vault {
                path: path.to_owned(),
                key: key.to_owned(),
            })
        }
        (None, None) => Err(PolicyError::invalid(
            field,
            "use store://NAME or vault://MOUNT/data/PATH#KEY",
        )),
    }
}

/// `capabilities.net` with `--net`, `--allow` and `--deny` applied (the flags' lists add
/// to the manifest's), validated as a whole.
fn resolve_net(
    manifest: Option<&NetCapability>,
    overrides: &Overrides,
) -> Result<NetRules, PolicyError> {
    let mut net = manifest.cloned().unwrap_or_default();
    if let Some(policy) = overrides.net {
        net.policy = Some(policy);
    }
    net.allowlist.extend(overrides.allow.iter().cloned());
    net.denylist.extend(overrides.deny.iter().cloned());
    crate::validate::validate_net(&net)?;
    NetRules::from_capability(&net)
}

/// The secrets granted: the manifest's, then each `--secret NAME` (`store://NAME` into the
/// variable `NAME`) not granted already. A variable may not be both a secret and `--env`.
fn resolve_secrets(
    manifest: &[crate::SecretRef],
    overrides: &Overrides,
    env: &[(String, String)],
) -> Result<Vec<SecretGrant>, PolicyError> {
    let mut grants: Vec<SecretGrant> = Vec::new();
    for (i, s) in manifest.iter().enumerate() {
        let field = format!("spec.capabilities.secrets[{i}].from");
        let source = secret_source(&field, &s.from)?;
        grants.push(SecretGrant {
            env: s.name.clone(),
            source,
            delivery: s.delivery.unwrap_or_default(),
            hosts: s.hosts.clone(),
        });
    }
    for name in &overrides.secrets {
        validate::check_env_name("--secret", name)?;
        if !grants.iter().any(|g| &g.env == name) {
            grants.push(SecretGrant {
                env: name.clone(),
                source: SecretSource::Store(name.clone()),
                delivery: crate::SecretDelivery::Env,
                hosts: Vec::new(),
            });
        }
    }
    if let Some(g) = grants.iter().find(|g| env.iter().any(|(k, _)| k == &g.env)) {
        return Err(PolicyError::invalid(
            "--env",
            format!(
                "{} is a granted secret's variable: it cannot be set too",
                g.env
            ),
        ));
    }
    Ok(grants)
}

fn resolve_command(
    agent: Option<&Agent>,
    overrides: &Overrides,
) -> Result<Vec<String>, PolicyError> {
    if !overrides.command.is_empty() {
        validate::check_command("command", &overrides.command)?;
        return Ok(overrides.command.clone());
    }
    match agent {
        Some(agent) => match &agent.spec.command {
            Some(command) => Ok(command.clone()),
            None => Err(PolicyError::unsupported(
                "spec.command",
                "an agent without a command (the built-in agent loop)",
                "give spec.command, or a command after --",
            )),
        },
        None => Err(PolicyError::NoCommand {
            hint: "give one after -- (spawn run -- COMMAND ARGS...), or a manifest with -f",
        }),
    }
}

fn check_unsupported_manifest(agent: &Agent) -> Result<(), PolicyError> {
    let spec = &agent.spec;
    if spec.instructions.is_some() && spec.command.is_some() {
        return Err(PolicyError::invalid(
            "spec.instructions",
            "are for the built-in loop (an agent without a command): remove spec.command or spec.instructions",
        ));
    }
    if spec.instructions.is_some() && spec.model.is_none() {
        return Err(PolicyError::invalid(
            "spec.instructions",
            "the built-in loop needs spec.model (the model that decides)",
        ));
    }
    if spec.limits.is_some() && spec.model.is_none() {
        return Err(PolicyError::invalid(
            "spec.limits",
            "limits a model's use: give spec.model, or remove spec.limits",
        ));
    }
    if let Some(image) = spec.sandbox.as_ref().and_then(|s| s.image.as_deref()) {
        if image != IMAGE_HOST {
            return Err(PolicyError::unsupported(
                "spec.sandbox.image",
                &format!("image {}", quote(image)),
                "only host for now",
            ));
        }
    }
    let Some(capabilities) = &spec.capabilities else {
        return Ok(());
    };
    if let Some(exec) = &capabilities.exec {
        if exec.enabled == Some(false) {
            return Err(PolicyError::unsupported(
                "spec.capabilities.exec.enabled",
                "false",
                "a command agent's command is its exec invocation; remove the exec block \
                 to run without exec limits",
            ));
        }
    }
    Ok(())
}

/// Flags replace the manifest's values. Without a flag, a command agent's limits are the
/// smaller of the sandbox's and exec's, since its command is its one exec invocation.
fn resolve_resources(
    limits: Option<&ResourceLimits>,
    exec: Option<&ExecCapability>,
    overrides: &Overrides,
) -> Result<Resources, PolicyError> {
    let memory_bytes = match &overrides.memory {
        Some(memory) => Some(validate::check_memory("--memory", memory)?),
        None => {
            let sandbox = limits
                .and_then(|l| l.memory.as_deref())
                .map(|m| validate::check_memory("spec.sandbox.resources.memory", m))
                .transpose()?;
            let per_exec = exec
                .and_then(|e| e.memory.as_deref())
                .map(|m| validate::check_memory("spec.capabilities.exec.memory", m))
                .transpose()?;
            smaller(sandbox, per_exec)
        }
    };
    let pids = match overrides.pids {
        Some(pids) => Some(validate::check_pids("--pids", pids)?),
        None => limits
            .and_then(|l| l.pids)
            .map(|p| validate::check_pids("spec.sandbox.resources.pids", p))
            .transpose()?,
    };
    let cpu_millis = match &overrides.cpu {
        Some(cpu) => Some(validate::check_cpu("--cpu", cpu)?),
        None => limits
            .and_then(|l| l.cpu.as_deref())
            .map(|c| validate::check_cpu("spec.sandbox.resources.cpu", c))
            .transpose()?,
    };
    let disk_bytes = limits
        .and_then(|l| l.disk.as_deref())
        .map(|d| validate::check_disk("spec.sandbox.resources.disk", d))
        .transpose()?;
    Ok(Resources {
        memory_bytes,
        pids,
        cpu_millis,
        disk_bytes,
    })
}

/// Manifest mounts (relative sources against the manifest's directory, confined to it), then
/// `--mount` flags (relative sources against `cwd`). Targets must be unique across both.
fn resolve_mounts(
    manifest_mounts: &[Mount],
    base: &Path,
    flags: &[String],
    cwd: &Path,
    protected: &[PathBuf],
) -> Result<Vec<MountSpec>, PolicyError> {
    if manifest_mounts.len().saturating_add(flags.len()) > MAX_MOUNTS {
        return Err(PolicyError::invalid(
            "--mount",
            format!("more than {MAX_MOUNTS} mounts in all"),
        ));
    }
    let mut mounts = Vec::with_capacity(manifest_mounts.len() + flags.len());
    let mut targets = HashSet::new();
    for (i, mount) in manifest_mounts.iter().enumerate() {
        let field = format!("spec.capabilities.fs.mounts[{i}]");
        let target = paths::mount_target(&mount.path)
            .map_err(|m| PolicyError::invalid(format!("{field}.path"), m))?;
        if !targets.insert(target.clone()) {
            return Err(validate::duplicate_target(
                &format!("{field}.path"),
                &target,
            ));
        }
        let source = match (&mount.source, &mount.name) {
            (Some(source), _) => MountSource::Host(paths::host_source(
                &format!("{field}.source"),
                source,
                base,
                Confine::ToBase,
                protected,
            )?),
            (None, Some(name)) => MountSource::Tmpfs {
                name: name.clone(),
                quota_bytes: mount
                    .quota
                    .as_deref()
                    .map(|q| validate::check_disk(&format!("{field}.quota"), q))
                    .transpose()?,
            },
            (None, None) => {
                return Err(PolicyError::invalid(
                    field,
                    "needs source (a host path) or name (a per-run volume)",
                ))
            }
        };
        mounts.push(MountSpec {
            source,
            target,
            writable: mount.mode.unwrap_or_default() == MountMode::Rw,
        });
    }
    for entry in flags {
        let mount = mount_flag(entry, cwd, protected)?;
        if !targets.insert(mount.target.clone()) {
            return Err(validate::duplicate_target("--mount", &mount.target));
        }
        mounts.push(mount);
    }
    check_targets(&mounts)?;
    Ok(mounts)
}

/// Nothing a mount target names may make, change or leave anything on the host: a target
/// inside one of the sandbox's host trees (`/usr/share/x`) or inside another host mount
/// (`/data/x` over a host directory at `/data`) would need a mount point made there, in
/// the host's own directory.
fn check_targets(mounts: &[MountSpec]) -> Result<(), PolicyError> {
    for m in mounts {
        let field = "mount target";
        if let Some(tree) = crate::layout::host_tree_holding(&m.target) {
            return Err(PolicyError::invalid(
                field,
                format!(
                    "{} is inside {tree}, the host's own (read-only) tree in the sandbox: a \
                     mount point there would be made on the host; mount it elsewhere (e.g. \
                     /mnt/NAME or /workspace/NAME)",
                    plain_path(&m.target)
                ),
            ));
        }
        let holder = mounts.iter().find(|outer| {
            matches!(outer.source, MountSource::Host(_))
                && m.target != outer.target
                && m.target.starts_with(&outer.target)
        });
        if let Some(outer) = holder {
            return Err(PolicyError::invalid(
                field,
                format!(
                    "{} is inside {}, a mount of a host directory: a mount point there would \
                     be made in the host's directory; mount it beside, not inside",
                    plain_path(&m.target),
                    plain_path(&outer.target)
                ),
            ));
        }
    }
    Ok(())
}

fn smaller<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        cwd.join(path)
    }
}

/// `SRC:DST[:ro|rw]`, read-only by default.
fn mount_flag(entry: &str, cwd: &Path, protected: &[PathBuf]) -> Result<MountSpec, PolicyError> {
    let field = "--mount";
    let parts: Vec<&str> = entry.splitn(4, ':').collect();
    let (source, target, writable) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, false),
        [source, target, "rw"] => (*source, *target, true),
        [_, _, mode] => {
            return Err(PolicyError::invalid(
                field,
                format!(
                    "{}: the mode is ro or rw, not {}",
                    quote(entry),
                    quote(mode)
                ),
            ))
        }
        _ => {
            return Err(PolicyError::invalid(
                field,
                format!("{} is not SRC:DST[:ro|rw]", quote(entry)),
            ))
        }
    };
    let target = paths::mount_target(target).map_err(|m| PolicyError::invalid(field, m))?;
    let source = paths::host_source(field, source, cwd, Confine::No, protected)?;
    Ok(MountSpec {
        source: MountSource::Host(source),
        target,
        writable,
    })
}

fn resolve_env(entries: &[String]) -> Result<Vec<(String, String)>, PolicyError> {
    if entries.len() > MAX_ENV_VARS {
        return Err(PolicyError::invalid(
            "--env",
            format!("more than {MAX_ENV_VARS} variables"),
        ));
    }
    let mut seen = HashSet::new();
    let mut env = Vec::with_capacity(entries.len());
    for entry in entries {
        let (name, value) = validate::check_env_entry("--env", entry)?;
        if !seen.insert(name.clone()) {
            return Err(PolicyError::invalid(
                "--env",
                format!("{name} is given more than once"),
            ));
        }
        env.push((name, value));
    }
    Ok(env)
}
