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

use std::borrow::Cow;
use std::io::BufRead;
use std::ops::Range;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::canonical::canonical;
use crate::canonical::canonical_map;
use crate::error::AuditError;

/// `prevHash` of the first record.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Length of a `hash` or `prevHash` value.
pub(crate) const HASH_LEN: usize = GENESIS.len();

/// The hash of a record given as anything that serializes to it without its `hash` (the
/// log's writer computes it as it writes the line: see `encode`).
#[cfg(test)]
pub(crate) fn hash_of(record: &impl Serialize) -> Result<String, AuditError> {
    Ok(format_hash(&Sha256::digest(canonical(record)?)))
}

/// [`hash_of`] for a record already parsed (no copy of it is made).
pub(crate) fn hash_of_map(record: &serde_json::Map<String, Value>) -> Result<String, AuditError> {
    Ok(format_hash(&Sha256::digest(canonical_map(record)?)))
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

/// Bytes read from the input at a time (more only to hold a longer line): with
/// [`BATCH_LINES`], what verification holds in memory, whatever the log's size.
const CHUNK: usize = 4 << 20;

/// Lines checked in one batch (spread over the threads): bounds the per-line results held
/// when a chunk is mostly very short lines.
const BATCH_LINES: usize = 16 * 1024;

/// A batch under this many bytes is checked on the calling thread: starting threads would
/// cost more than they save.
const PARALLEL_MIN: usize = 256 * 1024;

/// Most threads one verification uses.
const MAX_THREADS: usize = 8;

/// Checks the chain of the log (or an export) read from `input`: every record's hash
/// against its content, its `prevHash` against the record before, its seq following the
/// one before. `whole`: the log must start at seq 1 with [`GENESIS`] (a log file), not
/// anywhere (an export of a range).
pub fn verify(input: impl BufRead, whole: bool) -> Result<Verified, std::io::Error> {
    verify_with(input, whole, |_, _| {})
}

/// [`verify`], calling `each(seq, hash)` for every record found good, in order (to build
/// the log's Merkle tree on the way: see `checkpoint`).
///
/// The input is read in chunks of 4 MiB (more only for a longer line). A line's own hash
/// depends on that line alone, so the lines of a chunk are hashed on a few threads; then
/// the links (seqs and `prevHash`) are checked in order, and `each` called, on this one.
/// A line in canonical
/// form (what spawn writes: see [`crate::canonical::scan`]) is hashed as it stands, minus
/// its `hash` member; any other line is parsed and canonicalized, as [`verify_reference`]
/// does every line. The result is [`verify_reference`]'s, to the line and the reason.
pub fn verify_with(
    mut input: impl BufRead,
    whole: bool,
    mut each: impl FnMut(u64, &str),
) -> Result<Verified, std::io::Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_THREADS);
    let mut chain = Chain::new(whole);
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    let mut eof = false;
    let mut line_no = 0u64;
    let mut lines: Vec<(u64, Range<usize>)> = Vec::new();
    loop {
        let mut error = None;
        while filled < buf.len() && !eof {
            match input.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // The lines read whole: up to the last newline, or everything at the end of input.
        let end = if eof {
            filled
        } else {
            memchr::memrchr(b'\n', &buf[..filled]).map_or(0, |i| i + 1)
        };
        if end == 0 && error.is_none() && !eof {
            // A line longer than the buffer: make room for the rest of it.
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        let region = &buf[..end];
        // A newline ends a line; it does not start an empty one after it.
        let body = region.strip_suffix(b"\n").unwrap_or(region);
        let mut at = 0;
        let mut more = !region.is_empty();
        while more {
            lines.clear();
            while more && lines.len() < BATCH_LINES {
                let stop = memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |i| at + i);
                line_no += 1;
                if stop > at {
                    lines.push((line_no, at..stop));
                }
                at = stop + 1;
                more = stop < body.len();
            }
            let found = examine_all(region, &lines, threads);
            for ((line_no, _), found) in lines.iter().zip(found) {
                if !chain.add(found, *line_no, &mut each) {
                    return Ok(chain.finish());
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if eof {
            return Ok(chain.finish());
        }
        buf.copy_within(end..filled, 0);
        filled -= end;
    }
}

/// [`verify`] as spawn did it before lines were written in canonical form, and the
/// specification [`verify_with`] is held to (by the tests and the `canonical_line` fuzz
/// target): every line read in turn, parsed, its `hash` member removed, the rest
/// canonicalized by [`canonical`] and hashed. Several times slower.
pub fn verify_reference(input: impl BufRead, whole: bool) -> Result<Verified, std::io::Error> {
    let mut chain = Chain::new(whole);
    for (line_no, line) in (1u64..).zip(input.split(b'\n')) {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        if !chain.add(examine_parsed(&line), line_no, &mut |_, _| {}) {
            break;
        }
    }
    Ok(chain.finish())
}

/// What one line holds, found without looking at any other line.
enum Found<'a> {
    /// Not a record (not a JSON object): a line torn by a crash, or a record destroyed;
    /// the next link tells which.
    NotRecord,
    /// A record without what the chain needs: its seq (when it has one), what is wrong.
    Bad(Option<u64>, String),
    Record {
        seq: u64,
        prev: Cow<'a, str>,
        hash: Cow<'a, str>,
        content: Content,
    },
}

/// Whether a record's hash is that of its content.
enum Content {
    Matches,
    Differs,
    /// Its canonical form cannot be written (why).
    Unencodable(String),
}

/// [`examine`] of each line (given as its number and its bytes in `buf`), in order, on up
/// to `threads` threads.
fn examine_all<'a>(buf: &'a [u8], lines: &[(u64, Range<usize>)], threads: usize) -> Vec<Found<'a>> {
    let run = |part: &[(u64, Range<usize>)]| -> Vec<Found<'a>> {
        part.iter()
            .map(|(_, r)| examine(buf.get(r.clone()).unwrap_or_default()))
            .collect()
    };
    let (Some((_, first)), Some((_, last))) = (lines.first(), lines.last()) else {
        return Vec::new();
    };
    let bytes = last.end - first.start;
    if threads < 2 || bytes < PARALLEL_MIN {
        return run(lines);
    }
    // Parts of about equal bytes, each a run of whole lines.
    let mut parts = Vec::with_capacity(threads);
    let mut from = 0;
    for k in 1..=threads {
        let to = if k == threads {
            lines.len()
        } else {
            let target = first.start + bytes / threads * k;
            lines.partition_point(|(_, r)| r.start < target).max(from)
        };
        parts.push(&lines[from..to]);
        from = to;
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = parts[1..]
            .iter()
            .map(|&part| s.spawn(move || run(part)))
            .collect();
        let mut found = run(parts[0]);
        for w in workers {
            match w.join() {
                Ok(more) => found.extend(more),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        found
    })
}

