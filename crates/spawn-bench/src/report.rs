//! Performance targets and the printed / JSON report.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::stats::Summary;

/// One case's timings.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub cmdline: String,
    pub samples_ms: Vec<f64>,
    pub summary: Summary,
}

/// A performance target, reported as PASS or FAIL (never enforced).
#[derive(Debug)]
pub enum Target {
    /// median(case) / median(baseline) <= max.
    Ratio {
        label: &'static str,
        case: &'static str,
        baseline: &'static str,
        max: f64,
    },
    /// median(case) / median(baseline), shown without a target.
    Shown {
        label: &'static str,
        case: &'static str,
        baseline: &'static str,
    },
    /// median(case) < max_ms.
    MedianBelow {
        label: &'static str,
        case: &'static str,
        max_ms: f64,
    },
}

/// A target checked against the results.
#[derive(Debug)]
pub struct Verdict {
    pub label: &'static str,
    pub value: String,
    pub target: String,
    /// `None` for a figure shown without a target.
    pub pass: Option<bool>,
    pub json: Value,
}

fn median(results: &[CaseResult], name: &str) -> Result<f64> {
    results
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.summary.median)
        .with_context(|| format!("target refers to unknown case {name:?}"))
}

impl Target {
    /// The cases it compares.
    pub fn cases(&self) -> Vec<&'static str> {
        match *self {
            Target::Ratio { case, baseline, .. } | Target::Shown { case, baseline, .. } => {
                vec![case, baseline]
            }
            Target::MedianBelow { case, .. } => vec![case],
        }
    }

    pub fn check(&self, results: &[CaseResult]) -> Result<Verdict> {
        Ok(match *self {
            Target::Ratio {
                label,
                case,
                baseline,
                max,
            } => {
                let ratio = median(results, case)? / median(results, baseline)?;
                let pass = ratio <= max;
                Verdict {
                    label,
                    value: format!("{ratio:.3}"),
                    target: format!("<= {max:.2}"),
                    pass: Some(pass),
                    json: json!({ "label": label, "kind": "ratio", "case": case,
                        "baseline": baseline, "value": ratio, "max": max, "pass": pass }),
                }
            }
            Target::Shown {
                label,
                case,
                baseline,
            } => {
                let ratio = median(results, case)? / median(results, baseline)?;
                Verdict {
                    label,
                    value: format!("{ratio:.3}"),
                    target: String::new(),
                    pass: None,
                    json: json!({ "label": label, "kind": "ratio_shown", "case": case,
                        "baseline": baseline, "value": ratio }),
                }
            }
            Target::MedianBelow {
                label,
                case,
                max_ms,
            } => {
                let ms = median(results, case)?;
                let pass = ms < max_ms;
                Verdict {
                    label,
                    value: format!("{ms:.2} ms"),
                    target: format!("< {max_ms} ms"),
                    pass: Some(pass),
                    json: json!({ "label": label, "kind": "median_ms", "case": case,
                        "value": ms, "max": max_ms, "pass": pass }),
                }
            }
        })
    }
}

/// The table of cases, then one line per target.
pub fn print(header: &str, results: &[CaseResult], verdicts: &[Verdict]) {
    println!("{header}");
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "case", "median", "p10", "p90"
    );
    for r in results {
        let s = r.summary;
        println!(
            "{:<28} {:>7.2} ms {:>7.2} ms {:>7.2} ms",
            r.name, s.median, s.p10, s.p90
        );
    }
    for v in verdicts {
        let (status, target) = match v.pass {
            Some(pass) => (
                if pass { "PASS" } else { "FAIL" },
                format!("(target {})", v.target),
            ),
            None => ("", "(no target)".to_owned()),
        };
        println!("{:<28} {:<10} {:<22} {status}", v.label, v.value, target);
    }
}

pub fn to_json(
    rounds: usize,
    warmup: usize,
    cpus: usize,
    results: &[CaseResult],
    verdicts: &[Verdict],
) -> Value {
    let cases: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "cmdline": r.cmdline,
                "median_ms": r.summary.median,
                "p10_ms": r.summary.p10,
                "p90_ms": r.summary.p90,
                "samples_ms": r.samples_ms,
            })
        })
        .collect();
    json!({
        "rounds": rounds,
        "warmup_rounds": warmup,
        "cpus": cpus,
        "cases": cases,
        "targets": verdicts.iter().map(|v| v.json.clone()).collect::<Vec<_>>(),
    })
}
