//! Integration tests of spawn-policy's public API, compiled as one binary.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
