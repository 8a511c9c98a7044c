//! Three classes of differential between what a sandboxed program means and what the proxy
//! decides, each as a table of hostile requests sent to the real proxy on every listener
//! (explicit proxy: absolute-URI HTTP and `CONNECT`; transparent HTTP; transparent TLS):
//!
//! 1. **Ports**: every way to write a port that is not plain decimal 1–65535 (a sign,
//!    garbage before or after, leading zeros, an overflow that wraps to 80, empty after the
//!    colon, other digits, whitespace) is refused with 400 `malformed`, never read as the
//!    default port or reduced.
//! 2. **Host**: more than one `Host`, or one naming another host or port than the request
//!    target, is refused with 400 `host-mismatch`; a `Host` that does not parse with 400
//!    `malformed`.
//! 3. **A tunnel's TLS server name**: when the first bytes through a `CONNECT` tunnel are a
//!    ClientHello, its server name must be the tunnel's host (after normalization); another
//!    name, a local or metadata name, an IP literal or no host name at all closes the tunnel
//!    as `sni-mismatch`, with or without `requireTls`; an unreadable ClientHello is
//!    `malformed`. Bytes that are not TLS pass as before.
//!
//! Each row asserts the status (or whether the tunnel passed bytes), the audited reason, and
//! that a refused request reached no server. Everything runs in a network namespace of the
//! test's own (see `proxy.rs`): a plain `main` (harness = false), needs root.

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, echo_server, exchange, exchange_bytes, http_server, rules, status, Events};
use spawn_egress::testing::{client_hello, client_hello_with, server_name_ext};
use spawn_egress::{Mode, Proxy, Resolver};
use spawn_policy::NetPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const PUBLIC2: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// Every way to write a port that is not plain decimal 1–65535.
const BAD_PORTS: &[&str] = &[
    "",
    "0",
    "00",
    "080",
    "0080",
    "+80",
    "-80",
    "+0080",
    "65536",
    "65616",      // 80 + 2^16
    "131152",     // 80 + 2^17
    "4294967376", // 80 + 2^32
    "18446744073709551696",
    "80abc",
    "abc",
    "0x50",
    "80.0",
    "1e2",
    "8 0",
    " 80",
    "\t80",
    "80\t",
    "\u{0668}\u{0660}", // Arabic-Indic 80
    "\u{FF18}\u{FF10}", // fullwidth 80
    "%38%30",
];

fn dns_server() -> SocketAddr {
    spawn_egress::testing::dns_server(0, |name| match name {
        "allowed.test" | "denied.test" => Some(vec![PUBLIC]),
        "other.test" => Some(vec![PUBLIC2]),
        "private.test" => Some(vec![PRIVATE]),
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
    println!("classes: {passed} passed, 0 failed");
}

/// Every server's request or byte count: a refused request must change none of them.
#[derive(Clone, Default)]
struct Upstreams {
    counters: Vec<Arc<AtomicUsize>>,
}

impl Upstreams {
    fn counter(&mut self) -> Arc<AtomicUsize> {
        let c = Arc::new(AtomicUsize::new(0));
        self.counters.push(c.clone());
        c
    }

    fn total(&self) -> usize {
        self.counters.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }
}

/// One run's address, events and listeners.
struct Run {
    from: Ipv4Addr,
    events: Arc<Events>,
    proxy: SocketAddr,
    upstreams: Upstreams,
}

impl Run {
    /// Sends `raw` to `to` and checks it is refused with `want` and `code`, audited as
    /// `code`, and reached no server.
    async fn refused(&self, to: SocketAddr, raw: &[u8], want: &str, code: &str) {
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
        let (before, reached) = (self.events.count(), self.upstreams.total());
        let r = exchange_bytes(self.from, to, raw).await;
        assert_eq!(status(&r), want, "{shown:?}: {r}");
        let e = self.events.next_after(before).await;
        assert_eq!(
            e.verdict.as_ref().map_err(|d| d.code),
            Err(code),
            "{shown:?}: {e:?}"
        );
        // The proxy names the reason; a head hyper could not read got hyper's own 400.
        if let Some(header) = r.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-spawn-denial: ")
                .map(str::to_owned)
        }) {
            assert_eq!(header, code, "{shown:?}: {r}");
        }
        assert_eq!(
            self.upstreams.total(),
            reached,
            "{shown:?} reached a server"
        );
    }

    /// Sends `raw` to `to` and checks a server answered (`hello from …`).
    async fn served(&self, to: SocketAddr, raw: &str, want: &str) {
        let r = exchange(self.from, to, raw).await;
        assert_eq!(status(&r), "200", "{raw:?}: {r}");
        assert!(r.contains(want), "{raw:?}: {r}");
        assert!(self.events.last().verdict.is_ok(), "{raw:?}");
    }

    /// Opens a tunnel to `target` and sends `first` through it: whether it came back
    /// (the server at the other end echoes), and the attempt as audited.
    async fn tunnel(&self, target: &str, first: &[u8]) -> (bool, Result<(), &'static str>) {
        let (before, reached) = (self.events.count(), self.upstreams.total());
        let mut s = client(self.from, self.proxy).await;
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{target}: {}",
            String::from_utf8_lossy(&head)
        );
        s.write_all(first).await.unwrap();
        let mut back = vec![0u8; first.len()];
        let passed = matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await,
            Ok(Ok(_))
        );
        if passed {
            assert_eq!(back, first);
        } else {
            assert_eq!(
                self.upstreams.total(),
                reached,
                "a refused tunnel reached the server"
            );
        }
        drop(s);
        let e = self.events.next_after(before).await;
        (passed, e.verdict.map_err(|d| d.code))
    }
}

