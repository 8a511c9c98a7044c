//! The egress proxy: one per host, serving every run. A run is known by the source address
//! its network namespace uses; every request is checked against that run's [`NetRules`],
//! the proxy resolves names itself, checks **every** resolved address, and connects only to
//! an address it checked, so a later DNS answer can never change where a connection goes.
//!
//! Served: HTTP `CONNECT host:port` (tunnels, e.g. HTTPS) and absolute-URI HTTP requests
//! (`GET http://host/path`), and transparently HTTP judged by its `Host` and TLS judged by
//! its ClientHello's server name. A request head is read by [`crate::head`] (one
//! destination that every part of the head agrees on); a tunnel whose first bytes are TLS
//! must name its own host. Each attempt, allowed or not, is reported to the run's
//! [`Observer`] with the reason; a closed connection with its byte counts. Denials are
//! clear to the program: HTTP 403 (429 over the rate limit, 400 for a malformed or
//! ambiguous request) with the reason in the body and in `X-Spawn-Denial`.
//!
//! The host itself is never a destination: every address of its interfaces, asked of the
//! kernel at each check ([`HostAddresses`]), is refused like loopback (`host-address`).
//! What one run may hold is capped (`maxConnections`, `maxDnsQueries`) and reserved
//! out of the proxy's descriptors when it registers ([`crate::capacity`]); a connection
//! over the cap is refused (HTTP 429, `connection-limit`) and reported.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use spawn_policy::net::{embedded_ipv4, parse_host, Denial, NetRules, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::capacity::{self, Capacity, Reservation, Slot, Slots};
use crate::error::EgressError;
use crate::head::{request_destination, Destination};
use crate::local::HostAddresses;
use crate::resolve::Resolver;
use crate::sni::{client_hello, tunnel_sni, Hello, MAX_HELLO_BYTES};

/// How long a client may take to send a request head (slowloris), or a ClientHello.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to one upstream address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head buffered (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections over a run's cap that are told so (an HTTP 429 once their request head is
/// in) at once; beyond these, one is closed at once.
const REFUSING_PER_RUN: u32 = 8;
/// How long a refused connection may take to send its request head before it is closed.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How the program asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `CONNECT host:port`.
    Connect,
    /// An absolute-URI HTTP request, or (transparent mode) one redirected to the proxy and
    /// judged by its `Host` header.
    Http,
    /// TLS redirected to the proxy (transparent mode), judged by its ClientHello's SNI.
    Tls,
    /// A DNS query to the run's resolver on its link.
    Dns,
}

impl Via {
    /// `CONNECT` or `HTTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Connect => "CONNECT",
            Via::Http => "HTTP",
            Via::Tls => "TLS",
            Via::Dns => "DNS",
        }
    }
}

/// One connection attempt and what the proxy decided (`agent.net.connect`).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The run.
    pub run_id: String,
    /// How it was asked.
    pub via: Via,
    /// The host as asked (normalized when it parsed).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The checked address connected to, when it got that far.
    pub addr: Option<SocketAddr>,
    /// `Ok` when allowed; else the denial (policy) or failure (resolution, connection).
    pub verdict: Result<(), Denial>,
}

/// A connection that was allowed has ended.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The run.
    pub run_id: String,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address it went to.
    pub addr: SocketAddr,
    /// Bytes from the sandbox to the destination.
    pub bytes_out: u64,
    /// Bytes from the destination to the sandbox.
    pub bytes_in: u64,
}

/// Receives a run's network events (for its audit log). Called from the proxy's tasks:
/// keep it quick.
pub trait Observer: Send + Sync {
    /// Every attempt, allowed or not; whether it is on record (written, or counted by the
    /// audit limits). An allowed attempt that is not goes no further: no audit, no
    /// action.
    fn attempt(&self, event: &Attempt) -> bool;
    /// An allowed connection ended.
    fn closed(&self, event: &Closed);
}

/// Token bucket for `rateLimit`.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// Kept-alive upstream connections per checked address, at most this many each.
const POOL_PER_ADDR: usize = 64;

