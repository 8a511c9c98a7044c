//! Turning an [`Event`] into one stored line, within a size cap.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::chain::{GENESIS, HASH_LEN};
use crate::error::AuditError;
use crate::event::{Event, Principal, Resource};

/// Largest line (without its newline) the log writes for one event.
///
/// Events are metadata, normally a few hundred bytes; details can carry untrusted data
/// (a command line, a URL an agent asked for), so without a cap one event could bloat the
/// log or make every reader buffer a huge line. 64 KiB is far above any legitimate event,
/// and it bounds how far back [`AuditLog::append`](crate::AuditLog::append) must read to
/// find the last record.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// When an event is still too large with its details replaced by the truncation marker,
/// each caller-supplied string is cut to this many bytes. The nine such strings, even
/// if every byte is escaped as `\u00XX` (6 bytes), take at most 9 × 1024 × 6 = 55,296
/// bytes, leaving ample room under [`MAX_EVENT_BYTES`] for keys, seq and timestamp.
const MAX_FIELD_BYTES: usize = 1024;

/// What is written: the record's assigned fields followed by the event's and the chain's,
/// in SPEC §7 order. It borrows the event, so the common case copies nothing.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineRef<'a> {
    seq: u64,
    timestamp: &'a str,
    #[serde(flatten)]
    event: &'a Event,
    prev_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

/// Appends the event's line, newline included, to `out`, chained to `prev_hash`; returns
/// the line's hash (the next line's `prevHash`).
///
/// Tries the event as given; if its line would exceed [`MAX_EVENT_BYTES`], replaces its
/// details with `{"truncated": true}`; if still too large, also caps every string.
pub(crate) fn encode_line(
    seq: u64,
    timestamp: &str,
    event: &Event,
    prev_hash: &str,
    out: &mut Vec<u8>,
) -> Result<String, AuditError> {
    fn line<'a>(seq: u64, timestamp: &'a str, event: &'a Event, prev_hash: &'a str) -> LineRef<'a> {
        LineRef {
            seq,
            timestamp,
            event,
            prev_hash,
            hash: None,
        }
    }
    if write_line(&line(seq, timestamp, event, prev_hash), out)? {
        return seal(&line(seq, timestamp, event, prev_hash), out);
    }
    let mut small = Event {
        event_type: event.event_type,
        principal: event.principal.clone(),
        resource: event.resource.clone(),
        action: event.action.clone(),
        outcome: event.outcome,
        details: truncated_marker(),
        source_ip: event.source_ip.clone(),
        request_id: event.request_id.clone(),
        trace_id: event.trace_id.clone(),
    };
    if write_line(&line(seq, timestamp, &small, prev_hash), out)? {
        return seal(&line(seq, timestamp, &small, prev_hash), out);
    }
    cap_strings(&mut small);
    if write_line(&line(seq, timestamp, &small, prev_hash), out)? {
        return seal(&line(seq, timestamp, &small, prev_hash), out);
    }
    Err(AuditError::TooLarge {
        limit: MAX_EVENT_BYTES,
    })
}

/// Puts the hash of `line` in the placeholder at the end of `out`, where [`write_line`]
/// just wrote it (`…"hash":"sha256:0…0"}` and the newline), and returns it.
fn seal(line: &LineRef<'_>, out: &mut [u8]) -> Result<String, AuditError> {
    let hash = crate::chain::hash_of(line)?;
    // `"}` and the newline follow the hash.
    let end = out.len() - 3;
    out[end - HASH_LEN..end].copy_from_slice(hash.as_bytes());
    Ok(hash)
}

/// Appends the line (its `hash` a placeholder of the right length) and its newline to
/// `out` and returns true, or leaves `out` as it was and returns false if the line would
/// exceed [`MAX_EVENT_BYTES`]. Serialization stops as soon as the cap is passed, so a huge
/// event is never copied whole.
fn write_line(line: &LineRef<'_>, out: &mut Vec<u8>) -> Result<bool, AuditError> {
    let start = out.len();
    let mut capped = CappedWriter {
        out: &mut *out,
        room: MAX_EVENT_BYTES,
        overflowed: false,
    };
    let line = LineRef {
        hash: Some(GENESIS),
        ..*line
    };
    let result = serde_json::to_writer(&mut capped, &line);
    let overflowed = capped.overflowed;
    match result {
        Ok(()) => {
            out.push(b'\n');
            Ok(true)
        }
        Err(_) if overflowed => {
            out.truncate(start);
            Ok(false)
        }
        Err(e) => {
            out.truncate(start);
            Err(AuditError::Encode(e))
        }
    }
}

/// A writer into a `Vec` that fails once more than `room` bytes are written.
struct CappedWriter<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
    overflowed: bool,
}

impl Write for CappedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.room {
            self.overflowed = true;
            return Err(io::Error::other("audit event too large"));
        }
        self.room -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `{"truncated": true}`: what an oversized details map is replaced with.
