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
    check_header(text)?;
    let agent: Agent = serde_yaml_ng::from_str(text).map_err(yaml_error)?;
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

/// The two fields that say what a document is, read leniently first so that a Role or a
/// Kubernetes Pod handed to `spawn run` gets "this is not an Agent" rather than a complaint
/// about its first unknown field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default, deserialize_with = "crate::bounded::opt_string::<_, 256>")]
    api_version: Option<String>,
    #[serde(default, deserialize_with = "crate::bounded::opt_string::<_, 256>")]
    kind: Option<String>,
}

fn check_header(text: &str) -> Result<(), PolicyError> {
    // Errors here (not a mapping, bad YAML, several documents) are left to the strict parse,
    // which reports them the same way with the full context.
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
fn yaml_error(err: serde_yaml_ng::Error) -> PolicyError {
    let mut message = err.to_string();
    let location = err.location();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(pos) = message.find(&suffix) {
            message.replace_range(pos..pos + suffix.len(), "");
        }
    }
    // Reword the messages whose serde_yaml_ng text does not say what to do.
    if message == "deserializing from YAML containing more than one document is not supported" {
        message = "the file holds more than one YAML document; give one Agent per file".to_owned();
    } else if message == "repetition limit exceeded" {
        message = "too many YAML alias expansions (is this a \"billion laughs\" document?)"
            .to_owned();
    } else if message == "recursion limit exceeded" {
        message = "the YAML is nested too deeply".to_owned();
    }
    match location {
        Some(loc) => syntax_error(Some((loc.line(), loc.column())), message),
        None => syntax_error(None, message),
    }
}

fn syntax_error(position: Option<(usize, usize)>, message: String) -> PolicyError {
    PolicyError::Syntax {
        line: position.map(|(line, _)| line),
        column: position.map(|(_, column)| column),
        message,
    }
}