pub(crate) struct Run {
    id: String,
    pub(crate) rules: NetRules,
    observer: Arc<dyn Observer>,
    bucket: Option<Mutex<Bucket>>,
    /// The run's own kept-alive upstream connections (never shared between runs: each
    /// run's addresses were checked against its own rules), at most
    /// [`capacity::pool_cap`] in all.
    pool: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
    /// Its connections from the sandbox (`maxConnections`).
    connections: Arc<Slots>,
    /// Its DNS queries being answered (`maxDnsQueries`).
    pub(crate) queries: Arc<Slots>,
    /// Connections over the cap being told so.
    refusing: Arc<Slots>,
    /// Set when the run is deregistered: its connections end.
    ended: tokio::sync::watch::Sender<bool>,
    /// The descriptors promised to it, given back when the last of its connections ends.
    _reserved: Reservation,
}

impl Run {
    /// `fut`, cut short when the run ends (its sandbox is gone; nothing of it may linger
    /// in the proxy).
    pub(crate) async fn until_ended<F: std::future::Future>(&self, fut: F) -> Option<F::Output> {
        let mut ended = self.ended.subscribe();
        tokio::select! {
            out = fut => Some(out),
            _ = ended.wait_for(|e| *e) => None,
        }
    }

    /// Reports a refusal of one of the run's caps.
    pub(crate) fn over_cap(&self, via: Via, code: &'static str, detail: String) {
        self.observer.attempt(&Attempt {
            run_id: self.id.clone(),
            via,
            host: String::new(),
            port: 0,
            addr: None,
            verdict: Err(denial(code, detail)),
        });
    }

    /// An idle connection to one of `addrs`.
    fn checkout(&self, addrs: &[SocketAddr]) -> Option<(Sender, SocketAddr)> {
        let mut pool = self.pool.lock().ok()?;
        for addr in addrs {
            let Some(list) = pool.get_mut(addr) else {
                continue;
            };
            list.retain(|s| !s.is_closed());
            if let Some(i) = list.iter().position(Sender::is_ready) {
                return Some((list.swap_remove(i), *addr));
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            let held: usize = pool.values().map(Vec::len).sum();
            if held >= capacity::pool_cap(&self.rules) as usize {
                // Make room: an idle connection that has closed, else keep this one out.
                for list in pool.values_mut() {
                    list.retain(|s| !s.is_closed());
                }
                let held: usize = pool.values().map(Vec::len).sum();
                if held >= capacity::pool_cap(&self.rules) as usize {
                    return;
                }
            }
            let list = pool.entry(addr).or_default();
            if list.len() < POOL_PER_ADDR {
                list.push(sender);
            }
        }
    }
}

struct Inner {
    runs: RwLock<HashMap<IpAddr, Arc<Run>>>,
    resolver: Resolver,
    host: HostAddresses,
    capacity: Arc<Capacity>,
}

/// The proxy. Cheap to clone; every clone serves the same runs.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs = self.inner.runs.read().map(|r| r.len()).unwrap_or(0);
        f.debug_struct("Proxy").field("runs", &runs).finish()
    }
}

/// A run's place in the proxy; dropping it removes the run (its address then gets 403).
#[derive(Debug)]
pub struct Registration {
    proxy: Proxy,
    peer: IpAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let run = self
            .proxy
            .inner
            .runs
            .write()
            .ok()
            .and_then(|mut runs| runs.remove(&self.peer));
        if let Some(run) = run {
            run.ended.send_replace(true);
        }
    }
}

fn text(status: StatusCode, denial: Option<&str>, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A refused client does not keep the connection.
    resp.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    if let Some(code) = denial.and_then(|c| HeaderValue::from_str(c).ok()) {
        resp.headers_mut().insert("x-spawn-denial", code);
    }
    resp
}

fn refusal(denial: &Denial) -> Response<ProxyBody> {
    let status = match denial.code {
        "rate-limit" => StatusCode::TOO_MANY_REQUESTS,
        "malformed" | "host-mismatch" => StatusCode::BAD_REQUEST,
        "resolve" | "connect" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    };
    text(
        status,
        Some(denial.code),
        format!("spawn egress proxy: denied: {denial}\n"),
    )
}

/// An allowed attempt whose audit event could not be written.
fn unrecorded() -> Denial {
    denial(
        "audit",
        "the attempt could not be put on the audit record, so it is not made",
    )
}

pub(crate) fn denial(code: &'static str, detail: impl Into<String>) -> Denial {
    Denial {
        code,
        detail: detail.into(),
    }
}

