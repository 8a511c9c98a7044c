//! `spawn-init FLAGS -- COMMAND...`: the init spawn runs as PID 1 inside OCI sandboxes
//! (see `spawn_sandbox::InitArgs` and `spawn_sandbox::oci_init`). A binary of its own, as
//! small as the init itself: under gVisor every page it maps and every relocation it
//! applies costs a trap into the Sentry.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let parsed = args
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()
        .ok_or(spawn_sandbox::InitUsage)
        .and_then(|a| spawn_sandbox::InitArgs::parse(&a));
    match parsed {
        Ok(init) => ExitCode::from(u8::try_from(spawn_sandbox::oci_init(&init)).unwrap_or(125)),
        Err(usage) => {
            eprintln!("spawn-init: {usage}");
            ExitCode::from(125)
        }
    }
}
