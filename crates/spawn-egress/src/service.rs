//! The proxy as a service for runs: every listener of a run's link (explicit proxy,
//! transparent HTTP and TLS, DNS) on the host end, the run registered under its sandbox
//! address, until told to stop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spawn_policy::net::NetRules;
use tokio::net::{TcpListener, UdpSocket};

use crate::error::EgressError;
use crate::proxy::{Mode, Observer, Proxy};
use crate::resolve::Resolver;
use crate::topology::ports;

/// What the service needs to know about one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The run.
    pub run_id: String,
    /// The host end of the run's link: where everything listens.
    pub host: Ipv4Addr,
    /// The sandbox end: the only address served.
    pub sandbox: Ipv4Addr,
    /// The run's rules.
    pub rules: NetRules,
    /// A name server to use instead of the host's (`SPAWN_EGRESS_NAMESERVER`).
    pub nameserver: Option<SocketAddr>,
}

/// Binds every listener, registers the run, calls `ready`, and serves until `stop`
/// completes (or a listener fails).
pub async fn run_service(
    config: ServiceConfig,
    observer: Arc<dyn Observer>,
    ready: impl FnOnce(),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), EgressError> {
    let resolver = match config.nameserver {
        Some(ns) => Resolver::with_nameserver(ns),
        None => Resolver::system()?,
    };
    let proxy = Proxy::new(resolver);
    let host = IpAddr::V4(config.host);
    let explicit = TcpListener::bind((host, ports::PROXY)).await?;
    let http = TcpListener::bind((host, ports::HTTP)).await?;
    let tls = TcpListener::bind((host, ports::TLS)).await?;
    let dns = UdpSocket::bind((host, ports::DNS)).await?;
    let _registration = proxy.register(
        IpAddr::V4(config.sandbox),
        &config.run_id,
        config.rules,
        observer,
    )?;
    ready();
    let failed = tokio::select! {
        e = proxy.serve_as(explicit, Mode::Explicit) => Some(e),
        e = proxy.serve_as(http, Mode::TransparentHttp) => Some(e),
        e = proxy.serve_as(tls, Mode::TransparentTls) => Some(e),
        e = proxy.serve_dns(dns) => Some(EgressError::Io(e)),
        () = stop => None,
    };
    failed.map_or(Ok(()), Err)
}
