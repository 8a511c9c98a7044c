//! Redaction: a granted secret's value, and the forms it is commonly written in, replaced by
//! `[REDACTED:NAME]` in a stream of bytes, however the stream is cut into chunks, in bounded
//! memory.
//!
//! For each value the redactor looks for ([`forms`]): the bytes themselves, and in ASCII
//! lowercase (a host name is folded to it); base64 and
//! base64url, padded and not, and the part of them that is the same wherever the value
//! sits inside a longer encoded text (each of the three alignments: `user:TOKEN` in a Basic
//! authorization header shows the token's bytes at another alignment); lowercase and
//! uppercase hex; URL encoding (`%XX`, uppercase and lowercase, and `+` for a space); and a
//! JSON string's escaping (as serde writes it, with `\/`, and with every non-ASCII
//! character as `\uXXXX`).
//!
//! One automaton (`aho-corasick`, leftmost-longest, non-overlapping) finds them, run only
//! where a first pass says a form could be ([`Grams`]: every form is at least `L` bytes
//! long, so any occurrence covers a whole 4-byte window at one of the positions a stride
//! of `L - 3` apart, and each such window of the text is looked up among the windows
//! of every form: one table lookup per stride, not an automaton step per byte). A stream
//! ([`Stream`]) holds back only the end of what it was given that could still begin a form
//! (the longest suffix that is a prefix of one, found by walking a second automaton of the
//! same forms over the last bytes): everything before it is final and is written at once.
//! So a stream's output is the same as [`Redactor::redact`] of its whole input, whatever
//! its chunks, and it holds at most the longest form less one byte. (A whole form that
//! ends a chunk is held too, until the next byte or the end: it could still grow into a
//! longer form, or be part of one that began earlier.)

#![deny(unsafe_code)]

mod prefetch;

use aho_corasick::automaton::{Automaton as _, StateID};
use aho_corasick::nfa::noncontiguous::NFA;
use aho_corasick::{AhoCorasick, Anchored, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Why the forms could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The automaton could not be built (too many or too long forms).
    #[error("the redaction of the granted secrets could not be prepared: {0}")]
    Build(String),
}

/// Base64 fragments (an alignment's stable middle) shorter than this are not looked for:
/// too short to be the value's, too common not to hit unrelated text.
const MIN_FRAGMENT: usize = 8;
/// Up to this many bytes of forms in all, they are searched with a full DFA.
const MAX_DFA_FORM_BYTES: usize = 64 << 10;
/// Above this many bytes of forms in all, the held end is not narrowed to a form's prefix
/// (the map it needs grows with the forms): the stream holds the longest form less one.
const MAX_DEPTH_MAP: usize = 8 << 20;

/// The forms of the granted secrets, compiled.
#[derive(Debug)]
pub struct Redactor {
    finder: AhoCorasick,
    /// The same forms, standard semantics: its state after any text is the longest suffix of
    /// the text that is a prefix of a form.
    tails: Tails,
    /// That suffix's length, by state.
    depth: Option<Vec<u32>>,
    /// The marker of each form.
    markers: Vec<Vec<u8>>,
    max_len: usize,
    /// The first pass; `None` when a form is too short for one to pay.
    grams: Option<Grams>,
}

/// Values longer than this are looked for as their bytes and their base64 only: every form
/// of a 64 KiB value would make the automata gigabytes (a certificate or a key file as a
/// secret; see the README's limits).
pub const MAX_ALL_FORMS: usize = 4 << 10;

