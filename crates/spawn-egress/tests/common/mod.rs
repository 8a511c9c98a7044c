//! What the proxy's end-to-end tests share: an observer that keeps every event, servers on
//! public-looking addresses, and raw clients bound to a run's source address.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spawn_egress::{Attempt, Closed, Observer};
use spawn_policy::net::NetRules;
use spawn_policy::{NetCapability, NetPolicy, RateLimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What the observer saw.
#[derive(Default)]
pub struct Events {
    pub attempts: Mutex<Vec<Attempt>>,
    pub closed: Mutex<Vec<Closed>>,
    /// Says no attempt could be put on record (an audit log that cannot be written).
    pub unrecordable: bool,
}

impl Observer for Events {
    fn attempt(&self, e: &Attempt) -> bool {
        self.attempts.lock().unwrap().push(e.clone());
        !self.unrecordable
    }
    fn closed(&self, e: &Closed) {
        self.closed.lock().unwrap().push(e.clone());
    }
}

impl Events {
    pub fn last(&self) -> Attempt {
        self.attempts
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an attempt was reported")
    }

    pub fn count(&self) -> usize {
        self.attempts.lock().unwrap().len()
    }

    /// The attempt after the first `before`, once it is reported (the proxy may report a
    /// refused connection just after closing it).
    pub async fn next_after(&self, before: usize) -> Attempt {
        for _ in 0..100 {
            if let Some(e) = self.attempts.lock().unwrap().get(before) {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no attempt reported after the first {before}");
    }
}

/// HTTP on `ip:port`: answers `hello from IP:PORT, Host: …` and counts requests.
pub async fn http_server(ip: Ipv4Addr, port: u16, hits: Arc<AtomicUsize>) {
    let listener =
        TcpListener::from_std(spawn_egress::testing::world_tcp((ip, port)).unwrap()).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get_all("host")
                            .iter()
                            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                            .collect::<Vec<_>>()
                            .join(" | ");
                        let who = if port == 80 {
                            ip.to_string()
                        } else {
                            format!("{ip}:{port}")
                        };
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(format!("hello from {who}, Host: {host}\n")),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// A TCP echo on port 443 of `ip` (stands in for a TLS server: the proxy does not look
/// past the ClientHello); `received` counts every byte that reached it.
pub async fn echo_server(ip: Ipv4Addr, received: Arc<AtomicUsize>) {
    let listener =
        TcpListener::from_std(spawn_egress::testing::world_tcp((ip, 443)).unwrap()).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            received.fetch_add(n, Ordering::SeqCst);
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
}

pub async fn client(from: Ipv4Addr, proxy: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    sock.connect(proxy).await.unwrap()
}

/// Sends `raw` from `from` and returns everything the proxy sends back until it closes.
pub async fn exchange_bytes(from: Ipv4Addr, proxy: SocketAddr, raw: &[u8]) -> String {
    let mut s = client(from, proxy).await;
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn exchange(from: Ipv4Addr, proxy: SocketAddr, raw: &str) -> String {
    exchange_bytes(from, proxy, raw.as_bytes()).await
}

/// `GET url` through the proxy, with the `Host` a client sends (the URL's authority).
pub async fn get(from: Ipv4Addr, proxy: SocketAddr, url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    exchange(
        from,
        proxy,
        &format!("GET {url} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The status code of a response ("" when there is none).
pub fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

pub fn rules(
    policy: NetPolicy,
    allow: &[&str],
    deny: &[&str],
    tls: bool,
    rate: Option<u64>,
) -> NetRules {
    NetRules::from_capability(&NetCapability {
        policy: Some(policy),
        allowlist: allow.iter().map(|s| (*s).to_owned()).collect(),
        denylist: deny.iter().map(|s| (*s).to_owned()).collect(),
        rate_limit: rate.map(|requests| RateLimit {
            requests,
            per: "1m".into(),
        }),
        require_tls: Some(tls),
        max_connections: None,
        max_dns_queries: None,
    })
    .unwrap()
}
