//! End-to-end tests of the `spawn` binary, compiled as one test binary.
//!
//! They run the real binary as root and really try to break out of the native sandbox.
//! Run them with `make test` (as root); without root every test fails with the reason.

mod suite;
