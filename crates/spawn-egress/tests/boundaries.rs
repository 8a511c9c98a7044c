//! What the shared proxy keeps for the host and for other runs (issue 14, classes 1 and 8),
//! end to end with real servers in a network namespace of this test's own:
//!
//! - **The host is never a destination.** The test's namespace is the host the proxy runs
//!   on: services listen on all its addresses (TCP 18080 and 80, IPv4 and IPv6), among them
//!   `11.255.255.1`, its public-looking end of the link to the world, and addresses it is
//!   given while the proxy runs. Every spelling of each, on every path (CONNECT,
//!   absolute-URI HTTP, transparent HTTP and TLS, a name that resolves to it, the run's
//!   DNS), is refused with `host-address`, and nothing reaches the services.
//! - **One run cannot take what others need.** A run's connections and DNS queries in
//!   flight are capped (429 `connection-limit`, SERVFAIL `dns-limit`, each reported), other
//!   runs are served meanwhile, the proxy refuses to register a run whose caps it cannot
//!   promise, and a run's connections end with it.
//!
//! A plain `main` (harness = false): `unshare(CLONE_NEWNET)` must happen before any thread
//! exists. Needs root and iproute2.

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, echo_server, exchange, get, http_server, rules, status, Events};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use spawn_egress::capacity::{descriptors_for, Capacity};
use spawn_egress::{EgressError, Mode, Proxy, Resolver, Via};
use spawn_policy::net::NetRules;
use spawn_policy::NetPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
/// The host's own end of its link to the world: a public-looking address of the host.
const HOST_LINK: &str = "11.255.255.1";
/// Addresses the host gets while the proxy runs.
const NEW_V4: &str = "100.200.77.1";
const NEW_V6: &str = "2606:4700:77::1";
/// The host's services, on every address it has.
const HOST_PORT: u16 = 18080;

fn dns_server(slow: Arc<AtomicUsize>) -> SocketAddr {
    spawn_egress::testing::dns_server(0, move |name| match name {
        "allowed.test" => Some(vec![PUBLIC]),
        "host.test" => Some(vec![HOST_LINK.parse().unwrap()]),
        "new.test" => Some(vec![NEW_V4.parse().unwrap()]),
        "half.test" => Some(vec![PUBLIC, HOST_LINK.parse().unwrap()]),
        "slow.test" => {
            slow.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1500));
            Some(vec![PUBLIC])
        }
        _ => None,
    })
    .unwrap()
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    spawn_egress::testing::own_network(&[PUBLIC])
        .expect("a network namespace of the test's own (make test installs iproute2)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = rt.block_on(cases());
    println!("boundaries: {passed} passed, 0 failed");
}

/// Listens on `[::]:port` (IPv4 too) in the host's namespace, counting connections.
async fn host_service(port: u16, hits: Arc<AtomicUsize>) {
    let sock = socket2_free_dual_stack(port);
    let listener = TcpListener::from_std(sock).unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((mut s, _)) = listener.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhost!")
                    .await;
            }
        }
    });
}

/// A dual-stack listener on `[::]:port` (IPV6_V6ONLY is off by default on Linux).
fn socket2_free_dual_stack(port: u16) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind(("::", port)).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// One A query from `from`; the response code.
async fn dns_code(from: Ipv4Addr, server: SocketAddr, name: &str) -> ResponseCode {
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    let sock = UdpSocket::bind((from, 0)).await.unwrap();
    let mut msg = Message::new();
    msg.set_id(9).set_recursion_desired(true);
    msg.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).unwrap(),
        RecordType::A,
    ));
    sock.send_to(&msg.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap().response_code()
}

