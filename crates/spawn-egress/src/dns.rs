//! DNS for the sandbox, on the host end of its link: tools that resolve a name before
//! connecting (and then connect to the address, redirected to the proxy) keep working,
//! while names the run's policy refuses get `REFUSED` and nothing is revealed about them.
//! Answers are the proxy's own resolution, every address checked (the host's own among
//! them: a name that points at the host is refused); IPv4 only (the sandbox has no IPv6).
//! Queries are answered concurrently, at most `maxDnsQueries` of a run at once; one more
//! gets `SERVFAIL` at once (and is reported, `dns-limit`), so that a run's own flood or a
//! slow upstream never holds more of the proxy than its caps.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use spawn_policy::net::{parse_host, NetRules, Target};
use tokio::net::UdpSocket;

use crate::proxy::{Proxy, Via};

/// Largest query read (a query is one question; EDNS allows a little more).
const MAX_QUERY: usize = 1232;
/// TTL of the answers: short, since the proxy resolves again at connect time anyway.
const TTL: u32 = 5;

/// An empty response to `query` (same id and opcode), to fill in.
pub(crate) fn reply_to(query: &Message) -> Message {
    let mut resp = Message::new();
    resp.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    resp
}

impl Proxy {
    /// Answers the runs' DNS queries on `socket` until it fails.
    pub async fn serve_dns(&self, socket: UdpSocket) -> std::io::Error {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_QUERY];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                // An ICMP error for an earlier answer: not this socket's failure.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                Err(e) => return e,
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(run) = self.run_at(from.ip()) else {
                let mut resp = reply_to(&query);
                resp.set_response_code(ResponseCode::Refused);
                send(&socket, &resp, from).await;
                continue;
            };
            let Some(slot) = run.queries.take() else {
                let cap = run.queries.cap();
                run.over_cap(
                    Via::Dns,
                    "dns-limit",
                    format!("the run already has {cap} DNS queries being answered (maxDnsQueries)"),
                );
                let mut resp = reply_to(&query);
                resp.set_response_code(ResponseCode::ServFail);
                send(&socket, &resp, from).await;
                continue;
            };
            let proxy = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let r = run.clone();
                r.until_ended(async {
                    let answer = proxy.answer(&run.rules, &query).await;
                    send(&socket, &answer, from).await;
                })
                .await;
            });
        }
    }

    async fn answer(&self, rules: &NetRules, query: &Message) -> Message {
        let mut resp = reply_to(query);
        let [question] = query.queries() else {
            resp.set_response_code(ResponseCode::Refused);
            return resp;
        };
        resp.add_query(question.clone());
        let raw = question.name().to_ascii();
        let name = raw.strip_suffix('.').unwrap_or(&raw);
        let allowed = match parse_host(name) {
            Ok(target @ Target::Name(_)) => rules.check(&target).ok().map(|()| target),
            _ => None,
        };
        let Some(Target::Name(name)) = allowed else {
            resp.set_response_code(ResponseCode::Refused);
            return resp;
        };
        match question.query_type() {
            RecordType::A => {}
            // No IPv6 in the sandbox: an empty answer, so clients fall back to A.
            RecordType::AAAA => return resp,
            _ => {
                resp.set_response_code(ResponseCode::NotImp);
                return resp;
            }
        }
        let Ok(addrs) = self.resolver().lookup(&name).await else {
            resp.set_response_code(ResponseCode::ServFail);
            return resp;
        };
        if addrs.iter().any(|ip| self.check_addr(rules, *ip).is_err()) {
            resp.set_response_code(ResponseCode::Refused);
            return resp;
        }
        for ip in addrs {
            if let IpAddr::V4(v4) = ip {
                resp.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(v4)),
                ));
            }
        }
        resp
    }
}

/// Sends `answer` to `to` (a lost answer is the client's to retry).
async fn send(socket: &UdpSocket, answer: &Message, to: SocketAddr) {
    if let Ok(bytes) = answer.to_vec() {
        let _ = socket.send_to(&bytes, to).await;
    }
}