/// What `line` (non-empty, without its newline) holds. A line in canonical form with its
/// chain members is hashed as it stands; when that hash is its `hash`, the record is
/// known. Everything else — another form, or a hash that differs — is decided by
/// [`examine_parsed`].
fn examine(line: &[u8]) -> Found<'_> {
    if let Some(c) = crate::canonical::scan(line) {
        if let (Some(seq), Some(prev), Some(hash), Some((before, after))) =
            (c.seq, c.prev_hash, c.hash, c.without_hash())
        {
            let mut digest = Sha256::new();
            digest.update(before);
            digest.update(after);
            if is_hash_of(hash, &digest.finalize()) {
                return Found::Record {
                    seq,
                    prev: Cow::Borrowed(prev),
                    hash: Cow::Borrowed(hash),
                    content: Content::Matches,
                };
            }
        }
    }
    examine_parsed(line)
}

/// What `line` holds, found by parsing it and canonicalizing the record (spawn's only way
/// before lines were written in canonical form).
fn examine_parsed(line: &[u8]) -> Found<'static> {
    let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(line) else {
        return Found::NotRecord;
    };
    let Some(seq) = record.get("seq").and_then(Value::as_u64) else {
        return Found::Bad(None, "a record without a seq".into());
    };
    let hash = match record.remove("hash") {
        Some(Value::String(h)) => h,
        _ => {
            return Found::Bad(
                Some(seq),
                "it has no hash: it is not part of the chain".into(),
            )
        }
    };
    let Some(prev) = record
        .get("prevHash")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Found::Bad(
            Some(seq),
            "it has no prevHash: it is not part of the chain".into(),
        );
    };
    let content = match hash_of_map(&record) {
        Ok(computed) if computed == hash => Content::Matches,
        Ok(_) => Content::Differs,
        Err(e) => Content::Unencodable(e.to_string()),
    };
    Found::Record {
        seq,
        prev: Cow::Owned(prev),
        hash: Cow::Owned(hash),
        content,
    }
}