/// Opens a CONNECT tunnel from `from` to `dest` through `proxy`: the status line.
async fn tunnel(from: Ipv4Addr, proxy: SocketAddr, dest: &str) -> (TcpStream, String) {
    let mut s = client(from, proxy).await;
    s.write_all(format!("CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (s, head)
}

/// The reason the proxy gave (`X-Spawn-Denial`), or the status.
fn reason(resp: &str) -> String {
    resp.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-spawn-denial: ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("status {}", status(resp)))
}

#[allow(clippy::too_many_lines)]
async fn cases() -> usize {
    let slow_lookups = Arc::new(AtomicUsize::new(0));
    let dns = dns_server(slow_lookups.clone());
    http_server(PUBLIC, 80, Arc::new(AtomicUsize::new(0))).await;
    echo_server(PUBLIC, Arc::new(AtomicUsize::new(0))).await;
    let host_hits = Arc::new(AtomicUsize::new(0));
    host_service(HOST_PORT, host_hits.clone()).await;
    host_service(80, host_hits.clone()).await;
    host_service(443, host_hits.clone()).await;

    let proxy = Proxy::new(Resolver::with_nameserver(dns));
    let listen = |mode: Mode| {
        let proxy = proxy.clone();
        async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { proxy.serve_as(l, mode).await });
            addr
        }
    };
    let paddr = listen(Mode::Explicit).await;
    let haddr = listen(Mode::TransparentHttp).await;
    let taddr = listen(Mode::TransparentTls).await;
    let dns_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let daddr = dns_socket.local_addr().unwrap();
    {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.serve_dns(dns_socket).await });
    }

    let (restricted, egress) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let er = Arc::new(Events::default());
    let ee = Arc::new(Events::default());
    let allow = ["allowed.test", "host.test", "new.test", "half.test"];
    let _rr = proxy
        .register(
            restricted.into(),
            "tr_restricted",
            rules(NetPolicy::Restricted, &allow, &[], false, None),
            er.clone(),
        )
        .unwrap();
    let _re = proxy
        .register(
            egress.into(),
            "tr_egress",
            rules(NetPolicy::EgressOnly, &[], &[], false, None),
            ee.clone(),
        )
        .unwrap();

    let mut passed = 0;
    let mut case = |name: &str| {
        println!("case {name}");
        passed += 1;
    };

    case("the host's services answer the host itself (the stand-ins are real)");
    for addr in [HOST_LINK, "127.0.0.1", "::1"] {
        let ip: IpAddr = addr.parse().unwrap();
        TcpStream::connect((ip, HOST_PORT)).await.unwrap();
    }
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            host_hits.load(Ordering::SeqCst) == 3
        }),
        "the host's own visits were not counted"
    );
    host_hits.store(0, Ordering::SeqCst);

    // The addresses the host gets now, while the proxy runs.
    ip(&["addr", "add", &format!("{NEW_V4}/32"), "dev", "lo"]);
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{NEW_V6}/128"),
        "dev",
        "lo",
        "nodad",
    ]);

    case("every spelling of every host address, by CONNECT and absolute URI: host-address");
    let spellings = [
        // The link's own end, public-looking: each way an IPv4 address is written.
        HOST_LINK.to_owned(),
        "201326337".to_owned(),
        "0xbffff01".to_owned(),
        "0xb.0xff.0xff.0x1".to_owned(),
        "013.0377.0377.01".to_owned(),
        "11.16776961".to_owned(),
        "11.255.65281".to_owned(),
        format!("[::ffff:{HOST_LINK}]"),
        "[::ffff:bff:ff01]".to_owned(),
        // Added while the proxy runs, IPv4 and IPv6.
        NEW_V4.to_owned(),
        "1690848513".to_owned(),
        format!("[{NEW_V6}]"),
        "[2606:4700:77:0:0:0:0:1]".to_owned(),
        "[2606:4700:0077::0001]".to_owned(),
    ];
    for host in &spellings {
        for port in [HOST_PORT, 80, 443] {
            let before = ee.count();
            let (_s, head) = tunnel(egress, paddr, &format!("{host}:{port}")).await;
            assert!(
                head.starts_with("HTTP/1.1 403"),
                "CONNECT {host}:{port}: {head}"
            );
            assert_eq!(
                reason(&head),
                "host-address",
                "CONNECT {host}:{port}: {head}"
            );
            let e = ee.next_after(before).await;
            assert_eq!(e.verdict.unwrap_err().code, "host-address", "{host}");
            let r = get(egress, paddr, &format!("http://{host}:{port}/")).await;
            assert_eq!(reason(&r), "host-address", "GET {host}:{port}: {r}");
        }
    }

    case("a name that resolves to the host, even allowlisted, or half to it: host-address");
    for (from, events) in [(restricted, &er), (egress, &ee)] {
        for name in ["host.test", "new.test", "half.test"] {
            let (_s, head) = tunnel(from, paddr, &format!("{name}:{HOST_PORT}")).await;
            assert_eq!(reason(&head), "host-address", "CONNECT {name}: {head}");
            assert_eq!(events.last().verdict.unwrap_err().code, "host-address");
            let r = get(from, paddr, &format!("http://{name}/")).await;
            assert_eq!(reason(&r), "host-address", "GET {name}: {r}");
        }
    }

    case("transparent HTTP and TLS to the host: host-address, nothing forwarded");
    for host in [HOST_LINK, "host.test", NEW_V4, "new.test"] {
        let r = exchange(
            egress,
            haddr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(reason(&r), "host-address", "Host: {host}: {r}");
    }
    for name in ["host.test", "new.test"] {
        let before = er.count();
        let mut s = client(restricted, taddr).await;
        s.write_all(&spawn_egress::testing::client_hello(Some(name)))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "{name}: {rest:?}");
        let e = er.next_after(before).await;
        assert_eq!(
            (e.via, e.verdict.unwrap_err().code),
            (Via::Tls, "host-address")
        );
    }

    case("the run's DNS refuses names that point at the host");
    for name in ["host.test", "new.test", "half.test"] {
        assert_eq!(
            dns_code(restricted, daddr, name).await,
            ResponseCode::Refused,
            "{name}"
        );
    }
    assert_eq!(
        dns_code(restricted, daddr, "allowed.test").await,
        ResponseCode::NoError
    );

    case("loopback keeps its own reason; the world is still reached");
    let r = get(egress, paddr, &format!("http://127.0.0.1:{HOST_PORT}/")).await;
    assert_eq!(reason(&r), "blocked-address", "{r}");
    let r = get(egress, paddr, "http://11.0.0.1/").await;
    assert_eq!(status(&r), "200", "{r}");
    let r = get(restricted, paddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "200", "{r}");

    case("an address the host gives up is no longer the host's");
    ip(&["addr", "del", &format!("{NEW_V4}/32"), "dev", "lo"]);
    let r = get(egress, paddr, &format!("http://{NEW_V4}:{HOST_PORT}/")).await;
    assert_ne!(reason(&r), "host-address", "{r}");
    assert_eq!(
        host_hits.load(Ordering::SeqCst),
        0,
        "a host service was reached through the proxy"
    );

    case("maxConnections: the next connection gets 429 connection-limit, reported");
    let capped = Ipv4Addr::new(127, 0, 0, 4);
    let ec = Arc::new(Events::default());
    let mut capped_rules = rules(NetPolicy::EgressOnly, &[], &[], false, None);
    capped_rules.max_connections = 3;
    let rc = proxy
        .register(capped.into(), "tr_capped", capped_rules, ec.clone())
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, head) = tunnel(capped, paddr, "11.0.0.1:443").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    // Every path is capped: explicit, transparent HTTP, transparent TLS.
    let (_s, head) = tunnel(capped, paddr, "11.0.0.1:443").await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert_eq!(reason(&head), "connection-limit", "{head}");
    let r = exchange(
        capped,
        haddr,
        "GET / HTTP/1.1\r\nHost: 11.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reason(&r), "connection-limit", "{r}");
    let before = ec.count();
    let mut s = client(capped, taddr).await;
    let _ = s
        .write_all(&spawn_egress::testing::client_hello(Some("allowed.test")))
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    let e = ec.next_after(before).await;
    assert_eq!(e.verdict.unwrap_err().code, "connection-limit");
    let limits = ec
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| matches!(&a.verdict, Err(d) if d.code == "connection-limit"))
        .count();
    assert_eq!(limits, 3, "one event per refused connection");

    case("a flood over the cap: the other runs are served meanwhile");
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(client(capped, paddr).await);
    }
    let r = get(egress, paddr, "http://11.0.0.1/").await;
    assert_eq!(status(&r), "200", "{r}");
    let r = get(restricted, paddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "200", "{r}");
    drop(flood);

    case("a connection given back is a connection the run can make again");
    drop(held.pop());
    let mut reopened = false;
    for _ in 0..50 {
        let (s, head) = tunnel(capped, paddr, "11.0.0.1:443").await;
        if head.starts_with("HTTP/1.1 200") {
            held.push(s);
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "the slot was never given back");

    case("a run's connections end with it");
    drop(rc);
    for mut s in held {
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(Ok(0) | Err(_))),
            "a tunnel outlived its run: {end:?}"
        );
    }

    case("maxDnsQueries: a query over the cap gets SERVFAIL at once, reported");
    let dnsy = Ipv4Addr::new(127, 0, 0, 5);
    let ed = Arc::new(Events::default());
    let mut dns_rules = rules(NetPolicy::EgressOnly, &[], &[], false, None);
    dns_rules.max_dns_queries = 1;
    let _rd = proxy
        .register(dnsy.into(), "tr_dns", dns_rules, ed.clone())
        .unwrap();
    let first = tokio::spawn(async move { dns_code(dnsy, daddr, "slow.test").await });
    while slow_lookups.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(
        dns_code(dnsy, daddr, "allowed.test").await,
        ResponseCode::ServFail
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not refused at once"
    );
    let e = ed.last();
    assert_eq!(
        (e.via, e.verdict.unwrap_err().code),
        (Via::Dns, "dns-limit")
    );
    // Another run's DNS is answered meanwhile.
    assert_eq!(
        dns_code(restricted, daddr, "allowed.test").await,
        ResponseCode::NoError
    );
    assert_eq!(first.await.unwrap(), ResponseCode::NoError);
    assert_eq!(
        dns_code(dnsy, daddr, "allowed.test").await,
        ResponseCode::NoError
    );

    case("the proxy registers no run whose caps it cannot promise, and says so");
    let small = Proxy::with_capacity(
        Resolver::with_nameserver(dns),
        Capacity::new(2 * descriptors_for(&NetRules::plain(NetPolicy::EgressOnly)) - 1),
    );
    let quiet = Arc::new(Events::default());
    let plain = || NetRules::plain(NetPolicy::EgressOnly);
    let first = small
        .register([127, 0, 1, 1].into(), "tr_1", plain(), quiet.clone())
        .unwrap();
    let err = small
        .register([127, 0, 1, 2].into(), "tr_2", plain(), quiet.clone())
        .unwrap_err();
    assert!(matches!(err, EgressError::Full { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("maxConnections"), "{msg}");
    let mut lower = plain();
    lower.max_connections = 16;
    let _third = small
        .register([127, 0, 1, 3].into(), "tr_3", lower, quiet.clone())
        .unwrap();
    drop(first);
    small
        .register([127, 0, 1, 2].into(), "tr_2", plain(), quiet.clone())
        .unwrap();

    case("this proxy's own capacity is its descriptor limit, less its reserve");
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert_eq!(proxy.capacity().total(), soft.saturating_sub(256));

    passed
}
