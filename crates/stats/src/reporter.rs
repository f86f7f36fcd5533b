//! The activator's per-revision concurrency reporter (activator spec §5.3).
//!
//! In the activator's handler chain the reporter sits right after revision
//! identification: [`ConcurrencyReporter::request_in`] runs before the
//! throttler (so queued requests count) and
//! [`ConcurrencyReporter::request_out`] after the timeout handler returns. A
//! 1 s ticker calls [`ConcurrencyReporter::tick`]. What it hands on are
//! [`ConcurrencyStat`]s, which the stats sender turns into
//! [`WireStatMessage`]s for the autoscaler:
//!
//! * the **poke**: the first request for a revision with no live state
//!   returns `{concurrency 1, count 1}` at once, sent as its own frame, so a
//!   revision at zero scales up without waiting for the tick;
//! * every tick, one entry per live revision. The first entry after the poke
//!   subtracts what the poke already reported; a revision that saw no
//!   activity for a whole tick and has nothing in flight is forgotten, so its
//!   next request pokes again.
//!
//! This is a synchronous state machine over `&mut self`; the activator wraps
//! it in a `Mutex` (each call is a hash lookup plus a few integer updates).
//! Behaviour mirrors `pkg/activator/handler/concurrency_reporter.go`; the
//! reference-count race guard there is unnecessary because *in*, *out* and
//! *tick* cannot interleave here. Nothing here can fail.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::time::Instant;

use crate::request::RequestStats;
use crate::wire::{Stat, WireStatMessage};

/// A revision, as the activator keys its state: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionKey {
    /// Revision namespace.
    pub namespace: String,
    /// Revision name.
    pub name: String,
}

/// The two numbers the activator reports per revision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConcurrencyStat {
    /// Average concurrency over the period (`average_concurrent_requests`).
    pub average_concurrency: f64,
    /// Requests that arrived in the period (`request_count`).
    pub request_count: f64,
}

/// Per-revision concurrency accounting; `K` identifies a revision.
#[derive(Debug)]
pub struct ConcurrencyReporter<K = RevisionKey> {
    revisions: HashMap<K, RevisionState>,
}

#[derive(Debug)]
struct RevisionState {
    stats: RequestStats,
    /// True until the first tick after creation, which subtracts the poke.
    poked: bool,
}

// === impl RevisionKey ===

impl RevisionKey {
    /// The key for `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// This revision's wire entry for `stat`, sent by pod `pod_name`.
    pub fn wire_message(&self, stat: ConcurrencyStat, pod_name: &str) -> WireStatMessage {
        stat.to_wire_message(&self.namespace, &self.name, pod_name)
    }
}

// === impl ConcurrencyStat ===

impl ConcurrencyStat {
    /// The scale-from-zero poke: one request, concurrency one.
    pub const POKE: Self = Self {
        average_concurrency: 1.0,
        request_count: 1.0,
    };

    /// The `Stat` the activator sends: only the pod name, concurrency and
    /// count are set (proxied values, uptime and timestamp stay 0).
    pub fn to_stat(self, pod_name: &str) -> Stat {
        Stat {
            pod_name: pod_name.to_owned(),
            average_concurrent_requests: self.average_concurrency,
            request_count: self.request_count,
            ..Stat::default()
        }
    }

    /// The wire entry for revision `namespace/name`, `stat` always present.
    pub fn to_wire_message(self, namespace: &str, name: &str, pod_name: &str) -> WireStatMessage {
        WireStatMessage::new(namespace, name, self.to_stat(pod_name))
    }
}

// === impl ConcurrencyReporter ===

impl<K> Default for ConcurrencyReporter<K> {
    fn default() -> Self {
        Self {
            revisions: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> ConcurrencyReporter<K> {
    /// A reporter with no live revisions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a request for `key` arriving at `now`. Returns the poke
    /// ([`ConcurrencyStat::POKE`]) to send immediately when `key` had no live
    /// state.
    pub fn request_in(&mut self, key: &K, now: Instant) -> Option<ConcurrencyStat> {
        if let Some(state) = self.revisions.get_mut(key) {
            state.stats.request_in(now, false);
            return None;
        }
        let mut stats = RequestStats::new(now);
        stats.request_in(now, false);
        self.revisions
            .insert(key.clone(), RevisionState { stats, poked: true });
        Some(ConcurrencyStat::POKE)
    }

    /// Records a request for `key` finishing at `now`. State is never
    /// dropped while a request is in flight, so the key is normally live; an
    /// *out* for an unknown key is ignored.
    pub fn request_out(&mut self, key: &K, now: Instant) {
        if let Some(state) = self.revisions.get_mut(key) {
            state.stats.request_out(now, false);
        }
    }

    /// Closes the period at `now`: one entry per live revision (in no
    /// particular order), then forgets revisions that were idle for the whole
    /// period.
    pub fn tick(&mut self, now: Instant) -> Vec<(K, ConcurrencyStat)> {
        let mut out = Vec::with_capacity(self.revisions.len());
        self.revisions.retain(|key, state| {
            let report = state.stats.report(now);
            // Subtract the poke from the first period; the period's true
            // average may be below 1, hence the floor at 0.
            let already_reported = if state.poked { 1.0 } else { 0.0 };
            state.poked = false;
            out.push((
                key.clone(),
                ConcurrencyStat {
                    average_concurrency: (report.average_concurrency - already_reported).max(0.0),
                    request_count: report.request_count as f64 - already_reported,
                },
            ));
            // An exactly-zero average means no request was in flight at any
            // point of the period.
            report.average_concurrency != 0.0 || state.stats.concurrency() > 0
        });
        out
    }

    /// Requests in flight for `key`.
    pub fn concurrency(&self, key: &K) -> u64 {
        self.revisions
            .get(key)
            .map_or(0, |state| state.stats.concurrency())
    }

    /// Whether `key` has live state (its next request will not poke).
    pub fn contains(&self, key: &K) -> bool {
        self.revisions.contains_key(key)
    }

    /// Number of revisions with live state.
    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    /// True when no revision has live state.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }
}

#[cfg(test)]
mod tests;
