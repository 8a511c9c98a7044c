//! Network policies end to end (SPEC §6), with the real `spawn` binary and real sandboxes.
//!
//! Everything happens in a network namespace of this test's own: `11.0.0.1` (on loopback,
//! standing in for a public server) serves HTTP on port 80 and holds port 22 open,
//! `10.0.0.5` is a private server that must never be reached, and a DNS server written
//! here answers for the `.test` names; spawn's proxy is pointed at it with
//! `SPAWN_EGRESS_NAMESERVER`. Each run gets its own veth link from spawn, as in production.
//!
//! A plain `main` (harness = false): `unshare(CLONE_NEWNET)` must happen before any
//! thread exists. Needs root, iproute2, nftables and nsenter (`make test` installs them).

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

fn sh(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (make test installs iproute2)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test's DNS server: the `.test` names, and nothing else.
fn dns_server() -> u16 {
    spawn_egress::testing::dns_server(5, |name| match name {
        "allowed.test" | "other.test" => Some(vec![PUBLIC]),
        "private.test" => Some(vec![PRIVATE]),
        _ => None,
    })
    .expect("the test's DNS server")
    .port()
}

/// HTTP on `ip:80`, one request per connection: `hello from IP, Host: H`.
fn http_server(ip: Ipv4Addr, hits: Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 80)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut host = String::new();
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(h) = line.to_ascii_lowercase().strip_prefix("host:") {
                    host = h.trim().to_owned();
                }
                line.clear();
            }
            let mut s = stream;
            if request_line.contains("/redirect") {
                // An allowed host sending the client to the metadata service.
                let _ = write!(
                    s,
                    "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            let body = format!("hello from {ip}, Host: {host}\n");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

struct Spawn {
    home: tempfile::TempDir,
    dns: u16,
}

impl Spawn {
    fn run_on(&self, runtime: &str, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--runtime", runtime];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "python3", "-c", script]);
        Command::new(env!("CARGO_BIN_EXE_spawn"))
            .args(&args)
            .env("SPAWN_HOME", self.home.path())
            .env("SPAWN_EGRESS_NAMESERVER", format!("127.0.0.1:{}", self.dns))
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

/// Each `(name, result)` line the probe printed, exactly.
fn expect_fields(runtime: &str, stdout: &str, want: &[(&str, &str)]) {
    for (key, value) in want {
        assert_eq!(field(stdout, key), *value, "{runtime}: {key}: {stdout}");
    }
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no line {key:?} in:\n{out}"))
}

/// Python run inside the sandbox: each line `name result`.
const PROBE: &str = r#"
import os, socket, urllib.request
def fetch(url, proxy=True):
    handler = urllib.request.ProxyHandler() if proxy else urllib.request.ProxyHandler({})
    try:
        return urllib.request.build_opener(handler).open(url, timeout=10).read().decode().strip().replace(' ', '_')
    except urllib.error.HTTPError as e:
        return f"HTTP{e.code}:{e.headers.get('X-Spawn-Denial')}"
    except Exception as e:
        return "ERR:" + type(e).__name__
def tcp(host, port):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((host, port)); return "CONNECTED"
    except Exception as e:
        return "ERR:" + type(e).__name__
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except Exception as e:
        return "ERR:" + type(e).__name__
print("proxy", os.environ.get("HTTP_PROXY", "none"))
print("allowed", fetch("http://allowed.test/"))
print("redirect", fetch("http://allowed.test/redirect"))
print("redirect_direct", fetch("http://allowed.test/redirect", proxy=False))
print("other", fetch("http://other.test/"))
print("metadata", fetch("http://169.254.169.254/latest/meta-data/"))
print("metadata_hex", fetch("http://0xa9fea9fe/"))
print("private_name", fetch("http://private.test/"))
print("private_ip", fetch("http://10.0.0.5/"))
print("direct_allowed", fetch("http://allowed.test/", proxy=False))
print("direct_other", fetch("http://other.test/", proxy=False))
print("direct_ip", fetch("http://11.0.0.1/", proxy=False))
print("raw22", tcp("11.0.0.1", 22))
print("rawprivate", tcp("10.0.0.5", 8080))
print("direct_private", fetch("http://10.0.0.5/", proxy=False))
print("dns_allowed", resolve("allowed.test"))
print("dns_other", resolve("other.test"))
print("dns_private", resolve("private.test"))
"#;

/// Python run inside the sandbox: what it sends anywhere but to the proxy and DNS.
const STRAY: &str = r#"
import os, socket
gateway = os.environ["HTTP_PROXY"].split("//")[1].split(":")[0]
def attempt(make):
    try:
        return make()
    except Exception as e:
        return "ERR:" + type(e).__name__
def tcp(host, port):
    s = socket.socket(); s.settimeout(5); s.connect((host, port)); return "CONNECTED"
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3): s.sendto(b"stray", (host, port))
    return "sent"
def ping():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(2)
    s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", ("11.0.0.1", 0))
    return "REPLY " + repr(s.recv(64))
print("host_tcp", attempt(lambda: tcp(gateway, 18080)))
print("public_udp", attempt(lambda: udp("11.0.0.1", 9999)))
print("host_udp", attempt(lambda: udp(gateway, 9999)))
print("raw_icmp", attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)))
print("raw_tcp", attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)))
print("packet", attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)))
print("ping", attempt(ping))
"#;

