//! IPv4 forwarding for routed links (`net: full`), and the guard that keeps the host from
//! forwarding anything else because of spawn.
//!
//! A routed link needs the host to forward IPv4. Turning forwarding on for spawn's links
//! alone (`net.ipv4.conf.spwN.forwarding`) is not enough: Linux decides by the interface
//! a packet *arrives* on, and the replies to the sandbox arrive on the host's uplink. So:
//!
//! - **`net.ipv4.ip_forward` already 1**: the host routes by its admin's choice. spawn
//!   changes nothing (the run's own tables still refuse anything routed into its link).
//! - **0**: spawn first installs a guard, the plain table `ip spawn-forward-guard`,
//!   whose forward hook drops every packet that neither comes from nor goes to a spawn
//!   link (`spw*`); then records, under spawn's runtime directory (tmpfs: gone at boot,
//!   with the sysctl), that forwarding is spawn's; only then writes 1. The host's other
//!   interfaces forward nothing, as before.
//!
//! Both stay after the run, as Docker leaves its `FORWARD` policy: setting the sysctl
//! back when the last run ends would race with runs starting, and a spawn killed before
//! it could would leave forwarding on anyway; the guard is what makes it safe, so it must
//! outlive every run. The record lets each later `full` run re-install the guard, so a
//! firewall reload that flushed the whole ruleset is repaired at the next run; while a
//! run lives, its own `owner` tables (which a flush does not remove) carry the same guard.
//! To take forwarding back: `sysctl net.ipv4.ip_forward=0`, then delete the table and the
//! record.

use std::path::{Path, PathBuf};

use crate::error::EgressError;
use crate::topology::{run_nft, setup};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The guard's table (a plain one: it must survive spawn).
pub const GUARD_TABLE: &str = "spawn-forward-guard";

/// Who the host forwards for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Spawn turned forwarding on: only spawn's links forward (the guard).
    Guarded,
    /// The host forwarded already, by its own choice.
    Host,
}

/// Where the record that forwarding is spawn's lives: one per network namespace (the
/// sysctl is per namespace), named after the namespace's inode.
fn record_path(dir: &Path) -> Result<PathBuf, EgressError> {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| setup("read this network namespace", e.to_string()))?;
    Ok(dir.join(format!("forwarding-{}", ns.ino())))
}

/// Makes sure the host forwards IPv4 for spawn's links (see the module docs). `dir` is
/// spawn's runtime directory (root's, on tmpfs), where the record is kept.
pub fn ensure(dir: &Path) -> Result<Forwarding, EgressError> {
    let what = "turn on IPv4 forwarding";
    let on = std::fs::read_to_string(IP_FORWARD)
        .map_err(|e| setup(what, format!("{IP_FORWARD}: {e}")))?
        .trim()
        == "1";
    let record = record_path(dir)?;
    if on && !record.exists() {
        return Ok(Forwarding::Host);
    }
    // The guard first: forwarding is never on without it.
    run_nft(&guard_ruleset(), "install the forwarding guard")?;
    std::fs::write(
        &record,
        format!(
            "spawn turned net.ipv4.ip_forward on for its links only; \
             the guard is table ip {GUARD_TABLE}\n"
        ),
    )
    .map_err(|e| setup(what, format!("{}: {e}", record.display())))?;
    if !on {
        std::fs::write(IP_FORWARD, "1").map_err(|e| setup(what, format!("{IP_FORWARD}: {e}")))?;
    }
    Ok(Forwarding::Guarded)
}

/// The guard, replaced whole in one transaction (so two runs installing it at once, or a
/// guard already there, leave exactly one).
pub fn guard_ruleset() -> String {
    format!(
        "table ip {GUARD_TABLE}
delete table ip {GUARD_TABLE}
table ip {GUARD_TABLE} {{
  comment \"spawn: IPv4 forwarding was off; spawn turned it on for its own links only\"
  chain forward {{
    type filter hook forward priority -400; policy accept;
{rule}
  }}
}}
",
        rule = guard_rule()
    )
}

/// The guard's rule: nothing is forwarded unless it comes from or goes to a spawn link.
pub(crate) fn guard_rule() -> &'static str {
    "    iifname != \"spw*\" oifname != \"spw*\" drop"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_drops_all_but_spawns_links_and_nft_accepts_it() {
        let g = guard_ruleset();
        assert!(g.contains("hook forward"), "{g}");
        assert!(
            g.contains("iifname != \"spw*\" oifname != \"spw*\" drop"),
            "{g}"
        );
        // Replaced whole: created (if absent), deleted and made again in one batch.
        assert!(g.find("delete table").unwrap() < g.rfind("chain forward").unwrap());
        crate::topology::run(
            std::process::Command::new("nft").args(["-c", "-f", "-"]),
            &g,
            "check the ruleset",
        )
        .expect("nft accepts the guard (make test installs nftables)");
    }
}
