//! RFC 8785 (JSON Canonicalization Scheme) in both directions: writing a value's canonical
//! form ([`canonical`]), and recognizing a line that already *is* its own canonical form
//! ([`scan`]), so the chain can hash a stored line as it is instead of parsing and
//! re-serializing it.
//!
//! Both are hand-written because the reference, `serde_json_canonicalizer`, is slow (about
//! 5 µs an event) and has no validator; both are held to it: the writer by a unit test and
//! the `audit_chain` fuzz target, the validator — which reads untrusted bytes — by a table
//! of hostile lines (`canonical/tests.rs`) and the `canonical_line` fuzz target
//! (`fuzz/properties/canonical_line.rs`): whatever it accepts, the reference writes back
//! to the byte.

use std::io::{self, Write};
use std::ops::Range;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::AuditError;

/// Integers up to this magnitude are exact as doubles, so RFC 8785 (which writes numbers as
/// ECMAScript writes doubles) writes them as their plain digits.
pub(crate) const MAX_EXACT: u64 = 1 << 53;

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
            write_sorted(&v, &mut out).map_err(encode_error)?;
            Ok(out)
        }
        v => reference(&v),
    }
}

/// [`canonical`] of an object.
pub(crate) fn canonical_map(m: &Map<String, Value>) -> Result<Vec<u8>, AuditError> {
    if plain_map(m) {
        let mut out = Vec::with_capacity(1024);
        write_sorted_map(m, &mut out).map_err(encode_error)?;
        Ok(out)
    } else {
        reference(m)
    }
}

/// Writes the RFC 8785 form of the object `m` to `w`, and returns true; or, when that form
/// would change a number of `m` (an integer past ±2^53, which RFC 8785 writes as the
/// nearest double), writes `m` as serde_json does, exactly, and returns false.
pub(crate) fn write_canonical_map(m: &Map<String, Value>, w: &mut impl Write) -> io::Result<bool> {
    if plain_map(m) {
        write_sorted_map(m, w)?;
        Ok(true)
    } else if m.values().all(exact) {
        w.write_all(&reference(m).map_err(io::Error::other)?)?;
        Ok(true)
    } else {
        serde_json::to_writer(w, m).map_err(io::Error::from)?;
        Ok(false)
    }
}

/// Whether RFC 8785 writes every number of `v` as the same number: every integer is
/// within ±2^53 (decimals are doubles already, and written as the same double).
fn exact(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64() || plain(v),
        Value::Array(a) => a.iter().all(exact),
        Value::Object(m) => m.values().all(exact),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// The reference RFC 8785 serializer.
fn reference(v: &impl Serialize) -> Result<Vec<u8>, AuditError> {
    serde_json_canonicalizer::to_vec(v).map_err(|e| encode_error(io::Error::other(e)))
}

fn encode_error(e: io::Error) -> AuditError {
    AuditError::Encode(serde_json::Error::io(e))
}

/// Whether `v` is all of the kind whose RFC 8785 form [`write_sorted`] writes.
fn plain(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => {
            n.as_u64().is_some_and(|u| u <= MAX_EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_EXACT)
        }
        Value::Array(a) => a.iter().all(plain),
        Value::Object(m) => plain_map(m),
    }
}

fn plain_map(m: &Map<String, Value>) -> bool {
    m.iter().all(|(k, v)| k.is_ascii() && plain(v))
}

/// serde_json's compact form of `v` with every object's members sorted by name.
fn write_sorted(v: &Value, w: &mut impl Write) -> io::Result<()> {
    match v {
        Value::Object(m) => write_sorted_map(m, w),
        Value::Array(a) => {
            w.write_all(b"[")?;
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_sorted(v, w)?;
            }
            w.write_all(b"]")
        }
        scalar => serde_json::to_writer(w, scalar).map_err(io::Error::from),
    }
}

/// [`write_sorted`] of an object.
fn write_sorted_map(m: &Map<String, Value>, w: &mut impl Write) -> io::Result<()> {
    let mut members: Vec<(&String, &Value)> = m.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    w.write_all(b"{")?;
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write_str(k, w)?;
        w.write_all(b":")?;
        write_sorted(v, w)?;
    }
    w.write_all(b"}")
}

/// A string in RFC 8785 form: serde_json's escapes (`\"`, `\\`, `\b` `\f` `\n` `\r` `\t`,
/// `\u00xx` in lowercase for the other controls, everything else as is) are RFC 8785's.
pub(crate) fn write_str(s: &str, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer(w, s).map_err(io::Error::from)
}

/// Deepest nesting [`scan`] follows (the line's object is level 1); a deeper line is not
/// recognized and takes the reference path. Far below serde_json's recursion limit (128),
/// so whatever `scan` accepts, serde_json parses.
pub const MAX_DEPTH: usize = 32;

