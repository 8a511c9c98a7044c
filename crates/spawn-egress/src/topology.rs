//! A run's network: a network namespace of its own whose only interface besides loopback
//! is one end of a veth pair, the other end in the host's namespace, where the proxy and
//! its DNS server listen. Two packet filters close it in:
//!
//! - **At the host end** (the wall, for every runtime): an nftables `netdev` ingress
//!   chain on the host end's device sees every frame the sandbox sends, including those
//!   gVisor's own network stack writes to the interface itself (which bypass the
//!   namespace's IP hooks). It accepts ARP for the sandbox's address, and IPv4 from the
//!   sandbox's address only to the proxy's ports and DNS on the host end, or to TCP ports
//!   80 and 443 anywhere, which a `prerouting` rule redirects to the proxy's transparent
//!   listeners (a `forward` rule drops anything from the link that would be routed
//!   instead). Other IPv4 is refused at once (TCP reset, ICMP unreachable); anything else,
//!   IPv6 included, is dropped. These tables are `owner`
//!   tables of an `nft -i` process that lives as long as the link: nobody else can change
//!   them, and they vanish with that process (a spawn killed at any moment leaves none).
//! - **Inside the namespace** (a second layer, for the runtimes whose sockets are the host
//!   kernel's): the same allowlist on the output hook, the same redirect, nothing in but
//!   replies; rejections are immediate.
//!
//! The namespace is made first, held by a process of its own (`unshare --net cat`, which
//! ends when its stdin closes: with the link, or with spawn), and the veth pair is created
//! with its sandbox end already inside it, so the pair dies with the namespace: no
//! sequence of kills leaves a link in the host's namespace. Addresses come from
//! `10.201.0.0/16`, one `/30` per run: host end `.1`, sandbox end `.2` of its block.
//!
//! Configured with `ip` and `nft` (iproute2, nftables) and `unshare`/`nsenter`
//! (util-linux), so this crate holds no `unsafe`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A run's network: its namespace, veth pair and host-side filter; all removed on drop.
#[derive(Debug)]
pub struct Link {
    host_if: String,
    /// The host end's address: where the proxy and DNS listen.
    pub host: Ipv4Addr,
    /// The sandbox end's address: how the proxy knows the run.
    pub sandbox: Ipv4Addr,
    /// Holds the namespace (`unshare --net cat`).
    holder: Holder,
    /// Holds the host-side filter (`nft -i`, owner of its tables).
    filter: Holder,
}

