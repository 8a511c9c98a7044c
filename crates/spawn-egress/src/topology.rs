//! A run's network: a network namespace of its own whose only interface besides loopback
//! is one end of a veth pair, the other end in the host's namespace. It comes in two
//! kinds, with the same topology and different walls:
//!
//! - **Proxied** ([`Link::create`], `restricted` and `egress-only`): the only way out is
//!   the egress proxy and its DNS server on the host end.
//! - **Routed** ([`Link::routed`], `full`): the host routes the sandbox's traffic to the
//!   outside and masquerades it, but never to the host's own addresses (any interface,
//!   as they are at the moment: `fib daddr type local`), loopback, link-local and the
//!   cloud metadata addresses (`169.254.0.0/16`), spawn's links (its own host end and
//!   every other run's), multicast or broadcast; IPv6 not at all (so no `fd00:ec2::254`
//!   either). DNS sent to the host end goes on to the host's own resolver (DNAT),
//!   wherever it listens (systemd-resolved's `127.0.0.53`, a metadata server), and
//!   nothing else of that address is reachable. Forwarding is turned on with a guard
//!   (see [`crate::forwarding`]).
//!
//! Two packet filters close it in:
//!
//! - **At the host end** (the wall, for every runtime): an nftables `netdev` ingress
//!   chain on the host end's device sees every frame the sandbox sends, including those
//!   gVisor's own network stack writes to the interface itself (which bypass the
//!   namespace's IP hooks). It accepts ARP for the sandbox's address, and IPv4 from the
//!   sandbox's address only. Proxied: only to the proxy's ports and DNS on the host end,
//!   or to TCP ports 80 and 443 anywhere, which a `prerouting` rule redirects to the
//!   proxy's transparent listeners (a `forward` rule drops anything from the link that
//!   would be routed instead). Routed: not to the ranges above; a `prerouting` chain that
//!   runs before any NAT refuses the host's own addresses. Refused IPv4 is refused at once
//!   (TCP reset, ICMP unreachable); anything else, IPv6 included, is dropped. Nothing is
//!   routed into the link but replies. These tables are `owner` tables of an `nft -i`
//!   process that lives as long as the link: nobody else can change them (not even
//!   `nft flush ruleset`), and they vanish with that process (a spawn killed at any
//!   moment leaves none).
//! - **Inside the namespace** (a second layer, for the runtimes whose sockets are the host
//!   kernel's): the same rules on the output hook as far as the namespace can know them,
//!   nothing in but replies; rejections are immediate.
//!
//! The namespace is made first, held by a process of its own (`unshare --net sh`, which
//! ends when its stdin closes: with the link, or with spawn), and the veth pair is created
//! with its sandbox end already inside it, so the pair dies with the namespace: no
//! sequence of kills leaves a link in the host's namespace. A sandbox can outlive a
//! killed spawn (runc's and runsc's can) and keep the namespace; so the holder deletes the
//! pair from inside before it exits, and the wall's process, which gets its end of input
//! only when the holder is gone too (see `HOLD`), never leaves a link unwalled. Addresses come from
//! `10.201.0.0/16`, one `/30` per run: host end `.1`, sandbox end `.2` of its block.
//!
//! Configured with `ip` and `nft` (iproute2, nftables) and `unshare`/`nsenter`
//! (util-linux), so this crate holds no `unsafe`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::EgressError;
use crate::forwarding::{self, Forwarding};

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
    /// The run's model gateway (a run with `spec.model` only).
    pub const GATEWAY: u16 = 3100;
}

/// How many `/30` blocks the pool has.
const BLOCKS: u32 = 1 << 14;

/// What a routed link never reaches: "this network", spawn's links (its own host end and
/// every other run's: the pool of [`block_addrs`]), loopback, link-local and the cloud
/// metadata addresses, multicast, the reserved range and broadcast. The host's own
/// addresses are refused by a lookup instead (`fib daddr type local`), so that every
/// address the host has at the moment counts, on any interface.
const NEVER_ROUTED: &str = "0.0.0.0/8, 10.201.0.0/16, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3";

