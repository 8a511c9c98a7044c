//! The hash chain (SPEC §7): every record carries `prevHash`, the previous record's `hash`
//! (the first one [`GENESIS`]), and `hash`, the SHA-256 of the record's canonical form:
//! the record as a JSON object *without* its `hash` member (with `prevHash`), serialized by
//! the JSON Canonicalization Scheme (RFC 8785: members sorted by their UTF-16 code units,
//! no insignificant whitespace, ECMAScript number and string forms), written
//! `sha256:` + 64 lowercase hex digits. Whoever has the log can check it with any RFC 8785
//! implementation and any SHA-256; see the crate's README.
//!
//! An edit of a record changes its hash; a record removed, inserted or moved breaks the
//! link of the record after it; seqs must follow one another. What the chain alone cannot
//! show is a cut of the newest records, or a whole log rewritten with a fresh chain: that
//! takes a copy of a recent hash kept elsewhere (signed checkpoints).

use std::io::BufRead;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::AuditError;

/// `prevHash` of the first record.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Length of a `hash` or `prevHash` value.
pub(crate) const HASH_LEN: usize = GENESIS.len();

/// The hash of a record given as anything that serializes to it without its `hash`.
pub(crate) fn hash_of(record: &impl Serialize) -> Result<String, AuditError> {
    Ok(format_hash(&Sha256::digest(canonical(record)?)))
}

/// [`hash_of`] for a record already parsed (no copy of it is made).
fn hash_of_map(record: &serde_json::Map<String, Value>) -> Result<String, AuditError> {
    Ok(format_hash(&Sha256::digest(canonical_map(record)?)))
}

/// The record's RFC 8785 form.
///
/// `serde_json_canonicalizer` is the reference here, but it takes about 5 µs for an event
/// (15 times serde_json's time), which alone would cap appends near 200k/s. For what
/// spawn writes — objects whose member names are ASCII, strings, integers within ±2^53,
/// booleans, null — RFC 8785 is exactly serde_json's compact output with the members of
/// every object sorted (serde_json escapes `"`, `\` and the control characters the same
/// way, lowercase hex included; for ASCII names byte order is UTF-16 order; such integers
/// print the same as doubles). That path is taken when the whole record is of that kind,
/// and the reference otherwise (decimals such as `durationMs`, other names, larger
/// numbers); a unit test holds the two to the same bytes over hostile values.
pub fn canonical(record: &impl Serialize) -> Result<Vec<u8>, AuditError> {
    match serde_json::to_value(record).map_err(AuditError::Encode)? {
        Value::Object(m) => canonical_map(&m),
        v if plain(&v) => {
            let mut out = Vec::with_capacity(64);
            write_sorted(&v, &mut out);
            Ok(out)
        }
        v => reference(&v),
    }
}

/// [`canonical`] of an object.
fn canonical_map(m: &serde_json::Map<String, Value>) -> Result<Vec<u8>, AuditError> {
    if m.iter().all(|(k, v)| k.is_ascii() && plain(v)) {
        let mut out = Vec::with_capacity(1024);
        write_sorted_map(m, &mut out);
        Ok(out)
    } else {
        reference(m)
    }
}

/// The reference RFC 8785 serializer.
fn reference(v: &impl Serialize) -> Result<Vec<u8>, AuditError> {
    serde_json_canonicalizer::to_vec(v)
        .map_err(|e| AuditError::Encode(serde_json::Error::io(std::io::Error::other(e))))
}

/// Whether `v` is all of the kind whose RFC 8785 form [`write_sorted`] writes.
fn plain(v: &Value) -> bool {
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => {
            n.as_u64().is_some_and(|u| u <= EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT)
        }
        Value::Array(a) => a.iter().all(plain),
        Value::Object(m) => m.iter().all(|(k, v)| k.is_ascii() && plain(v)),
    }
}