/// A line found to be exactly the RFC 8785 form of itself (a JSON object), with what the
/// chain needs from it. Built only by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalLine<'a> {
    line: &'a [u8],
    /// The top-level `seq`, when it is an integer from 0 to 2^53.
    pub seq: Option<u64>,
    /// The top-level `prevHash`, when it is a string without escapes (what it says is then
    /// exactly the bytes between its quotes).
    pub prev_hash: Option<&'a str>,
    /// The top-level `hash`, on the same terms.
    pub hash: Option<&'a str>,
    /// The bytes of the top-level `hash` member with one comma beside it (the one before,
    /// unless it is the first member), whatever its value.
    hash_member: Option<Range<usize>>,
}

impl<'a> CanonicalLine<'a> {
    /// Where the top-level `hash` member is, with the comma removed with it.
    pub fn hash_member(&self) -> Option<Range<usize>> {
        self.hash_member.clone()
    }

    /// The line without its `hash` member, in two parts: the RFC 8785 form of the record
    /// without `hash` — what the chain hashes. `None` when there is no `hash` member.
    pub fn without_hash(&self) -> Option<(&'a [u8], &'a [u8])> {
        let m = self.hash_member.clone()?;
        Some((self.line.get(..m.start)?, self.line.get(m.end..)?))
    }
}

/// Whether `line` is exactly the RFC 8785 form of the JSON object it holds, in one pass
/// and without allocating; if so, its chain members.
///
/// Accepted: no whitespace; members of every object in strictly increasing order of the
/// UTF-16 code units of their names (so no name twice); strings with exactly RFC 8785's
/// escapes (`\"` `\\` `\b` `\f` `\n` `\r` `\t`, `\u00xx` in lowercase for the other
/// controls) and every other character as valid UTF-8; numbers only as the integers from
/// −2^53 to 2^53 in their plain form (no `-0`, no leading zero); `true`, `false`, `null`;
/// nesting up to [`MAX_DEPTH`]. Anything else — fractions, exponents, larger integers,
/// which RFC 8785 writes in ECMAScript's double form — is refused, not judged: the caller
/// then takes the reference path.
pub fn scan(line: &[u8]) -> Option<CanonicalLine<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut s = Scanner {
        b: line,
        text,
        i: 0,
        found: CanonicalLine {
            line,
            seq: None,
            prev_hash: None,
            hash: None,
            hash_member: None,
        },
    };
    if s.b.first() != Some(&b'{') {
        return None;
    }
    s.object(1, true)?;
    (s.i == line.len()).then_some(s.found)
}

struct Scanner<'a> {
    b: &'a [u8],
    /// `b`, known to be UTF-8.
    text: &'a str,
    /// The next byte to read.
    i: usize,
    found: CanonicalLine<'a>,
}

/// A string's content (between its quotes).
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    /// All ASCII, no escape: its bytes are its characters, and its UTF-16 order byte order.
    plain: bool,
    escaped: bool,
}

/// What [`Scanner::value`] read, as far as the chain members need to know.
enum Kind {
    Uint(u64),
    Str(Str),
    Other,
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn value(&mut self, depth: usize) -> Option<Kind> {
        match *self.b.get(self.i)? {
            b'{' => self.object(depth + 1, false).map(|()| Kind::Other),
            b'[' => self.array(depth + 1).map(|()| Kind::Other),
            b'"' => self.string().map(Kind::Str),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The object at `self.i` (its `{`), at nesting level `depth`; `top`: the line's.
    fn object(&mut self, depth: usize, top: bool) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(());
        }
        let mut last: Option<Str> = None;
        loop {
            let start = self.i;
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let name = self.string()?;
            if let Some(last) = last {
                if !self.before(last, name) {
                    return None;
                }
            }
            last = Some(name);
            if self.next()? != b':' {
                return None;
            }
            let value = self.value(depth)?;
            if top {
                self.keep(name, value, start);
            }
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Notes a top-level member the chain needs: `name` and its value, which began at
    /// `start` (the name's quote) and ends at `self.i`.
    fn keep(&mut self, name: Str, value: Kind, start: usize) {
        let text = self.text;
        let raw = |s: Str| (!s.escaped).then(|| text.get(s.start..s.end)).flatten();
        match (text.get(name.start..name.end), value) {
            (Some("seq"), Kind::Uint(n)) => self.found.seq = Some(n),
            (Some("prevHash"), Kind::Str(s)) => self.found.prev_hash = raw(s),
            (Some("hash"), value) => {
                if let Kind::Str(s) = value {
                    self.found.hash = raw(s);
                }
                let end = self.i;
                self.found.hash_member = Some(if start > 1 {
                    // `,"hash":…`: the comma before it is there.
                    start - 1..end
                } else if self.b.get(end) == Some(&b',') {
                    // The first member: `"hash":…,`.
                    start..end + 1
                } else {
                    // The only one.
                    start..end
                });
            }
            _ => {}
        }
    }

    /// Whether the name `a` comes strictly before `b` in UTF-16 code-unit order.
    fn before(&self, a: Str, b: Str) -> bool {
        let (Some(x), Some(y)) = (self.text.get(a.start..a.end), self.text.get(b.start..b.end))
        else {
            return false;
        };
        if a.plain && b.plain {
            x < y
        } else {
            Utf16::new(x).lt(Utf16::new(y))
        }
    }

    /// The string at `self.i` (its opening quote).
    fn string(&mut self) -> Option<Str> {
        let start = self.i + 1;
        let mut i = start;
        let mut high = 0u8;
        let mut escaped = false;
        loop {
            i = skip_printable_ascii(self.b, i);
            let c = *self.b.get(i)?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += escape_len(self.b.get(i..)?)?;
                }
                0..=0x1f => return None,
                _ => {
                    high |= c;
                    i += 1;
                }
            }
        }
        self.i = i + 1;
        Some(Str {
            start,
            end: i,
            plain: high < 0x80 && !escaped,
            escaped,
        })
    }

