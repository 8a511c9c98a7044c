//! The same escape attempts against the `container` runtime (runc).

fn home() -> super::helpers::Home {
    super::helpers::Home::with_runtime("container")
}

/// Whether spawn's init runs as the agent's user (OCI runtimes) or as another one.
const INIT_IS_AGENT_USER: bool = true;

/// Whether the agent runs on gVisor's kernel (its own /proc, /sys, /dev and processes).
const GVISOR_KERNEL: bool = false;

include!("escape_cases.rs");