impl Proxy {
    /// A proxy resolving names with `resolver`, promising runs the descriptors of this
    /// process's limit.
    pub fn new(resolver: Resolver) -> Proxy {
        Proxy::with_capacity(resolver, Capacity::of_this_process())
    }

    /// A proxy promising runs what `capacity` holds.
    pub fn with_capacity(resolver: Resolver, capacity: Arc<Capacity>) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                runs: RwLock::new(HashMap::new()),
                resolver,
                host: HostAddresses::new(),
                capacity,
            }),
        }
    }

    /// The proxy as it was before it knew the host's addresses and reserved capacity
    /// (only loopback is the host's; any number of runs): the baseline of `make bench`
    /// (feature `testing`; register its runs with the largest caps).
    #[cfg(feature = "testing")]
    pub fn unbounded_baseline(resolver: Resolver) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                runs: RwLock::new(HashMap::new()),
                resolver,
                host: HostAddresses::with(crate::local::Probe::Off),
                capacity: Capacity::new(u64::MAX),
            }),
        }
    }

    /// What it can promise runs, and what it has.
    pub fn capacity(&self) -> &Arc<Capacity> {
        &self.inner.capacity
    }

    /// Serves connections from `peer` (the address the run's namespace connects from)
    /// under `rules`, reporting to `observer`, until the registration is dropped. Refused
    /// ([`EgressError::Full`]) when the descriptors its caps allow cannot be promised.
    pub fn register(
        &self,
        peer: IpAddr,
        run_id: &str,
        rules: NetRules,
        observer: Arc<dyn Observer>,
    ) -> Result<Registration, EgressError> {
        let bucket = rules.rate.map(|r| {
            let capacity = r.requests as f64;
            Mutex::new(Bucket {
                capacity,
                tokens: capacity,
                per_second: capacity / r.per.as_secs_f64().max(0.001),
                last: Instant::now(),
            })
        });
        let reserved = self
            .inner
            .capacity
            .reserve(capacity::descriptors_for(&rules))?;
        let run = Arc::new(Run {
            id: run_id.to_owned(),
            connections: Slots::new(rules.max_connections),
            queries: Slots::new(rules.max_dns_queries),
            refusing: Slots::new(REFUSING_PER_RUN),
            rules,
            observer,
            bucket,
            pool: Mutex::new(HashMap::new()),
            ended: tokio::sync::watch::channel(false).0,
            _reserved: reserved,
        });
        let mut runs = self
            .inner
            .runs
            .write()
            .map_err(|_| EgressError::Io(std::io::Error::other("run table poisoned")))?;
        if runs.contains_key(&peer) {
            return Err(EgressError::Io(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{peer} already belongs to a run"),
            )));
        }
        runs.insert(peer, run);
        Ok(Registration {
            proxy: self.clone(),
            peer,
        })
    }

    /// The run at `peer`, if any.
    pub(crate) fn run_at(&self, peer: IpAddr) -> Option<Arc<Run>> {
        self.inner
            .runs
            .read()
            .ok()
            .and_then(|r| r.get(&peer).cloned())
    }

    /// Whether the proxy may connect to `ip` for a run under `rules`: never to the host's
    /// own addresses (`host-address`; loopback keeps its `blocked-address`), never to an
    /// always-blocked range or a denylisted network.
    pub(crate) fn check_addr(&self, rules: &NetRules, ip: IpAddr) -> Result<(), Denial> {
        let v4 = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => Some(ip),
        };
        let loopback = ip.is_loopback()
            || ip.is_unspecified()
            || v4.is_some_and(|v4| match v4 {
                IpAddr::V4(a) => a.is_loopback() || a.octets()[0] == 0,
                IpAddr::V6(_) => false,
            });
        if !loopback {
            self.inner.host.check(ip)?;
        }
        rules.check_ip(ip)
    }

    /// The proxy's resolver.
    pub(crate) fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Accepts and serves explicit-proxy connections until the listener fails.
    pub async fn serve(&self, listener: TcpListener) -> EgressError {
        self.serve_as(listener, Mode::Explicit).await
    }

    /// Accepts and serves connections of `mode` until the listener fails.
    pub async fn serve_as(&self, listener: TcpListener, mode: Mode) -> EgressError {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => return EgressError::Io(e),
            };
            let proxy = self.clone();
            tokio::spawn(async move { proxy.connection(stream, peer, mode).await });
        }
    }

    async fn connection(self, stream: TcpStream, peer: SocketAddr, mode: Mode) {
        let _ = stream.set_nodelay(true);
        let run = self.run_at(peer.ip());
        // The run's connection cap: held until this connection (or its tunnel) ends.
        let slot = match &run {
            Some(run) => match run.connections.take() {
                Some(slot) => Some(Arc::new(slot)),
                None => {
                    refuse_over_cap(run, stream, mode).await;
                    return;
                }
            },
            None => None,
        };
        if mode == Mode::TransparentTls {
            if let Some(run) = run {
                let r = run.clone();
                r.until_ended(self.transparent_tls(run, stream)).await;
            }
            return;
        }
        let served_run = run.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let proxy = self.clone();
            let run = run.clone();
            let slot = slot.clone();
            async move { Ok::<_, Infallible>(proxy.request(run, slot, mode, req).await) }
        });
        let serving = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let served = match &served_run {
            Some(run) => match run.until_ended(serving).await {
                Some(served) => served,
                None => return,
            },
            None => serving.await,
        };
        // A head hyper could not read got its 400 (or 414, 431) from hyper; it is an
        // attempt all the same.
        if let (Err(e), Some(run)) = (served, served_run) {
            if e.is_parse() || e.is_parse_too_large() {
                run.observer.attempt(&Attempt {
                    run_id: run.id.clone(),
                    via: Via::Http,
                    host: String::new(),
                    port: 0,
                    addr: None,
                    verdict: Err(denial("malformed", format!("request head: {e}"))),
                });
            }
        }
    }

    async fn request(
        &self,
        run: Option<Arc<Run>>,
        slot: Option<Arc<Slot>>,
        mode: Mode,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let Some(run) = run else {
            return text(
                StatusCode::FORBIDDEN,
                Some("unknown-client"),
                "spawn egress proxy: this address is not a spawn sandbox\n".into(),
            );
        };
        let asked = request_destination(mode, req.method(), req.uri(), req.headers());
        let (via, Destination { target, port }) = match asked {
            Ok(asked) => (asked.via, asked.dest),
            Err(refused) => {
                run.observer.attempt(&Attempt {
                    run_id: run.id.clone(),
                    via: if req.method() == hyper::Method::CONNECT {
                        Via::Connect
                    } else {
                        Via::Http
                    },
                    host: refused.host,
                    port: 0,
                    addr: None,
                    verdict: Err(refused.denial.clone()),
                });
                return refusal(&refused.denial);
            }
        };
        let report = |host: &str, addr, verdict| {
            run.observer.attempt(&Attempt {
                run_id: run.id.clone(),
                via,
                host: host.to_owned(),
                port,
                addr,
                verdict,
            })
        };
        let shown = target.to_string();
        if via == Via::Http {
            let addrs = match self.decide(&run, via, &target, port).await {
                Ok(addrs) => addrs,
                Err(d) => {
                    report(&shown, None, Err(d.clone()));
                    return refusal(&d);
                }
            };
            // A kept-alive connection of this run to one of the checked addresses, or a
            // new one.
            let (sender, addr) = match run.checkout(&addrs) {
                Some(pooled) => pooled,
                None => match connect(&addrs).await {
                    Ok((stream, addr)) => {
                        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                            Ok((sender, conn)) => {
                                tokio::spawn(conn);
                                (sender, addr)
                            }
                            Err(e) => {
                                let d = denial("connect", format!("upstream: {e}"));
                                report(&shown, Some(addr), Err(d.clone()));
                                return refusal(&d);
                            }
                        }
                    }
                    Err(d) => {
                        report(&shown, None, Err(d.clone()));
                        return refusal(&d);
                    }
                },
            };
            if !report(&shown, Some(addr), Ok(())) {
                return refusal(&unrecorded());
            }
            return forward(run.clone(), &shown, port, addr, sender, req).await;
        }
        let (upstream, addr) = match self.open(&run, via, &target, port).await {
            Ok(opened) => opened,
            Err(d) => {
                report(&shown, None, Err(d.clone()));
                return refusal(&d);
            }
        };
        // CONNECT (plain HTTP was forwarded above): a tunnel once the client is told 200,
        // reported once its first bytes are judged.
        let run = run.clone();
        tokio::spawn(async move {
            // The connection's slot goes with its tunnel.
            let _slot = slot;
            let r = run.clone();
            r.until_ended(async move {
                if let Ok(upgraded) = hyper::upgrade::on(req).await {
                    tunnel(run, target, port, TokioIo::new(upgraded), upstream, addr).await;
                }
            })
            .await;
        });
        Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    }

    /// A TLS connection redirected to the proxy: the ClientHello's server name is the
    /// destination (port 443); nothing is forwarded before it is checked.
    async fn transparent_tls(&self, run: Arc<Run>, mut client: TcpStream) {
        let report = |host: String, addr, verdict| {
            run.observer.attempt(&Attempt {
                run_id: run.id.clone(),
                via: Via::Tls,
                host,
                port: 443,
                addr,
                verdict,
            })
        };
        let read = match read_hello(&mut client, Vec::new(), HEAD_TIMEOUT).await {
            Ok((hello, Hello::Sni(sni))) => Ok((hello, sni)),
            Ok((_, Hello::NoSni)) => Err("the TLS ClientHello names no server"),
            Ok((_, Hello::Malformed(why))) => Err(why),
            Ok((_, Hello::NotTls | Hello::NeedMore)) => Err("not a TLS ClientHello"),
            Err(why) => Err(why),
        };
        let (hello, sni) = match read {
            Ok(read) => read,
            Err(why) => {
                report(String::new(), None, Err(denial("malformed", why)));
                return;
            }
        };
        let target = match parse_host(&sni) {
            Ok(target) => target,
            Err(e) => {
                let shown = sni.chars().take(255).collect();
                report(shown, None, Err(denial("malformed", e)));
                return;
            }
        };
        let (upstream, addr) = match self.open(&run, Via::Tls, &target, 443).await {
            Ok(opened) => opened,
            Err(d) => {
                report(target.to_string(), None, Err(d));
                return;
            }
        };
        if !report(target.to_string(), Some(addr), Ok(())) {
            // Not on record: closed with nothing forwarded.
            return;
        }
        splice(
            &run,
            client,
            upstream,
            &hello,
            target.to_string(),
            443,
            addr,
        )
        .await;
    }

    /// Decides, resolves, checks every address and connects: the whole policy for one
    /// attempt.
    async fn open(
        &self,
        run: &Run,
        via: Via,
        target: &Target,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), Denial> {
        let addrs = self.decide(run, via, target, port).await?;
        connect(&addrs).await
    }

    /// The policy for one attempt on a destination already read and normalized: rate
    /// limit, the name, `requireTls`, then resolution with every address checked. The
    /// addresses it returns are the only ones that may be connected to.
    async fn decide(
        &self,
        run: &Run,
        via: Via,
        target: &Target,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Denial> {
        if let Some(bucket) = &run.bucket {
            let ok = bucket.lock().map(|mut b| b.take()).unwrap_or(false);
            if !ok {
                return Err(denial("rate-limit", "the run's rateLimit is used up"));
            }
        }
        // An address is judged first for being the host's own, so that reason is given
        // whatever else the policy says of it.
        if let Target::Ip(ip) = target {
            self.check_addr(&run.rules, *ip)?;
        }
        run.rules.check(target)?;
        if run.rules.require_tls && (via == Via::Http || port != 443) {
            return Err(denial(
                "require-tls",
                "requireTls: only TLS (CONNECT) to port 443 is allowed",
            ));
        }
        let ips = match target {
            Target::Ip(ip) => vec![*ip],
            Target::Name(name) => self
                .inner
                .resolver
                .lookup(name)
                .await
                .map_err(|e| denial("resolve", e.to_string()))?,
        };
        // Every address must pass: a name that also points into a blocked range (DNS
        // rebinding, a hostile zone) is refused as a whole.
        for ip in &ips {
            self.check_addr(&run.rules, *ip)?;
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// A connection from `run` over its `maxConnections`: reported, and told so (HTTP 429 with
/// `X-Spawn-Denial: connection-limit`, once its request head is in) unless too many are
/// being told already; a TLS connection is closed.
async fn refuse_over_cap(run: &Arc<Run>, mut stream: TcpStream, mode: Mode) {
    let cap = run.connections.cap();
    let via = match mode {
        Mode::Explicit | Mode::TransparentHttp => Via::Http,
        Mode::TransparentTls => Via::Tls,
    };
    run.over_cap(
        via,
        "connection-limit",
        format!("the run already holds its {cap} connections (maxConnections)"),
    );
    if mode == Mode::TransparentTls {
        return;
    }
    let Some(_telling) = run.refusing.take() else {
        return;
    };
    let body = format!(
        "spawn egress proxy: denied: connection-limit: the run already holds its {cap} \
         connections (maxConnections)\n"
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
         x-spawn-denial: connection-limit\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Read the head first (closing on unread bytes would reset the connection and lose the
    // answer), a little and briefly.
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while head.len() < MAX_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Connects to the first of the checked `addrs` that answers.
async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), Denial> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, *addr));
            }
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("timed out".into()),
        }
    }
    Err(denial(
        "connect",
        format!("no address accepted: {}", last.unwrap_or_default()),
    ))
}

