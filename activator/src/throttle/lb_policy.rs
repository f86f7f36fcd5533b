//! Which pod a request goes to.
//!
//! **Where it sits.** Called by the revision throttler (`revision.rs`) under
//! its lock, once the revision has a free slot, over the pod trackers assigned
//! to this activator. ClusterIP routing never gets here.
//!
//! **What it hands on.** The tracker it reserved a slot on, or `None` when no
//! assigned tracker has room. Every policy finds a tracker whenever one of
//! them has room, so a waiting request is never held back by the policy itself
//! (the throttler relies on this to dispatch without polling).
//!
//! kdp's default, [`LbPolicy::LeastLoaded`], sends each request to the
//! assigned pod with the fewest requests in flight from this activator, ties
//! broken uniformly at random. Knative's policies (first available for
//! `containerConcurrency` 1–3, round robin above, random choice of two for 0;
//! `activator.md` §3.6) stay available through
//! [`LoadBalancing::Knative`]: first available
//! piles load onto the lexicographically first pods, and round robin's shared
//! cursor does the same when requests arrive in bursts.

use std::sync::Arc;

use rand::Rng;

use super::LoadBalancing;
use super::pod_tracker::PodTracker;

/// A load-balancing policy over a revision's pod trackers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LbPolicy {
    /// kdp's default: the pod with spare capacity and the fewest requests in
    /// flight from this activator; ties broken at random.
    LeastLoaded,
    /// Knative, `containerConcurrency` 1–3: the first pod in dest order that
    /// has a free slot.
    FirstAvailable,
    /// Knative, `containerConcurrency` > 3: a per-revision cursor; the first
    /// pod with a free slot at or after it, which then moves past the pick.
    RoundRobin,
    /// Knative, `containerConcurrency` 0: two distinct pods at random, the
    /// lighter one wins (a coin decides a tie).
    RandomChoiceOf2,
}

// === impl LbPolicy ===

impl LbPolicy {
    /// The policy a revision with `container_concurrency` uses under `mode`.
    pub fn for_revision(mode: LoadBalancing, container_concurrency: usize) -> Self {
        match mode {
            LoadBalancing::LeastLoaded => Self::LeastLoaded,
            LoadBalancing::Knative => match container_concurrency {
                0 => Self::RandomChoiceOf2,
                1..=3 => Self::FirstAvailable,
                _ => Self::RoundRobin,
            },
        }
    }

    /// Reserves a slot on one of `trackers` and returns that tracker.
    ///
    /// `cursor` is the revision's round-robin position (only round robin uses
    /// it); `rng` breaks ties.
    pub(crate) fn pick<R: Rng + ?Sized>(
        self,
        trackers: &[Arc<PodTracker>],
        cursor: &mut usize,
        rng: &mut R,
    ) -> Option<Arc<PodTracker>> {
        let index = match self {
            Self::LeastLoaded => least_loaded(trackers, rng),
            Self::FirstAvailable => trackers.iter().position(|t| t.has_spare()),
            Self::RoundRobin => round_robin(trackers, cursor),
            Self::RandomChoiceOf2 => random_choice_of_2(trackers, rng),
        }?;
        let tracker = &trackers[index];
        tracker.try_reserve().then(|| Arc::clone(tracker))
    }
}

/// Index of a uniformly random tracker among those with spare capacity and the
/// lowest load.
fn least_loaded<R: Rng + ?Sized>(trackers: &[Arc<PodTracker>], rng: &mut R) -> Option<usize> {
    let mut lowest = usize::MAX;
    let mut ties = 0;
    for tracker in trackers.iter().filter(|t| t.has_spare()) {
        let load = tracker.load();
        if load < lowest {
            lowest = load;
            ties = 1;
        } else if load == lowest {
            ties += 1;
        }
    }
    if ties == 0 {
        return None;
    }
    // One draw, then a second pass to find the chosen tie.
    let nth = if ties == 1 {
        0
    } else {
        rng.random_range(0..ties)
    };
    trackers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.has_spare() && t.load() == lowest)
        .nth(nth)
        .map(|(i, _)| i)
}

/// Knative's round robin: scan from the cursor (reset to 0 when the list has
/// shrunk below it) and move the cursor past the pick.
fn round_robin(trackers: &[Arc<PodTracker>], cursor: &mut usize) -> Option<usize> {
    let len = trackers.len();
    if *cursor >= len {
        *cursor = 0;
    }
    let index = (0..len)
        .map(|offset| (*cursor + offset) % len)
        .find(|&i| trackers[i].has_spare())?;
    *cursor = index + 1;
    Some(index)
}

/// Knative's random choice of two, for trackers without a limit. If both
/// contestants are full (only possible when used with `cc > 0`, which Knative
/// never does) it falls back to the least-loaded tracker with room, so that
/// the throttler's "a pod with room is always found" invariant holds.
fn random_choice_of_2<R: Rng + ?Sized>(trackers: &[Arc<PodTracker>], rng: &mut R) -> Option<usize> {
    let len = trackers.len();
    let (first, second) = match len {
        0 => return None,
        1 => return trackers[0].has_spare().then_some(0),
        2 => (0, 1),
        _ => {
            let first = rng.random_range(0..len);
            // Draw from the other len - 1 indices.
            let mut second = rng.random_range(0..len - 1);
            if second >= first {
                second += 1;
            }
            (first, second)
        }
    };
    let (a, b) = (&trackers[first], &trackers[second]);
    let pick = match (a.has_spare(), b.has_spare()) {
        (true, true) => match a.load().cmp(&b.load()) {
            std::cmp::Ordering::Less => first,
            std::cmp::Ordering::Greater => second,
            std::cmp::Ordering::Equal if rng.random_bool(0.5) => first,
            std::cmp::Ordering::Equal => second,
        },
        (true, false) => first,
        (false, true) => second,
        (false, false) => return least_loaded(trackers, rng),
    };
    Some(pick)
}

#[cfg(test)]
mod tests;
