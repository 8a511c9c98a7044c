//! The syslog sink: RFC 5424 messages over UDP (RFC 5426), TCP with octet counting
//! (RFC 6587 §3.4.1) or TLS (RFC 5425).
//!
//! Written here rather than with a syslog crate: the crates at hand speak RFC 3164 or
//! write to the local socket, none frames by octet counting over TLS with our own CA, and a
//! message is one `format!` plus an escape function that the tests break on purpose.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME spawn PROCID MSGID [spawn@32473 seq="…" hash="…"] BOM MSG`:
//! PRI from the facility and the outcome (success → info, denied → warning, error → err),
//! MSGID the event type, MSG the stored JSON line. Header fields are PRINTUSASCII, cut to
//! their RFC lengths; SD-PARAM values escape `"`, `\` and `]`. Syslog has no
//! acknowledgement: a batch counts as delivered once written to the socket (TCP/TLS:
//! flushed); use a webhook or OTLP sink where the receiver must confirm.

use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::{Format, SyslogOptions, Transport};
use crate::error::SinkError;
use crate::item::{Item, CHECKPOINT_KIND};

/// The private enterprise number of the SD-ID (`spawn@32473`; 32473 is the example PEN
/// RFC 5612 reserves for documentation — replace with a registered one when spawn has it).
pub const SD_ID: &str = "spawn@32473";
/// APP-NAME of every message.
const APP_NAME: &str = "spawn";
/// RFC 5424 §6.4: a MSG in UTF-8 starts with the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Severity (RFC 5424 §6.2.1) of an outcome.
pub fn severity(outcome: &str) -> u8 {
    match outcome {
        "success" => 6,
        "denied" => 4,
        _ => 3,
    }
}

/// Longest SD-PARAM value taken from a record (a hash is 71 bytes, an id 29).
const MAX_PARAM: usize = 128;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `s` as an SD-PARAM value: `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3).
pub fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: PRINTUSASCII only (anything else becomes `_`), at most `max` bytes,
/// `-` (NILVALUE) when empty.
fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .bytes()
        .take(max)
        .map(|b| {
            if (33..=126).contains(&b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// A TIMESTAMP as RFC 5424 wants one (RFC 3339, no spaces), or NILVALUE.
fn timestamp(s: &str) -> String {
    let ok = !s.is_empty()
        && s.len() <= 32
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        && s.bytes().all(|b| (33..=126).contains(&b));
    if ok {
        s.to_owned()
    } else {
        "-".into()
    }
}

/// The RFC 5424 message of `item`, at most `max` bytes: when the whole would not fit, MSG
/// is cut at a character boundary and the SD element says `truncated="true"`.
pub fn message(
    item: &Item,
    format: Format,
    facility: u8,
    hostname: &str,
    procid: u32,
    max: usize,
) -> Vec<u8> {
    let (severity, ts, msgid, mut params, msg) = match item {
        Item::Record(e) => {
            let mut params = vec![("seq", e.seq.to_string())];
            if let Some(h) = &e.hash {
                params.push(("hash", cut(h, MAX_PARAM)));
            }
            if let Some(t) = &e.trace_id {
                params.push(("traceId", cut(t, MAX_PARAM)));
            }
            (
                severity(&e.outcome),
                timestamp(&e.timestamp),
                e.event_type.as_str(),
                params,
                item.json_line(format),
            )
        }
        Item::Checkpoint { size, note } => (
            6,
            timestamp(&spawn_audit::now_rfc3339()),
            CHECKPOINT_KIND,
            vec![("checkpointSize", size.to_string())],
            note.clone(),
        ),
    };
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let head = |params: &[(&str, String)]| {
        let mut sd = format!("[{SD_ID}");
        for (k, v) in params {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
        sd.push(']');
        format!(
            "<{pri}>1 {ts} {} {APP_NAME} {procid} {} {sd} ",
            header_field(hostname, 255),
            header_field(msgid, 32),
        )
        .into_bytes()
    };
    let mut out = head(&params);
    if out.len() + BOM.len() + msg.len() > max {
        params.push(("truncated", "true".into()));
        out = head(&params);
        if out.len() + BOM.len() > max {
            // Only the seq then: with every header field capped, this head is under the
            // smallest max allowed (480 bytes).
            params.retain(|(k, _)| matches!(*k, "seq" | "checkpointSize" | "truncated"));
            out = head(&params);
        }
        let room = max.saturating_sub(out.len() + BOM.len());
        let mut cut = room.min(msg.len());
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        out.extend_from_slice(BOM);
        out.extend_from_slice(&msg.as_bytes()[..cut]);
    } else {
        out.extend_from_slice(BOM);
        out.extend_from_slice(msg.as_bytes());
    }
    out
}

/// RFC 6587 §3.4.1 octet-counting frame: `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg);
    out
}