/// Whether `accept` failed without the listener being broken (out of descriptors or
/// memory, or a connection that went away first): wait a little and go on.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ECONNABORTED | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An HTTP proxy (`HTTP_PROXY`): CONNECT and absolute-URI requests.
    Explicit,
    /// HTTP redirected from port 80: origin-form requests judged by their `Host`.
    TransparentHttp,
    /// TLS redirected from port 443: judged by the ClientHello's server name.
    TransparentTls,
}

/// Counts bytes through one direction.
async fn pump<R, W>(mut from: R, mut to: W, count: &AtomicU64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A `CONNECT` tunnel once the client is told 200. The upstream's bytes reach the client at
/// once (some servers speak first); the client's are held until its first bytes are judged
/// ([`judge_first_bytes`]), then both ways are copied. The attempt is reported once, when
/// judged (or, if the client never sends anything, when the tunnel ends); a refused tunnel
/// is closed both ways with nothing forwarded.
async fn tunnel(
    run: Arc<Run>,
    target: Target,
    port: u16,
    client: TokioIo<hyper::upgrade::Upgraded>,
    upstream: TcpStream,
    addr: SocketAddr,
) {
    let shown = target.to_string();
    let report = |verdict: Result<(), Denial>| {
        run.observer.attempt(&Attempt {
            run_id: run.id.clone(),
            via: Via::Connect,
            host: shown.clone(),
            port,
            addr: Some(addr),
            verdict,
        })
    };
    let out = AtomicU64::new(0);
    let inn = AtomicU64::new(0);
    let (mut cr, cw) = tokio::io::split(client);
    let (ur, mut uw) = upstream.into_split();
    let down = pump(ur, cw, &inn);
    let up = async {
        let first = match judge_first_bytes(&mut cr, &target, run.rules.require_tls).await {
            Ok(first) => first,
            Err(d) => {
                report(Err(d));
                return false;
            }
        };
        if !report(Ok(())) {
            // Not on record: nothing is forwarded.
            return false;
        }
        if uw.write_all(&first).await.is_ok() {
            out.fetch_add(first.len() as u64, Ordering::Relaxed);
            pump(cr, uw, &out).await;
        }
        true
    };
    tokio::pin!(down, up);
    let mut down_done = false;
    let allowed = loop {
        tokio::select! {
            () = &mut down, if !down_done => down_done = true,
            allowed = &mut up => break allowed,
        }
    };
    if !allowed {
        return;
    }
    if !down_done {
        down.await;
    }
    run.observer.closed(&Closed {
        run_id: run.id.clone(),
        host: shown.clone(),
        port,
        addr,
        bytes_out: out.load(Ordering::Relaxed),
        bytes_in: inn.load(Ordering::Relaxed),
    });
}

/// The client's first bytes in a tunnel to `target`, forwarding nothing: returned when they
/// may go on. A TLS ClientHello must name `target` itself ([`tunnel_sni`]); a malformed one
/// is refused; bytes that do not start like TLS pass, unless `requireTls`. Without
/// `requireTls` the first byte may take as long as the tunnel lives (a server may speak
/// first); a ClientHello, once begun, must be complete within [`HEAD_TIMEOUT`].
async fn judge_first_bytes<R>(
    client: &mut R,
    target: &Target,
    require_tls: bool,
) -> Result<Vec<u8>, Denial>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut first = Vec::new();
    if !require_tls {
        let mut buf = [0u8; 4096];
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(first),
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
        if client_hello(&first) == Hello::NotTls {
            return Ok(first);
        }
    }
    let unusable = |why: &str| {
        if require_tls {
            denial("require-tls", why)
        } else {
            denial("malformed", why)
        }
    };
    let (first, hello) = read_hello(client, first, HEAD_TIMEOUT)
        .await
        .map_err(unusable)?;
    match hello {
        Hello::Sni(sni) => tunnel_sni(&sni, target).map(|()| first),
        Hello::NoSni if !require_tls => Ok(first),
        Hello::NoSni => Err(unusable("the TLS ClientHello names no server")),
        Hello::Malformed(why) => Err(denial(
            "malformed",
            format!("an unreadable TLS ClientHello: {why}"),
        )),
        Hello::NotTls | Hello::NeedMore => Err(unusable("not a TLS ClientHello")),
    }
}

