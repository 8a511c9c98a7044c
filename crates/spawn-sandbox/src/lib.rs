//! spawn's sandboxes. The `native` runtime is built directly on kernel primitives: user,
//! PID, mount, network, IPC, UTS and cgroup namespaces, a planned read-only root, seccomp
//! with user notification, Landlock, cgroups and rlimits.
//!
//! Policy is data, enforcement is separate: [`rootfs::plan`], [`seccomp::policy`] and
//! the Landlock [`landlock::Rules`] are plain values built from a [`spawn_policy::RunSpec`];
//! the sandbox init applies them. All `unsafe` lives in `sys`.

pub mod bpf;
pub mod cgroups;
mod config_feed;
pub mod container;
pub mod doctor;
mod error;
pub mod gvisor_monitor;
mod idmap;
mod init;
pub mod landlock;
pub mod native;
pub mod oci;
pub mod rootfs;
pub mod scratch;
pub mod seccomp;
mod secret_env;
mod stdio;
mod sys;

pub use error::SandboxError;
pub use init::{oci_init, InitArgs, InitUsage};
pub use native::{
    run, ExecFailure, KillReason, Network, NoObserver, Observer, Report, RunOptions, Stop,
};
pub use secret_env::SecretEnv;
pub use sys::{default_sigpipe, ignore_sigpipe};
/// Passing descriptors over unix sockets (`SCM_RIGHTS`), for spawn's helper processes.
pub use sys::{recv_fds, send_fds};
