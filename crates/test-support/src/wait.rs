//! Waiting on a condition the test cannot be told about, such as a count in
//! the code under test reaching a value.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] looks again.
const INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` every 10 ms until it returns `true`, at most `limit / 10ms`
/// times, so for at least `limit`.
///
/// # Panics
///
/// With `"{what}: not within {limit:?}"` when `f` never returns `true`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // Counting polls rather than reading a clock keeps a slow `f` from eating
    // the budget, as the per-crate copies this replaced did.
    for _ in 0..limit.as_millis().div_ceil(INTERVAL.as_millis()) {
        if f().await {
            return;
        }
        tokio::time::sleep(INTERVAL).await;
    }
    panic!("{what}: not within {limit:?}");
}