/// What a routed link (`net: full`) is set up with.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The resolver that DNS sent to the host end goes on to (the host's own, wherever it
    /// listens); `None`: the run has no DNS of the host's.
    pub resolver: Option<SocketAddrV4>,
    /// spawn's runtime directory (root's, on tmpfs), where [`crate::forwarding`] keeps
    /// its record.
    pub state_dir: PathBuf,
    /// The run has a model gateway on the host end ([`ports::GATEWAY`]): the one port of
    /// the host end reachable besides DNS.
    pub gateway: bool,
}

/// What a link's walls let through.
#[derive(Debug, Clone, Copy)]
enum Reach {
    Proxy {
        gateway: bool,
    },
    Routed {
        resolver: Option<SocketAddrV4>,
        guard: bool,
        gateway: bool,
    },
    /// `net: none` with a model: the gateway on the host end, and nothing else.
    GatewayOnly,
}

/// A run's network: its namespace, veth pair and host-side filter; all removed on drop.
#[derive(Debug)]
pub struct Link {
    host_if: String,
    /// The host end's address: where the proxy and DNS listen.
    pub host: Ipv4Addr,
    /// The sandbox end's address: how the proxy knows the run.
    pub sandbox: Ipv4Addr,
    /// Holds the namespace (`unshare --net sh`, see [`HOLD`]).
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

/// The namespace's holder, run by `sh` in the namespace (`unshare --net`): it lives until
/// its stdin closes (the link is dropped, or spawn dies), then deletes the pair from
/// inside and exits. Its stdout is a copy of the wall's stdin (`nft -i`), which therefore
/// sees its end only after the pair is gone: a sandbox that outlives a killed spawn (runc's
/// and runsc's can) keeps the namespace, but never a link without its wall.
const HOLD: &str = "cat >/dev/null; ip link del eth0 >/dev/null 2>&1";

/// How long the helpers may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run(cmd: &mut Command, input: &str, what: &str) -> Result<(), EgressError> {
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

/// Applies an nftables ruleset (`nft -f`) in this namespace.
pub(crate) fn run_nft(ruleset: &str, what: &str) -> Result<(), EgressError> {
    run(Command::new("nft").args(["-f", "-"]), ruleset, what)
}

pub(crate) fn setup(what: &str, reason: String) -> EgressError {
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
    /// `seed`), configures both ends and installs both filters: a proxied link (and the
    /// model gateway's port on the host end when `gateway`).
    pub fn create(seed: u32, gateway: bool) -> Result<Link, EgressError> {
        Link::make(seed, Reach::Proxy { gateway })
    }

    /// As [`Link::create`], for a run without a network (`net: none`) that has a model
    /// gateway: its port on the host end is the only destination besides loopback.
    pub fn gateway_only(seed: u32) -> Result<Link, EgressError> {
        Link::make(seed, Reach::GatewayOnly)
    }

    /// As [`Link::create`], for a routed link (`net: full`): IPv4 forwarding is turned on
    /// first if it is off, with its guard (see [`crate::forwarding`]).
    pub fn routed(seed: u32, routed: &Routed) -> Result<Link, EgressError> {
        let guard = forwarding::ensure(&routed.state_dir)? == Forwarding::Guarded;
        Link::make(
            seed,
            Reach::Routed {
                resolver: routed.resolver,
                guard,
                gateway: routed.gateway,
            },
        )
    }

    fn make(seed: u32, reach: Reach) -> Result<Link, EgressError> {
        // The wall's process first, its tables installed once the link exists. The
        // namespace's holder keeps a copy of the wall's stdin, so the wall outlives it.
        let filter = Holder::start(
            Command::new("nft")
                .arg("-i")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "start the host-side packet filter",
        )?;
        let wall = filter
            .stdin
            .as_ref()
            .map(|s| s.as_fd().try_clone_to_owned())
            .transpose()
            .map_err(|e| setup("start the namespace holder", e.to_string()))?
            .ok_or_else(|| setup("start the namespace holder", "nft has no stdin".into()))?;
        let holder = Holder::start(
            Command::new("unshare")
                .args(["--net", "--", "sh", "-c", HOLD])
                .stdout(Stdio::from(wall)),
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
                    return Link::configure(host_if, host, sandbox, holder, filter, &ns, reach);
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
        mut filter: Holder,
        ns: &str,
        reach: Reach,
    ) -> Result<Link, EgressError> {
        // If anything below fails, dropping the holder ends the namespace and the pair.
        let delete = || {
            let _ = run(
                Command::new("ip").args(["link", "del", &host_if]),
                "",
                "delete the veth pair",
            );
        };
        let rules = match reach {
            Reach::Proxy { gateway } => host_ruleset(&host_if, host, sandbox, gateway),
            Reach::Routed {
                resolver,
                guard,
                gateway,
            } => routed_host_ruleset(&host_if, host, sandbox, resolver, guard, gateway),
            Reach::GatewayOnly => gateway_host_ruleset(&host_if, host, sandbox),
        };
        if let Err(e) = host_filter(&mut filter, &host_if, &rules) {
            delete();
            return Err(e);
        }
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
        if let Reach::Routed {
            resolver: Some(r), ..
        } = reach
        {
            if r.ip().is_loopback() {
                // The host's resolver listens on loopback (systemd-resolved's stub): the
                // DNAT to it needs loopback routed from this link. Only that DNAT can
                // reach it: the wall refuses 127.0.0.0/8 before any NAT. The setting
                // goes with the link.
                let knob = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", link.host_if);
                std::fs::write(&knob, "1").map_err(|e| {
                    setup("route DNS to the host's resolver", format!("{knob}: {e}"))
                })?;
            }
        }
        let enter = format!("--net={ns}");
        let batch = format!(
            "addr add {sandbox}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {host}\n"
        );
        run(
            Command::new("nsenter").args([enter.as_str(), "ip", "-batch", "-"]),
            &batch,
            "configure the sandbox end",
        )?;
        let inside = match reach {
            Reach::Proxy { gateway } => ruleset(host, sandbox, gateway),
            Reach::Routed {
                resolver, gateway, ..
            } => routed_ruleset(host, sandbox, resolver.is_some(), gateway),
            Reach::GatewayOnly => gateway_ruleset(host, sandbox),
        };
        run(
            Command::new("nsenter").args([enter.as_str(), "nft", "-f", "-"]),
            &inside,
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

/// Gives `nft -i` (`holder`) the host-side filter `rules` of the link `host_if` (see the
/// module docs) as `owner` tables, and waits until they are in place.
fn host_filter(holder: &mut Holder, host_if: &str, rules: &str) -> Result<(), EgressError> {
    let what = "install the host-side packet filter";
    let table = format!("spawn-{host_if}");
    // One line is one transaction: the tables exist whole or not at all. The listing that
    // follows says it has been applied (nft answers errors on stderr instead).
    let commands = format!(
        "{}\nlist table ip {table}\n",
        rules.trim_end().replace('\n', "; ")
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
    wait_for_listing(stdout, stderr, &format!("table ip {table} {{")).map_err(|e| setup(what, e))
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

/// The ports of the host end a proxied link reaches (the gateway's too, when it has one).
fn proxied_ports(gateway: bool) -> String {
    use ports::{DNS, GATEWAY, HTTP, PROXY, TLS};
    if gateway {
        format!("{PROXY}, {HTTP}, {TLS}, {DNS}, {GATEWAY}")
    } else {
        format!("{PROXY}, {HTTP}, {TLS}, {DNS}")
    }
}

/// The host-side filter of the link `host_if`, as nft commands (one per line).
pub fn host_ruleset(host_if: &str, host: Ipv4Addr, sandbox: Ipv4Addr, gateway: bool) -> String {
    use ports::{DNS, HTTP, TLS};
    let t = format!("spawn-{host_if}");
    let tcp = proxied_ports(gateway);
    format!(
        "add table netdev {t} {{ flags owner; }}
add chain netdev {t} ingress {{ type filter hook ingress device \"{host_if}\" priority -500; policy drop; }}
add rule netdev {t} ingress meta protocol arp arp saddr ip {sandbox} accept
add rule netdev {t} ingress meta protocol ip ip saddr != {sandbox} drop
add rule netdev {t} ingress meta protocol ip ip daddr {host} tcp dport {{ {tcp} }} accept
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
pub fn ruleset(host: Ipv4Addr, sandbox: Ipv4Addr, gateway: bool) -> String {
    use ports::{DNS, HTTP, TLS};
    let tcp = proxied_ports(gateway);
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
    ip daddr {host} tcp dport {{ {tcp} }} accept
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

/// The host-side filter of a gateway-only link (`net: none` with a model): from the
/// sandbox's address to the gateway's port on the host end, and nothing else; nothing
/// forwarded either way.
pub fn gateway_host_ruleset(host_if: &str, host: Ipv4Addr, sandbox: Ipv4Addr) -> String {
    use ports::GATEWAY;
    let t = format!("spawn-{host_if}");
    format!(
        "add table netdev {t} {{ flags owner; }}
add chain netdev {t} ingress {{ type filter hook ingress device \"{host_if}\" priority -500; policy drop; }}
add rule netdev {t} ingress meta protocol arp arp saddr ip {sandbox} accept
add rule netdev {t} ingress meta protocol ip ip saddr != {sandbox} drop
add rule netdev {t} ingress meta protocol ip ip daddr {host} tcp dport {GATEWAY} accept
add rule netdev {t} ingress meta protocol ip meta l4proto tcp reject with tcp reset
add rule netdev {t} ingress meta protocol ip reject
add table ip {t} {{ flags owner; }}
add chain ip {t} forward {{ type filter hook forward priority -300; policy accept; }}
add rule ip {t} forward iifname \"{host_if}\" drop
add rule ip {t} forward oifname \"{host_if}\" drop
"
    )
}

/// The sandbox namespace's filter on a gateway-only link: loopback, and the gateway's
/// port on the host end; nothing in but replies; rejections immediate.
pub fn gateway_ruleset(host: Ipv4Addr, sandbox: Ipv4Addr) -> String {
    use ports::GATEWAY;
    format!(
        "table inet spawn {{
  chain out {{
    type filter hook output priority 0; policy drop;
    oif \"lo\" accept
    ip saddr != {sandbox} drop
    ip daddr {host} tcp dport {GATEWAY} accept
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

/// The host-side filter of a routed link `host_if` (`net: full`, see the module docs), as
/// nft commands (one per line). `resolver`: where DNS sent to the host end goes on to;
/// `guard`: forwarding is spawn's, so the run's tables carry the guard too (which a flush
/// of the ruleset does not remove while the run lives).
pub fn routed_host_ruleset(
    host_if: &str,
    host: Ipv4Addr,
    sandbox: Ipv4Addr,
    resolver: Option<SocketAddrV4>,
    guard: bool,
    gateway: bool,
) -> String {
    let t = format!("spawn-{host_if}");
    let model = format!("ip daddr {host} tcp dport {}", ports::GATEWAY);
    let dns = format!(
        "ip daddr {host} meta l4proto {{ tcp, udp }} th dport {}",
        ports::DNS
    );
    let mut r = format!(
        "add table netdev {t} {{ flags owner; }}
add chain netdev {t} ingress {{ type filter hook ingress device \"{host_if}\" priority -500; policy drop; }}
add rule netdev {t} ingress meta protocol arp arp saddr ip {sandbox} accept
add rule netdev {t} ingress meta protocol ip ip saddr != {sandbox} drop
"
    );
    if resolver.is_some() {
        r += &format!("add rule netdev {t} ingress meta protocol ip {dns} accept\n");
    }
    if gateway {
        r += &format!("add rule netdev {t} ingress meta protocol ip {model} accept\n");
    }
    r += &format!(
        "add rule netdev {t} ingress meta protocol ip ip daddr {{ {NEVER_ROUTED} }} meta l4proto tcp reject with tcp reset
add rule netdev {t} ingress meta protocol ip ip daddr {{ {NEVER_ROUTED} }} reject
add rule netdev {t} ingress meta protocol ip accept
add table ip {t} {{ flags owner; }}
add chain ip {t} local {{ type filter hook prerouting priority -300; policy accept; }}
"
    );
    if resolver.is_some() {
        r += &format!("add rule ip {t} local iifname \"{host_if}\" {dns} accept\n");
    }
    if gateway {
        r += &format!("add rule ip {t} local iifname \"{host_if}\" {model} accept\n");
    }
    r += &format!(
        "add rule ip {t} local iifname \"{host_if}\" fib daddr type {{ local, broadcast, anycast, multicast }} meta l4proto tcp reject with tcp reset
add rule ip {t} local iifname \"{host_if}\" fib daddr type {{ local, broadcast, anycast, multicast }} reject
"
    );
    if let Some(resolver) = resolver {
        r += &format!(
            "add chain ip {t} dns {{ type nat hook prerouting priority -100; policy accept; }}
add rule ip {t} dns iifname \"{host_if}\" {dns} dnat to {resolver}
"
        );
    }
    r += &format!(
        "add chain ip {t} forward {{ type filter hook forward priority -300; policy accept; }}
add rule ip {t} forward iifname \"{host_if}\" accept
add rule ip {t} forward oifname \"{host_if}\" ct state established,related accept
add rule ip {t} forward oifname \"{host_if}\" drop
add chain ip {t} out {{ type nat hook postrouting priority 100; policy accept; }}
add rule ip {t} out ip saddr {sandbox} oifname != \"{host_if}\" masquerade
"
    );
    if guard {
        r += &format!(
            "add chain ip {t} guard {{ type filter hook forward priority -400; policy accept; }}
add rule ip {t} guard {}
",
            forwarding::guard_rule().trim()
        );
    }
    r
}

/// The sandbox namespace's filter on a routed link: out anywhere but to the ranges a
/// routed link never reaches (DNS to the host end excepted, when the run has it), only
/// from the sandbox's own address, loopback free, nothing in but replies, IPv6 not at all.
/// The host's own addresses are the host end's business: the namespace cannot know them.
pub fn routed_ruleset(host: Ipv4Addr, sandbox: Ipv4Addr, dns: bool, gateway: bool) -> String {
    let mut dns = if dns {
        format!(
            "ip daddr {host} meta l4proto {{ tcp, udp }} th dport {} accept\n    ",
            ports::DNS
        )
    } else {
        String::new()
    };
    if gateway {
        dns += &format!("ip daddr {host} tcp dport {} accept\n    ", ports::GATEWAY);
    }
    format!(
        "table inet spawn {{
  chain out {{
    type filter hook output priority 0; policy accept;
    oif \"lo\" accept
    meta nfproto ipv6 reject
    ip saddr != {sandbox} drop
    {dns}ip daddr {{ {NEVER_ROUTED} }} meta l4proto tcp reject with tcp reset
    ip daddr {{ {NEVER_ROUTED} }} reject
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

    /// With a model gateway, its port on the host end is reachable in every kind of link,
    /// and in a gateway-only link nothing else is; nftables accepts every ruleset.
    #[test]
    fn a_gateway_opens_its_port_on_the_host_end_only() {
        let (h, sb) = (Ipv4Addr::new(10, 201, 0, 5), Ipv4Addr::new(10, 201, 0, 6));
        let check = |r: &str| {
            run(
                Command::new("nft").args(["-c", "-f", "-"]),
                r,
                "check the ruleset",
            )
            .expect("nft accepts the ruleset (make test installs nftables)");
        };
        let proxied = ruleset(h, sb, true);
        assert!(
            proxied.contains("ip daddr 10.201.0.5 tcp dport { 3128, 3180, 3443, 53, 3100 } accept"),
            "{proxied}"
        );
        check(&proxied);
        assert!(host_ruleset("spw1", h, sb, true).contains("3443, 53, 3100 }"));
        let routed = routed_ruleset(h, sb, true, true);
        let gw = routed
            .find("ip daddr 10.201.0.5 tcp dport 3100 accept")
            .expect("gateway");
        let never = routed.find("ip daddr { 0.0.0.0/8").expect("never routed");
        assert!(gw < never, "{routed}");
        check(&routed);
        let routed_host = routed_host_ruleset("spw1", h, sb, None, false, true);
        let gw = routed_host
            .find("ingress meta protocol ip ip daddr 10.201.0.5 tcp dport 3100 accept")
            .expect("gateway");
        assert!(
            gw < routed_host.find("daddr { 0.0.0.0/8").expect("never"),
            "{routed_host}"
        );
        let local = routed_host
            .find("local iifname \"spw1\" ip daddr 10.201.0.5 tcp dport 3100 accept")
            .expect("local");
        assert!(
            local < routed_host.find("fib daddr type").expect("fib"),
            "{routed_host}"
        );
        // Gateway only: that port, loopback, replies; nothing else accepted.
        let only = gateway_ruleset(h, sb);
        check(&only);
        let accepts: Vec<&str> = only
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with("accept"))
            .collect();
        assert_eq!(
            accepts,
            [
                "oif \"lo\" accept",
                "ip daddr 10.201.0.5 tcp dport 3100 accept",
                "iif \"lo\" accept",
                "ct state established,related accept"
            ]
        );
        let host_only = gateway_host_ruleset("spw1", h, sb);
        let accepts: Vec<&str> = host_only
            .lines()
            .filter(|l| l.ends_with("accept"))
            .collect();
        assert_eq!(accepts.len(), 2, "{host_only}");
        assert!(accepts[1].ends_with("ip daddr 10.201.0.5 tcp dport 3100 accept"));
        assert!(!host_only.contains("dnat"));
    }

    #[test]
    fn the_filter_names_only_the_host_end() {
        let r = ruleset(
            Ipv4Addr::new(10, 201, 0, 5),
            Ipv4Addr::new(10, 201, 0, 6),
            false,
        );
        assert!(
            !r.contains("3100"),
            "no gateway port without a gateway: {r}"
        );
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

    #[test]
    fn a_routed_link_walls_off_the_host_and_passes_only_dns_to_its_resolver() {
        let (h, sb) = (Ipv4Addr::new(10, 201, 0, 5), Ipv4Addr::new(10, 201, 0, 6));
        let resolver = Some(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53));
        let r = routed_host_ruleset("spw1", h, sb, resolver, true, false);
        let line = |needle: &str| {
            r.lines()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in:\n{r}"))
        };
        // The wall: only the sandbox's address; never the ranges, the host's own
        // addresses looked up before any NAT; DNS to the host end is the one exception,
        // in both chains, and goes on to the resolver.
        line("ip saddr != 10.201.0.6 drop");
        let dns = "ip daddr 10.201.0.5 meta l4proto { tcp, udp } th dport 53";
        assert!(
            line(&format!("ingress meta protocol ip {dns} accept")) < line("daddr { 0.0.0.0/8")
        );
        assert!(line(&format!("local iifname \"spw1\" {dns} accept")) < line("fib daddr type"));
        assert!(
            r.contains("169.254.0.0/16")
                && r.contains("127.0.0.0/8")
                && r.contains("10.201.0.0/16")
        );
        assert!(
            r.contains("type filter hook prerouting priority -300"),
            "{r}"
        );
        line(&format!("{dns} dnat to 127.0.0.53:53"));
        // Out masqueraded, only the sandbox's own address; in only replies.
        line("ip saddr 10.201.0.6 oifname != \"spw1\" masquerade");
        assert!(
            line("oifname \"spw1\" ct state established,related accept")
                < line("oifname \"spw1\" drop")
        );
        // Forwarding is spawn's: the run's tables carry the guard too.
        line("iifname != \"spw*\" oifname != \"spw*\" drop");
        // Every table is the run's own (owner).
        assert_eq!(
            r.matches("add table").count(),
            r.matches("flags owner").count()
        );

        let bare = routed_host_ruleset("spw1", h, sb, None, false, false);
        for absent in ["dport 53", "dnat", "spw*"] {
            assert!(!bare.contains(absent), "{absent}: {bare}");
        }

        for dns in [true, false] {
            let inside = routed_ruleset(h, sb, dns, false);
            assert_eq!(inside.contains("dport 53 accept"), dns, "{inside}");
            assert!(inside.contains("meta nfproto ipv6 reject"), "{inside}");
            run(
                Command::new("nft").args(["-c", "-f", "-"]),
                &inside,
                "check the ruleset",
            )
            .expect("nft accepts the ruleset (make test installs nftables)");
        }
    }
}
