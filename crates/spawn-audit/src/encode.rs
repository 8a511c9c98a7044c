//! Turning an [`Event`] into one stored line, within a size cap.

use std::io::{self, Write};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::{write_canonical_map, write_str, MAX_EXACT};
use crate::chain::{hex, GENESIS, HASH_LEN};
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

/// Appends the event's line, newline included, to `out`, chained to `prev_hash`; returns
/// the line's hash (the next line's `prevHash`).
///
/// The line is the RFC 8785 canonical form of the whole record, `hash` included (see
/// [`write_line`]), so the line without its `hash` member is, to the byte, what the hash
/// is over: one serialization and one SHA-256 pass over it.
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
    if let Some(hash) = write_line(seq, timestamp, event, prev_hash, out)? {
        return Ok(hash);
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
    if let Some(hash) = write_line(seq, timestamp, &small, prev_hash, out)? {
        return Ok(hash);
    }
    cap_strings(&mut small);
    if let Some(hash) = write_line(seq, timestamp, &small, prev_hash, out)? {
        return Ok(hash);
    }
    Err(AuditError::TooLarge {
        limit: MAX_EVENT_BYTES,
    })
}

/// Appends the record's line and its newline to `out` and returns its hash, or leaves
/// `out` as it was and returns `None` if the line would exceed [`MAX_EVENT_BYTES`].
/// Serialization stops as soon as the cap is passed, so a huge event is never copied whole.
///
/// The line is written in RFC 8785 form — its members, and those of `principal`,
/// `resource` and `details`, in the order of their names' UTF-16 code units (all ASCII
/// here, so byte order), strings escaped as RFC 8785 escapes them — with `hash` in its
/// place among them holding a placeholder; the hash is then that of the line without
/// `,"hash":"…"`, and is written over the placeholder. The member names below are
/// [`Event`]'s and [`crate::Record`]'s serde names (a test holds them to the same record).
///
/// One exception: an integer past ±2^53 (a seq, or in details), which RFC 8785 would
/// write as the nearest double, is written exactly, as before; that line is not in
/// canonical form, and its hash is computed as the verifier does for such a line (parsed,
/// canonicalized). spawn writes no such numbers.
fn write_line(
    seq: u64,
    timestamp: &str,
    event: &Event,
    prev_hash: &str,
    out: &mut Vec<u8>,
) -> Result<Option<String>, AuditError> {
    let start = out.len();
    let mut w = CappedWriter {
        out: &mut *out,
        room: MAX_EVENT_BYTES,
        overflowed: false,
    };
    let result = write_members(&mut w, seq, timestamp, event, prev_hash);
    let overflowed = w.overflowed;
    let written = match result {
        Ok(written) => written,
        Err(_) if overflowed => {
            out.truncate(start);
            return Ok(None);
        }
        Err(e) => {
            out.truncate(start);
            return Err(AuditError::Encode(serde_json::Error::io(e)));
        }
    };
    let (hash_at, canonical) = written;
    // `hash_at` is where `,"hash":"` starts; the value and its closing quote follow it.
    let member_end = hash_at + HASH_MEMBER.len() + HASH_LEN + 1;
    let hash = if canonical {
        let mut digest = Sha256::new();
        digest.update(&out[start..hash_at]);
        digest.update(&out[member_end..]);
        format!("sha256:{}", hex(&digest.finalize()))
    } else {
        // A number RFC 8785 would change (see `write_canonical_map`) is kept as it is in
        // the line; the hash is over the canonical form, as the verifier computes it.
        let without = [&out[start..hash_at], &out[member_end..]].concat();
        let record: Map<String, Value> =
            serde_json::from_slice(&without).map_err(AuditError::Encode)?;
        crate::chain::hash_of_map(&record)?
    };
    let value = hash_at + HASH_MEMBER.len();
    out[value..value + HASH_LEN].copy_from_slice(hash.as_bytes());
    out.push(b'\n');
    Ok(Some(hash))
}