/// Reads until the first bytes of a connection say what they are (starting with the bytes
/// already read in `hello`), forwarding nothing: the bytes and the verdict, never
/// [`Hello::NeedMore`]. An error when the client stops or takes longer than `limit`.
async fn read_hello<R>(
    client: &mut R,
    mut hello: Vec<u8>,
    limit: Duration,
) -> Result<(Vec<u8>, Hello), &'static str>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let verdict = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match client_hello(&hello) {
                Hello::NeedMore if hello.len() < MAX_HELLO_BYTES => {}
                Hello::NeedMore => return Err("a ClientHello longer than a TLS record"),
                verdict => return Ok(verdict),
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return Err("the connection ended before a whole ClientHello"),
                Ok(n) => hello.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(Err("no whole ClientHello in time"))?;
    Ok((hello, verdict))
}

/// Sends `first` (already read from the client) upstream, then copies both ways until
/// either side ends, and reports the connection's byte counts.
async fn splice<C>(
    run: &Run,
    client: C,
    mut upstream: TcpStream,
    first: &[u8],
    host: String,
    port: u16,
    addr: SocketAddr,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if upstream.write_all(first).await.is_err() {
        return;
    }
    let out = AtomicU64::new(first.len() as u64);
    let inn = AtomicU64::new(0);
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = upstream.split();
    tokio::join!(pump(cr, uw, &out), pump(ur, cw, &inn));
    run.observer.closed(&Closed {
        run_id: run.id.clone(),
        host,
        port,
        addr,
        bytes_out: out.into_inner(),
        bytes_in: inn.into_inner(),
    });
}

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the proxy itself.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

