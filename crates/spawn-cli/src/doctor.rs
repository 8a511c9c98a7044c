//! `spawn doctor`: what this host can run, and why not.

use std::process::ExitCode;

use serde_json::json;
use spawn_sandbox::doctor::{self, Check};

pub(crate) fn main(as_json: bool, home: &std::path::Path) -> ExitCode {
    let mut checks = doctor::checks();
    checks.push(secrets_rotation(home));
    if as_json {
        let v: Vec<_> = checks
            .iter()
            .map(|c: &Check| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for c in &checks {
            println!(
                "{:<22} {:<4} {}",
                c.name,
                if c.ok { "ok" } else { "no" },
                c.detail
            );
        }
    }
    ExitCode::SUCCESS
}

/// The local secrets' data keys against the rotation schedule (every 90 days, or
/// `SPAWN_SECRETS_ROTATION_DAYS`): overdue keys are named, with the fix.
fn secrets_rotation(home: &std::path::Path) -> Check {
    let name = "secrets rotation";
    let days = match std::env::var("SPAWN_SECRETS_ROTATION_DAYS") {
        Err(_) => f64::from(spawn_secrets::DEFAULT_ROTATION_DAYS),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 36_500.0 => d,
            _ => {
                return Check {
                    name: name.into(),
                    ok: false,
                    detail: format!(
                        "SPAWN_SECRETS_ROTATION_DAYS={v:?} is not a number of days (more than 0, at most 36500)"
                    ),
                }
            }
        },
    };
    let (ok, detail) = match crate::secrets::rotation_due(home, days) {
        Ok(None) => (true, "no secrets in $SPAWN_HOME".to_owned()),
        Ok(Some(due)) if due.is_empty() => {
            (true, format!("every data key is younger than {days} days"))
        }
        Ok(Some(due)) => {
            let now = spawn_store::now_ms();
            let keys: Vec<String> = due
                .iter()
                .map(|k| {
                    format!(
                        "namespace {} data key v{} is {} days old",
                        k.namespace,
                        k.version,
                        (now - k.created_ms) / 86_400_000
                    )
                })
                .collect();
            (
                false,
                format!(
                    "overdue (rotation every {days} days): {}; run spawn secrets rotate-data-key",
                    keys.join(", ")
                ),
            )
        }
        Err(e) => (false, format!("the local store cannot be read: {e:#}")),
    };
    Check {
        name: name.into(),
        ok,
        detail,
    }
}
