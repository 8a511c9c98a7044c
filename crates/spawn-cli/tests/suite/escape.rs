//! Escape attempts against the `native` runtime (the cases are in `escape_cases.rs`).

fn home() -> super::helpers::Home {
    super::helpers::Home::new()
}

/// Whether spawn's init runs as the agent's user (OCI runtimes) or as another one.
const INIT_IS_AGENT_USER: bool = false;

/// Whether the agent runs on gVisor's kernel (its own /proc, /sys, /dev and processes).
const GVISOR_KERNEL: bool = false;

include!("escape_cases.rs");