    fn literal(&mut self, word: &[u8]) -> Option<Kind> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            Kind::Other
        })
    }

    /// An integer in RFC 8785's form (within ±2^53); refuses any other number.
    fn number(&mut self) -> Option<Kind> {
        let negative = self.b.get(self.i) == Some(&b'-');
        let mut i = self.i + usize::from(negative);
        let n = match *self.b.get(i)? {
            // `-0` is written `0`; a digit after `0` (a leading zero) ends the value here
            // and fails where a `,`, `}` or `]` must follow.
            b'0' if !negative => {
                i += 1;
                0
            }
            first @ b'1'..=b'9' => {
                let mut n = u64::from(first - b'0');
                i += 1;
                while let Some(&d @ b'0'..=b'9') = self.b.get(i) {
                    n = n * 10 + u64::from(d - b'0');
                    if n > MAX_EXACT {
                        return None;
                    }
                    i += 1;
                }
                n
            }
            _ => return None,
        };
        // A fraction or an exponent follows: not an integer's form.
        if matches!(self.b.get(i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i = i;
        Some(if negative { Kind::Other } else { Kind::Uint(n) })
    }
}

/// The index of the first byte of `b` from `i` on that is not printable ASCII other than
/// `"` and `\` (that is, a byte [`Scanner::string`] must look at), or one near it: eight
/// bytes are checked at a time, and a word holding such a byte is left whole.
fn skip_printable_ascii(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `w` is zero (exact as to whether, not which).
    fn any_zero(w: u64) -> bool {
        w.wrapping_sub(ONES) & !w & HIGHS != 0
    }
    while let Some(word) = b.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let w = u64::from_ne_bytes(word);
        // A byte under 0x20 (w's bytes all under 0x80, or the first test already holds).
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        if w & HIGHS != 0
            || control
            || any_zero(w ^ (ONES * u64::from(b'"')))
            || any_zero(w ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        i += 8;
    }
    i
}

/// The length of the escape `e` starts with (`e[0]` is the backslash), if it is one RFC
/// 8785 writes.
fn escape_len(e: &[u8]) -> Option<usize> {
    match *e.get(1)? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let [b'0', b'0', hi, lo] = *e.get(2..6)? else {
                return None;
            };
            let hi = match hi {
                b'0' => 0,
                b'1' => 16,
                _ => return None,
            };
            let lo = match lo {
                b'0'..=b'9' => lo - b'0',
                b'a'..=b'f' => lo - b'a' + 10,
                _ => return None,
            };
            // These five have short forms, which RFC 8785 uses.
            (!matches!(hi + lo, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(6)
        }
        _ => None,
    }
}

/// The UTF-16 code units of a string's content as written (its escapes being RFC 8785's,
/// as [`scan`] checked).
struct Utf16<'a> {
    chars: std::str::Chars<'a>,
    low: Option<u16>,
}

impl<'a> Utf16<'a> {
    fn new(s: &'a str) -> Self {
        Utf16 {
            chars: s.chars(),
            low: None,
        }
    }
}

impl Iterator for Utf16<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if let Some(low) = self.low.take() {
            return Some(low);
        }
        let mut c = self.chars.next()?;
        if c == '\\' {
            c = match self.chars.next()? {
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let rest = self.chars.as_str();
                    let code = u32::from_str_radix(rest.get(..4)?, 16).ok()?;
                    self.chars = rest.get(4..)?.chars();
                    char::from_u32(code)?
                }
                other => other,
            };
        }
        let mut units = [0u16; 2];
        let units = c.encode_utf16(&mut units);
        self.low = units.get(1).copied();
        units.first().copied()
    }
}

#[cfg(test)]
mod tests;
