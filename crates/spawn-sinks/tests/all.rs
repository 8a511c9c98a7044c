//! spawn-sinks end to end: real receivers (rsyslog, and HTTP/TLS servers written here) on
//! loopback, a real log written by `spawn_audit`, forwarders started and stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
