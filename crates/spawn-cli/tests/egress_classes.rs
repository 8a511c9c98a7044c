//! The three classes of differential between what a sandboxed program means and what the
//! egress proxy decides, end to end from inside real sandboxes on every runtime (`native`,
//! `container`, `gvisor`), through the proxy (`HTTP_PROXY`) and transparently (port 80 and
//! 443 redirected):
//!
//! 1. a port that is not plain decimal 1–65535 is refused with 400, never read as 80;
//! 2. more than one `Host`, or one that disagrees with the request target, is refused;
//! 3. a ClientHello through a `CONNECT` tunnel must name the tunnel's host (a real OpenSSL
//!    ClientHello from Python's `ssl` included), else the tunnel closes, audited.
//!
//! As `network.rs`: a network namespace of this test's own, `11.0.0.1` (allowed.test,
//! denied.test) and `11.0.0.2` (other.test) on loopback serve HTTP on port 80 and a
//! recording echo on 443, `10.0.0.5` is private, and a DNS server written here answers for
//! the `.test` names (`SPAWN_EGRESS_NAMESERVER`). Every server counts what reaches it: a
//! refused request must reach none.
//!
//! A plain `main` (harness = false): `unshare(CLONE_NEWNET)` must happen before any
//! thread exists. Needs root, iproute2, nftables and runsc/runc (`make test` installs them).

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use spawn_egress::{client_hello, Hello};

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

fn dns_server() -> u16 {
    spawn_egress::testing::dns_server(5, |name| match name {
        "allowed.test" | "denied.test" => Some(vec![PUBLIC]),
        "other.test" => Some(vec![OTHER]),
        "private.test" => Some(vec![PRIVATE]),
        _ => None,
    })
    .expect("the test's DNS server")
    .port()
}

/// HTTP on `ip:80`, one request per connection: `hello from IP, Host: H` (every Host
/// line, joined by `|`); counts requests.
fn http_server(ip: Ipv4Addr, hits: Arc<AtomicUsize>) {
    let listener = spawn_egress::testing::world_tcp((ip, 80)).unwrap();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut hosts = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(h) = line.to_ascii_lowercase().strip_prefix("host:") {
                    hosts.push(h.trim().to_owned());
                }
                line.clear();
            }
            let body = format!("hello from {ip}, Host: {}\n", hosts.join("|"));
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// What reached a TLS port: the first bytes of each connection, as the proxy's own reader
/// reads them.
type Hellos = Arc<Mutex<Vec<Hello>>>;

