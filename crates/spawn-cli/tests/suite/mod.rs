//! The suite: one module per concern, all sharing [`helpers`].

mod helpers;

mod audit;
mod cleanup;
mod compat;
mod container;
mod disk;
mod env_and_mounts;
mod escape;
mod escape_container;
mod escape_gvisor;
mod exit_codes;
mod gvisor;
mod local_runs;
mod manifest;
mod model;
mod secrets;
mod stdio;
