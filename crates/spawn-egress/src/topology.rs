//! A run's network: a veth pair whose sandbox end is the only interface (besides
//! loopback) of the sandbox's network namespace, and a packet filter inside that namespace
//! that lets out nothing but connections to the proxy and its DNS server on the host end.
//! Ordinary TCP to ports 80 and 443 is redirected to the proxy's transparent listeners;
//! everything else is rejected at once, and nothing may connect in.
//!
//! The pair is made before the sandbox exists (which reserves its addresses), the sandbox
//! end is moved into the namespace once it does, and deleting the host end (on drop)
//! removes both. Addresses come from `10.201.0.0/16`, one `/30` per run: host end `.1`,
//! sandbox end `.2` of its block.
//!
//! Configured with `ip` and `nft` (iproute2, nftables); the sandbox's side through
//! `nsenter --net`, so this crate holds no `unsafe`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::EgressError;

/// The proxy's ports on the host end of every run's link.
pub mod ports {
    /// Explicit proxy (`HTTP_PROXY`).
    pub const PROXY: u16 = 3128;
    /// Transparent HTTP (TCP to port 80 is redirected here).
    pub const HTTP: u16 = 3180;
    /// Transparent TLS (TCP to port 443 is redirected here).
    pub const TLS: u16 = 3443;
    /// DNS for the sandbox.
    pub const DNS: u16 = 53;
}

/// How many `/30` blocks the pool has.
const BLOCKS: u32 = 1 << 14;

/// A run's veth pair.
#[derive(Debug)]
pub struct Link {
    host_if: String,
    sandbox_if: String,
    /// The host end's address: where the proxy and DNS listen.
    pub host: Ipv4Addr,
    /// The sandbox end's address: how the proxy knows the run.
    pub sandbox: Ipv4Addr,
}

fn run(cmd: &mut Command, input: &str, what: &str) -> Result<(), EgressError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            setup(
                what,
                format!("{e} (install iproute2, nftables and util-linux)"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| setup(what, e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| setup(what, e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(setup(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

fn setup(what: &str, reason: String) -> EgressError {
    EgressError::Network {
        stage: what.to_owned(),
        reason,
    }
}

fn block_addrs(block: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 201, 0, 0)) + 4 * block;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl Link {
    /// Makes a pair in a free block (starting the search at `seed`), the host end up with
    /// its address; the sandbox end waits in the host's namespace for [`Link::attach`].
    pub fn create(seed: u32) -> Result<Link, EgressError> {
        let mut last = None;
        for attempt in 0..64 {
            let block = (seed.wrapping_add(attempt * 7919)) % BLOCKS;
            let host_if = format!("spw{block}");
            let sandbox_if = format!("spw{block}s");
            let (host, sandbox) = block_addrs(block);
            let made = run(
                Command::new("ip").args([
                    "link",
                    "add",
                    &host_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &sandbox_if,
                ]),
                "",
                "create the veth pair",
            );
            match made {
                Ok(()) => {
                    let link = Link {
                        host_if,
                        sandbox_if,
                        host,
                        sandbox,
                    };
                    let batch = format!(
                        "addr add {host}/30 dev {h}\nlink set {h} up\n",
                        h = link.host_if
                    );
                    run(
                        Command::new("ip").args(["-batch", "-"]),
                        &batch,
                        "configure the host end",
                    )?;
                    return Ok(link);
                }
                // Taken by another run: try the next block.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| setup("create the veth pair", "no free block".into())))
    }

    /// Moves the sandbox end into the network namespace of process `pid` and closes it in:
    /// address, a route to the host end, and the packet filter.
    pub fn attach(&self, pid: i32) -> Result<(), EgressError> {
        let ns = format!("--net=/proc/{pid}/ns/net");
        run(
            Command::new("ip").args([
                "link",
                "set",
                &self.sandbox_if,
                "netns",
                &pid.to_string(),
                "name",
                "eth0",
            ]),
            "",
            "move the veth end into the sandbox",
        )?;
        let batch = format!(
            "addr add {s}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {h}\n",
            s = self.sandbox,
            h = self.host
        );
        run(
            Command::new("nsenter").args([ns.as_str(), "ip", "-batch", "-"]),
            &batch,
            "configure the sandbox end",
        )?;
        run(
            Command::new("nsenter").args([ns.as_str(), "nft", "-f", "-"]),
            &ruleset(self.host, self.sandbox),
            "install the sandbox's packet filter",
        )
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end deletes the pair, wherever the other end is.
        let _ = run(
            Command::new("ip").args(["link", "del", &self.host_if]),
            "",
            "delete the veth pair",
        );
    }
}

/// The sandbox namespace's filter: out only to the proxy and DNS on the host end (TCP to
/// 80/443 anywhere is redirected there), only from the sandbox's own address (the proxy
/// knows a run by it), loopback free, nothing in but replies, IPv6 not at all. Rejections
/// are immediate (RST / ICMP), so a program fails fast, not by timeout.
pub fn ruleset(host: Ipv4Addr, sandbox: Ipv4Addr) -> String {
    use ports::{DNS, HTTP, PROXY, TLS};
    format!(
        "table inet spawn {{
  chain nat_out {{
    type nat hook output priority -100; policy accept;
    oif \"lo\" accept
    ip daddr {host} accept
    meta nfproto ipv4 tcp dport 443 dnat ip to {host}:{TLS}
    meta nfproto ipv4 tcp dport 80 dnat ip to {host}:{HTTP}
  }}
  chain out {{
    type filter hook output priority 0; policy drop;
    oif \"lo\" accept
    ip saddr != {sandbox} drop
    ip daddr {host} tcp dport {{ {PROXY}, {HTTP}, {TLS}, {DNS} }} accept
    ip daddr {host} udp dport {DNS} accept
    meta l4proto tcp reject with tcp reset
    reject
  }}
  chain in {{
    type filter hook input priority 0; policy drop;
    iif \"lo\" accept
    ct state established,related accept
  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_disjoint_slash_30s_in_the_pool() {
        assert_eq!(
            block_addrs(0),
            (Ipv4Addr::new(10, 201, 0, 1), Ipv4Addr::new(10, 201, 0, 2))
        );
        assert_eq!(
            block_addrs(BLOCKS - 1),
            (
                Ipv4Addr::new(10, 201, 255, 253),
                Ipv4Addr::new(10, 201, 255, 254)
            )
        );
    }

    #[test]
    fn the_filter_names_only_the_host_end() {
        let r = ruleset(Ipv4Addr::new(10, 201, 0, 5), Ipv4Addr::new(10, 201, 0, 6));
        assert!(r.contains("policy drop") && r.contains("10.201.0.5:3443"));
        // Every address accepted is the host end's.
        for line in r.lines().filter(|l| l.contains("daddr")) {
            assert!(line.contains("daddr 10.201.0.5 "), "{line}");
        }
        // And only from the sandbox's own address.
        assert!(r.contains("ip saddr != 10.201.0.6 drop"));
        // nftables itself accepts it (check mode: nothing is installed).
        run(
            Command::new("nft").args(["-c", "-f", "-"]),
            &r,
            "check the ruleset",
        )
        .expect("nft accepts the ruleset (make test installs nftables)");
    }
}
