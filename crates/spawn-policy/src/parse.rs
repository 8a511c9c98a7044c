//! Reading a manifest: size cap, strict YAML, then [`crate::validate`].

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::PolicyError;
use crate::manifest::{Agent, API_VERSION, KIND_AGENT};
use crate::names::quote;
use crate::validate::validate;

/// The largest manifest accepted, in bytes (1 MiB).
///
/// Real manifests are a few kilobytes; even long `instructions` fit many times over. The cap
/// bounds the memory and time of parsing an untrusted file (the YAML parser keeps every event
/// of the document in memory, several times the input's size) and of everything derived from
/// it.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Parses and validates an Agent manifest.
///
/// Strict: unknown fields, wrong types, more than one YAML document and any rule of SPEC §3
/// that the values break are errors. Position-bearing errors start with `line L, column C: `.
pub fn parse_agent(text: &str) -> Result<Agent, PolicyError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(PolicyError::TooLarge {
            max: MAX_MANIFEST_BYTES,
        });
    }
    if is_blank(text) {
        return Err(syntax_error(None, "the manifest is empty".to_owned()));
    }
    check_flow_collections(text)?;
    let agent: Agent = match serde_yaml_ng::from_str(text) {
        Ok(agent) => agent,
        Err(e) => {
            // A Role or a Kubernetes Pod handed to `spawn run` should hear "this is not an
            // Agent", not a complaint about its first unknown field. Only worth a second
            // parse when the YAML was well-formed but shaped differently.
            let message = e.to_string();
            if message.contains("unknown field") || message.contains("missing field") {
                check_header(text)?;
            }
            return Err(yaml_error(text, e));
        }
    };
    validate(&agent)?;
    Ok(agent)
}

/// Reads the file at `path` (at most [`MAX_MANIFEST_BYTES`]) and parses it with
/// [`parse_agent`]. Every error names the file.
pub fn load_agent(path: &Path) -> Result<Agent, PolicyError> {
    let in_file = |error: PolicyError| PolicyError::InFile {
        path: path.to_owned(),
        error: Box::new(error),
    };
    let read_error = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Read one byte more than the limit, so "too large" is detected without trusting the
    // file's reported size (pipes, /proc files and growing files report none or a wrong one).
    let limit = u64::try_from(MAX_MANIFEST_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(in_file(PolicyError::TooLarge {
            max: MAX_MANIFEST_BYTES,
        }));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        in_file(PolicyError::NotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })
    })?;
    parse_agent(&text).map_err(in_file)
}

/// True when the text holds no YAML content: only blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// Most `[` and `{` characters a manifest may hold outside comment lines.
///
/// The YAML scanner (libyaml) spends time proportional to the nesting depth of flow
/// collections (`[...]`, `{...}`) on every token, so a 1 MiB document nested a few hundred
/// thousand levels deep takes minutes to reject. Nesting depth cannot exceed the number of
/// opening brackets, so capping that number caps the work without having to tokenize YAML
/// ourselves. Real manifests hold a few dozen; block-style lists (`- item` per line) hold
/// none. Measured here: the worst 1 MiB document at this limit takes about 0.6 s per parse
/// in a release build (and may be parsed twice, see `check_header`); at 256 about 0.35 s.
pub(crate) const MAX_FLOW_OPENERS: usize = 512;

/// Enforces [`MAX_FLOW_OPENERS`].
///
/// A line whose first character other than a space or tab is `#` is skipped: whatever
/// libyaml is in the middle of there (a comment, a quoted or block scalar, a flow collection
/// between tokens), that line adds no structure. Lines are split at every line break libyaml
/// recognizes, so nothing it reads as structure can hide in a "comment" line.
fn check_flow_collections(text: &str) -> Result<(), PolicyError> {
    let mut openers = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    // Only spaces and tabs so far on this line; the line is a comment line.
    let (mut line_start, mut comment_line) = (true, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}') {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            (line, column) = (line + 1, 0);
            (line_start, comment_line) = (true, false);
            continue;
        }
        column += 1;
        if line_start && c != ' ' && c != '\t' {
            line_start = false;
            comment_line = c == '#';
        }
        if !comment_line && (c == '[' || c == '{') {
            openers += 1;
            if openers > MAX_FLOW_OPENERS {
                return Err(syntax_error(
                    Some((line, column)),
                    format!(
                        "the manifest holds more than {MAX_FLOW_OPENERS} '[' and '{{' \
                         characters outside comments, the limit that keeps YAML parsing \
                         fast; write long lists in block style (one \"- item\" per line)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The two fields that say what a document is, read leniently when the strict parse fails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default, deserialize_with = "crate::bounded::opt_string::<_, 256>")]
    api_version: Option<String>,
    #[serde(default, deserialize_with = "crate::bounded::opt_string::<_, 256>")]
    kind: Option<String>,
}

fn check_header(text: &str) -> Result<(), PolicyError> {
    // Errors here (not a mapping, bad YAML, several documents) are left to the strict
    // parse's error, which has the full context.
    let Ok(header) = serde_yaml_ng::from_str::<Header>(text) else {
        return Ok(());
    };
    if let Some(version) = header.api_version {
        if version != API_VERSION {
            return Err(PolicyError::invalid(
                "apiVersion",
                format!("{} is not supported (use {API_VERSION})", quote(&version)),
            ));
        }
    }
    if let Some(kind) = header.kind {
        if kind != KIND_AGENT {
            return Err(PolicyError::invalid(
                "kind",
                format!("{} is not an Agent (use kind: {KIND_AGENT})", quote(&kind)),
            ));
        }
    }
    Ok(())
}

/// serde_yaml_ng's text is `MESSAGE at line L column C`; make it `line L, column C: MESSAGE`.
fn yaml_error(text: &str, err: serde_yaml_ng::Error) -> PolicyError {
    let mut message = err.to_string();
    let mut location = err.location().map(|loc| (loc.line(), loc.column()));
    if let Some((line, column)) = location {
        let suffix = format!(" at line {line} column {column}");
        if let Some(pos) = message.find(&suffix) {
            message.replace_range(pos..pos + suffix.len(), "");
        }
    }
    // Errors of libyaml's reader (bad characters) carry a byte offset instead of a mark.
    if let Some((before, offset)) = message.rsplit_once(" at position ") {
        if let Ok(offset) = offset.parse::<usize>() {
            location = Some(line_column(text, offset));
            message = before.to_owned();
        }
    }
    // Reword the messages whose serde_yaml_ng text does not say what to do.
    if message == "deserializing from YAML containing more than one document is not supported" {
        message = "the file holds more than one YAML document; give one Agent per file".to_owned();
    } else if message == "repetition limit exceeded" {
        message =
            "too many YAML alias expansions (is this a \"billion laughs\" document?)".to_owned();
    } else if message == "recursion limit exceeded" {
        message = "the YAML is nested too deeply".to_owned();
    }
    syntax_error(location, message)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn syntax_error(position: Option<(usize, usize)>, message: String) -> PolicyError {
    PolicyError::Syntax {
        line: position.map(|(line, _)| line),
        column: position.map(|(_, column)| column),
        message: sanitize(&message),
    }
}

/// Longest YAML error message passed on. serde echoes keys it does not know verbatim, and a
/// key can be as long as the manifest.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Escapes control characters (a key such as "\e[2J" must not reach a terminal as is) and
/// shortens the message.
fn sanitize(message: &str) -> String {
    let mut out = String::new();
    for (i, c) in message.chars().enumerate() {
        if i == MAX_MESSAGE_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