trait Stream: AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncWrite + Unpin + Send + Sync> Stream for T {}

enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>),
}

/// A syslog receiver; the connection is kept between batches and made anew after a
/// failure.
pub(crate) struct SyslogSink {
    opts: SyslogOptions,
    format: Format,
    hostname: String,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<Conn>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("address", &self.opts.address)
            .field("transport", &self.opts.transport)
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    pub(crate) fn new(opts: SyslogOptions, format: Format) -> Result<SyslogSink, SinkError> {
        let tls = match (&opts.transport, &opts.ca) {
            (Transport::Tls, Some(ca)) => Some(crate::tls::connector(ca)?),
            _ => None,
        };
        let hostname = opts.hostname.clone().unwrap_or_else(machine_name);
        Ok(SyslogSink {
            opts,
            format,
            hostname,
            tls,
            conn: None,
        })
    }

    pub(crate) async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let timeout = self.opts.timeout;
        let target = self.opts.address.clone();
        let r = tokio::time::timeout(timeout, self.send(items)).await;
        let r = match r {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout {
                target,
                seconds: timeout.as_secs(),
            }),
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn send(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let err = |source: io::Error| SinkError::Connect {
            target: self.opts.address.clone(),
            source,
        };
        if self.conn.is_none() {
            self.conn = Some(self.connect().await.map_err(err)?);
        }
        let procid = std::process::id();
        let max = self.opts.max_message_bytes;
        let msgs: Vec<Vec<u8>> = items
            .iter()
            .map(|i| {
                message(
                    i,
                    self.format,
                    self.opts.facility,
                    &self.hostname,
                    procid,
                    max,
                )
            })
            .collect();
        match &mut self.conn {
            Some(Conn::Udp(sock)) => {
                for m in &msgs {
                    sock.send(m).await.map_err(err)?;
                }
            }
            Some(Conn::Stream(s)) => {
                let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.len() + 8).sum());
                for m in &msgs {
                    buf.extend_from_slice(&frame(m));
                }
                s.write_all(&buf).await.map_err(err)?;
                s.flush().await.map_err(err)?;
            }
            None => {}
        }
        Ok(())
    }

    async fn connect(&self) -> io::Result<Conn> {
        let addr = tokio::net::lookup_host(&self.opts.address)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        match self.opts.transport {
            Transport::Udp => {
                let local: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(local).await?;
                sock.connect(addr).await?;
                Ok(Conn::Udp(sock))
            }
            Transport::Tcp => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(Conn::Stream(Box::new(s)))
            }
            Transport::Tls => {
                let (Some(tls), Some(name)) = (&self.tls, &self.opts.server_name) else {
                    return Err(io::Error::other("TLS is not configured"));
                };
                let name = crate::tls::server_name(name).map_err(io::Error::other)?;
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let s = tls.connect(name, s).await?;
                Ok(Conn::Stream(Box::new(s)))
            }
        }
    }
}

/// This machine's name, for HOSTNAME.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests;
