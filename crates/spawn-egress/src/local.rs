//! The host's own addresses, as the kernel knows them at the moment of asking.
//!
//! Every address assigned to any interface of the host (and so every run's host end of its
//! link) is a destination the proxy never connects to, in every mode (SPEC §6): the host's
//! services are not the world, whatever its addresses look like (a `100.64.0.0/10` or a
//! public address on the host's uplink is not in any range [`blocked_reason`] knows).
//!
//! Interfaces change while the proxy runs, so nothing is listed ahead of time: the kernel
//! is asked for each address checked, by binding a UDP socket to it (port 0, nothing is
//! sent). `bind` succeeds exactly for the addresses the kernel would deliver locally
//! (`inet_addr_type` is `LOCAL`, or a broadcast or multicast address, which are refused
//! anyway) and fails with `EADDRNOTAVAIL` for every other. Where that cannot tell —
//! `ip_nonlocal_bind` lets any address be bound — the proxy lists the interfaces'
//! addresses instead, at each check ([`Probe::List`]). Any other failure refuses the
//! address: the proxy does not connect where it cannot tell.
//!
//! [`blocked_reason`]: spawn_policy::net::blocked_reason

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use spawn_policy::net::{embedded_ipv4, Denial};

use crate::proxy::denial;

/// How the host's own addresses are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Bind a UDP socket to the address.
    Bind,
    /// List every interface's addresses (`getifaddrs`).
    List,
    /// Never asked: only loopback is the host's (the proxy as it was before it knew the
    /// host's addresses; for benchmarks, feature `testing`).
    #[cfg(feature = "testing")]
    Off,
}

/// The host's own addresses, asked of the kernel at each check.
#[derive(Debug, Clone, Copy)]
pub struct HostAddresses {
    probe: Probe,
}

/// Addresses no host has (TEST-NET-1 and the IPv6 documentation prefix): if one binds,
/// binding proves nothing here.
const NEVER_LOCAL: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x5a)),
];

impl HostAddresses {
    /// Probes the way this host allows (see the module's doc).
    pub fn new() -> HostAddresses {
        let probe = if NEVER_LOCAL.iter().any(|ip| matches!(bound(*ip), Ok(true))) {
            Probe::List
        } else {
            Probe::Bind
        };
        HostAddresses { probe }
    }

    /// How this one probes.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn with(probe: Probe) -> HostAddresses {
        HostAddresses { probe }
    }

    /// Whether `ip` is one of the host's own addresses right now. IPv6 forms of an IPv4
    /// address are judged by it. `Err` when the kernel could not tell.
    pub fn is_own(&self, ip: IpAddr) -> std::io::Result<bool> {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_loopback() {
            return Ok(true);
        }
        match self.probe {
            Probe::Bind => bound(ip),
            Probe::List => listed(ip),
            #[cfg(feature = "testing")]
            Probe::Off => Ok(false),
        }
    }

    /// `Ok` unless `ip` is the host's own (code `host-address`) or cannot be told.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denial> {
        match self.is_own(ip) {
            Ok(false) => Ok(()),
            Ok(true) => Err(denial(
                "host-address",
                format!("{ip} is an address of the host itself"),
            )),
            Err(e) => Err(denial(
                "host-address",
                format!("cannot tell whether {ip} is the host's own ({e}); refused"),
            )),
        }
    }
}

impl Default for HostAddresses {
    fn default() -> Self {
        HostAddresses::new()
    }
}

/// Whether a UDP socket binds to `ip`.
fn bound(ip: IpAddr) -> std::io::Result<bool> {
    // An IPv6 link-local address binds only with its interface named; the proxy refuses
    // link-local destinations anyway (`blocked_reason`), so "not bound" is fine there.
    match UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
        // IPv6 turned off on the host: no IPv6 address of its own.
        Err(e) if ip.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether any interface has `ip`.
fn listed(ip: IpAddr) -> std::io::Result<bool> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    for a in addrs {
        let Some(addr) = a.address else { continue };
        let own = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip()) == ip
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip()) == ip
        } else {
            false
        };
        if own {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses of this machine's interfaces, as `getifaddrs` lists them.
    fn interfaces() -> Vec<IpAddr> {
        nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter_map(|a| a.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .collect()
    }

    #[test]
    fn every_interface_address_is_the_hosts_own_by_either_probe() {
        let own = interfaces();
        assert!(!own.is_empty(), "this machine lists no address");
        for probe in [Probe::Bind, Probe::List] {
            let host = HostAddresses::with(probe);
            for ip in &own {
                assert!(host.is_own(*ip).unwrap(), "{probe:?} {ip}");
                assert_eq!(host.check(*ip).unwrap_err().code, "host-address");
            }
            // Every spelling of loopback and of "this host", and IPv6 forms of an own
            // IPv4 address.
            for ip in [
                "127.0.0.1",
                "127.1.2.3",
                "0.0.0.0",
                "::1",
                "::",
                "::ffff:127.0.0.1",
            ] {
                assert!(host.is_own(ip.parse().unwrap()).unwrap(), "{probe:?} {ip}");
            }
            for ip in own.iter().filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
                IpAddr::V6(_) => None,
            }) {
                assert!(host.is_own(ip).unwrap(), "{probe:?} {ip}");
            }
            for ip in NEVER_LOCAL {
                assert!(!host.is_own(ip).unwrap(), "{probe:?} {ip}");
                assert_eq!(host.check(ip), Ok(()));
            }
        }
    }

    #[test]
    fn this_machine_probes_by_binding() {
        // ip_nonlocal_bind is off on these machines: the cheap probe is the one used.
        assert_eq!(HostAddresses::new().probe, Probe::Bind);
    }
}