/// An echo on `ip:443` (stands in for a TLS server) recording each connection's first
/// bytes; counts every byte that reaches it.
fn echo_server(ip: Ipv4Addr, bytes: Arc<AtomicUsize>, hellos: Hellos) {
    let listener = spawn_egress::testing::world_tcp((ip, 443)).unwrap();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (bytes, hellos) = (bytes.clone(), hellos.clone());
            std::thread::spawn(move || {
                let mut s = stream;
                let mut first = Vec::new();
                let mut recorded = false;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    bytes.fetch_add(n, Ordering::SeqCst);
                    if !recorded {
                        first.extend_from_slice(&buf[..n]);
                        let verdict = client_hello(&first);
                        if verdict != Hello::NeedMore {
                            hellos.lock().unwrap().push(verdict);
                            recorded = true;
                        }
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Python run inside the sandbox: each line `name result`. `fetch`-like results are
/// `STATUS:X-Spawn-Denial` (`None` when the proxy did not name a reason: a head hyper
/// refused); tunnels and transparent TLS are `PASS` (the bytes came back from the server)
/// or `CLOSED`; `ssl_*` is the exception a real TLS handshake ends with.
const PROBE: &str = r#"
import os, socket, ssl, sys
proxy = os.environ["HTTP_PROXY"].removeprefix("http://").rstrip("/")
phost, pport = proxy.rsplit(":", 1)
PROXY = (phost, int(pport))

def be16(n): return n.to_bytes(2, "big")
def sni_ext(*names):
    lst = b"".join(b"\x00" + be16(len(n)) + n for n in names)
    return be16(0) + be16(len(lst) + 2) + be16(len(lst)) + lst
def hello(exts=b""):
    body = b"\x03\x03" + b"\x07" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    if exts:
        body += be16(len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + be16(len(hs)) + hs
def named(name): return hello(sni_ext(name.encode()))

def talk(addr, data):
    s = socket.create_connection(addr, timeout=10)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()

def http(addr, head):
    out = talk(addr, head.encode("latin-1")).decode("latin-1")
    if not out:
        return "CLOSED"
    status = out.split(" ")[1] if " " in out else "?"
    denial = "None"
    for line in out.split("\r\n"):
        if line.lower().startswith("x-spawn-denial:"):
            denial = line.split(":", 1)[1].strip()
    return f"{status}:{denial}"

def echoes(s, data):
    s.sendall(data)
    back = b""
    try:
        while len(back) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            back += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return "PASS" if back == data else "CLOSED"

def connect(target):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        c = s.recv(1)
        if not c:
            break
        head += c
    return s, head.split(b" ")[1].decode() if b" " in head else "?"

def tunnel(target, data):
    s, status = connect(target)
    try:
        return echoes(s, data) if status == "200" else "HTTP" + status
    finally:
        s.close()

def transparent_tls(data):
    s = socket.create_connection(("11.0.0.1", 443), timeout=10)
    try:
        return echoes(s, data)
    finally:
        s.close()

def real_tls(target, name):
    s, status = connect(target)
    if status != "200":
        return "HTTP" + status
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.wrap_socket(s, server_hostname=name).close()
        return "handshake"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()

def absolute(url, hosts=None, ver="1.1"):
    authority = url.split("/")[2]
    hosts = [authority] if hosts is None else hosts
    lines = "".join(f"Host: {h}\r\n" for h in hosts)
    return f"GET {url} HTTP/{ver}\r\n{lines}Connection: close\r\n\r\n"

def origin(hosts):
    lines = "".join(f"Host: {h}\r\n" for h in hosts)
    return f"GET / HTTP/1.1\r\n{lines}Connection: close\r\n\r\n"

ports = {"empty": "", "plus": "+80", "zero": "0", "lead0": "080", "wrap16": "65616",
         "wrap32": "4294967376", "garbage": "80abc", "big": "99999"}
cases = []
for k, p in ports.items():
    cases.append((f"port_abs_{k}", lambda p=p: http(PROXY, absolute(f"http://allowed.test:{p}/"))))
    cases.append((f"port_connect_{k}", lambda p=p: tunnel(f"allowed.test:{p}", b"ping")))
    cases.append((f"port_host_{k}", lambda p=p: http(("11.0.0.1", 80), origin([f"allowed.test:{p}"]))))
    cases.append((f"port_sni_{k}", lambda p=p: transparent_tls(named(f"allowed.test:{p}"))))
cases += [
    ("ok_abs", lambda: http(PROXY, absolute("http://allowed.test/", ["ALLOWED.test."]))),
    ("ok_host", lambda: http(("11.0.0.1", 80), origin(["allowed.test:80"]))),
    ("ok_tunnel_ping", lambda: tunnel("allowed.test:443", b"ping")),
    ("ok_tunnel_sni", lambda: tunnel("allowed.test:443", named("ALLOWED.TEST."))),
    ("ok_tunnel_nosni", lambda: tunnel("allowed.test:443", hello())),
    ("ok_transparent_tls", lambda: transparent_tls(named("allowed.test"))),
    ("host_abs_two", lambda: http(PROXY, absolute("http://allowed.test/", ["allowed.test", "other.test"]))),
    ("host_abs_same_two", lambda: http(PROXY, absolute("http://allowed.test/", ["allowed.test", "allowed.test"]))),
    ("host_abs_other", lambda: http(PROXY, absolute("http://allowed.test/", ["other.test"]))),
    ("host_abs_port", lambda: http(PROXY, absolute("http://allowed.test/", ["allowed.test:8080"]))),
    ("host_abs_metadata", lambda: http(PROXY, absolute("http://allowed.test/", ["169.254.169.254"]))),
    ("host_connect_other", lambda: http(PROXY, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n")),
    ("host_origin_two", lambda: http(("11.0.0.1", 80), origin(["allowed.test", "other.test"]))),
    ("host_origin_two_rev", lambda: http(("11.0.0.1", 80), origin(["other.test", "allowed.test"]))),
    ("host_origin_port", lambda: http(("11.0.0.1", 80), origin(["allowed.test:8080"]))),
    ("host_origin_absolute", lambda: http(("11.0.0.1", 80), absolute("http://other.test/", ["allowed.test"]))),
    ("host_origin_none", lambda: http(("11.0.0.1", 80), origin([]))),
    ("host_origin_dots", lambda: http(("11.0.0.1", 80), origin(["allowed.test.."]))),
    ("sni_other", lambda: tunnel("allowed.test:443", named("other.test"))),
    ("sni_localhost", lambda: tunnel("allowed.test:443", named("localhost"))),
    ("sni_metadata", lambda: tunnel("allowed.test:443", named("metadata.google.internal"))),
    ("sni_ip", lambda: tunnel("allowed.test:443", named("11.0.0.1"))),
    ("sni_private_ip", lambda: tunnel("allowed.test:443", named("10.0.0.5"))),
    ("sni_dots", lambda: tunnel("allowed.test:443", named("allowed.test.."))),
    ("sni_two", lambda: tunnel("allowed.test:443", hello(sni_ext(b"allowed.test") + sni_ext(b"other.test")))),
    ("sni_two_names", lambda: tunnel("allowed.test:443", hello(sni_ext(b"allowed.test", b"other.test")))),
    ("ssl_allowed", lambda: real_tls("allowed.test:443", "allowed.test")),
    ("ssl_fronted", lambda: real_tls("allowed.test:443", "other.test")),
    ("egress_dots", lambda: http(PROXY, absolute("http://denied.test../"))),
    ("egress_dot", lambda: http(PROXY, absolute("http://denied.test./"))),
    ("egress_sni", lambda: tunnel("allowed.test:443", named("denied.test"))),
    ("egress_sni_by_ip", lambda: tunnel("11.0.0.1:443", named("denied.test"))),
    ("egress_ip_nosni", lambda: tunnel("11.0.0.1:443", hello())),
]
only = set(sys.argv[1:])
for name, case in cases:
    if only and not any(name.startswith(p) for p in only):
        continue
    try:
        result = case()
    except Exception as e:
        result = "ERR:" + type(e).__name__
    print(name, result, flush=True)
"#;

struct Spawn {
    home: tempfile::TempDir,
    dns: u16,
}

impl Spawn {
    fn run_on(&self, runtime: &str, flags: &[&str], only: &[&str]) -> Output {
        let mut args = vec!["run", "--runtime", runtime];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "python3", "-c", PROBE]);
        args.extend_from_slice(only);
        Command::new(env!("CARGO_BIN_EXE_spawn"))
            .args(&args)
            .env("SPAWN_HOME", self.home.path())
            .env("SPAWN_EGRESS_NAMESERVER", format!("127.0.0.1:{}", self.dns))
            // Every refusal is checked below by its own reason and detail: no repeat may
            // be aggregated into a summary (what the limits do is tested in `network`).
            .env(
                "SPAWN_AUDIT_LIMITS",
                "per-key=10000,per-window=100000,events=100000000,bytes=1GiB",
            )
            .output()
            .expect("run spawn")
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.home.path().join("audit/audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("JSON audit line"))
            .collect()
    }
}

/// The probe's lines, by name.
fn results(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The servers' counters.
struct Upstreams {
    public_http: Arc<AtomicUsize>,
    other_http: Arc<AtomicUsize>,
    private_http: Arc<AtomicUsize>,
    public_tls: Arc<AtomicUsize>,
    other_tls: Arc<AtomicUsize>,
    hellos: Hellos,
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    spawn_egress::testing::own_network(&[PUBLIC, OTHER, PRIVATE])
        .expect("a network namespace of the test's own (make test installs iproute2)");
    let up = Upstreams {
        public_http: Arc::new(AtomicUsize::new(0)),
        other_http: Arc::new(AtomicUsize::new(0)),
        private_http: Arc::new(AtomicUsize::new(0)),
        public_tls: Arc::new(AtomicUsize::new(0)),
        other_tls: Arc::new(AtomicUsize::new(0)),
        hellos: Arc::default(),
    };
    http_server(PUBLIC, up.public_http.clone());
    http_server(OTHER, up.other_http.clone());
    http_server(PRIVATE, up.private_http.clone());
    echo_server(PUBLIC, up.public_tls.clone(), up.hellos.clone());
    echo_server(OTHER, up.other_tls.clone(), Arc::default());
    let spawn = Spawn {
        home: tempfile::tempdir().unwrap(),
        dns: dns_server(),
    };
    let mut passed = 0;
    let mut case = |name: &str| {
        println!("case {name}");
        passed += 1;
    };

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}, restricted: ports, Host and tunnel server names, through the proxy and transparently"
        ));
        let before = spawn.audit().len();
        let http_before = up.public_http.load(Ordering::SeqCst);
        let tls_before = up.public_tls.load(Ordering::SeqCst);
        up.hellos.lock().unwrap().clear();
        let out = spawn.run_on(
            runtime,
            &["--net", "restricted", "--allow", "allowed.test"],
            &["port_", "ok_", "host_", "sni_", "ssl_"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        let got = results(&stdout);
        let want = |name: &str| -> &str {
            got.get(name)
                .unwrap_or_else(|| panic!("{runtime}: no line {name:?} in:\n{stdout}"))
        };

        // 1. Ports: 400 on every path, from the proxy ("malformed") or from hyper, whose
        // refusal names no reason but is audited as malformed all the same.
        let mut port_rows = 0;
        for port in [
            "empty", "plus", "zero", "lead0", "wrap16", "wrap32", "garbage", "big",
        ] {
            for form in ["abs", "host"] {
                let r = want(&format!("port_{form}_{port}"));
                assert!(
                    r == "400:malformed" || r == "400:None",
                    "{runtime}: port_{form}_{port}: {r}"
                );
                port_rows += 1;
            }
            let r = want(&format!("port_connect_{port}"));
            assert!(r == "HTTP400", "{runtime}: port_connect_{port}: {r}");
            assert_eq!(
                want(&format!("port_sni_{port}")),
                "CLOSED",
                "{runtime}: {port}"
            );
            port_rows += 2;
        }
        // The controls pass (and prove the paths work).
        for (name, result) in [
            ("ok_abs", "200:None"),
            ("ok_host", "200:None"),
            ("ok_tunnel_ping", "PASS"),
            ("ok_tunnel_sni", "PASS"),
            ("ok_tunnel_nosni", "PASS"),
            ("ok_transparent_tls", "PASS"),
        ] {
            assert_eq!(want(name), result, "{runtime}: {name}\n{stdout}");
        }
        // 2. Host.
        let mut host_rows = 0;
        for (name, result) in [
            ("host_abs_two", "400:host-mismatch"),
            ("host_abs_same_two", "400:host-mismatch"),
            ("host_abs_other", "400:host-mismatch"),
            ("host_abs_port", "400:host-mismatch"),
            ("host_abs_metadata", "400:host-mismatch"),
            ("host_connect_other", "400:host-mismatch"),
            ("host_origin_two", "400:host-mismatch"),
            ("host_origin_two_rev", "400:host-mismatch"),
            ("host_origin_port", "400:host-mismatch"),
            ("host_origin_absolute", "400:host-mismatch"),
            ("host_origin_none", "400:malformed"),
            ("host_origin_dots", "400:malformed"),
        ] {
            assert_eq!(want(name), result, "{runtime}: {name}\n{stdout}");
            host_rows += usize::from(result.ends_with("host-mismatch"));
        }
        // 3. A tunnel's server name.
        let mut sni_rows = 0;
        for name in [
            "sni_other",
            "sni_localhost",
            "sni_metadata",
            "sni_ip",
            "sni_private_ip",
            "sni_dots",
        ] {
            assert_eq!(want(name), "CLOSED", "{runtime}: {name}\n{stdout}");
            sni_rows += 1;
        }
        for name in ["sni_two", "sni_two_names"] {
            assert_eq!(want(name), "CLOSED", "{runtime}: {name}\n{stdout}");
        }
        // A real OpenSSL ClientHello: the one naming the tunnel's host reaches the server
        // (which echoes it, so the handshake fails there); the fronted one never does.
        assert_eq!(want("ssl_allowed"), "SSLError", "{runtime}");
        assert!(
            matches!(
                want("ssl_fronted"),
                "SSLEOFError" | "ConnectionResetError" | "SSLZeroReturnError"
            ),
            "{runtime}: {}",
            want("ssl_fronted")
        );
        sni_rows += 1;
        let hellos = up.hellos.lock().unwrap().clone();
        assert!(
            hellos.contains(&Hello::Sni("allowed.test".into())),
            "{runtime}: the real ClientHello did not reach the server: {hellos:?}"
        );
        assert!(
            hellos.iter().all(|h| match h {
                Hello::Sni(name) =>
                    name.eq_ignore_ascii_case("allowed.test")
                        || name.eq_ignore_ascii_case("allowed.test."),
                Hello::NoSni | Hello::NotTls => true,
                Hello::NeedMore | Hello::Malformed(_) => false,
            }),
            "{runtime}: the server saw {hellos:?}"
        );

        // Nothing refused reached a server: only the controls did.
        assert_eq!(
            up.public_http.load(Ordering::SeqCst) - http_before,
            2,
            "{runtime}: requests reached allowed.test's server beyond the 2 controls"
        );
        let echoed = up.public_tls.load(Ordering::SeqCst) - tls_before;
        assert!(echoed > 0, "{runtime}");
        assert_eq!(up.other_http.load(Ordering::SeqCst), 0, "{runtime}");
        assert_eq!(up.other_tls.load(Ordering::SeqCst), 0, "{runtime}");
        assert_eq!(up.private_http.load(Ordering::SeqCst), 0, "{runtime}");

        // Every refusal is audited with its reason.
        let events = spawn.audit();
        let reasons = |code: &str| {
            events[before..]
                .iter()
                .filter(|e| {
                    e["eventType"] == "agent.net.connect"
                        && e["action"] == "connect"
                        && e["details"]["reason"] == code
                })
                .count()
        };
        let shown = |code: &str| {
            events[before..]
                .iter()
                .filter(|e| e["details"]["reason"] == code)
                .map(|e| {
                    format!(
                        "{}:{} {}",
                        e["details"]["host"], e["details"]["port"], e["details"]["detail"]
                    )
                })
                .collect::<Vec<_>>()
        };
        // Each port row, the two malformed Host rows and the two malformed ClientHellos.
        assert_eq!(
            reasons("malformed"),
            port_rows + 4,
            "{runtime}: {port_rows} port rows: {:#?}",
            shown("malformed")
        );
        assert_eq!(
            reasons("host-mismatch"),
            host_rows,
            "{runtime}: {:#?}",
            shown("host-mismatch")
        );
        assert_eq!(
            reasons("sni-mismatch"),
            sni_rows,
            "{runtime}: {:#?}",
            shown("sni-mismatch")
        );
        assert!(
            events[before..].iter().all(
                |e| e["details"]["host"] != "other.test" || e["details"]["decision"] != "allow"
            ),
            "{runtime}: other.test was allowed"
        );
    }

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}, egress-only --deny denied.test: no spelling or fronting reaches it"
        ));
        let before = spawn.audit().len();
        let out = spawn.run_on(
            runtime,
            &["--net", "egress-only", "--deny", "denied.test"],
            &["egress_", "ok_tunnel_sni"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        let got = results(&stdout);
        for (name, result) in [
            // Two trailing dots used to pass the policy and reach the resolver (502).
            ("egress_dots", "400:malformed"),
            ("egress_dot", "403:denylist"),
            ("egress_sni", "CLOSED"),
            ("egress_sni_by_ip", "CLOSED"),
            ("egress_ip_nosni", "PASS"),
            ("ok_tunnel_sni", "PASS"),
        ] {
            assert_eq!(
                got.get(name).map(String::as_str),
                Some(result),
                "{runtime}: {name}\n{stdout}"
            );
        }
        let events = spawn.audit();
        let sni = events[before..]
            .iter()
            .filter(|e| e["details"]["reason"] == "sni-mismatch")
            .count();
        assert_eq!(sni, 2, "{runtime}");
    }

    println!("egress_classes: {passed} passed, 0 failed");
}
