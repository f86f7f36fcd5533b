//! Time-weighted request statistics and the `Stat` protobuf messages.
//!
//! This crate is the accounting layer both binaries share; it sits beside the
//! request path rather than in it. The queue-proxy's stats layer and the
//! activator's concurrency-reporter layer feed request *in*/*out* events into
//! it, and the autoscaler side (`kdp-autoscaler`, the stats servers) reads the
//! resulting [`Stat`]s.
//!
//! * [`request`]: [`RequestStats`], Knative's time-weighted concurrency
//!   accumulator (queue-proxy spec §5.1), and its thread-safe wrapper
//!   [`SharedRequestStats`].
//! * [`reporter`]: the activator's per-revision concurrency reporter
//!   (activator spec §5.3) as a synchronous state machine,
//!   [`ConcurrencyReporter`].
//! * [`wire`]: the hand-written prost messages `Stat`, `WireStatMessage` and
//!   `WireStatMessages` (queue-proxy spec §5.2, activator spec §5.2).
//!
//! Nothing here reads a clock: every operation takes `now` as a
//! [`tokio::time::Instant`], so tests are deterministic.

pub mod reporter;
pub mod request;
pub mod wire;

pub use reporter::{ConcurrencyReporter, ConcurrencyStat, RevisionKey};
pub use request::{Report, RequestStats, SharedRequestStats};
pub use wire::{Stat, WireStatMessage, WireStatMessages};