fn truncated_marker() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("truncated".to_owned(), Value::Bool(true));
    m
}

fn cap_strings(event: &mut Event) {
    let Event {
        principal: Principal { kind, id, name },
        resource:
            Resource {
                kind: resource_kind,
                name: resource_name,
            },
        action,
        source_ip,
        request_id,
        trace_id,
        ..
    } = event;
    for s in [kind, id, resource_kind, resource_name, action] {
        cap(s);
    }
    for s in [name, source_ip, request_id, trace_id]
        .into_iter()
        .flatten()
    {
        cap(s);
    }
}

/// Cuts `s` to at most [`MAX_FIELD_BYTES`], on a character boundary.
fn cap(s: &mut String) {
    if s.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Outcome, Record};
    use serde_json::json;

    fn event() -> Event {
        Event::new(
            EventType::AgentToolInvoke,
            Principal {
                kind: "agent".into(),
                id: "ag_1".into(),
                name: Some("researcher".into()),
            },
            Resource {
                kind: "tool".into(),
                name: "shell".into(),
            },
            "execute",
            Outcome::Success,
        )
    }

    const TS: &str = "2026-01-15T10:30:00.000Z";

    fn encode(event: &Event) -> (Vec<u8>, Record) {
        let mut out = Vec::new();
        encode_line(7, TS, event, GENESIS, &mut out).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        let body = &out[..out.len() - 1];
        assert!(!body.contains(&b'\n'), "line must be single-line JSON");
        assert!(body.len() <= MAX_EVENT_BYTES);
        let record: Record = serde_json::from_slice(body).unwrap();
        // Whatever form was written, its hash is the hash of what it holds.
        let v = crate::chain::verify(&out[..], false).unwrap();
        assert!(v.intact(), "{v:?}");
        assert_eq!(record.hash, v.last_hash);
        assert_eq!(record.prev_hash.as_deref(), Some(GENESIS));
        (out, record)
    }

    #[test]
    fn small_event_is_written_as_is() {
        let e = event().with_detail("cmd", "ls");
        let (_, record) = encode(&e);
        assert_eq!(record.seq, 7);
        assert_eq!(record.event, e);
    }

    #[test]
    fn oversized_details_become_the_marker() {
        let e = event().with_detail("blob", "x".repeat(MAX_EVENT_BYTES));
        let (_, record) = encode(&e);
        assert_eq!(
            Value::Object(record.event.details.clone()),
            json!({"truncated": true})
        );
        // Everything but details is kept.
        let mut want = e;
        want.details = truncated_marker();
        assert_eq!(record.event, want);
    }

    #[test]
    fn event_just_under_the_cap_is_kept() {
        let mut out = Vec::new();
        encode_line(7, TS, &event(), GENESIS, &mut out).unwrap();
        let room = MAX_EVENT_BYTES - (out.len() - 1) - r#""blob":"""#.len();
        let e = event().with_detail("blob", "y".repeat(room));
        let (line, record) = encode(&e);
        assert_eq!(line.len() - 1, MAX_EVENT_BYTES);
        assert_eq!(record.event, e);
        let e = event().with_detail("blob", "y".repeat(room + 1));
        let (_, record) = encode(&e);
        assert_eq!(record.event.details, truncated_marker());
    }

    #[test]
    fn oversized_strings_are_cut_on_char_boundaries() {
        let mut e = event().with_detail("k", "v");
        // Control characters escape to 6 bytes each; "é" is 2 bytes, so cuts land mid-char.
        e.action = "\u{1}".repeat(MAX_EVENT_BYTES);
        e.resource.name = "é".repeat(MAX_EVENT_BYTES);
        e.principal.name = Some("\u{2}".repeat(MAX_EVENT_BYTES));
        e.trace_id = Some("t".repeat(MAX_EVENT_BYTES));
        let (_, record) = encode(&e);
        assert_eq!(record.event.details, truncated_marker());
        assert_eq!(record.event.action, "\u{1}".repeat(MAX_FIELD_BYTES));
        assert_eq!(record.event.resource.name, "é".repeat(MAX_FIELD_BYTES / 2));
        assert_eq!(record.event.trace_id, Some("t".repeat(MAX_FIELD_BYTES)));
        assert_eq!(record.event.principal.id, "ag_1");
    }

    #[test]
    fn worst_case_event_fits_after_capping() {
        let huge = "\u{1}".repeat(MAX_EVENT_BYTES);
        let e = Event {
            event_type: EventType::ResourceExhausted,
            principal: Principal {
                kind: huge.clone(),
                id: huge.clone(),
                name: Some(huge.clone()),
            },
            resource: Resource {
                kind: huge.clone(),
                name: huge.clone(),
            },
            action: huge.clone(),
            outcome: Outcome::Error,
            details: Map::new(),
            source_ip: Some(huge.clone()),
            request_id: Some(huge.clone()),
            trace_id: Some(huge),
        };
        encode(&e);
    }
}