async fn forward(
    run: Arc<Run>,
    shown: &str,
    port: u16,
    addr: SocketAddr,
    mut sender: Sender,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return refusal(&denial("malformed", "request target")),
    };
    // Whatever Host the program sent, the request goes to the host that was checked.
    for h in HOP_HEADERS {
        parts.headers.remove(*h);
    }
    let host = if port == 80 {
        shown.to_owned()
    } else {
        format!("{shown}:{port}")
    };
    match HeaderValue::from_str(&host) {
        Ok(v) => {
            parts.headers.insert(HOST, v);
        }
        Err(_) => return refusal(&denial("malformed", "host")),
    }
    let out_bytes = body.size_hint().exact().unwrap_or(0);
    let sent = sender.send_request(Request::from_parts(parts, body)).await;
    // Ready again once this response's body is read; the next request of the run takes it
    // only then.
    run.checkin(addr, sender);
    match sent {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_HEADERS {
                parts.headers.remove(*h);
            }
            let counted = Counted {
                inner: body,
                bytes: 0,
                done: Some((run, shown.to_owned(), port, addr, out_bytes)),
            };
            Response::from_parts(parts, counted.boxed())
        }
        Err(e) => refusal(&denial("connect", format!("upstream: {e}"))),
    }
}

/// A response body that reports the connection's byte counts when it ends or is dropped.
struct Counted {
    inner: Incoming,
    bytes: u64,
    done: Option<(Arc<Run>, String, u16, SocketAddr, u64)>,
}

impl Counted {
    fn finish(&mut self) {
        if let Some((run, host, port, addr, out)) = self.done.take() {
            run.observer.closed(&Closed {
                run_id: run.id.clone(),
                host,
                port,
                addr,
                bytes_out: out,
                bytes_in: self.bytes,
            });
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