/// Whether `hash` is `sha256:` and the lowercase hex of `digest`.
fn is_hash_of(hash: &str, digest: &[u8]) -> bool {
    hash.len() == HASH_LEN
        && hash.strip_prefix("sha256:").is_some_and(|hex| {
            hex.as_bytes()
                .chunks_exact(2)
                .zip(digest)
                .all(|(pair, b)| pair == [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        })
}

/// The chain as checked so far, record after record in order.
struct Chain {
    whole: bool,
    v: Verified,
    /// The last good record's seq and hash.
    last: Option<(u64, String)>,
}

impl Chain {
    fn new(whole: bool) -> Chain {
        Chain {
            whole,
            v: Verified {
                records: 0,
                first_seq: None,
                anchor: None,
                last_seq: None,
                last_hash: None,
                torn_lines: 0,
                broken: None,
            },
            last: None,
        }
    }

    /// Takes the next non-empty line's findings (line `line_no`); false once the chain is
    /// broken there.
    fn add(&mut self, found: Found<'_>, line_no: u64, each: &mut impl FnMut(u64, &str)) -> bool {
        let checked = match found {
            Found::NotRecord => {
                self.v.torn_lines += 1;
                return true;
            }
            Found::Bad(seq, reason) => Err((seq, reason)),
            Found::Record {
                seq,
                prev,
                hash,
                content,
            } => link(seq, &prev, content, self.last.as_ref(), self.whole)
                .map(|()| (seq, prev, hash)),
        };
        match checked {
            Ok((seq, prev, hash)) => {
                if self.last.is_none() {
                    self.v.first_seq = Some(seq);
                    self.v.anchor = Some(prev.into_owned());
                }
                self.v.records += 1;
                each(seq, &hash);
                match &mut self.last {
                    Some((s, h)) => {
                        *s = seq;
                        h.clear();
                        h.push_str(&hash);
                    }
                    None => self.last = Some((seq, hash.into_owned())),
                }
                true
            }
            Err((seq, reason)) => {
                let seq =
                    seq.unwrap_or_else(|| self.last.as_ref().map_or(1, |l| l.0.saturating_add(1)));
                self.v.broken = Some(Broken {
                    seq,
                    line: line_no,
                    reason,
                });
                false
            }
        }
    }

    fn finish(mut self) -> Verified {
        let v = &mut self.v;
        if v.records == 0 && v.torn_lines > 0 && v.broken.is_none() {
            // Lines, none a record: not an empty log, and nothing the chain can vouch for.
            v.broken = Some(Broken {
                seq: 1,
                line: 1,
                reason: format!("none of its {} line(s) is a record", v.torn_lines),
            });
        }
        (v.last_seq, v.last_hash) = match self.last {
            Some((s, h)) => (Some(s), Some(h)),
            None => (None, None),
        };
        self.v
    }
}

/// Checks a record (its seq, `prevHash` and whether its hash is its content's) against the
/// one before (`last`: its seq and hash); the seq and what is wrong if anything.
fn link(
    seq: u64,
    prev: &str,
    content: Content,
    last: Option<&(u64, String)>,
    whole: bool,
) -> Result<(), (Option<u64>, String)> {
    let bad = |reason: String| Err((Some(seq), reason));
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
        Some((last_seq, last_hash)) if prev != last_hash => {
            return bad(format!(
                "its prevHash is not seq {last_seq}'s hash: a record before it was removed, inserted or changed"
            ))
        }
        Some(_) => {}
    }
    match content {
        Content::Matches => Ok(()),
        Content::Differs => {
            bad("its hash does not match its content: the record was changed".into())
        }
        Content::Unencodable(e) => bad(format!("it cannot be put in canonical form: {e}")),
    }
}

#[cfg(test)]
mod tests;
