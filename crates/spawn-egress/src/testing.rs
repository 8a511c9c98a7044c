//! Helpers for tests and benchmarks of the proxy (feature `testing`; never in spawn's own
//! builds): a network namespace of one's own, a DNS server answering from a closure, and a
//! TLS ClientHello.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};

/// Moves the calling process into a new network namespace (call it before any thread
/// exists: the namespace is per thread until then), brings up its loopback and gives it
/// `addrs` too (`/32` each: stand-ins for public servers, which the proxy must reach while
/// it refuses loopback). Needs root and `ip` (iproute2).
pub fn own_network(addrs: &[Ipv4Addr]) -> std::io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let ip = |args: &[&str]| -> std::io::Result<()> {
        let st = std::process::Command::new("ip").args(args).status()?;
        if st.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("ip {args:?} failed")))
        }
    };
    ip(&["link", "set", "lo", "up"])?;
    for a in addrs {
        ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
    }
    Ok(())
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