/// Runs an agent on `runtime` that listens on port 8080 and holds a connection to the
/// proxy, and returns what the host kernel lists (`ss -tan`) in the run's network
/// namespace meanwhile.
fn agent_sockets(spawn: &Spawn, runtime: &str) -> String {
    let script = r#"
import os, socket, sys, time
l = socket.socket(); l.bind(("0.0.0.0", 8080)); l.listen()
proxy = os.environ["HTTP_PROXY"].split("//")[1].split(":")
c = socket.create_connection((proxy[0], int(proxy[1])))
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
        .args([
            "run",
            "--runtime",
            runtime,
            "--net",
            "egress-only",
            "--",
            "python3",
            "-c",
            script,
        ])
        .env("SPAWN_HOME", spawn.home.path())
        .env(
            "SPAWN_EGRESS_NAMESERVER",
            format!("127.0.0.1:{}", spawn.dns),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{runtime}");
    // The run's namespace is held by spawn's child `unshare --net cat` (now `cat`).
    let spawn_pid = child.id().to_string();
    let holder = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.split_whitespace().collect();
            fields.get(1) == Some(&"(cat)") && fields.get(3) == Some(&spawn_pid.as_str())
        })
        .map(|e| e.path().join("ns/net"))
        .expect("the namespace holder of the run");
    let listed = sh(&[
        "nsenter",
        &format!("--net={}", holder.display()),
        "ss",
        "-Htan",
    ]);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "{runtime}");
    listed
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: run `make test` as root"
    );
    spawn_egress::testing::own_network(&[PUBLIC, PRIVATE])
        .expect("a network namespace of the test's own (make test installs iproute2)");
    let public_hits = Arc::new(AtomicUsize::new(0));
    let private_hits = Arc::new(AtomicUsize::new(0));
    http_server(PUBLIC, public_hits.clone());
    http_server(PRIVATE, private_hits.clone());
    // Port 22 of the public address accepts: only the sandbox's filter can refuse it.
    let ssh = TcpListener::bind((PUBLIC, 22)).unwrap();
    std::thread::spawn(move || for _ in ssh.incoming() {});
    // Listeners on every address of the test's namespace (so on the host end of every
    // run's link too): nothing from a sandbox may reach them.
    let stray_tcp = Arc::new(AtomicUsize::new(0));
    let stray_udp = Arc::new(AtomicUsize::new(0));
    {
        let tcp = TcpListener::bind(("0.0.0.0", 18080)).unwrap();
        let hits = stray_tcp.clone();
        std::thread::spawn(move || {
            for _ in tcp.incoming() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
        let udp = std::net::UdpSocket::bind(("0.0.0.0", 9999)).unwrap();
        let hits = stray_udp.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while udp.recv_from(&mut buf).is_ok() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
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
        case(&format!("{runtime}, restricted: allowlisted names work with and without the proxy settings, nothing else"));
        let out = spawn.run_on(
            runtime,
            &["--net", "restricted", "--allow", "allowed.test", "--json"],
            PROBE,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        assert!(
            field(&stdout, "proxy").starts_with("http://10.201."),
            "{runtime}: {stdout}"
        );
        expect_fields(
            runtime,
            &stdout,
            &[
                ("allowed", "hello_from_11.0.0.1,_Host:_allowed.test"),
                ("other", "HTTP403:not-allowlisted"),
            ],
        );
        // Refused with the reason; an allowed host that redirects to a blocked one gets
        // its next request refused.
        expect_fields(
            runtime,
            &stdout,
            &[
                ("redirect", "HTTP403:blocked-address"),
                ("redirect_direct", "HTTP403:blocked-address"),
                ("metadata", "HTTP403:blocked-address"),
                ("metadata_hex", "HTTP403:blocked-address"),
                ("private_name", "HTTP403:not-allowlisted"),
                ("private_ip", "HTTP403:blocked-address"),
            ],
        );
        // Without HTTP_PROXY: the sandbox's DNS and the transparent redirect.
        expect_fields(
            runtime,
            &stdout,
            &[("direct_allowed", "hello_from_11.0.0.1,_Host:_allowed.test")],
        );
        assert!(
            field(&stdout, "direct_other").starts_with("ERR")
                || field(&stdout, "direct_other").starts_with("HTTP403"),
            "{runtime}: {stdout}"
        );
        expect_fields(
            runtime,
            &stdout,
            &[
                ("direct_ip", "HTTP403:not-allowlisted"),
                ("raw22", "ERR:ConnectionRefusedError"),
                ("rawprivate", "ERR:ConnectionRefusedError"),
            ],
        );
        // Port 80 anywhere reaches the proxy (transparently), which refuses the address.
        expect_fields(
            runtime,
            &stdout,
            &[
                ("direct_private", "HTTP403:blocked-address"),
                ("dns_allowed", "11.0.0.1"),
            ],
        );
        assert!(
            field(&stdout, "dns_other").starts_with("ERR"),
            "{runtime}: {stdout}"
        );
        assert!(
            field(&stdout, "dns_private").starts_with("ERR"),
            "{runtime}: {stdout}"
        );
        assert_eq!(
            private_hits.load(Ordering::SeqCst),
            0,
            "the private server was reached"
        );
    }

    case("every attempt is audited with host, port, address, decision and reason");
    let events = spawn.audit();
    let net: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["eventType"] == "agent.net.connect" && e["action"] == "connect")
        .collect();
    let allowed = net
        .iter()
        .find(|e| e["details"]["host"] == "allowed.test" && e["details"]["decision"] == "allow")
        .expect("an allowed connect event");
    assert_eq!(allowed["details"]["address"], "11.0.0.1");
    assert_eq!(allowed["details"]["port"], 80);
    assert_eq!(allowed["outcome"], "success");
    let denied = net
        .iter()
        .find(|e| e["details"]["host"] == "169.254.169.254")
        .expect("a denied metadata event");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["details"]["reason"], "blocked-address");
    // And each run's totals when it ends.
    let summary = events
        .iter()
        .find(|e| e["eventType"] == "agent.net.connect" && e["action"] == "summary")
        .expect("a summary event");
    assert!(
        summary["details"]["connectionsAllowed"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{summary}"
    );
    assert!(
        summary["details"]["connectionsDenied"]
            .as_u64()
            .unwrap_or(0)
            >= 5,
        "{summary}"
    );
    assert!(
        summary["details"]["bytesIn"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(events.iter().any(|e| e["eventType"] == "agent.net.connect"
        && e["action"] == "close"
        && e["details"]["bytesIn"].as_u64().unwrap_or(0) > 0));
    // Each run's events carry its own trace id, the one its agent.start has.
    let starts: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["eventType"] == "agent.start")
        .filter_map(|e| e["traceId"].as_str())
        .collect();
    let net_runs: std::collections::BTreeSet<&str> =
        net.iter().filter_map(|e| e["traceId"].as_str()).collect();
    assert_eq!(net_runs.len(), 3, "{net_runs:?}");
    assert!(net_runs.is_subset(&starts), "{net_runs:?} {starts:?}");

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}, egress-only: public addresses and names, never private ones"
        ));
        let out = spawn.run_on(runtime, &["--net", "egress-only"], PROBE);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}");
        expect_fields(
            runtime,
            &stdout,
            &[
                ("other", "hello_from_11.0.0.1,_Host:_other.test"),
                ("direct_ip", "hello_from_11.0.0.1,_Host:_11.0.0.1"),
                ("private_name", "HTTP403:blocked-address"),
                ("metadata", "HTTP403:blocked-address"),
                ("raw22", "ERR:ConnectionRefusedError"),
            ],
        );
        assert_eq!(
            private_hits.load(Ordering::SeqCst),
            0,
            "the private server was reached"
        );
    }

    case("nothing connects in: a server in the sandbox cannot be reached from the host");
    let listen = r#"
