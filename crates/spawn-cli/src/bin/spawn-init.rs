//! `spawn-init FLAGS -- COMMAND...`: the init spawn runs as PID 1 inside OCI sandboxes
//! (see `spawn_sandbox::InitArgs` and `spawn_sandbox::oci_init`). A binary of its own, as
//! small as the init itself: under gVisor every page it maps, every relocation it applies
//! and every call it makes costs a trap into the Sentry.
//!
//! Its `main` is the C library's entry point (`no_main`), not Rust's runtime start-up:
//! that start-up, ~15 calls on every run (polling descriptors 0–2, reading
//! `/proc/self/maps` for the main thread's stack guard, an alternate signal stack and
//! SIGSEGV/SIGBUS handlers, ignoring SIGPIPE), is nothing the init needs, and under gVisor
//! each call is a round trip through the Sentry. Without it a stack overflow is a plain
//! SIGSEGV (no message); SIGPIPE the init ignores itself, as that start-up would have (its
//! writes to a reader that went away fail `EPIPE`; the command gets SIGPIPE back at its
//! default, see `oci_init`). glibc hands `argc` and
//! `argv` to the `.init_array` functions, where std reads them: `std::env::args_os` works
//! as ever (spawn-init is built for `*-linux-gnu` only).

#![no_main]

use std::ffi::{c_char, c_int};

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!("spawn-init reads its arguments through glibc's .init_array (linux-gnu only)");

/// The C entry point (see the module docs). The arguments are unused: std has them.
// SAFETY: `main` is the one symbol of that name in the program (`no_main` leaves none of
// Rust's), with the C signature glibc's start-up calls it with.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    spawn_sandbox::ignore_sigpipe();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let parsed = args
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()
        .ok_or(spawn_sandbox::InitUsage)
        .and_then(|a| spawn_sandbox::InitArgs::parse(&a));
    let code = match parsed {
        Ok(init) => spawn_sandbox::oci_init(&init),
        Err(usage) => {
            eprintln!("spawn-init: {usage}");
            125
        }
    };
    // Exit codes are 0–255 (the init returns a command's status or 125–128+N).
    code & 0xff
}
