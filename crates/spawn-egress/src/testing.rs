//! Helpers for tests and benchmarks of the proxy (feature `testing`; never in spawn's own
//! builds): a network namespace of one's own, a DNS server answering from a closure, and a
//! TLS ClientHello.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};

/// The "world" of [`own_network`]: a namespace of its own behind the test's.
static WORLD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// The host end and the world end of the link between the test's namespace and its world.
const WORLD_LINK: (&str, &str) = ("11.255.255.1", "11.255.255.2");

/// Moves the calling process into a new network namespace (call it before any thread
/// exists: the namespace is per thread until then), brings up its loopback, and puts
/// `addrs` (stand-ins for public servers) in a second namespace, "the world", routed
/// through a veth link: the proxy must reach them while it refuses every address of the
/// host it runs on (its loopback, and the link's own end `11.255.255.1`, too). Servers for
/// those addresses bind with [`world_tcp`] and [`world_udp`]. Needs root, `ip` (iproute2)
/// and `unshare` (util-linux).
pub fn own_network(addrs: &[Ipv4Addr]) -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    // As the proxy process does: its runs' capacity is its descriptor limit.
    raise_nofile()?;
    let run = |cmd: &mut Command| -> std::io::Result<()> {
        let out = cmd.output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    let ip = |args: &[&str]| run(Command::new("ip").args(args));
    ip(&["link", "set", "lo", "up"])?;
    if addrs.is_empty() {
        return Ok(());
    }
    // The world: a namespace held by `unshare --net cat` until it is opened here (an open
    // descriptor keeps it for the rest of the process).
    let mut holder = Command::new("unshare")
        .args(["--net", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let path = format!("/proc/{}/ns/net", holder.id());
    let mut made = false;
    for _ in 0..1000 {
        if std::fs::read_link(&path).is_ok_and(|ns| ns != ours) {
            made = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    if !made {
        let _ = holder.kill();
        return Err(std::io::Error::other("unshare made no network namespace"));
    }
    let world = std::fs::File::open(&path)?;
    let pid = holder.id().to_string();
    let in_world = |args: &[&str]| {
        run(Command::new("nsenter")
            .arg(format!("--net={path}"))
            .arg("ip")
            .args(args))
    };
    let (host_end, world_end) = WORLD_LINK;
    ip(&[
        "link", "add", "wrld0", "type", "veth", "peer", "name", "eth0", "netns", &pid,
    ])?;
    ip(&["addr", "add", &format!("{host_end}/30"), "dev", "wrld0"])?;
    ip(&["link", "set", "wrld0", "up"])?;
    in_world(&["link", "set", "lo", "up"])?;
    in_world(&["addr", "add", &format!("{world_end}/30"), "dev", "eth0"])?;
    in_world(&["link", "set", "eth0", "up"])?;
    in_world(&["route", "add", "default", "via", host_end])?;
    for a in addrs {
        in_world(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        ip(&["route", "add", &format!("{a}/32"), "via", world_end])?;
    }
    drop(holder.stdin.take());
    let _ = holder.wait();
    WORLD
        .set(world)
        .map_err(|_| std::io::Error::other("own_network called twice"))
}

/// Raises this process's descriptor limit (soft) to its hard limit.
pub fn raise_nofile() -> std::io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// Runs `f` on a thread in the world of [`own_network`]: the sockets it makes are the
/// world's.
fn in_world<T: Send>(f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
    let world = WORLD
        .get()
        .ok_or_else(|| std::io::Error::other("own_network made no world"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(world, nix::sched::CloneFlags::CLONE_NEWNET)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the world's thread panicked")))
    })
}

/// A TCP listener on `addr` in the world (one of the addresses given to [`own_network`]),
/// non-blocking (ready for `tokio::net::TcpListener::from_std`).
pub fn world_tcp(addr: impl Into<SocketAddr>) -> std::io::Result<std::net::TcpListener> {
    let addr = addr.into();
    in_world(move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
}

/// A UDP socket on `addr` in the world, non-blocking.
pub fn world_udp(addr: impl Into<SocketAddr>) -> std::io::Result<UdpSocket> {
    let addr = addr.into();
    in_world(move || {
        let s = UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
}

/// Serves DNS on `127.0.0.1` (a port of its own) from a thread: `A` queries are answered
/// with what `answer(name)` returns for the lowercased name without its trailing dot
/// (`None`: NXDOMAIN), with `ttl`; `AAAA` queries of known names get an empty answer.
/// `answer` is called once per `A` query, so it can change its answer (rebinding).
pub fn dns_server(
    ttl: u32,
    mut answer: impl FnMut(&str) -> Option<Vec<Ipv4Addr>> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = crate::dns::reply_to(&query);
            for q in query.queries() {
                resp.add_query(q.clone());
                let raw = q.name().to_ascii().to_ascii_lowercase();
                let name = raw.strip_suffix('.').unwrap_or(&raw);
                let ips = match q.query_type() {
                    RecordType::A => answer(name),
                    _ => Some(vec![]),
                };
                match ips {
                    None => {
                        resp.set_response_code(ResponseCode::NXDomain);
                    }
                    Some(ips) => {
                        for ip in ips {
                            resp.add_answer(Record::from_rdata(
                                q.name().clone(),
                                ttl,
                                RData::A(A(ip)),
                            ));
                        }
                    }
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, from);
            }
        }
    });
    Ok(addr)
}

/// The inputs kept in `fuzz/regressions/<target>/` (each once made the fuzz target fail),
/// with their paths, in name order.
pub fn fuzz_regressions(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut kept: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                })
                .filter_map(|p| std::fs::read(&p).ok().map(|data| (p, data)))
                .collect()
        })
        .unwrap_or_default();
    kept.sort();
    kept
}

/// A minimal TLS 1.2 ClientHello naming `host` (or no server at all).
pub fn client_hello(host: Option<&str>) -> Vec<u8> {
    let exts: Vec<(u16, Vec<u8>)> = host
        .map(|h| vec![(0, server_name_ext(&[(0, h.as_bytes())]))])
        .unwrap_or_default();
    client_hello_with(&exts)
}

fn be16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// The body of a `server_name` extension listing `names` as (name type, bytes); type 0 is
/// `host_name`.
pub fn server_name_ext(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&be16(name.len()));
        list.extend_from_slice(name);
    }
    let mut body = be16(list.len()).to_vec();
    body.extend_from_slice(&list);
    body
}

/// A TLS 1.2 ClientHello record carrying `exts` (type, body) in this order.
pub fn client_hello_with(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut ext = Vec::new();
    for (kind, data) in exts {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&be16(data.len()));
        ext.extend_from_slice(data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    if !exts.is_empty() {
        body.extend_from_slice(&be16(ext.len()));
        body.extend_from_slice(&ext);
    }
    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1]; // handshake record
    record.extend_from_slice(&be16(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}
