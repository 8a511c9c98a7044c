//! The proxy as a service for runs: the sockets of a run's link (explicit proxy,
//! transparent HTTP and TLS, DNS on the host end), bound by spawn (which may, as root, and
//! hands them over), served by one proxy process for every run in the host's network
//! namespace, which holds no privilege.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use spawn_policy::net::NetRules;
use tokio::task::JoinHandle;

use crate::error::EgressError;
use crate::proxy::{Mode, Proxy};
use crate::topology::ports;

/// What the service needs to know about one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The run.
    pub run_id: String,
    /// The host end of the run's link: where its sockets listen.
    pub host: Ipv4Addr,
    /// The sandbox end: the only address served for the run.
    pub sandbox: Ipv4Addr,
    /// The run's rules.
    pub rules: NetRules,
    /// A name server to use instead of the host's (`SPAWN_EGRESS_NAMESERVER`).
    pub nameserver: Option<SocketAddr>,
}

/// A run's listening sockets on the host end of its link.
#[derive(Debug)]
pub struct RunSockets {
    /// Explicit proxy (`HTTP_PROXY`).
    pub explicit: std::net::TcpListener,
    /// Transparent HTTP.
    pub http: std::net::TcpListener,
    /// Transparent TLS.
    pub tls: std::net::TcpListener,
    /// DNS.
    pub dns: std::net::UdpSocket,
}

impl RunSockets {
    /// Binds every socket of a run on `host` (port 53 needs root).
    pub fn bind(host: Ipv4Addr) -> Result<RunSockets, EgressError> {
        let host = IpAddr::V4(host);
        Ok(RunSockets {
            explicit: std::net::TcpListener::bind((host, ports::PROXY))?,
            http: std::net::TcpListener::bind((host, ports::HTTP))?,
            tls: std::net::TcpListener::bind((host, ports::TLS))?,
            dns: std::net::UdpSocket::bind((host, ports::DNS))?,
        })
    }

    /// Serves them with `proxy` (inside a tokio runtime) until the tasks are aborted.
    pub fn serve(self, proxy: &Proxy) -> Result<Vec<JoinHandle<()>>, EgressError> {
        let tcp = |l: std::net::TcpListener| -> Result<tokio::net::TcpListener, EgressError> {
            l.set_nonblocking(true)?;
            Ok(tokio::net::TcpListener::from_std(l)?)
        };
        let (explicit, http, tls) = (tcp(self.explicit)?, tcp(self.http)?, tcp(self.tls)?);
        self.dns.set_nonblocking(true)?;
        let dns = tokio::net::UdpSocket::from_std(self.dns)?;
        let mut tasks = Vec::new();
        for (listener, mode) in [
            (explicit, Mode::Explicit),
            (http, Mode::TransparentHttp),
            (tls, Mode::TransparentTls),
        ] {
            let p = proxy.clone();
            tasks.push(tokio::spawn(async move {
                let _ = p.serve_as(listener, mode).await;
            }));
        }
        let p = proxy.clone();
        tasks.push(tokio::spawn(async move {
            let _ = p.serve_dns(dns).await;
        }));
        Ok(tasks)
    }
}
