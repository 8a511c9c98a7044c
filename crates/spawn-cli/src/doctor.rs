//! `spawn doctor`: what this host can run, and why not.

use std::process::ExitCode;

use serde_json::json;
use spawn_sandbox::doctor::{self, Check};

pub(crate) fn main(as_json: bool) -> ExitCode {
    let checks = doctor::checks();
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
