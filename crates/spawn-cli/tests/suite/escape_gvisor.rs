//! The same escape attempts against the `gvisor` runtime (runsc, the default).

fn home() -> super::helpers::Home {
    super::helpers::Home::with_runtime("gvisor")
}

/// Whether the agent sees spawn's init in /proc (gVisor's /proc has no `hidepid`; the
/// init is gVisor's root there, with no capability left once the command runs).
const INIT_IS_AGENT_USER: bool = true;

/// Whether the agent runs on gVisor's kernel (its own /proc, /sys, /dev and processes).
const GVISOR_KERNEL: bool = true;

include!("escape_cases.rs");