/// A helper process that lives until its stdin closes.
#[derive(Debug)]
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn start(cmd: &mut Command, what: &str) -> Result<Holder, EgressError> {
        let mut child = cmd.stdin(Stdio::piped()).spawn().map_err(|e| {
            setup(
                what,
                format!("{e} (install iproute2, nftables and util-linux)"),
            )
        })?;
        let stdin = child.stdin.take();
        Ok(Holder { child, stdin })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the helpers may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Makes the run's namespace and a pair in a free block (starting the search at
    /// `seed`), configures both ends and installs both filters.
    pub fn create(seed: u32) -> Result<Link, EgressError> {
        let holder = Holder::start(
            Command::new("unshare")
                .args(["--net", "--", "cat"])
                .stdout(Stdio::null()),
            "start the namespace holder",
        )?;
        let ns = format!("/proc/{}/ns/net", holder.pid());
        wait_for_namespace(&ns)?;
        let mut last = None;
        for attempt in 0..64 {
            let block = (seed.wrapping_add(attempt * 7919)) % BLOCKS;
            let host_if = format!("spw{block}");
            let (host, sandbox) = block_addrs(block);
            // The sandbox end is born inside the namespace: the pair dies with it.
            let made = run(
                Command::new("ip").args([
                    "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ]),
                "",
                "create the veth pair",
            );
            match made {
                Ok(()) => {
                    return Link::configure(host_if, host, sandbox, holder, &ns);
                }
                // Taken by another run: try the next block.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| setup("create the veth pair", "no free block".into())))
    }

    fn configure(
        host_if: String,
        host: Ipv4Addr,
        sandbox: Ipv4Addr,
        holder: Holder,
        ns: &str,
    ) -> Result<Link, EgressError> {
        // If anything below fails, dropping the holder ends the namespace and the pair.
        let delete = || {
            let _ = run(
                Command::new("ip").args(["link", "del", &host_if]),
                "",
                "delete the veth pair",
            );
        };
        let filter = match host_filter(&host_if, host, sandbox) {
            Ok(f) => f,
            Err(e) => {
                delete();
                return Err(e);
            }
        };
        let link = Link {
            host_if,
            host,
            sandbox,
            holder,
            filter,
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
        let enter = format!("--net={ns}");
        let batch = format!(
            "addr add {sandbox}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {host}\n"
        );
        run(
            Command::new("nsenter").args([enter.as_str(), "ip", "-batch", "-"]),
            &batch,
            "configure the sandbox end",
        )?;
        run(
            Command::new("nsenter").args([enter.as_str(), "nft", "-f", "-"]),
            &ruleset(host, sandbox),
            "install the sandbox's packet filter",
        )?;
        Ok(link)
    }

    /// The run's network namespace, for the sandbox to join.
    pub fn namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.pid()))
    }

    /// The host end's interface name.
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end deletes the pair at once (the namespace's end would go with the
        // namespace anyway, once the holder has exited). The filter's tables go with its
        // process; the holder's namespace with the holder.
        let _ = run(
            Command::new("ip").args(["link", "del", &self.host_if]),
            "",
            "delete the veth pair",
        );
        let _ = &self.filter;
    }
}

/// Waits until the holder has its own network namespace (its inode differs from ours).
fn wait_for_namespace(ns: &str) -> Result<(), EgressError> {
    use std::os::unix::fs::MetadataExt as _;
    let ours = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if std::fs::metadata(ns).is_ok_and(|m| Some(m.ino()) != ours) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(setup(
        "start the namespace holder",
        "unshare did not make a network namespace".into(),
    ))
}

/// Starts `nft -i` with the host-side filter of the link `host_if` (see the module docs)
/// as `owner` tables, and waits until they are in place.
fn host_filter(host_if: &str, host: Ipv4Addr, sandbox: Ipv4Addr) -> Result<Holder, EgressError> {
    let what = "install the host-side packet filter";
    let mut holder = Holder::start(
        Command::new("nft")
            .arg("-i")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        what,
    )?;
    let table = format!("spawn-{host_if}");
    // One line is one transaction: the tables exist whole or not at all. The listing that
    // follows says it has been applied (nft answers errors on stderr instead).
    let commands = format!(
        "{}\nlist table ip {table}\n",
        host_ruleset(host_if, host, sandbox)
            .trim_end()
            .replace('\n', "; ")
    );
    let stdin = holder
        .stdin
        .as_mut()
        .ok_or_else(|| setup(what, "nft has no stdin".into()))?;
    stdin
        .write_all(commands.as_bytes())
        .and_then(|()| stdin.flush())
        .map_err(|e| setup(what, e.to_string()))?;
    let (Some(stdout), Some(stderr)) = (&holder.child.stdout, &holder.child.stderr) else {
        return Err(setup(what, "nft has no stdout or stderr".into()));
    };
    wait_for_listing(stdout, stderr, &format!("table ip {table} {{"))
        .map_err(|e| setup(what, e))?;
    Ok(holder)
}

/// Waits until `out` shows a line starting with `head` (the listing of the last table),
/// or `err` says why not, or [`READY_TIMEOUT`] passes. Without threads: spawn must still
/// be single-threaded when it starts a native sandbox after this.
fn wait_for_listing(out: &ChildStdout, err: &ChildStderr, head: &str) -> Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + READY_TIMEOUT;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&stdout)
            .lines()
            .any(|l| l.starts_with(head))
        {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let said = String::from_utf8_lossy(&stderr).trim().replace('\n', "; ");
            return Err(if said.is_empty() {
                "nft did not answer".into()
            } else {
                said
            });
        }
        let mut fds = [
            PollFd::new(out.as_fd(), PollFlags::POLLIN),
            PollFd::new(err.as_fd(), PollFlags::POLLIN),
        ];
        let wait = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        match poll(&mut fds, PollTimeout::from(wait)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll nft's output: {e}")),
        }
        let (out_ready, err_ready) = (
            fds[0].revents().is_some_and(|r| !r.is_empty()),
            fds[1].revents().is_some_and(|r| !r.is_empty()),
        );
        if out_ready {
            match nix::unistd::read(out.as_fd(), &mut buf) {
                Ok(0) => return Err("nft exited".into()),
                Ok(n) => stdout.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if err_ready {
            if let Ok(n) = nix::unistd::read(err.as_fd(), &mut buf) {
                stderr.extend_from_slice(&buf[..n]);
                // An error message comes whole, in one write: report it.
                if n > 0 {
                    return Err(String::from_utf8_lossy(&stderr).trim().replace('\n', "; "));
                }
            }
        }
        if stdout.len() > (1 << 20) {
            return Err("nft said too much".into());
        }
    }
}

/// The host-side filter of the link `host_if`, as nft commands (one per line).
pub fn host_ruleset(host_if: &str, host: Ipv4Addr, sandbox: Ipv4Addr) -> String {
    use ports::{DNS, HTTP, PROXY, TLS};
    let t = format!("spawn-{host_if}");
    format!(
        "add table netdev {t} {{ flags owner; }}
add chain netdev {t} ingress {{ type filter hook ingress device \"{host_if}\" priority -500; policy drop; }}
add rule netdev {t} ingress meta protocol arp arp saddr ip {sandbox} accept
add rule netdev {t} ingress meta protocol ip ip saddr != {sandbox} drop
add rule netdev {t} ingress meta protocol ip ip daddr {host} tcp dport {{ {PROXY}, {HTTP}, {TLS}, {DNS} }} accept
add rule netdev {t} ingress meta protocol ip ip daddr {host} udp dport {DNS} accept
add rule netdev {t} ingress meta protocol ip ip daddr != {host} tcp dport {{ 80, 443 }} accept
add rule netdev {t} ingress meta protocol ip meta l4proto tcp reject with tcp reset
add rule netdev {t} ingress meta protocol ip reject
add table ip {t} {{ flags owner; }}
add chain ip {t} transparent {{ type nat hook prerouting priority -100; policy accept; }}
add rule ip {t} transparent iifname \"{host_if}\" ip daddr != {host} tcp dport 443 dnat to {host}:{TLS}
add rule ip {t} transparent iifname \"{host_if}\" ip daddr != {host} tcp dport 80 dnat to {host}:{HTTP}
add chain ip {t} forward {{ type filter hook forward priority -300; policy accept; }}
add rule ip {t} forward iifname \"{host_if}\" drop
add rule ip {t} forward oifname \"{host_if}\" drop
"
    )
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
