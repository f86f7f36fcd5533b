//! The activator under overload, drain and bad configuration, and a soak of
//! mixed traffic and faults through activator and queue-proxies. Each test is
//! bounded in time; see `docs/reliability.md` for the list of faults.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout,
    missing_docs,
    reason = "test code"
)]

mod config;
mod drain;
#[allow(dead_code, reason = "the harness serves both test binaries")]
#[path = "../common/harness.rs"]
mod harness;
mod overload;
mod soak;
mod support;
