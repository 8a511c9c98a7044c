//! The egress proxy end to end, with real servers: everything runs in a network namespace
//! of this test's own, where `11.0.0.1` and `11.0.0.2` (public-looking addresses, on
//! loopback) serve HTTP and a TCP echo, `10.0.0.5` is a private server that must never be
//! reached, and a DNS server written here answers for the `.test` names (including one that
//! flips between a public and a private answer). Runs are told apart by source address
//! (`127.0.0.2` …), as sandboxes are by their namespace's address.
//!
//! A plain `main` (harness = false): `unshare(CLONE_NEWNET)` must happen before any thread
//! exists. Needs root. Each case prints its name; a failure panics with the reason.

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, echo_server, exchange, get, http_server, rules, status, Events};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use spawn_egress::{Mode, Proxy, Resolver, Via};
use spawn_policy::net::NetRules;
use spawn_policy::NetPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const PUBLIC2: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// The test names; `rebind.test` answers public, then private, alternately.
fn dns_server() -> SocketAddr {
    let mut flips = 0usize;
    spawn_egress::testing::dns_server(0, move |name| match name {
        "allowed.test" | "deep.wild.test" | "smuggle.test" => Some(vec![PUBLIC]),
        "other.test" => Some(vec![PUBLIC2]),
        "private.test" => Some(vec![PRIVATE]),
        "mixed.test" => Some(vec![PUBLIC, PRIVATE]),
        "metadata.test" => Some(vec![Ipv4Addr::new(169, 254, 169, 254)]),
        "rebind.test" => {
            flips += 1;
            Some(vec![if flips % 2 == 1 { PUBLIC } else { PRIVATE }])
        }
        _ => None,
    })
    .unwrap()
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    spawn_egress::testing::own_network(&[PUBLIC, PUBLIC2, PRIVATE])
        .expect("a network namespace of the test's own (make test installs iproute2)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = rt.block_on(cases());
    println!("proxy: {passed} passed, 0 failed");
}

#[allow(clippy::too_many_lines)]
async fn cases() -> usize {
    let dns = dns_server();
    let public_hits = Arc::new(AtomicUsize::new(0));
    let private_hits = Arc::new(AtomicUsize::new(0));
    http_server(PUBLIC, 80, public_hits.clone()).await;
    http_server(PUBLIC2, 80, Arc::new(AtomicUsize::new(0))).await;
    http_server(PRIVATE, 80, private_hits.clone()).await;
    let echo_bytes = Arc::new(AtomicUsize::new(0));
    echo_server(PUBLIC, echo_bytes.clone()).await;
    let loopback_server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loopback_port = loopback_server.local_addr().unwrap().port();

    let proxy = Proxy::new(Resolver::with_nameserver(dns));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = listener.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = tls_listener.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve_as(tls_listener, Mode::TransparentTls).await });
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let haddr = http_listener.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve_as(http_listener, Mode::TransparentHttp).await });
    let dns_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let daddr = dns_socket.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve_dns(dns_socket).await });

    let (a, b, c, d) = (
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 5),
    );
    let ea = Arc::new(Events::default());
    let eb = Arc::new(Events::default());
    let ec = Arc::new(Events::default());
    let ed = Arc::new(Events::default());
    let allow = [
        "allowed.test",
        "*.wild.test",
        "private.test",
        "mixed.test",
        "rebind.test",
        "smuggle.test",
        "metadata.test",
    ];
    let _ra = proxy
        .register(
            a.into(),
            "tr_a",
            rules(
                NetPolicy::Restricted,
                &allow,
                &["smuggle.test"],
                false,
                None,
            ),
            ea.clone(),
        )
        .unwrap();
    let _rb = proxy
        .register(
            b.into(),
            "tr_b",
            rules(NetPolicy::EgressOnly, &[], &["11.0.0.2"], false, None),
            eb.clone(),
        )
        .unwrap();
    let _rc = proxy
        .register(
            c.into(),
            "tr_c",
            rules(NetPolicy::Restricted, &["allowed.test"], &[], true, None),
            ec.clone(),
        )
        .unwrap();
    let _rd = proxy
        .register(
            d.into(),
            "tr_d",
            rules(NetPolicy::EgressOnly, &[], &[], false, Some(2)),
            ed.clone(),
        )
        .unwrap();
    assert!(
        proxy
            .register(
                a.into(),
                "tr_dup",
                NetRules::plain(NetPolicy::EgressOnly),
                ea.clone()
            )
            .is_err(),
        "one address, one run"
    );

    let mut passed = 0;
    let mut case = |name: &str| {
        println!("case {name}");
        passed += 1;
    };

    case("an allowlisted name is fetched through the proxy, with the checked address audited");
    let r = get(a, paddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "200", "{r}");
    assert!(r.contains("hello from 11.0.0.1, Host: allowed.test"), "{r}");
    let e = ea.last();
    assert_eq!(
        (e.host.as_str(), e.port, e.verdict.is_ok()),
        ("allowed.test", 80, true)
    );
    assert_eq!(e.addr, Some(SocketAddr::from((PUBLIC, 80))));

    case("uppercase and a trailing dot are the same name");
    let r = get(a, paddr, "http://ALLOWED.Test./").await;
    assert_eq!(status(&r), "200", "{r}");

    case("wildcards match subdomains, not the domain");
    assert_eq!(
        status(&get(a, paddr, "http://deep.wild.test/").await),
        "200"
    );
    let r = get(a, paddr, "http://wild.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert!(r.contains("not-allowlisted"), "{r}");

    case("a name off the allowlist gets 403 with the reason");
    let r = get(a, paddr, "http://other.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert!(
        r.to_lowercase().contains("x-spawn-denial: not-allowlisted"),
        "{r}"
    );
    assert_eq!(ea.last().verdict.unwrap_err().code, "not-allowlisted");

    case("the denylist wins over the allowlist");
    let r = get(a, paddr, "http://smuggle.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert_eq!(ea.last().verdict.unwrap_err().code, "denylist");

    case("an allowlisted name resolving to a private address is refused");
    let r = get(a, paddr, "http://private.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert_eq!(ea.last().verdict.unwrap_err().code, "blocked-address");
    case("a name with one public and one private address is refused as a whole");
    assert_eq!(status(&get(a, paddr, "http://mixed.test/").await), "403");
    case("a name resolving to the metadata address is refused");
    assert_eq!(status(&get(a, paddr, "http://metadata.test/").await), "403");

    case("DNS rebinding: a flipped answer fails the next check, never reaches the private server");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(status(&get(a, paddr, "http://rebind.test/").await).to_owned());
    }
    assert!(
        codes.contains(&"200".to_owned()) && codes.contains(&"403".to_owned()),
        "{codes:?}"
    );

    case(
        "the Host header cannot redirect a request: the checked, normalized host is sent upstream",
    );
    let r = exchange(
        a,
        paddr,
        "GET http://allowed.test/ HTTP/1.1\r\nHost: ALLOWED.test.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("Host: allowed.test\n"), "{r}");
    let r = exchange(
        a,
        paddr,
        "GET http://allowed.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "400", "{r}");
    assert_eq!(ea.last().verdict.unwrap_err().code, "host-mismatch");

    case("CONNECT tunnels bytes to an allowed host and reports the byte counts");
    let mut s = client(a, paddr).await;
    s.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 19];
    s.read_exact(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") && !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        rest.push(byte[0]);
        if rest.len() > 1024 {
            break;
        }
    }
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = ea
        .closed
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c.port == 443)
        .cloned();
    let closed = closed.expect("the tunnel's close was reported");
    assert_eq!((closed.bytes_out, closed.bytes_in), (23, 23));

    case("metadata and loopback addresses in every spelling are refused (egress-only)");
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1%25lo]/",
        "http://127.1/",
        "http://0x7f000001/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://012.0.0.5/",
        "http://metadata.google.internal/",
        "http://localhost/",
    ] {
        let r = get(b, paddr, url).await;
        assert!(matches!(status(&r), "403" | "400"), "{url}: {r}");
    }
    let r = get(b, paddr, &format!("http://127.0.0.1:{loopback_port}/")).await;
    assert_eq!(status(&r), "403", "{r}");
    assert_eq!(
        private_hits.load(Ordering::SeqCst),
        0,
        "the private server was reached"
    );
    drop(loopback_server);

    case("egress-only reaches a public address literal; the denylist's address does not");
    let r = get(b, paddr, "http://11.0.0.1/").await;
    assert_eq!(status(&r), "200", "{r}");
    let r = get(b, paddr, "http://11.0.0.2/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert_eq!(eb.last().verdict.unwrap_err().code, "denylist");

    case("restricted never takes an address literal");
    assert_eq!(status(&get(a, paddr, "http://11.0.0.1/").await), "403");

    case("requireTls: a ClientHello naming the checked host is tunnelled");
    let mut s = client(c, paddr).await;
    s.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let hello = tls_hello("allowed.test");
    s.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    drop(s);

    case("requireTls: a ClientHello naming another host is cut off and audited");
    let mut s = client(c, paddr).await;
    s.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s.write_all(&tls_hello("other.test")).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "bytes came back through a refused tunnel");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ec.last().verdict.unwrap_err().code, "sni-mismatch");

    case("requireTls: plain HTTP and other ports are refused");
    assert_eq!(status(&get(c, paddr, "http://allowed.test/").await), "403");
    let r = exchange(c, paddr, "CONNECT allowed.test:80 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status(&r), "403", "{r}");

    case("the rate limit answers 429 once used up");
    let first = get(d, paddr, "http://11.0.0.1/").await;
    let second = get(d, paddr, "http://11.0.0.1/").await;
    let third = get(d, paddr, "http://11.0.0.1/").await;
    assert_eq!(
        (status(&first), status(&second), status(&third)),
        ("200", "200", "429"),
        "{third}"
    );
    assert_eq!(ed.last().verdict.unwrap_err().code, "rate-limit");

    case("an address that is no run's gets 403");
    let r = get(Ipv4Addr::new(127, 0, 0, 9), paddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "403", "{r}");

    case("malformed, oversized and origin-form requests get 4xx, and the proxy serves on");
    for raw in [
        "GARBAGE\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_owned(),
        "GET https://allowed.test/ HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT allowed.test HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT allowed.test:0 HTTP/1.1\r\n\r\n".to_owned(),
        "GET http://user:pw@allowed.test/ HTTP/1.1\r\n\r\n".to_owned(),
        format!("GET http://{}.test/ HTTP/1.1\r\n\r\n", "a".repeat(300)),
        format!(
            "GET http://allowed.test/ HTTP/1.1\r\nX: {}\r\n\r\n",
            "b".repeat(64 * 1024)
        ),
        "GET http://xn--llowed-6nf.test/ HTTP/1.1\r\n\r\n".to_owned(),
    ] {
        let r = exchange(a, paddr, &raw).await;
        let code = status(&r);
        assert!(
            code.starts_with('4') || r.is_empty(),
            "{}: {r}",
            &raw[..raw.len().min(60)]
        );
    }
    assert_eq!(status(&get(a, paddr, "http://allowed.test/").await), "200");

    case("slow clients holding half a request head do not stop the proxy");
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut s = client(a, paddr).await;
        s.write_all(b"GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let r = get(b, paddr, "http://11.0.0.1/").await;
    assert_eq!(status(&r), "200", "{r}");
    drop(slow);

    case("transparent TLS: the ClientHello's server name is judged and the bytes pass");
    let mut s = client(a, taddr).await;
    let hello = tls_hello("allowed.test");
    s.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, hello);
    drop(s);
    let e = ea.last();
    assert_eq!(
        (e.via, e.host.as_str(), e.verdict.is_ok()),
        (Via::Tls, "allowed.test", true)
    );

    case("transparent TLS: a refused server name gets nothing back");
    let mut s = client(a, taddr).await;
    s.write_all(&tls_hello("other.test")).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert_eq!(ea.last().verdict.unwrap_err().code, "not-allowlisted");
    case("transparent TLS: what is not TLS is closed");
    let r = exchange(a, taddr, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await;
    assert!(r.is_empty(), "{r}");

    case("transparent HTTP: judged by Host");
    let r = exchange(
        a,
        haddr,
        "GET /x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    let r = exchange(
        a,
        haddr,
        "GET /x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "403", "{r}");
    let r = exchange(a, haddr, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(status(&r).starts_with('4'), "{r}");

    case("DNS answers allowed names with checked addresses, and refuses the rest");
    assert_eq!(dns_query(a, daddr, "allowed.test").await, Ok(vec![PUBLIC]));
    assert_eq!(dns_query(a, daddr, "ALLOWED.TEST").await, Ok(vec![PUBLIC]));
    for refused in [
        "other.test",
        "private.test",
        "mixed.test",
        "metadata.google.internal",
        "localhost",
    ] {
        assert_eq!(
            dns_query(a, daddr, refused).await,
            Err(ResponseCode::Refused),
            "{refused}"
        );
    }
    assert_eq!(
        dns_query(Ipv4Addr::new(127, 0, 0, 9), daddr, "allowed.test").await,
        Err(ResponseCode::Refused)
    );

    case("every attempt of every run was reported to that run only");
    let count = |e: &Events| e.attempts.lock().unwrap().len();
    assert!(count(&ea) >= 20 && count(&eb) >= 17 && count(&ec) >= 3 && count(&ed) == 3);
    let runs: HashMap<String, usize> =
        ea.attempts
            .lock()
            .unwrap()
            .iter()
            .fold(HashMap::new(), |mut m, e| {
                *m.entry(e.run_id.clone()).or_default() += 1;
                m
            });
    assert_eq!(runs.keys().collect::<Vec<_>>(), ["tr_a"]);
    assert!(public_hits.load(Ordering::SeqCst) > 0);

    case("no audit, no action: an allowed attempt that cannot be put on record is not made, by any way in");
    let e = Ipv4Addr::new(127, 0, 0, 6);
    let ee = Arc::new(Events {
        unrecordable: true,
        ..Events::default()
    });
    let _re = proxy
        .register(
            e.into(),
            "tr_e",
            rules(NetPolicy::Restricted, &["allowed.test"], &[], false, None),
            ee.clone(),
        )
        .unwrap();
    let (hits, bytes) = (
        public_hits.load(Ordering::SeqCst),
        echo_bytes.load(Ordering::SeqCst),
    );
    let r = get(e, paddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    assert!(r.contains("audit record"), "{r}");
    let r = get(e, haddr, "http://allowed.test/").await;
    assert_eq!(status(&r), "403", "{r}");
    let mut s = client(e, paddr).await;
    s.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&tls_hello("allowed.test")).await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back)).await;
    assert!(
        !back
            .windows(5)
            .any(|w| w == &tls_hello("allowed.test")[..5]),
        "the tunnel forwarded: {back:?}"
    );
    let mut s = client(e, taddr).await;
    s.write_all(&tls_hello("allowed.test")).await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back)).await;
    assert!(back.is_empty(), "{back:?}");
    assert_eq!(
        public_hits.load(Ordering::SeqCst),
        hits,
        "a request went out"
    );
    assert_eq!(echo_bytes.load(Ordering::SeqCst), bytes, "bytes went out");
    // Each was an allowed attempt, reported (and refused once not on record).
    let attempts = ee.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.verdict.is_ok()), "{attempts:?}");

    passed
}

fn tls_hello(host: &str) -> Vec<u8> {
    spawn_egress::testing::client_hello(Some(host))
}

/// One A query from `from`; the addresses, or the response code when not NOERROR.
async fn dns_query(
    from: Ipv4Addr,
    server: SocketAddr,
    name: &str,
) -> Result<Vec<Ipv4Addr>, ResponseCode> {
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    let sock = UdpSocket::bind((from, 0)).await.unwrap();
    let mut msg = Message::new();
    msg.set_id(7).set_recursion_desired(true);
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
    let resp = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(resp.id(), 7);
    if resp.response_code() != ResponseCode::NoError {
        return Err(resp.response_code());
    }
    Ok(resp
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::A(a)) => Some(a.0),
            _ => None,
        })
        .collect())
}
