//! Test-only support for kdp: fakes of everything the data plane talks to.
//!
//! Nothing here ships in a binary; crates take `kdp-test-support` as a
//! dev-dependency only (STYLE §2.2). The fakes speak the real protocols over
//! real loopback sockets bound to port 0, so the code under test runs its
//! production clients against them:
//!
//! - [`activator`]: the environment an activator under test starts with,
//!   pointed at these fakes.
//! - [`apiserver`]: a Kubernetes API server good enough for kube-rs clients,
//!   watchers and reflectors (list, get, watch, bookmarks, 410 Gone,
//!   `/version`), over an in-memory object store the test edits at will
//!   (DESIGN §5).
//! - [`autoscaler`]: the autoscaler's websocket endpoint, recording the
//!   activator's `WireStatMessages` frames (activator spec §5).
//! - [`upstream`]: HTTP/1 + h2c test servers on any loopback address, and a
//!   fake queue-proxy pod that answers activator probes.
//! - [`tls`]: a throwaway CA and the leaf certificates it issues.
//! - [`client`]: HTTP/1 and h2c clients and a read-to-the-end response, for
//!   tests that drive a proxy from outside.
//! - [`raw`]: raw TCP helpers for hand-made requests and half-closed sockets.
//! - [`eventually`]: polls a condition the test cannot be told about.
//! - [`trace_init`]: a tracing subscriber that writes through the test harness.
//! - [`within`]: bounds a test step in time, so no test can hang.
//! - [`string_map`]: a ConfigMap's `data` (or an object's labels) from pairs.
//!
//! The fakes are plain tokio tasks on the test's runtime and use
//! `tokio::time`, but they do real socket I/O: under `tokio::time::pause()`
//! the clock auto-advances while a request is on the wire, so long timeouts
//! (watch `timeoutSeconds`, bookmark ticks) can fire early. Prefer real time
//! with short intervals in tests that talk to them.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub mod activator;
pub mod apiserver;
pub mod autoscaler;
mod body;
pub mod client;
pub mod raw;
mod serve;
pub mod tls;
pub mod upstream;
mod wait;

pub use activator::{ActivatorEnv, ActivatorPorts};
pub use apiserver::{FakeApiServer, RecordedRequest};
pub use autoscaler::{FakeAutoscaler, ReceivedFrame};
pub use upstream::{FakePod, PodRequest, Upstream};
pub use wait::eventually;

/// A `wait_for_*` helper gave up.
#[derive(Clone, Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was awaited, e.g. `3 frames (got 1)`.
    pub what: String,
    /// The timeout that elapsed.
    pub after: Duration,
}

/// How often `wait_for_*` helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Polls `check` until it yields a value or `timeout` elapses; `what`
/// describes the goal for the error (it runs once, on timeout).
pub(crate) async fn poll_until<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, WaitTimeout> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(WaitTimeout {
                what: what(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Bounds a test step: panics naming `what` if `fut` takes longer than
/// `timeout`. Every fake's tests use it so none can hang.
///
/// # Panics
///
/// On timeout.
#[track_caller]
pub fn within<F: Future>(
    timeout: Duration,
    what: &'static str,
    fut: F,
) -> impl Future<Output = F::Output> {
    let caller = std::panic::Location::caller();
    async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(output) => output,
            Err(_) => panic!("{caller}: timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// A string map from `(key, value)` pairs: a ConfigMap's `data`, or an
/// object's labels, as the code under test receives them. A later pair
/// replaces an earlier one with the same key.
pub fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Installs a `tracing` subscriber that writes through libtest's capture.
///
/// The filter comes from `RUST_LOG` and defaults to `debug` for kdp crates
/// and `warn` elsewhere. Safe to call from every test: only the first call in
/// a process installs the subscriber, later ones are no-ops.
pub fn trace_init() {
    use tracing_subscriber::EnvFilter;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,kdp=debug"));
    // A second install fails with "a global default trace dispatcher has
    // already been set"; that is the expected outcome for every test but one.
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within;

    #[tokio::test]
    #[should_panic(expected = "timed out after 10ms waiting for a pending future")]
    async fn within_panics_naming_the_step() {
        within(
            Duration::from_millis(10),
            "a pending future",
            std::future::pending::<()>(),
        )
        .await;
    }

    #[tokio::test]
    async fn within_passes_the_output_through() {
        assert_eq!(
            within(Duration::from_secs(1), "ready", async { 7 }).await,
            7
        );
    }

    #[tokio::test]
    #[should_panic(expected = "a false condition: not within 30ms")]
    async fn eventually_panics_naming_the_condition() {
        super::eventually("a false condition", Duration::from_millis(30), || async {
            false
        })
        .await;
    }

    #[tokio::test]
    async fn eventually_returns_once_the_condition_holds() {
        let mut polls = 0;
        super::eventually("the third poll", Duration::from_secs(1), || {
            polls += 1;
            let done = polls == 3;
            async move { done }
        })
        .await;
        assert_eq!(polls, 3);
    }

    #[test]
    fn trace_init_is_idempotent() {
        super::trace_init();
        super::trace_init();
        tracing::debug!("visible with --nocapture");
    }
}
