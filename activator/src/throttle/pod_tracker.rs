//! Pod trackers and the choice of which pods this activator may use.
//!
//! **Where it sits.** Inside a revision's throttler state (`revision.rs`): one
//! [`PodTracker`] per healthy pod dest, kept across backend updates by dest,
//! and the subset of them assigned to this activator (§3.4 of
//! `activator.md`). The LB policy (`lb_policy.rs`) reserves a slot on one of
//! the assigned trackers; the `Lease` releases it.
//!
//! **What it hands on.** Trackers with a load counter, and the assignment
//! arithmetic ([`pick_indices`], [`assign_slice`]). Nothing here fails.
//!
//! A tracker is Knative's `podTracker`: with `containerConcurrency > 0` it
//! admits at most `cc` requests at a time, taken without waiting (Knative's
//! per-pod breaker, only ever `Reserve`d); with `cc = 0` it admits any number
//! and its load is Knative's `weight`. Both are the same counter here,
//! because a per-pod breaker that nobody waits on is exactly a bounded
//! counter, and keeping it a plain number lets the revision lock read every
//! tracker's load in one consistent pass.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Activators;

/// One pod, as this activator sees it: a dest and the requests this activator
/// has in flight to it.
#[derive(Debug)]
pub(crate) struct PodTracker {
    dest: String,
    /// `containerConcurrency`; 0 means unlimited.
    capacity: usize,
    /// Leases out on this pod. Changed only under the revision lock; atomic
    /// only so that leases can share the tracker.
    in_flight: AtomicUsize,
}

// === impl PodTracker ===

impl PodTracker {
    /// A tracker for `dest` admitting `cc` concurrent requests (0: unlimited).
    pub(crate) fn new(dest: String, cc: usize) -> Self {
        Self {
            dest,
            capacity: cc,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The pod's `ip:port`.
    pub(crate) fn dest(&self) -> &str {
        &self.dest
    }

    /// Requests this activator has in flight to the pod (Knative's `weight`
    /// for `cc = 0`, the breaker's in-flight count otherwise).
    pub(crate) fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether one more request fits.
    pub(crate) fn has_spare(&self) -> bool {
        self.capacity == 0 || self.load() < self.capacity
    }

    /// Takes a slot if one is free right now (Knative's `Reserve`).
    pub(crate) fn try_reserve(&self) -> bool {
        let spare = self.has_spare();
        if spare {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        spare
    }

    /// Returns a slot taken by [`try_reserve`](Self::try_reserve).
    pub(crate) fn release(&self) {
        let prev = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(prev > 0, "released a pod slot that was never reserved");
    }
}

/// The slice of `len` sorted trackers owned by activator `index` of `count`
/// (Knative's `pickIndices`): `(begin, end, remnants)`.
///
/// With more activators than trackers each activator gets the single tracker
/// at `index mod len`; otherwise a slice of `len / count` trackers, and the
/// `len mod count` trackers left over at the tail go one each to the first
/// activators. Callers guarantee `len > 0`, `count > 0` and `index < count`.
pub(crate) fn pick_indices(len: usize, index: usize, count: usize) -> (usize, usize, usize) {
    if count > len {
        let begin = index % len;
        return (begin, begin + 1, 0);
    }
    let slice = len / count;
    let begin = index * slice;
    (begin, begin + slice, len % count)
}

/// The trackers (sorted by dest) this activator uses (Knative's `assignSlice`).
///
/// All of them while the activator's index is unknown, when there is at most
/// one tracker, or when this is the only activator; otherwise the slice from
/// [`pick_indices`] plus, for the first `remnants` activators, one tracker from
/// the tail. A remnant pod thus belongs to exactly one activator, which keeps
/// its full capacity.
pub(crate) fn assign_slice<T: Clone>(trackers: &[T], activators: Activators) -> Vec<T> {
    let len = trackers.len();
    let Some(index) = activators.index else {
        return trackers.to_vec();
    };
    // `count == 0` or `index >= count` cannot come from an activator IP list;
    // treat such input like an unknown index rather than dividing by zero.
    if len <= 1 || activators.count <= 1 || index >= activators.count {
        return trackers.to_vec();
    }
    let (begin, end, remnants) = pick_indices(len, index, activators.count);
    let mut assigned = trackers[begin..end].to_vec();
    if index < remnants {
        assigned.push(trackers[len - remnants + index].clone());
    }
    assigned
}

#[cfg(test)]
mod tests;