async fn listen(proxy: &Proxy, mode: Mode) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve_as(listener, mode).await });
    addr
}

fn hello(name: &str) -> Vec<u8> {
    client_hello(Some(name))
}

#[allow(clippy::too_many_lines)]
async fn cases() -> usize {
    let dns = dns_server();
    let mut upstreams = Upstreams::default();
    http_server(PUBLIC, 80, upstreams.counter()).await;
    http_server(PUBLIC, 8080, upstreams.counter()).await;
    http_server(PUBLIC2, 80, upstreams.counter()).await;
    http_server(PRIVATE, 80, upstreams.counter()).await;
    echo_server(PUBLIC, upstreams.counter()).await;
    echo_server(PUBLIC2, upstreams.counter()).await;

    let proxy = Proxy::new(Resolver::with_nameserver(dns));
    let (paddr, haddr, taddr) = (
        listen(&proxy, Mode::Explicit).await,
        listen(&proxy, Mode::TransparentHttp).await,
        listen(&proxy, Mode::TransparentTls).await,
    );
    let mut registrations = Vec::new();
    let mut run = |last: u8, id: &str, r| {
        let from = Ipv4Addr::new(127, 0, 0, last);
        let events = Arc::new(Events::default());
        registrations.push(proxy.register(from.into(), id, r, events.clone()).unwrap());
        Run {
            from,
            events,
            proxy: paddr,
            upstreams: upstreams.clone(),
        }
    };
    // Restricted to allowed.test; egress-only with denied.test denied; and requireTls.
    let a = run(
        2,
        "tr_restricted",
        rules(NetPolicy::Restricted, &["allowed.test"], &[], false, None),
    );
    let b = run(
        3,
        "tr_egress",
        rules(NetPolicy::EgressOnly, &[], &["denied.test"], false, None),
    );
    let c = run(
        4,
        "tr_tls",
        rules(NetPolicy::Restricted, &["allowed.test"], &[], true, None),
    );

    let mut passed = 0;
    let mut case = |name: &str| {
        println!("case {name}");
        passed += 1;
    };

    // ---- 1. Ports ----
    case("ports: plain decimal ports are served, on every listener");
    a.served(
        paddr,
        "GET http://allowed.test:8080/ HTTP/1.1\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n",
        "hello from 11.0.0.1:8080",
    )
    .await;
    a.served(
        paddr,
        "GET http://allowed.test:80/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        "hello from 11.0.0.1, Host: allowed.test\n",
    )
    .await;
    a.served(
        haddr,
        "GET / HTTP/1.1\r\nHost: allowed.test:80\r\nConnection: close\r\n\r\n",
        "hello from 11.0.0.1, Host: allowed.test\n",
    )
    .await;
    assert_eq!(a.tunnel("allowed.test:443", b"ping").await, (true, Ok(())));

    for port in BAD_PORTS {
        case(&format!(
            "ports: {port:?} is refused as malformed on every listener, never read as 80"
        ));
        let absolute = format!(
            "GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: allowed.test:{port}\r\nConnection: close\r\n\r\n"
        );
        let connect =
            format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n");
        let host =
            format!("GET / HTTP/1.1\r\nHost: allowed.test:{port}\r\nConnection: close\r\n\r\n");
        let host_only = format!(
            "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test:{port}\r\nConnection: close\r\n\r\n"
        );
        a.refused(paddr, absolute.as_bytes(), "400", "malformed")
            .await;
        a.refused(paddr, connect.as_bytes(), "400", "malformed")
            .await;
        // Whitespace at the end of a header value is not part of it (RFC 9110 §5.5):
        // `Host: allowed.test:80\t` is port 80 to every reader.
        if port.trim_end() == *port {
            a.refused(haddr, host.as_bytes(), "400", "malformed").await;
            a.refused(paddr, host_only.as_bytes(), "400", "malformed")
                .await;
        }
        b.refused(paddr, absolute.as_bytes(), "400", "malformed")
            .await;
        // A server name carries no port: one that does is no host name.
        a.refused(
            taddr,
            &hello(&format!("allowed.test:{port}")),
            "",
            "malformed",
        )
        .await;
    }

    // ---- 2. Host ----
    case("Host: one Host agreeing with the URI (after normalization) is served");
    for host in [
        "allowed.test",
        "ALLOWED.test.",
        "allowed.test:80",
        "Allowed.Test:80",
    ] {
        a.served(
            paddr,
            &format!(
                "GET http://allowed.test/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ),
            // Upstream gets the checked host, whatever spelling agreed with it.
            "Host: allowed.test\n",
        )
        .await;
    }
    a.served(
        paddr,
        "GET http://allowed.test/ HTTP/1.0\r\n\r\n",
        "Host: allowed.test\n",
    )
    .await;
    assert_eq!(
        a.tunnel("allowed.test:443", b"ping").await,
        (true, Ok(())),
        "CONNECT with its own Host"
    );

    case("Host: absolute form with more than one Host, or one naming another host or port");
    let absolute = |hosts: &[&str]| {
        let mut raw = "GET http://allowed.test/ HTTP/1.1\r\n".to_owned();
        for h in hosts {
            raw.push_str(&format!("{h}\r\n"));
        }
        raw + "Connection: close\r\n\r\n"
    };
    for (hosts, code) in [
        (
            &["Host: allowed.test", "Host: allowed.test"][..],
            "host-mismatch",
        ),
        (&["Host: allowed.test", "Host: other.test"], "host-mismatch"),
        (&["Host: other.test", "Host: allowed.test"], "host-mismatch"),
        (&["host: allowed.test", "HOST: other.test"], "host-mismatch"),
        (&["Host: allowed.test", "Host: "], "host-mismatch"),
        (&["Host: other.test"], "host-mismatch"),
        (&["Host: denied.test"], "host-mismatch"),
        (&["Host: allowed.test:8080"], "host-mismatch"),
        (&["Host: allowed.test:443"], "host-mismatch"),
        (&["Host: 11.0.0.1"], "host-mismatch"),
        (&["Host: localhost"], "host-mismatch"),
        (&["Host: 169.254.169.254"], "host-mismatch"),
        (&["Host: [::1]"], "host-mismatch"),
        (&["Host: evil.allowed.test"], "host-mismatch"),
        (&["Host: "], "malformed"),
        (&["Host: allowed.test.."], "malformed"),
        (&["Host: allowed.test, other.test"], "malformed"),
        (&["Host: allowed.test other.test"], "malformed"),
        (&["Host: user@allowed.test"], "malformed"),
        (&["Host: allowed.test:80:80"], "malformed"),
        (&["Host: allowed.test\u{00e9}"], "malformed"),
    ] {
        a.refused(paddr, absolute(hosts).as_bytes(), "400", code)
            .await;
        b.refused(paddr, absolute(hosts).as_bytes(), "400", code)
            .await;
    }

    case("Host: CONNECT with more than one Host, or one naming another host or port");
    for (hosts, code) in [
        (
            &["Host: allowed.test:443", "Host: allowed.test:443"][..],
            "host-mismatch",
        ),
        (
            &["Host: allowed.test:443", "Host: other.test:443"],
            "host-mismatch",
        ),
        (&["Host: other.test:443"], "host-mismatch"),
        (&["Host: other.test"], "host-mismatch"),
        (&["Host: allowed.test:8443"], "host-mismatch"),
        (&["Host: 11.0.0.1:443"], "host-mismatch"),
        (&["Host: allowed.test:+443"], "malformed"),
        (&["Host: "], "malformed"),
    ] {
        let mut raw = "CONNECT allowed.test:443 HTTP/1.1\r\n".to_owned();
        for h in hosts {
            raw.push_str(&format!("{h}\r\n"));
        }
        raw.push_str("\r\n");
        a.refused(paddr, raw.as_bytes(), "400", code).await;
    }

    case("Host: the transparent HTTP listener takes exactly one Host, for port 80");
    a.served(
        haddr,
        "GET /x HTTP/1.1\r\nHost: ALLOWED.TEST.\r\nConnection: close\r\n\r\n",
        "Host: allowed.test\n",
    )
    .await;
    for (raw, code) in [
        (
            "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET / HTTP/1.1\r\nHost: other.test\r\nHost: allowed.test\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: allowed.test\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET / HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET http://other.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET http://allowed.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n",
            "host-mismatch",
        ),
        (
            "GET http://allowed.test:8080/ HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n",
            "host-mismatch",
        ),
        ("GET / HTTP/1.1\r\n\r\n", "malformed"),
        ("GET / HTTP/1.1\r\nHost: \r\n\r\n", "malformed"),
        (
            "GET / HTTP/1.1\r\nHost: allowed.test..\r\n\r\n",
            "malformed",
        ),
        (
            "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n",
            "malformed",
        ),
    ] {
        a.refused(haddr, raw.as_bytes(), "400", code).await;
        b.refused(haddr, raw.as_bytes(), "400", code).await;
    }

    // ---- 3. A tunnel's TLS server name ----
    let two_names = client_hello_with(&[
        (0, server_name_ext(&[(0, b"allowed.test")])),
        (0, server_name_ext(&[(0, b"other.test")])),
    ]);
    let two_hosts = client_hello_with(&[(
        0,
        server_name_ext(&[(0, b"allowed.test"), (0, b"other.test")]),
    )]);
    let empty_name = client_hello_with(&[(0, server_name_ext(&[(0, b"")]))]);
    let mut split = hello("allowed.test");
    split[8] = split[8].wrapping_add(40); // the handshake claims more than its record
    let fronted: Vec<(&str, Vec<u8>, &str)> = [
        "other.test",
        "denied.test",
        "evil.allowed.test",
        "allowed.test.evil",
        "allowedtest",
        "localhost",
        "metadata.google.internal",
        "printer.local",
        "private.test",
        "11.0.0.1",
        "11.0.0.2",
        "127.0.0.1",
        "10.0.0.5",
        "169.254.169.254",
        "2130706433",
        "::1",
        "[::1]",
        "allowed.test..",
        "allowed.test:443",
        "*.allowed.test",
        "allowed.test\0",
    ]
    .into_iter()
    .map(|sni| (sni, hello(sni), "sni-mismatch"))
    .chain([
        ("two server_name extensions", two_names.clone(), "malformed"),
        ("two host names", two_hosts.clone(), "malformed"),
        ("an empty name", empty_name.clone(), "malformed"),
        (
            "a ClientHello split over records",
            split.clone(),
            "malformed",
        ),
        ("a bad record version", vec![22, 2, 0, 0, 1, 0], "malformed"),
    ])
    .collect();

    for (r, label) in [(&a, "restricted"), (&b, "egress-only"), (&c, "requireTls")] {
        case(&format!(
            "SNI ({label}): a ClientHello naming the tunnel's host, in any spelling, passes"
        ));
        for same in [
            "allowed.test",
            "ALLOWED.TEST",
            "allowed.test.",
            "Allowed.Test.",
        ] {
            assert_eq!(
                r.tunnel("allowed.test:443", &hello(same)).await,
                (true, Ok(())),
                "{same}"
            );
        }
        case(&format!(
            "SNI ({label}): any other name, an IP literal or a malformed ClientHello closes the tunnel, audited"
        ));
        for (what, first, code) in &fronted {
            assert_eq!(
                r.tunnel("allowed.test:443", first).await,
                (false, Err(*code)),
                "{label}: {what:?}"
            );
        }
    }

    case("SNI: what is not TLS, or TLS without a name, passes unless requireTls");
    for first in [&b"ping"[..], b"SSH-2.0-x\r\n", &client_hello(None)] {
        assert_eq!(a.tunnel("allowed.test:443", first).await, (true, Ok(())));
        assert_eq!(
            c.tunnel("allowed.test:443", first).await,
            (false, Err("require-tls"))
        );
    }

    case("SNI: a tunnel to an address takes no name at all (egress-only)");
    assert_eq!(
        b.tunnel("11.0.0.1:443", &client_hello(None)).await,
        (true, Ok(()))
    );
    assert_eq!(b.tunnel("11.0.0.1:443", b"ping").await, (true, Ok(())));
    for sni in ["allowed.test", "other.test", "denied.test", "11.0.0.1"] {
        assert_eq!(
            b.tunnel("11.0.0.1:443", &hello(sni)).await,
            (false, Err("sni-mismatch")),
            "{sni}"
        );
    }

    case("SNI: the transparent TLS listener refuses what is no host name or no ClientHello");
    for (first, code) in [
        (hello("allowed.test.."), "malformed"),
        (hello("allowed.test:443"), "malformed"),
        (two_names, "malformed"),
        (two_hosts, "malformed"),
        (empty_name, "malformed"),
        (split, "malformed"),
        (client_hello(None), "malformed"),
        (hello("other.test"), "not-allowlisted"),
    ] {
        a.refused(taddr, &first, "", code).await;
    }
    let mut s = client(a.from, taddr).await;
    let ok = hello("allowed.test");
    s.write_all(&ok).await.unwrap();
    let mut back = vec![0u8; ok.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, ok);

    case("every refusal above was audited to its own run");
    for r in [&a, &b, &c] {
        let attempts = r.events.attempts.lock().unwrap();
        assert!(attempts.len() > 20, "{}", attempts.len());
    }
    drop(registrations);
    passed
}
