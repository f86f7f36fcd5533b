//! Shared foundations of the kdp data plane.
//!
//! Everything here sits *outside* the request flow proper: the error type that
//! travels between tower layers, the names of Knative's headers and
//! environment variables, env parsing with Go-compatible syntax, the drain
//! latch that both binaries flip on SIGTERM, logging setup, the runtime and
//! the allocator.

pub mod drain;
pub mod env;
pub mod error;
pub mod header;
pub mod log;
pub mod memory;
pub mod runtime;
pub mod signal;

pub use error::{Error, ErrorChain, cause_ref, is_caused_by};
