//! Name resolution done by the proxy itself: programs in the sandbox never choose the
//! address a connection goes to.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;

use crate::error::EgressError;

/// At most this many addresses of one name are considered (a hostile answer can be long).
const MAX_ADDRESSES: usize = 32;

/// The proxy's resolver.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioAsyncResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

fn opts() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    // Names are looked up as given, never with the host's search domains appended: a
    // sandbox asking for `db` must not reach `db.corp.example`.
    opts.ndots = 0;
    opts.use_hosts_file = false;
    // Answers are kept for their TTL (at most 5 minutes) and checked again on every use:
    // a cached address is only ever one that passed, and a rebinding answer (short TTL)
    // fails the next check.
    opts.cache_size = 1024;
    opts.positive_max_ttl = Some(Duration::from_secs(300));
    opts
}

impl Resolver {
    /// The host's resolvers (`/etc/resolv.conf`), without its `/etc/hosts` or search list.
    pub fn system() -> Result<Resolver, EgressError> {
        let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            EgressError::Resolve {
                name: "/etc/resolv.conf".into(),
                reason: e.to_string(),
            }
        })?;
        let config = ResolverConfig::from_parts(None, vec![], config.name_servers().to_vec());
        Ok(Resolver {
            inner: TokioAsyncResolver::tokio(config, opts()),
        })
    }

    /// One name server over UDP (and TCP for truncated answers), e.g. a test server.
    pub fn with_nameserver(server: SocketAddr) -> Resolver {
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        Resolver {
            inner: TokioAsyncResolver::tokio(config, opts()),
        }
    }

    /// Every address of `name` (A and AAAA), at most [`MAX_ADDRESSES`].
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, EgressError> {
        // A fully qualified query: nothing appended.
        let fqdn = format!("{name}.");
        let answer =
            self.inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| EgressError::Resolve {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
        let addrs: Vec<IpAddr> = answer.iter().take(MAX_ADDRESSES).collect();
        if addrs.is_empty() {
            return Err(EgressError::Resolve {
                name: name.to_owned(),
                reason: "no address".into(),
            });
        }
        Ok(addrs)
    }
}