/// serde_json's compact form of `v` with every object's members sorted by name.
fn write_sorted(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => write_sorted_map(m, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(v, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// [`write_sorted`] of an object.
fn write_sorted_map(m: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<(&String, &Value)> = m.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string or a scalar into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_sorted(v, out);
    }
    out.push(b'}');
}

fn format_hash(digest: &[u8]) -> String {
    format!("sha256:{}", hex(digest))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first problem found, at the record whose seq is `seq` (or, for a line that is not
/// a record, the seq after the last good one), on line `line` (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub seq: u64,
    pub line: u64,
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// Records checked (up to the first problem).
    pub records: u64,
    /// The first record's seq and `prevHash`: 1 and [`GENESIS`] for a whole log; an export
    /// of a later range starts where it starts, anchored at the `prevHash` it gives.
    pub first_seq: Option<u64>,
    pub anchor: Option<String>,
    /// The last good record's seq and hash.
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// Lines that were not records and that the chain runs across unbroken: what a crash
    /// mid-write leaves (a record destroyed in its place would break the next link).
    pub torn_lines: u64,
    /// The first problem, if any.
    pub broken: Option<Broken>,
}

impl Verified {
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks the chain of the log (or an export) read from `input`: every record's hash
/// against its content, its `prevHash` against the record before, its seq following the
/// one before. `whole`: the log must start at seq 1 with [`GENESIS`] (a log file), not
/// anywhere (an export of a range).
pub fn verify(input: impl BufRead, whole: bool) -> Result<Verified, std::io::Error> {
    verify_with(input, whole, |_, _| {})
}

/// [`verify`], calling `each(seq, hash)` for every record found good, in order (to build
/// the log's Merkle tree on the way: see `checkpoint`).
pub fn verify_with(
    input: impl BufRead,
    whole: bool,
    mut each: impl FnMut(u64, &str),
) -> Result<Verified, std::io::Error> {
    let mut v = Verified {
        records: 0,
        first_seq: None,
        anchor: None,
        last_seq: None,
        last_hash: None,
        torn_lines: 0,
        broken: None,
    };
    let mut last: Option<(u64, String)> = None;
    for (line_no, line) in (1u64..).zip(input.split(b'\n')) {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(&line) else {
            // Not a record: a line torn by a crash, or a record destroyed; the next link
            // tells which.
            v.torn_lines += 1;
            continue;
        };
        match check(record, last.as_ref(), whole) {
            Ok((seq, prev, hash)) => {
                if last.is_none() {
                    v.first_seq = Some(seq);
                    v.anchor = Some(prev);
                }
                v.records += 1;
                each(seq, &hash);
                last = Some((seq, hash));
            }
            Err((seq, reason)) => {
                let seq = seq.unwrap_or_else(|| last.as_ref().map_or(1, |l| l.0.saturating_add(1)));
                v.broken = Some(Broken {
                    seq,
                    line: line_no,
                    reason,
                });
                break;
            }
        }
    }
    if v.records == 0 && v.torn_lines > 0 && v.broken.is_none() {
        // Lines, none a record: not an empty log, and nothing the chain can vouch for.
        v.broken = Some(Broken {
            seq: 1,
            line: 1,
            reason: format!("none of its {} line(s) is a record", v.torn_lines),
        });
    }
    (v.last_seq, v.last_hash) = match last {
        Some((s, h)) => (Some(s), Some(h)),
        None => (None, None),
    };
    Ok(v)
}

/// Checks one record against the one before (`last`: its seq and hash); returns its seq,
/// `prevHash` and hash, or the seq (when it has one) and what is wrong.
fn check(
    mut record: serde_json::Map<String, Value>,
    last: Option<&(u64, String)>,
    whole: bool,
) -> Result<(u64, String, String), (Option<u64>, String)> {
    let Some(seq) = record.get("seq").and_then(Value::as_u64) else {
        return Err((None, "a record without a seq".into()));
    };
    let bad = |reason: String| Err((Some(seq), reason));
    let hash = match record.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return bad("it has no hash: it is not part of the chain".into()),
    };
    let Some(prev) = record
        .get("prevHash")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return bad("it has no prevHash: it is not part of the chain".into());
    };
    match last {
        None if whole && seq != 1 => {
            return bad(format!(
                "the log starts at seq {seq}, not 1: the records before it were removed"
            ))
        }
        None if whole && prev != GENESIS => {
            return bad(
                "the first record's prevHash is not the genesis hash: the records before it were removed"
                    .into(),
            )
        }
        None => {}
        Some((last_seq, _)) if Some(seq) != last_seq.checked_add(1) => {
            return bad(if seq <= *last_seq {
                format!("seq {seq} follows seq {last_seq}: records were reordered or repeated")
            } else {
                format!(
                    "seq {seq} follows seq {last_seq}: seq {} is missing",
                    last_seq.saturating_add(1)
                )
            })
        }
        Some((last_seq, last_hash)) if prev != *last_hash => {
            return bad(format!(
                "its prevHash is not seq {last_seq}'s hash: a record before it was removed, inserted or changed"
            ))
        }
        Some(_) => {}
    }
    match hash_of_map(&record) {
        Ok(computed) if computed == hash => Ok((seq, prev, hash)),
        Ok(_) => bad("its hash does not match its content: the record was changed".into()),
        Err(e) => bad(format!("it cannot be put in canonical form: {e}")),
    }
}

#[cfg(test)]
mod tests;
