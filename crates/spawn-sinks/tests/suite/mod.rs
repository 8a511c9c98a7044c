pub mod common;
mod file;
mod otlp;
mod syslog;
mod webhook;