import socket, subprocess, time
s = socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen()
addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True).stdout.split()[3].split("/")[0]
print("addr", addr, flush=True)
s.settimeout(6)
try:
    s.accept(); print("accepted yes")
except Exception:
    print("accepted no")
"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
        .args([
            "run",
            "--runtime",
            "native",
            "--net",
            "egress-only",
            "--",
            "python3",
            "-c",
            listen,
        ])
        .env("SPAWN_HOME", spawn.home.path())
        .env(
            "SPAWN_EGRESS_NAMESERVER",
            format!("127.0.0.1:{}", spawn.dns),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("addr ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let reached = std::net::TcpStream::connect_timeout(
        &format!("{addr}:8080").parse().unwrap(),
        Duration::from_secs(2),
    );
    // Meanwhile: one proxy serves every run of the namespace, as nobody, not root. (Ours
    // is the one whose control socket is named after this test's network namespace.)
    let ours = {
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        format!("egress-{ino}.sock")
    };
    let proxies = || -> Vec<(String, String)> {
        sh(&["ps", "-eo", "pid=,uid=,args="])
            .lines()
            .filter(|l| l.contains("spawn-egress") && l.contains(&ours))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    };
    let during = proxies();
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(during[0].1, "65534", "the proxy runs as {}", during[0].1);
    let second = spawn.run_on("native", &["--net", "egress-only"], "print('second')");
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(proxies(), during, "a second run got another proxy");
    assert!(
        reached.is_err(),
        "the host connected into the sandbox at {addr}"
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("accepted no"), "{rest}");
    assert!(child.wait().unwrap().success());

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}: the host end's other ports, UDP, ICMP and raw sockets reach nothing"
        ));
        let before = (
            stray_tcp.load(Ordering::SeqCst),
            stray_udp.load(Ordering::SeqCst),
        );
        let out = spawn.run_on(runtime, &["--net", "egress-only"], STRAY);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}");
        expect_fields(
            runtime,
            &stdout,
            &[
                ("host_tcp", "ERR:ConnectionRefusedError"),
                ("raw_icmp", "ERR:PermissionError"),
                ("raw_tcp", "ERR:PermissionError"),
                ("packet", "ERR:PermissionError"),
            ],
        );
        // A datagram is refused at once (the namespace's filter) or sent and dropped (at
        // the link's host end, for gVisor's netstack); the listeners below see nothing.
        for key in ["public_udp", "host_udp"] {
            assert!(
                ["sent", "ERR:PermissionError"].contains(&field(&stdout, key)),
                "{runtime}: {key}: {stdout}"
            );
        }
        // A ping socket may exist (it is not raw), but its echo reaches nobody.
        assert!(
            field(&stdout, "ping").starts_with("ERR"),
            "{runtime}: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            (
                stray_tcp.load(Ordering::SeqCst),
                stray_udp.load(Ordering::SeqCst)
            ),
            before,
            "{runtime}: a listener on the host's side was reached"
        );
    }

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}: the host kernel sees the agent's sockets only where it runs them"
        ));
        let sockets = agent_sockets(&spawn, runtime);
        if runtime == "gvisor" {
            // netstack: the agent's listener and connection live in gVisor's kernel.
            assert!(
                !sockets.contains(":8080") && !sockets.contains(":3128"),
                "gvisor: the host kernel holds the agent's sockets:\n{sockets}"
            );
        } else {
            assert!(
                sockets.contains(":8080") && sockets.contains(":3128"),
                "{runtime}: the agent's sockets are not the host kernel's:\n{sockets}"
            );
        }
    }

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}: spawn killed at any moment of set-up leaves no link and no filter"
        ));
        for i in 0..30u64 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
                .args([
                    "run",
                    "--runtime",
                    runtime,
                    "--net",
                    "egress-only",
                    "--",
                    "true",
                ])
                .env("SPAWN_HOME", spawn.home.path())
                .env(
                    "SPAWN_EGRESS_NAMESERVER",
                    format!("127.0.0.1:{}", spawn.dns),
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Spread over the set-up (namespace, pair, filters, proxy registration, start).
            std::thread::sleep(Duration::from_millis(i * 7));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Nothing is reaped by a later run: the run died with spawn.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !sh(&["ip", "-o", "link"]).contains("spw")
                && !sh(&["nft", "list", "tables"]).contains("spawn-spw")
        });
        assert!(
            gone,
            "{runtime}: left behind:\n{}\n{}",
            sh(&["ip", "-o", "link"]),
            sh(&["nft", "list", "tables"])
        );
    }

    case("nothing is left: no link, no proxy");
    let links = sh(&["ip", "-o", "link"]);
    assert!(!links.contains("spw"), "{links}");
    // The proxy leaves once idle (10 s without a run).
    let mut procs = String::new();
    for _ in 0..40 {
        procs = sh(&["ps", "-eo", "args"]);
        if !procs.contains(&ours) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!procs.contains(&ours), "{procs}");

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}, full: the host's network directly, warned about and audited"
        ));
        let before = spawn.audit().len();
        let out = spawn.run_on(runtime, &["--net", "full"], PROBE);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("net policy full gives the agent the host's network"),
            "{runtime}: {stderr}"
        );
        expect_fields(runtime, &stdout, &[("proxy", "none")]);
        // Direct: even what the proxy would refuse (this is what full means).
        expect_fields(
            runtime,
            &stdout,
            &[
                ("raw22", "CONNECTED"),
                ("direct_private", "hello_from_10.0.0.5,_Host:_10.0.0.5"),
            ],
        );
        let events = spawn.audit();
        assert!(
            events[before..].iter().any(|e| e["action"] == "full-access"
                && e["resource"]["name"] == "net"
                && e["details"]["policy"] == "full"),
            "{runtime}: no full-access audit event"
        );
    }
    private_hits.store(0, Ordering::SeqCst);

    assert!(public_hits.load(Ordering::SeqCst) > 0);
    println!("network: {passed} passed, 0 failed");
}
