//! The price table that `limits.maxCostUsd` is counted with: US dollars per million tokens
//! in and out, per provider and model. A few list prices are built in (as published when
//! this was written; they change); `$SPAWN_HOME/model-prices.yaml` adds to them and
//! overrides them:
//!
//! ```yaml
//! prices:
//!   - { provider: anthropic, model: claude-sonnet-4-5, inputPerMTok: 3.00, outputPerMTok: 15.00 }
//!   - { provider: openai, model: my-local-llama, inputPerMTok: 0, outputPerMTok: 0 }
//! ```
//!
//! A run with a cost limit whose model has no price does not start (a limit that cannot
//! be counted is not a limit).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::budget::Price;

/// The file's name under `$SPAWN_HOME`.
pub const FILE: &str = "model-prices.yaml";

/// Built in: (provider, model, $ in, $ out per million tokens).
const BUILT_IN: &[(&str, &str, f64, f64)] = &[
    ("anthropic", "claude-opus-4-1", 15.0, 75.0),
    ("anthropic", "claude-sonnet-4-5", 3.0, 15.0),
    ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
    ("openai", "gpt-5", 1.25, 10.0),
    ("openai", "gpt-5-mini", 0.25, 2.0),
    ("openai", "gpt-4.1", 2.0, 8.0),
    ("openai", "gpt-4o", 2.5, 10.0),
    ("openai", "gpt-4o-mini", 0.15, 0.6),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    prices: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    provider: String,
    model: String,
    input_per_m_tok: f64,
    output_per_m_tok: f64,
}

/// The table.
#[derive(Debug, Clone)]
pub struct Prices {
    table: HashMap<(String, String), Price>,
    source: PathBuf,
}

/// US dollars per million tokens as micro-dollars per million tokens (rounded up). The
/// value is checked finite and in range first, so the cast neither truncates nor loses a
/// sign.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn micros(field: &str, usd: f64) -> Result<u64, String> {
    if !usd.is_finite() || !(0.0..=1_000_000.0).contains(&usd) {
        return Err(format!(
            "{field}: {usd} is not a price from 0 to 1000000 dollars"
        ));
    }
    Ok((usd * 1e6).ceil() as u64)
}

impl Prices {
    /// The built-in prices and those of `home`'s file (if it exists); a file that cannot
    /// be read is an error, never ignored.
    pub fn load(home: &Path) -> Result<Prices, String> {
        let source = home.join(FILE);
        let mut table = HashMap::new();
        for (p, m, i, o) in BUILT_IN {
            table.insert(
                ((*p).to_owned(), (*m).to_owned()),
                Price {
                    input_per_mtok_micros: micros("built in", *i)?,
                    output_per_mtok_micros: micros("built in", *o)?,
                },
            );
        }
        match std::fs::read_to_string(&source) {
            Ok(text) => {
                let file: File = serde_yaml_ng::from_str(&text).map_err(|e| {
                    let at = e
                        .location()
                        .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                        .unwrap_or_default();
                    format!("{}{at}: {e}", source.display())
                })?;
                for (n, e) in file.prices.into_iter().enumerate() {
                    let field = format!("{}: prices[{n}]", source.display());
                    if !matches!(e.provider.as_str(), "anthropic" | "openai") {
                        return Err(format!("{field}.provider: anthropic or openai"));
                    }
                    if e.model.is_empty() || e.model.len() > 256 {
                        return Err(format!("{field}.model: 1 to 256 characters"));
                    }
                    let price = Price {
                        input_per_mtok_micros: micros(
                            &format!("{field}.inputPerMTok"),
                            e.input_per_m_tok,
                        )?,
                        output_per_mtok_micros: micros(
                            &format!("{field}.outputPerMTok"),
                            e.output_per_m_tok,
                        )?,
                    };
                    table.insert((e.provider, e.model), price);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", source.display())),
        }
        Ok(Prices { table, source })
    }

    /// The price of `model` at `provider`.
    pub fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.table
            .get(&(provider.to_owned(), model.to_owned()))
            .copied()
    }

    /// The file that adds to the built-in prices.
    pub fn source(&self) -> String {
        self.source.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_file_adds_and_overrides_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = Prices::load(dir.path()).unwrap();
        assert_eq!(
            p.get("anthropic", "claude-sonnet-4-5"),
            Some(Price {
                input_per_mtok_micros: 3_000_000,
                output_per_mtok_micros: 15_000_000
            })
        );
        assert_eq!(p.get("openai", "local"), None);
        std::fs::write(
            dir.path().join(FILE),
            "prices:\n  - {provider: openai, model: local, inputPerMTok: 0.1, outputPerMTok: 0}\n  - {provider: anthropic, model: claude-sonnet-4-5, inputPerMTok: 1, outputPerMTok: 2}\n",
        )
        .unwrap();
        let p = Prices::load(dir.path()).unwrap();
        assert_eq!(
            p.get("openai", "local").unwrap().input_per_mtok_micros,
            100_000
        );
        assert_eq!(
            p.get("anthropic", "claude-sonnet-4-5")
                .unwrap()
                .output_per_mtok_micros,
            2_000_000
        );
        for (text, says) in [
            (
                "prices: [{provider: x, model: m, inputPerMTok: 1, outputPerMTok: 1}]",
                "anthropic or openai",
            ),
            (
                "prices: [{provider: openai, model: m, inputPerMTok: -1, outputPerMTok: 1}]",
                "inputPerMTok",
            ),
            (
                "prices: [{provider: openai, model: m, inputPerMTok: .nan, outputPerMTok: 1}]",
                "inputPerMTok",
            ),
            (
                "prices: [{provider: openai, model: '', inputPerMTok: 1, outputPerMTok: 1}]",
                "model",
            ),
            (
                "prices: [{provider: openai, model: m, inputPerMTok: 1}]",
                "line 1",
            ),
            ("other: 1", "unknown field"),
        ] {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let e = Prices::load(dir.path()).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
