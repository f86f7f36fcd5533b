//! The allocator both binaries run on, and giving its freed memory back to
//! the OS when the process goes quiet.
//!
//! The queue-proxy and the activator allocate with mimalloc: cheaper than
//! glibc's malloc on the per-request paths, and it returns unused memory to
//! the OS rather than keeping a process at its peak. It does so lazily: a
//! page whose blocks are all free goes back to mimalloc's arena at once, but
//! arena memory is purged (`madvise`) only once it has been free for the
//! purge delay (1 s) *and* something checks, which happens as a side effect
//! of allocating. A sidecar that has just closed or parked a thousand
//! connections and then idles keeps their memory resident until its next
//! burst.
//!
//! [`reclaim_every`] runs a forced collection once a period, which purges
//! all free memory at once instead of waiting out the delay: an idle process
//! shrinks within a period of freeing (after a burst of 1000 connections
//! that the queue-proxy then parks: 24 MB to 11 MB about 2 s after the last
//! request, where it stayed at 24 MB before), whichever thread freed the
//! memory (the arenas are process-wide). Under load this costs a few
//! `madvise` calls a second (16 in 3 s at `wrk -c50`, strace).
//! `MIMALLOC_PURGE_DELAY=0` would shrink the process too, but purges every
//! page the moment it is freed: about one system call per eight requests.

use std::time::Duration;

/// The global allocator of the binaries.
pub use mimalloc::MiMalloc as Allocator;

/// How often [`reclaim_every`] collects in the binaries.
pub const RECLAIM_PERIOD: Duration = Duration::from_secs(1);

/// Runs a forced collection of the allocator: the calling thread's cached
/// empty pages and all free arena memory go back to the OS.
///
/// Cheap (it visits pages, not blocks) and a no-op unless mimalloc is the
/// global allocator.
pub fn collect() {
    #[expect(
        unsafe_code,
        reason = "FFI call: mi_collect takes no pointers and may be called from any thread at any time"
    )]
    // SAFETY: `mi_collect` has no preconditions; it touches the calling
    // thread's heap and mimalloc's own (internally synchronised) arenas.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Calls [`collect`] every `period`, for ever.
pub async fn reclaim_every(period: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collect();
    }
}