/// Every form of `value` looked for (distinct, non-empty).
pub fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![value.to_vec()];
    // As a host name (or anything else that folds case) carries it.
    out.push(value.to_ascii_lowercase());
    if value.len() > MAX_ALL_FORMS {
        out.push(STANDARD.encode(value).into_bytes());
        return out;
    }
    for (padded, bare) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        out.push(padded.encode(value).into_bytes());
        out.push(bare.encode(value).into_bytes());
        // At each alignment inside a longer text: the characters only the value's bits make.
        for k in 0..3usize {
            let mut shifted = vec![0u8; k];
            shifted.extend_from_slice(value);
            let enc = bare.encode(&shifted).into_bytes();
            let start = (8 * k).div_ceil(6);
            let end = (8 * (k + value.len())) / 6;
            if end > start && end - start >= MIN_FRAGMENT {
                out.push(enc[start..end].to_vec());
            }
        }
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    out.push(hex.to_ascii_uppercase().into_bytes());
    out.push(hex.into_bytes());
    let mut url_upper = Vec::new();
    let mut url_lower = Vec::new();
    let mut form = Vec::new();
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            url_upper.push(b);
            url_lower.push(b);
            form.push(b);
        } else {
            url_upper.extend_from_slice(format!("%{b:02X}").as_bytes());
            url_lower.extend_from_slice(format!("%{b:02x}").as_bytes());
            if b == b' ' {
                form.push(b'+');
            } else {
                form.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
    }
    out.extend([url_upper, url_lower, form]);
    if let Ok(text) = std::str::from_utf8(value) {
        if let Ok(json) = serde_json::to_string(text) {
            let inner = &json[1..json.len() - 1];
            out.push(inner.as_bytes().to_vec());
            out.push(inner.replace('/', "\\/").into_bytes());
            let (mut lower, mut upper) = (String::new(), String::new());
            for c in inner.chars() {
                if c.is_ascii() {
                    lower.push(c);
                    upper.push(c);
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        lower.push_str(&format!("\\u{u:04x}"));
                        upper.push_str(&format!("\\u{u:04X}"));
                    }
                }
            }
            out.extend([lower.into_bytes(), upper.into_bytes()]);
        }
    }
    out.retain(|f| !f.is_empty());
    out.sort();
    out.dedup();
    out
}

