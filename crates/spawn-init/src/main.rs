//! `spawn-init FLAGS -- COMMAND...`: the init spawn runs as PID 1 inside OCI sandboxes
//! (see `spawn_sandbox::InitArgs` and `spawn_sandbox::oci_init`). A binary of its own, as
//! small as the init itself: under gVisor every page it maps, every relocation it applies,
//! every call it makes and every `cpuid` it executes costs a trap into the Sentry.
//!
//! `make build` links it statically against musl (`scripts/build-init.sh`): static glibc's
//! start-up probes the CPU's features and caches with a few dozen `cpuid` instructions,
//! each one emulated by gVisor's Sentry (~8 ms of every gVisor run on our hosts, measured
//! from the Sentry's log: from the init's exec to its first call 18–20 ms with glibc,
//! 10–12 ms with musl), and reads `/proc/self/exe`; musl's does neither.
//!
//! Its `main` is the C library's entry point (`no_main`), not Rust's runtime start-up:
//! that start-up, ~15 calls on every run (polling descriptors 0–2, reading
//! `/proc/self/maps` for the main thread's stack guard, an alternate signal stack and
//! SIGSEGV/SIGBUS handlers), is nothing the init needs, and under gVisor each call is a
//! round trip through the Sentry. Without it a stack overflow is a plain SIGSEGV (no
//! message); SIGPIPE the init ignores itself, as that start-up would have (its writes to a
//! reader that went away fail `EPIPE`; the command gets SIGPIPE back at its default, see
//! `oci_init`). The arguments come from `main`'s own `argc`/`argv` (musl, unlike glibc,
//! does not hand them to std without Rust's start-up).

#![no_main]

use std::ffi::{c_char, c_int, CStr};

/// The C entry point (see the module docs).
// SAFETY: `main` is the one symbol of that name in the program (`no_main` leaves none of
// Rust's), with the signature the C library's start-up calls it with.
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    spawn_sandbox::ignore_sigpipe();
    let count = usize::try_from(argc).unwrap_or(0);
    let mut args: Vec<&CStr> = Vec::with_capacity(count);
    // Past the program's name.
    for i in 1..count {
        // SAFETY: the C library's start-up passes `argc` valid pointers in `argv` (then a
        // NULL), each to a NUL-terminated string that lives as long as the process; a
        // NULL among them (which no exec produces) ends the list.
        let arg = unsafe { *argv.add(i) };
        if arg.is_null() {
            break;
        }
        // SAFETY: as above: `arg` is a non-NULL pointer to a NUL-terminated string.
        args.push(unsafe { CStr::from_ptr(arg) });
    }
    let parsed = args
        .iter()
        .map(|a| a.to_str().ok())
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
    // Exit codes are 0–255 (the init returns a command's status, 125, or 128+N).
    code & 0xff
}
