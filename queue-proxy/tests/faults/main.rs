//! The queue-proxy under faults and abuse: misbehaving user containers,
//! hostile or vanishing clients, overload, drain under traffic, bad
//! configuration, and header spoofing. Each test is bounded in time; see
//! `docs/reliability.md` for the list of faults and what each one checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    reason = "test code"
)]

mod config;
mod downstream;
mod drain;
#[allow(dead_code, reason = "the harness serves both test binaries")]
#[path = "../common/harness.rs"]
mod harness;
mod overload;
mod security;
mod support;
mod upstream;