impl Redactor {
    /// The redactor of `secrets` (name, value): each value's [`forms`] become
    /// `[REDACTED:NAME]`. Empty values are passed over.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Redactor, RedactError> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut markers: Vec<Vec<u8>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            for f in forms(value) {
                // One form shared by two secrets is marked with the first's name.
                if seen.insert(f.clone()) {
                    patterns.push(f);
                    markers.push(format!("[REDACTED:{name}]").into_bytes());
                }
            }
        }
        let bad = |e: &dyn std::fmt::Display| RedactError::Build(e.to_string());
        let total: usize = patterns.iter().map(Vec::len).sum();
        // A full DFA searches about twice as fast as the NFA the crate would pick for this
        // many forms (the bench: 20 API-key-sized secrets, ~600 forms); its table grows
        // with the forms' bytes, so only while they are few.
        let kind = (total <= MAX_DFA_FORM_BYTES).then_some(aho_corasick::AhoCorasickKind::DFA);
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(kind)
            .build(&patterns)
            .map_err(|e| bad(&e))?;
        let tails = if total <= MAX_DFA_FORM_BYTES {
            aho_corasick::dfa::DFA::builder()
                .match_kind(MatchKind::Standard)
                .start_kind(aho_corasick::StartKind::Both)
                .build(&patterns)
                .map(Tails::Dfa)
        } else {
            NFA::builder()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .map(Tails::Nfa)
        }
        .map_err(|e| bad(&e))?;
        let depth = (total <= MAX_DEPTH_MAP)
            .then(|| depths(&tails, &patterns))
            .flatten();
        Ok(Redactor {
            finder,
            tails,
            depth,
            markers,
            max_len: patterns.iter().map(Vec::len).max().unwrap_or(0),
            grams: Grams::new(&patterns),
        })
    }

    /// The same, searched by the automaton alone (for tests of the first pass).
    #[cfg(test)]
    fn without_first_pass(mut self) -> Redactor {
        self.grams = None;
        self
    }

    /// Whether it has anything to look for.
    pub fn is_empty(&self) -> bool {
        self.markers.is_empty()
    }

    /// `input` with every form replaced.
    pub fn redact(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let end = self.replace(input, input.len(), &mut out);
        out.extend_from_slice(&input[end..]);
        out
    }

    /// `text` with every form replaced (a string stays a string: markers are ASCII, and
    /// forms are replaced whole).
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }

    /// Every string in `value` (object keys too) with every form replaced.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.redact_str(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact_str(&k), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A stream to redact chunk by chunk.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            redactor: self,
            held: Vec::new(),
        }
    }

    /// Writes `buf` up to the matches that start before `safe` replaced; returns where the
    /// written part ends (at or after `safe` when a match straddles it, else `safe`).
    fn replace(&self, buf: &[u8], safe: usize, out: &mut Vec<u8>) -> usize {
        let mut at = 0;
        self.each_match(buf, |m| {
            if m.start() >= safe {
                return false;
            }
            out.extend_from_slice(&buf[at..m.start()]);
            out.extend_from_slice(&self.markers[m.pattern().as_usize()]);
            at = m.end();
            true
        });
        if at < safe {
            out.extend_from_slice(&buf[at..safe]);
            at = safe;
        }
        at
    }

    /// The automaton's matches in `text`, left to right, until `f` says stop: searched only
    /// in the regions around the windows the first pass found. Every occurrence of a form
    /// lies wholly inside the region of one of its own windows, and regions that overlap or
    /// touch are merged, so the regions split the occurrences between them and a search of
    /// each (from its start) finds what a search of the whole text finds.
    fn each_match(&self, text: &[u8], mut f: impl FnMut(aho_corasick::Match) -> bool) {
        if self.is_empty() {
            return;
        }
        let search = |from: usize, to: usize, f: &mut dyn FnMut(aho_corasick::Match) -> bool| {
            let input = aho_corasick::Input::new(text).span(from..to);
            self.finder.find_iter(input).all(f)
        };
        let Some(grams) = &self.grams else {
            search(0, text.len(), &mut f);
            return;
        };
        let mut region: Option<(usize, usize)> = None;
        for p in grams.hits(text) {
            let start = (p + grams.width).saturating_sub(self.max_len);
            let end = text.len().min(p + self.max_len);
            region = match region {
                Some((a, b)) if start <= b => Some((a, b.max(end))),
                Some((a, b)) => {
                    if !search(a, b, &mut f) {
                        return;
                    }
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((a, b)) = region {
            search(a, b, &mut f);
        }
    }

    /// How many bytes at the end of `buf` could still begin a form.
    fn held_len(&self, buf: &[u8]) -> usize {
        if self.is_empty() {
            return 0;
        }
        let window = buf.len().min(self.max_len.saturating_sub(1));
        let Some(depth) = &self.depth else {
            return window;
        };
        let Ok(mut sid) = self.tails.start_state(Anchored::No) else {
            return window;
        };
        for &b in &buf[buf.len() - window..] {
            sid = self.tails.next_state(Anchored::No, sid, b);
        }
        match depth.get(sid.as_usize()) {
            Some(&d) if d != u32::MAX => (d as usize).min(window),
            _ => window,
        }
    }
}

/// The first pass: the `width`-byte windows of every form, at every offset, in a table;
/// the text's windows are looked up `stride` bytes apart (`stride` = the shortest form's
/// length less `width`, plus one: no form fits between two looked-up windows).
#[derive(Debug)]
struct Grams {
    width: usize,
    stride: usize,
    /// Open addressing, linear probing; `EMPTY` marks a free slot (`has_empty`: that value
    /// is itself a window).
    slots: Vec<u64>,
    has_empty: bool,
    shift: u32,
    /// A bit per hash of the windows, small enough to stay in the first-level cache (and of
    /// a size that needs no bounds check): most of the text's windows are turned away here
    /// without touching the table.
    bits: Box<[u64; FILTER_WORDS]>,
}

/// 2^18 bits: 32 KiB.
const FILTER_WORDS: usize = 1 << 12;

const EMPTY: u64 = u64::MAX;
/// Shorter forms than this make every position a lookup: the automaton alone is as fast.
const MIN_GRAM: usize = 4;

impl Grams {
    fn new(patterns: &[Vec<u8>]) -> Option<Grams> {
        let shortest = patterns.iter().map(Vec::len).min()?;
        if shortest < MIN_GRAM {
            return None;
        }
        // Four bytes: the longest stride (`shortest - 3`) with windows still rare in text
        // (a window that is one is only a table lookup more).
        let width = MIN_GRAM;
        let mut keys: Vec<u64> = patterns
            .iter()
            .flat_map(|p| p.windows(width).map(|w| load(w, width)))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // At most half full.
        let bits = (2 * keys.len())
            .next_power_of_two()
            .max(1024)
            .trailing_zeros();
        let mut grams = Grams {
            width,
            stride: shortest - width + 1,
            slots: vec![EMPTY; 1 << bits],
            has_empty: false,
            shift: 64 - bits,
            bits: Box::new([0; FILTER_WORDS]),
        };
        let mask = grams.slots.len() - 1;
        for k in keys {
            let (word, bit) = filter_bit(hash(k));
            grams.bits[word] |= bit;
            if k == EMPTY {
                grams.has_empty = true;
                continue;
            }
            let mut i = grams.slot(k);
            while grams.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            grams.slots[i] = k;
        }
        Some(grams)
    }

    fn slot(&self, key: u64) -> usize {
        usize::try_from(hash(key) >> self.shift).unwrap_or(0)
    }

    /// Whether the filter lets `key` through (a window of a form always passes).
    #[inline]
    fn may_contain(&self, key: u64) -> bool {
        let (word, bit) = filter_bit(hash(key));
        self.bits[word] & bit != 0
    }

    #[inline]
    fn contains(&self, key: u64) -> bool {
        if !self.may_contain(key) {
            return false;
        }
        if key == EMPTY {
            return self.has_empty;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            match self.slots[i] {
                k if k == key => return true,
                EMPTY => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The positions of `text` looked up whose window is a form's.
    fn hits<'t>(&'t self, text: &'t [u8]) -> Hits<'t> {
        Hits {
            grams: self,
            text,
            at: 0,
        }
    }
}

/// [`Grams::hits`].
struct Hits<'t> {
    grams: &'t Grams,
    text: &'t [u8],
    /// The next position to look up.
    at: usize,
}

impl Iterator for Hits<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let (g, text) = (self.grams, self.text);
        if g.width == 4 {
            // Four windows at a time through the filter alone; only a group where one
            // passes is looked up in order.
            let s = g.stride;
            while let Some(group) = text.get(self.at..self.at + 3 * s + 4) {
                let key = |i: usize| {
                    group
                        .get(i * s..)
                        .and_then(<[u8]>::first_chunk::<4>)
                        .map_or(0, |w| u64::from(u32::from_le_bytes(*w)))
                };
                let keys = [key(0), key(1), key(2), key(3)];
                // The text a few pages on is on its way while these are looked up (the
                // group spans up to two cache lines).
                prefetch::read(text, self.at + 4096);
                prefetch::read(text, self.at + 4096 + 64);
                let p = self.at;
                self.at += 4 * s;
                if !keys.iter().any(|k| g.may_contain(*k)) {
                    continue;
                }
                for (i, k) in keys.into_iter().enumerate() {
                    if g.contains(k) {
                        // The rest of the group is looked up again next time.
                        self.at = p + (i + 1) * s;
                        return Some(p + i * s);
                    }
                }
            }
        }
        while let Some(w) = text.get(self.at..self.at + g.width) {
            let p = self.at;
            self.at += g.stride;
            if g.contains(load(w, g.width)) {
                return Some(p);
            }
        }
        None
    }
}

/// Fibonacci hashing: the top bits of the product are the well-mixed ones.
#[inline]
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The filter's word (the top 12 bits) and bit (the next 6) for a hash.
#[inline]
fn filter_bit(h: u64) -> (usize, u64) {
    // The top 12 bits: below 4096 on every target.
    (usize::try_from(h >> 52).unwrap_or(0), 1 << ((h >> 46) & 63))
}

/// `window` (of `width` ≤ 8 bytes) as a number.
#[inline]
fn load(window: &[u8], width: usize) -> u64 {
    if let Some(w) = window.first_chunk::<8>() {
        if width == 8 {
            return u64::from_le_bytes(*w);
        }
    }
    let mut b = [0u8; 8];
    b[..width].copy_from_slice(&window[..width]);
    u64::from_le_bytes(b)
}

/// The automaton of the held end: a DFA (a table lookup a byte) while the forms are few.
#[derive(Debug)]
enum Tails {
    Nfa(NFA),
    Dfa(aho_corasick::dfa::DFA),
}

impl Tails {
    fn start_state(&self, a: Anchored) -> Result<StateID, aho_corasick::MatchError> {
        match self {
            Tails::Nfa(n) => n.start_state(a),
            Tails::Dfa(d) => d.start_state(a),
        }
    }

    #[inline]
    fn next_state(&self, a: Anchored, sid: StateID, b: u8) -> StateID {
        match self {
            Tails::Nfa(n) => n.next_state(a, sid, b),
            Tails::Dfa(d) => d.next_state(a, sid, b),
        }
    }

    fn is_dead(&self, sid: StateID) -> bool {
        match self {
            Tails::Nfa(n) => n.is_dead(sid),
            Tails::Dfa(d) => d.is_dead(sid),
        }
    }
}

/// Each state's depth (the length of the form prefix it stands for), by walking every form
/// from the anchored start; `None` if the automaton does not answer as expected.
fn depths(nfa: &Tails, patterns: &[Vec<u8>]) -> Option<Vec<u32>> {
    let mut depth = Vec::new();
    let start = nfa.start_state(Anchored::Yes).ok()?;
    let unanchored = nfa.start_state(Anchored::No).ok()?;
    let mut set = |sid: StateID, d: usize| {
        let i = sid.as_usize();
        if depth.len() <= i {
            depth.resize(i + 1, u32::MAX);
        }
        depth[i] = u32::try_from(d).unwrap_or(u32::MAX);
    };
    set(unanchored, 0);
    for p in patterns {
        let mut sid = start;
        for (i, &b) in p.iter().enumerate() {
            sid = nfa.next_state(Anchored::Yes, sid, b);
            if nfa.is_dead(sid) {
                return None;
            }
            set(sid, i + 1);
        }
    }
    Some(depth)
}

/// Redaction of one stream, chunk by chunk: [`Stream::push`] writes what is final,
/// [`Stream::finish`] the rest.
#[derive(Debug)]
pub struct Stream<'r> {
    redactor: &'r Redactor,
    /// Given, not yet written: the end that could still begin a form.
    held: Vec<u8>,
}

impl Stream<'_> {
    /// Takes `chunk`; writes to `out` what no later byte can change.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let r = self.redactor;
        if chunk.len() < 2 * r.max_len {
            self.held.extend_from_slice(chunk);
            let safe = self.held.len() - r.held_len(&self.held);
            let written = r.replace(&self.held, safe, out);
            self.held.drain(..written);
            return;
        }
        // A long chunk is searched where it lies, not copied after what was held: first
        // what was held with the chunk's first `max_len` bytes (every match that starts in
        // what was held ends there), then the rest of the chunk from where that ended.
        let mut resume = 0;
        if !self.held.is_empty() {
            let held = self.held.len();
            self.held.extend_from_slice(&chunk[..r.max_len]);
            resume = r.replace(&self.held, held, out) - held;
            self.held.clear();
        }
        let rest = &chunk[resume..];
        let safe = rest.len() - r.held_len(rest);
        let written = r.replace(rest, safe, out);
        self.held.extend_from_slice(&rest[written..]);
    }

    /// The end of the stream: writes what was held.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        out.extend_from_slice(&self.redactor.redact(&held));
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_redact;

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/redact.rs"
    ));
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/kept.rs"
    ));

    /// Every input the `redact` fuzz target ever failed on or was given to hold
    /// (fuzz/regressions/redact/) keeps the target's property.
    #[test]
    fn fuzz_regressions_keep_the_redact_property() {
        check_kept(env!("CARGO_MANIFEST_DIR"), "redact", check);
    }
}
