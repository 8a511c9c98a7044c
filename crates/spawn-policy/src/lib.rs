//! spawn's policy: the Agent manifest (SPEC §3), its validation, and the resolved
//! [`RunSpec`] that every runtime consumes.
//!
//! [`parse_agent`] / [`load_agent`] read a manifest strictly; [`resolve`] applies the
//! command-line [`Overrides`] and produces a [`RunSpec`], refusing anything spawn cannot
//! enforce yet.
#![forbid(unsafe_code)]

mod bounded;
mod error;
pub mod layout;
mod manifest;
mod names;
pub mod net;
mod parse;
mod paths;
mod quantity;
mod resolve;
mod spec;
mod validate;

pub use error::PolicyError;
pub use manifest::{
    Agent, AgentSpec, Capabilities, ExecCapability, FsCapability, Limits, Metadata, Model,
    ModelProvider, Mount, MountMode, NetCapability, RateLimit, ResourceLimits, Sandbox,
    SecretDelivery, SecretRef, API_VERSION, KIND_AGENT, MAX_SECRET_HOSTS,
};
pub use names::check_dns_label;
pub use parse::{load_agent, parse_agent, MAX_MANIFEST_BYTES};
pub use quantity::{parse_bytes, parse_cpu_millis, parse_duration};
pub use resolve::{resolve, Overrides};
pub use spec::{
    LoopSpec, ModelSpec, MountSource, MountSpec, NetPolicy, Resources, RunSpec, RuntimeKind,
    SecretGrant, SecretSource,
};
