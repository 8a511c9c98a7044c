//! Integration tests of spawn-policy's public API, compiled as one binary.

mod suite;