/// What the `hash` member starts with (after the member before it).
const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// Writes the record's members in RFC 8785 order (see [`write_line`]); returns the offset
/// in `w.out` of the `hash` member (its comma), and whether the line is in RFC 8785 form
/// throughout (not when a number is kept exactly: see [`write_canonical_map`]).
fn write_members(
    w: &mut CappedWriter<'_>,
    seq: u64,
    timestamp: &str,
    event: &Event,
    prev_hash: &str,
) -> io::Result<(usize, bool)> {
    let Event {
        event_type,
        principal,
        resource,
        action,
        outcome,
        details,
        source_ip,
        request_id,
        trace_id,
    } = event;
    w.write_all(b"{\"action\":")?;
    write_str(action, w)?;
    w.write_all(b",\"details\":")?;
    let canonical = write_canonical_map(details, w)? && seq <= MAX_EXACT;
    w.write_all(b",\"eventType\":")?;
    write_str(event_type.as_str(), w)?;
    let hash_at = w.out.len();
    w.write_all(HASH_MEMBER)?;
    w.write_all(GENESIS.as_bytes())?;
    w.write_all(b"\",\"outcome\":")?;
    write_str(outcome.as_str(), w)?;
    w.write_all(b",\"prevHash\":")?;
    write_str(prev_hash, w)?;
    w.write_all(b",\"principal\":{\"id\":")?;
    write_str(&principal.id, w)?;
    if let Some(name) = &principal.name {
        w.write_all(b",\"name\":")?;
        write_str(name, w)?;
    }
    w.write_all(b",\"type\":")?;
    write_str(&principal.kind, w)?;
    w.write_all(b"}")?;
    if let Some(id) = request_id {
        w.write_all(b",\"requestId\":")?;
        write_str(id, w)?;
    }
    w.write_all(b",\"resource\":{\"name\":")?;
    write_str(&resource.name, w)?;
    w.write_all(b",\"type\":")?;
    write_str(&resource.kind, w)?;
    write!(w, "}},\"seq\":{seq}")?;
    if let Some(ip) = source_ip {
        w.write_all(b",\"sourceIP\":")?;
        write_str(ip, w)?;
    }
    w.write_all(b",\"timestamp\":")?;
    write_str(timestamp, w)?;
    if let Some(id) = trace_id {
        w.write_all(b",\"traceId\":")?;
        write_str(id, w)?;
    }
    w.write_all(b"}")?;
    Ok((hash_at, canonical))
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

    /// The line is the RFC 8785 form of the very record serde writes for it (every member,
    /// under the same names), `hash` included; without its hash member, what it is over.
    #[test]
    fn the_line_is_the_records_canonical_form() {
        let mut full = event()
            .with_detail(
                "cmd",
                json!(["sh", "-c", "echo \"}\n{\\\"seq\\\": 1}\u{1b}[2J\u{7f}"]),
            )
            .with_detail(
                "nested",
                json!({"z": 1, "a": [null, true, -5, {"y": "é", "b": {}}]}),
            )
            .with_detail("Upper", "\u{2028}\u{1f600}");
        full.source_ip = Some("10.0.0.1".into());
        full.request_id = Some("req_1".into());
        full.trace_id = Some("tr_1".into());
        let mut decimals = event()
            .with_detail("durationMs", 7.610874)
            .with_detail("e", 1e21);
        decimals.principal.name = None;
        let non_ascii_names = event()
            .with_detail("é", 1)
            .with_detail("\u{e000}", 2)
            .with_detail("\u{10000}", 3);
        for (e, fast) in [
            (full, true),
            (decimals, false),
            (non_ascii_names, true),
            (event(), true),
        ] {
            let (line, record) = encode(&e);
            let body = &line[..line.len() - 1];
            let value: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(value, serde_json::to_value(&record).unwrap());
            assert_eq!(record.event, e);
            assert_eq!(
                String::from_utf8_lossy(&serde_json_canonicalizer::to_vec(&value).unwrap()),
                String::from_utf8_lossy(body)
            );
            // Taken by the chain's fast path unless a number is not an integer.
            let scanned = crate::canonical::scan(body);
            assert_eq!(scanned.is_some(), fast, "{}", String::from_utf8_lossy(body));
            if let Some(c) = scanned {
                assert_eq!(c.seq, Some(7));
                assert_eq!(c.hash, record.hash.as_deref());
                assert_eq!(c.prev_hash, Some(GENESIS));
            }
        }
    }

    /// An integer past 2^53 is kept as it is (RFC 8785 would write the nearest double): the
    /// line is then not in canonical form, and its hash is still that of the canonical form.
    #[test]
    fn integers_past_2_53_are_kept_exactly() {
        let e = event()
            .with_detail("big", u64::MAX)
            .with_detail("n", -(1i64 << 60));
        let (line, record) = encode(&e);
        assert_eq!(record.event, e);
        assert!(String::from_utf8_lossy(&line).contains("18446744073709551615"));
        assert!(crate::canonical::scan(&line[..line.len() - 1]).is_none());
        // And a seq past 2^53 (encode() checked the hash of each).
        let mut out = Vec::new();
        let hash = encode_line(u64::MAX, TS, &event(), GENESIS, &mut out).unwrap();
        let v = crate::chain::verify(&out[..], false).unwrap();
        assert!(v.intact(), "{v:?}");
        assert_eq!(v.last_hash, Some(hash));
        assert!(String::from_utf8_lossy(&out).contains("\"seq\":18446744073709551615"));
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
