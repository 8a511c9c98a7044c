//! spawn's egress proxy (SPEC §6): the only way out of a sandbox whose network policy is
//! `restricted` or `egress-only`. One proxy per host serves every run; each run is known by
//! the source address of its network namespace and checked against its own
//! [`spawn_policy::net::NetRules`].
//!
//! - [`Proxy`]: `CONNECT` and absolute-URI HTTP, names resolved by the proxy, every
//!   resolved address checked, connections only to checked addresses, a tunnel's TLS server
//!   name checked against its host, per-run rate limit, an [`Observer`] event per attempt
//!   and per closed connection.
//! - [`request_destination`]: where a request head goes, one destination that every part of
//!   it agrees on (ports in plain decimal only, at most one `Host`, agreeing).
//! - [`client_hello`]: the server name of a TLS ClientHello, read strictly.
//! - [`Resolver`]: the proxy's own resolver (no search domains, no hosts file).

#![forbid(unsafe_code)]

pub mod capacity;
mod dns;
mod error;
pub mod forwarding;
mod head;
mod local;
mod proxy;
mod resolve;
mod service;
mod sni;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;

pub use error::EgressError;
pub use head::{parse_authority, parse_port, request_destination, Asked, Destination, Refused};
pub use local::HostAddresses;
pub use proxy::{Attempt, Closed, Mode, Observer, Proxy, Registration, Via};
pub use resolve::Resolver;
pub use service::{RunSockets, ServiceConfig};
pub use sni::{client_hello, tunnel_sni, Hello, MAX_HELLO_BYTES};
