//! The Landlock ruleset applied to the agent: filesystem access confined to the sandbox's
//! own paths, signals and abstract unix sockets scoped to the sandbox.
//!
//! Landlock is a second wall behind the mount namespace: even if a path outside the
//! planned tree became reachable (a leaked descriptor, a kernel bug in mount handling),
//! the agent could neither read nor write it. It is applied best-effort: on a kernel
//! without Landlock the run proceeds with the other layers and `spawn doctor` says so;
//! the applied status is part of the run report.

use std::path::PathBuf;

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::error::SandboxError;

/// The newest ABI whose rights we ask for; older kernels get what they support.
const TARGET_ABI: ABI = ABI::V6;

/// What Landlock managed to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every requested restriction is in force.
    Full,
    /// The kernel supports only part of the requested rights.
    Partial,
    /// The kernel has no Landlock.
    None,
}

/// Paths of the ruleset, as the agent sees them (after `pivot_root`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Read and execute beneath these.
    pub read: Vec<PathBuf>,
    /// Full access beneath these.
    pub write: Vec<PathBuf>,
}

fn err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(e.to_string())
}

impl Enforcement {
    /// One byte for the init's report to spawn.
    pub(crate) fn code(self) -> u8 {
        match self {
            Enforcement::Full => b'F',
            Enforcement::Partial => b'P',
            Enforcement::None => b'N',
        }
    }

    /// The inverse of [`Enforcement::code`].
    pub(crate) fn from_code(code: u8) -> Option<Enforcement> {
        match code {
            b'F' => Some(Enforcement::Full),
            b'P' => Some(Enforcement::Partial),
            b'N' => Some(Enforcement::None),
            _ => None,
        }
    }

    /// Stable name for `--json` and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Full => "full",
            Enforcement::Partial => "partial",
            Enforcement::None => "none",
        }
    }
}

/// Restricts the calling thread (and its future children). Every path must exist (the plan
/// only lists paths it creates); `/` gets directory listing only, so `ls /` works but no file outside the
/// granted trees can be opened.
pub fn restrict(rules: &Rules) -> Result<Enforcement, SandboxError> {
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            &rules.read,
            AccessFs::from_read(TARGET_ABI),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            &rules.write,
            AccessFs::from_all(TARGET_ABI),
        ))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}
