//! A run's network for `full`: a routed link (`spawn_egress::topology::Link::routed`), a
//! network namespace of the run's own that the host routes to the outside and
//! masquerades, with the host's own addresses, its loopback, the cloud metadata addresses
//! and spawn's other links walled off at the link's host end. DNS sent to the host end
//! goes on to the host's own resolver, wherever it listens, so a host whose resolver is
//! systemd-resolved's stub on `127.0.0.53` (unreachable from the run's namespace) or a
//! metadata server still resolves names for the run.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use spawn_egress::topology::{ports, Link, Routed};

use crate::error::{NetContext as _, RunError};

type Result<T> = std::result::Result<T, RunError>;

/// The host's resolver configuration.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// A run's link without a proxy: routed to the outside (`full`), or to its model gateway
/// alone (`net: none` with a model, [`DirectNetwork::gateway_only`]); dropping it removes
/// the link and its filter.
#[derive(Debug)]
pub(crate) struct DirectNetwork {
    link: Link,
    /// The run has a model gateway on the link's host end.
    gateway: bool,
}

impl DirectNetwork {
    /// The network of a run without one that has a model gateway: a link whose only
    /// destination is the gateway's port on its host end.
    pub(crate) fn gateway_only(run_id: &str) -> Result<DirectNetwork> {
        let link = Link::gateway_only(crate::egress::link_seed(run_id))
            .net("make the run's link to its model gateway")?;
        Ok(DirectNetwork {
            link,
            gateway: true,
        })
    }
}

impl crate::RunNetwork for DirectNetwork {
    fn sandbox_address(&self) -> Option<std::net::IpAddr> {
        Some(self.link.sandbox.into())
    }
}

impl DirectNetwork {
    /// Makes the run's routed link (turning IPv4 forwarding on, guarded, if it is off).
    pub(crate) fn start(
        run_id: &str,
        warn: &mut dyn FnMut(&str),
        gateway: bool,
    ) -> Result<DirectNetwork> {
        let resolver = resolver()?;
        if resolver.is_none() {
            warn(&format!(
                "the host names no IPv4 resolver in {RESOLV_CONF}: the run has no DNS"
            ));
        }
        let state_dir = PathBuf::from(spawn_sandbox::container::BASE);
        spawn_sandbox::container::ensure_dir(Path::new(&state_dir), 0o711)?;
        let link = Link::routed(
            crate::egress::link_seed(run_id),
            &Routed {
                resolver,
                state_dir,
                gateway,
            },
        )
        .net("make the run's network link")?;
        Ok(DirectNetwork { link, gateway })
    }
}

/// Where the run's DNS goes on to: `SPAWN_EGRESS_NAMESERVER=ip:port` if set (as for the
/// proxied policies), else the host's first IPv4 resolver.
fn resolver() -> Result<Option<SocketAddrV4>> {
    if let Ok(ns) = std::env::var("SPAWN_EGRESS_NAMESERVER") {
        return match ns.parse::<SocketAddr>() {
            Ok(SocketAddr::V4(v4)) => Ok(Some(v4)),
            _ => Err(RunError::Network(format!(
                "SPAWN_EGRESS_NAMESERVER={ns:?} is not an IPv4 ip:port"
            ))),
        };
    }
    let conf = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    Ok(first_ipv4_nameserver(&conf))
}

/// The first IPv4 `nameserver` of a resolv.conf, on the DNS port. IPv6 resolvers are
/// skipped: a routed link carries IPv4 only.
pub(crate) fn first_ipv4_nameserver(conf: &str) -> Option<SocketAddrV4> {
    conf.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .find_map(|addr| addr.parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddrV4::new(ip, ports::DNS))
}

impl spawn_sandbox::Network for DirectNetwork {
    fn nameserver(&self) -> Ipv4Addr {
        self.link.host
    }

    fn proxy(&self) -> Option<SocketAddr> {
        None
    }

    fn namespace(&self) -> PathBuf {
        self.link.namespace()
    }

    fn gateway(&self) -> Option<SocketAddr> {
        self.gateway
            .then(|| SocketAddr::from((self.link.host, ports::GATEWAY)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ipv4_nameserver_wherever_it_listens() {
        let cases = [
            // systemd-resolved's stub: reached by DNAT from the run's link.
            ("nameserver 127.0.0.53\noptions edns0\n", Some("127.0.0.53:53")),
            // A metadata server that resolves (GCP): only its port 53 is reached.
            (
                "search c.example.internal\nnameserver 169.254.169.254\n",
                Some("169.254.169.254:53"),
            ),
            // IPv6 first: skipped.
            (
                "nameserver ::1\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 1.1.1.1\n",
                Some("10.0.0.2:53"),
            ),
            ("# nameserver 9.9.9.9\n;nameserver 8.8.8.8\n", None),
            ("nameserver\tgarbage\nnameserver 192.0.2.1 \n", Some("192.0.2.1:53")),
            ("nameserverx 1.2.3.4\n", None),
            ("", None),
            ("nameserver ::1\n", None),
        ];
        for (conf, want) in cases {
            let want = want.map(|w| w.parse::<SocketAddrV4>().unwrap());
            assert_eq!(first_ipv4_nameserver(conf), want, "{conf:?}");
        }
    }
}
