//! The same escape attempts against the `gvisor` runtime (runsc, the default).

fn home() -> super::helpers::Home {
    super::helpers::Home::with_runtime("gvisor")
}

/// Whether spawn's init runs as the agent's user (OCI runtimes) or as another one.
const INIT_IS_AGENT_USER: bool = true;

/// Whether the runtime counts the calls its seccomp filter blocks (`blockedByName`).
const COUNTS_BLOCKED: bool = false;

/// Whether the agent runs on gVisor's kernel (its own /proc, /sys, /dev and processes).
const GVISOR_KERNEL: bool = true;

include!("escape_cases.rs");
