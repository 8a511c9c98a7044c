//! DNS for the sandbox, on the host end of its link: tools that resolve a name before
//! connecting (and then connect to the address, redirected to the proxy) keep working,
//! while names the run's policy refuses get `REFUSED` and nothing is revealed about them.
//! Answers are the proxy's own resolution, every address checked; IPv4 only (the sandbox
//! has no IPv6).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use spawn_policy::net::{parse_host, Target};
use tokio::net::UdpSocket;

use crate::proxy::Proxy;

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
            let proxy = self.clone();
            let answer = proxy.answer(from.ip(), &query).await;
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    }

    async fn answer(&self, peer: IpAddr, query: &Message) -> Message {
        let mut resp = reply_to(query);
        let (Some(rules), [question]) = (self.rules_of(peer), query.queries()) else {
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
        if addrs.iter().any(|ip| rules.check_ip(*ip).is_err()) {
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
