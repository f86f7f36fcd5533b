//! One revision's throttler: its request queue, capacity and pods.
//!
//! **Where it sits.** The registry ([`Throttler`](super::Throttler)) keeps one
//! [`RevisionThrottler`] per revision. The request path calls
//! [`RevisionThrottler::try_acquire`] after the timeout stage and before
//! forwarding; the backends watcher feeds [`update_backends`] and the public
//! Endpoints watcher [`update_activators`].
//!
//! **What it hands on.** A [`Lease`] naming the dest to forward to (a pod's or
//! the private service's `ip:port`); dropping it when the response is done
//! frees the pod slot and the revision slot. Errors:
//! [`ThrottleError::QueueFull`] when `max_queued` requests already wait, and
//! [`ThrottleError::RevisionNotFound`] once the revision has been removed
//! (also for requests that were still waiting).
//!
//! # Design
//!
//! Everything (pods, capacity, leases out, waiters) lives in one
//! `std::sync::Mutex`, held for a few instructions and never across an
//! `.await`. Knative splits it over a revision breaker and per-pod breakers,
//! so a request can win a revision slot, find no pod with room, and go back to
//! the queue (`activator.md` §3.7 step 3, a spin). Here a request is granted
//! only when the revision has room *and* a pod has room, in one step:
//!
//! * **fast path**: nobody is waiting and a slot and a pod are free — the
//!   lease is returned at once;
//! * **queue**: otherwise the request takes a ticket in a FIFO (bounded by
//!   `max_queued`) and waits on a oneshot channel;
//! * **dispatch**: every event that can free room — a lease dropped, a
//!   backends or activators update — grants leases to the oldest waiters
//!   while room remains, then sends them after unlocking. So a held request
//!   leaves within the call that adds its pod, with no polling, in arrival
//!   order, and newcomers never barge past waiters.
//!
//! Invariant: while anyone waits, no lease could be granted (checked by the
//! property tests). It holds because every policy finds a pod whenever one has
//! room, and every event that adds room dispatches.
//!
//! Dropping the [`Acquire`] future removes its ticket at once; a lease granted
//! to a future that is dropped before it saw it is dropped with the channel,
//! which hands the slot to the next waiter.
//!
//! [`update_backends`]: RevisionThrottler::update_backends
//! [`update_activators`]: RevisionThrottler::update_activators

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use kdp_proxy::breaker::QueueFull;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::oneshot;

use super::pod_tracker::{PodTracker, assign_slice};
use super::{
    Activators, Backends, LbPolicy, Protocol, REVISION_MAX_CONCURRENCY, Result, RevisionKey,
    RevisionNotFound, ThrottleConfig, ThrottleError,
};

/// The throttler of one revision: its FIFO queue of held requests, its
/// capacity and its pods. Created by [`Throttler::upsert_revision`](super::Throttler::upsert_revision).
pub struct RevisionThrottler {
    shared: Arc<Shared>,
}

/// The right to send one request to [`dest`](Self::dest).
///
/// Dropping it frees the pod slot and the revision slot, and hands them to the
/// oldest waiting request.
#[must_use = "the slot is released as soon as the lease is dropped"]
pub struct Lease {
    target: Target,
    revision: Arc<Shared>,
}

/// Future returned by [`RevisionThrottler::try_acquire`].
///
/// The request's place in the queue is taken when `try_acquire` is called,
/// not when this is first polled; dropping it gives the place back at once.
#[must_use = "futures do nothing unless polled, and dropping this gives up the queue place"]
pub struct Acquire {
    state: AcquireState,
}

enum AcquireState {
    Ready(Option<Result<Lease>>),
    Waiting(Waiter),
}

/// A queued request: its ticket and the channel its lease arrives on.
struct Waiter {
    revision: Arc<Shared>,
    ticket: u64,
    rx: oneshot::Receiver<Lease>,
    /// Set once `rx` has yielded; the ticket is then no longer queued.
    done: bool,
}

/// Where a lease sends its request.
enum Target {
    Pod(Arc<PodTracker>),
    ClusterIp(Arc<str>),
}

struct Shared {
    key: RevisionKey,
    container_concurrency: usize,
    protocol: Protocol,
    policy: LbPolicy,
    max_queued: usize,
    state: Mutex<State>,
}

struct State {
    /// Set by [`RevisionThrottler::close`]; later requests fail.
    removed: bool,
    /// The private service's dest while routing via ClusterIP.
    cluster_ip: Option<Arc<str>>,
    /// Every healthy pod, sorted by dest string (empty in ClusterIP mode).
    trackers: Vec<Arc<PodTracker>>,
    /// Trackers no longer healthy with leases still out, kept so that a pod
    /// that comes back is not handed `cc` more requests than it has room for.
    retired: Vec<Arc<PodTracker>>,
    /// The trackers this activator uses: a slice (cc > 0) or all (cc = 0).
    assigned: Vec<Arc<PodTracker>>,
    /// `B` of §3.3: healthy pods (pod mode) or ready pods (ClusterIP mode).
    backend_count: usize,
    activators: Activators,
    /// Revision-level capacity (§3.3). With cc = 0 only "0 or not" matters.
    capacity: usize,
    /// Leases out, including granted ones not yet seen by their future.
    in_flight: usize,
    /// Waiting requests in arrival order.
    waiters: BTreeMap<u64, oneshot::Sender<Lease>>,
    next_ticket: u64,
    rr_cursor: usize,
    rng: SmallRng,
}

/// Leases granted under the lock, sent after it is released.
type Grants = Vec<(oneshot::Sender<Lease>, Lease)>;

// === impl RevisionThrottler ===

impl RevisionThrottler {
    /// A throttler for revision `key`, with no backends yet (capacity 0: every
    /// request waits) and an unknown activator index (all pods are used).
    pub fn new(
        key: RevisionKey,
        container_concurrency: usize,
        protocol: Protocol,
        config: &ThrottleConfig,
    ) -> Self {
        let state = State {
            removed: false,
            cluster_ip: None,
            trackers: Vec::new(),
            retired: Vec::new(),
            assigned: Vec::new(),
            backend_count: 0,
            activators: Activators::UNKNOWN,
            capacity: 0,
            in_flight: 0,
            waiters: BTreeMap::new(),
            next_ticket: 0,
            rr_cursor: 0,
            rng: SmallRng::from_rng(&mut rand::rng()),
        };
        Self {
            shared: Arc::new(Shared {
                key,
                container_concurrency,
                protocol,
                policy: LbPolicy::for_revision(config.load_balancing, container_concurrency),
                max_queued: config.max_queued,
                state: Mutex::new(state),
            }),
        }
    }

    /// Asks for a slot on a pod of this revision.
    ///
    /// Returns at once (without waiting) when nobody is queued and a pod has
    /// room. Otherwise the request joins the revision's queue right now and
    /// the future resolves when a pod has room, in arrival order. Fails at
    /// once with [`ThrottleError::QueueFull`] when `max_queued` requests
    /// already wait, and with [`ThrottleError::RevisionNotFound`] when the
    /// revision is (or, while waiting, gets) removed. While the revision has
    /// no backends, requests wait. Dropping the future leaves the queue at
    /// once.
    pub fn try_acquire(&self) -> Acquire {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.removed {
            return Acquire::ready(Err(shared.not_found()));
        }
        if state.waiters.is_empty()
            && let Some(target) = state.grant(shared)
        {
            return Acquire::ready(Ok(shared.lease(target)));
        }
        if state.waiters.len() >= shared.max_queued {
            return Acquire::ready(Err(ThrottleError::QueueFull(QueueFull)));
        }
        let (tx, rx) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiters.insert(ticket, tx);
        Acquire {
            state: AcquireState::Waiting(Waiter {
                revision: Arc::clone(shared),
                ticket,
                rx,
                done: false,
            }),
        }
    }

    /// Replaces the revision's backends (§3.2) and recomputes its capacity
    /// (§3.3); requests that now fit are sent on at once.
    ///
    /// Pod trackers are kept across updates by dest, so leases out on a pod
    /// that stays healthy keep counting against it.
    pub fn update_backends(&self, backends: Backends) {
        let shared = &self.shared;
        let mut state = shared.lock();
        match backends {
            Backends::Pods { mut healthy } => {
                healthy.sort_unstable();
                healthy.dedup();
                state.backend_count = healthy.len();
                state.cluster_ip = None;
                state.replace_trackers(healthy, shared.container_concurrency);
            }
            Backends::ClusterIp { dest, ready_pods } => {
                state.backend_count = ready_pods;
                state.cluster_ip = Some(dest.into());
                state.replace_trackers(Vec::new(), shared.container_concurrency);
            }
            Backends::None => {
                state.backend_count = 0;
                state.cluster_ip = None;
                state.replace_trackers(Vec::new(), shared.container_concurrency);
            }
        }
        let grants = shared.recompute(&mut state);
        drop(state);
        deliver(grants);
    }

    /// Sets how many activators serve this revision and which one this is
    /// (§3.5); on change, recomputes the pod subset and capacity.
    pub fn update_activators(&self, activators: Activators) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.activators == activators {
            return;
        }
        state.activators = activators;
        let grants = shared.recompute(&mut state);
        drop(state);
        deliver(grants);
    }

    /// Marks the revision removed: later [`try_acquire`](Self::try_acquire)
    /// calls and every waiting request fail with
    /// [`ThrottleError::RevisionNotFound`]. Leases out stay valid.
    pub(crate) fn close(&self) {
        let waiters = {
            let mut state = self.shared.lock();
            state.removed = true;
            std::mem::take(&mut state.waiters)
        };
        // Dropping the senders wakes every waiter with "not found".
        drop(waiters);
    }

    /// The revision this throttles.
    pub fn key(&self) -> &RevisionKey {
        &self.shared.key
    }

    /// The revision's `containerConcurrency` (0: unlimited).
    pub fn container_concurrency(&self) -> usize {
        self.shared.container_concurrency
    }

    /// The protocol the revision's pods speak.
    pub fn protocol(&self) -> Protocol {
        self.shared.protocol
    }

    /// The load-balancing policy in use.
    pub fn lb_policy(&self) -> LbPolicy {
        self.shared.policy
    }

    /// Requests waiting in the queue (`kn.revision.request.queued`).
    pub fn queued(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// Leases out: requests sent on and not finished
    /// (`kn.revision.request.active`).
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// The revision-level capacity of §3.3. For `containerConcurrency` 0 it is
    /// 0 (closed: requests wait) or 2^31−1 (open: no limit).
    pub fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    /// This activator's count and index for the revision.
    pub fn activators(&self) -> Activators {
        self.shared.lock().activators
    }

    /// Dests of the pods assigned to this activator, sorted.
    pub fn assigned_dests(&self) -> Vec<String> {
        let state = self.shared.lock();
        state.assigned.iter().map(|t| t.dest().to_owned()).collect()
    }
}

impl fmt::Debug for RevisionThrottler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("RevisionThrottler")
            .field("key", &self.shared.key)
            .field("container_concurrency", &self.shared.container_concurrency)
            .field("policy", &self.shared.policy)
            .field("capacity", &state.capacity)
            .field("in_flight", &state.in_flight)
            .field("queued", &state.waiters.len())
            .field("pods", &state.trackers.len())
            .field("assigned", &state.assigned.len())
            .field("cluster_ip", &state.cluster_ip)
            .finish()
    }
}

// === impl Lease ===

impl Lease {
    /// The `ip:port` to send the request to.
    pub fn dest(&self) -> &str {
        match &self.target {
            Target::Pod(tracker) => tracker.dest(),
            Target::ClusterIp(dest) => dest,
        }
    }

    /// Whether [`dest`](Self::dest) is the private service's ClusterIP rather
    /// than a pod.
    pub fn is_cluster_ip(&self) -> bool {
        matches!(self.target, Target::ClusterIp(_))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let revision = &self.revision;
        let mut state = revision.lock();
        state.in_flight -= 1;
        if let Target::Pod(tracker) = &self.target {
            tracker.release();
        }
        let grants = revision.dispatch(&mut state);
        drop(state);
        deliver(grants);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("dest", &self.dest())
            .field("is_cluster_ip", &self.is_cluster_ip())
            .finish_non_exhaustive()
    }
}

// === impl Acquire ===

impl Acquire {
    pub(crate) fn ready(result: Result<Lease>) -> Self {
        Self {
            state: AcquireState::Ready(Some(result)),
        }
    }
}

impl Future for Acquire {
    type Output = Result<Lease>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            AcquireState::Ready(result) => {
                Poll::Ready(result.take().expect("Acquire polled after completion"))
            }
            AcquireState::Waiting(waiter) => {
                assert!(!waiter.done, "Acquire polled after completion");
                let result = std::task::ready!(Pin::new(&mut waiter.rx).poll(cx));
                waiter.done = true;
                // The sender is only dropped unsent when the revision is removed.
                Poll::Ready(result.map_err(|_| waiter.revision.not_found()))
            }
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Acquire");
        match &self.state {
            AcquireState::Ready(result) => d.field("ready", result),
            AcquireState::Waiting(waiter) => d.field("ticket", &waiter.ticket),
        };
        d.finish()
    }
}

// === impl Waiter ===

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done {
            // Frees the queue place now. If a lease was already granted, the
            // ticket is gone and the lease is dropped with `rx` right after
            // this (outside the lock), which passes its slot on.
            self.revision.lock().waiters.remove(&self.ticket);
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and every counter is updated
        // in a single statement, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn not_found(&self) -> ThrottleError {
        ThrottleError::RevisionNotFound(RevisionNotFound::new(&self.key))
    }

    fn lease(self: &Arc<Self>, target: Target) -> Lease {
        Lease {
            target,
            revision: Arc::clone(self),
        }
    }

    /// Recomputes the assigned trackers and capacity (§3.3, §3.4), then
    /// dispatches.
    fn recompute(self: &Arc<Self>, state: &mut State) -> Grants {
        let cc = self.container_concurrency;
        if state.cluster_ip.is_some() || state.trackers.is_empty() {
            state.assigned.clear();
        } else if cc == 0 {
            state.assigned.clone_from(&state.trackers);
        } else {
            state.assigned = assign_slice(&state.trackers, state.activators);
        }
        state.capacity = if state.cluster_ip.is_none() && state.trackers.is_empty() {
            0
        } else {
            capacity(
                cc,
                state.backend_count,
                state.assigned.len(),
                state.activators.count,
            )
        };
        tracing::debug!(
            namespace = %self.key.namespace,
            revision = %self.key.name,
            backends = state.backend_count,
            assigned = state.assigned.len(),
            cluster_ip = state.cluster_ip.as_deref(),
            activators = state.activators.count,
            index = ?state.activators.index,
            capacity = state.capacity,
            "throttler updated",
        );
        self.dispatch(state)
    }

    /// Grants leases to the oldest waiters while room remains.
    fn dispatch(self: &Arc<Self>, state: &mut State) -> Grants {
        let mut grants = Vec::new();
        while !state.waiters.is_empty() {
            let Some(target) = state.grant(self) else {
                break;
            };
            let (_, tx) = state
                .waiters
                .pop_first()
                .expect("waiters checked non-empty");
            grants.push((tx, self.lease(target)));
        }
        grants
    }
}

// === impl State ===

impl State {
    /// Takes a revision slot and a pod slot if both are free.
    fn grant(&mut self, shared: &Shared) -> Option<Target> {
        let room = if shared.container_concurrency == 0 {
            // Knative's infinite breaker: open or closed.
            self.capacity > 0
        } else {
            self.in_flight < self.capacity
        };
        if !room {
            return None;
        }
        let target = match &self.cluster_ip {
            Some(dest) => Target::ClusterIp(Arc::clone(dest)),
            None => Target::Pod(shared.policy.pick(
                &self.assigned,
                &mut self.rr_cursor,
                &mut self.rng,
            )?),
        };
        self.in_flight += 1;
        Some(target)
    }

    /// Installs trackers for `dests` (sorted, deduplicated), reusing live ones
    /// by dest.
    fn replace_trackers(&mut self, dests: Vec<String>, cc: usize) {
        let mut old: Vec<Arc<PodTracker>> = std::mem::take(&mut self.trackers);
        old.append(&mut self.retired);
        old.sort_unstable_by(|a, b| a.dest().cmp(b.dest()));
        let mut trackers = Vec::with_capacity(dests.len());
        let mut old = old.into_iter().peekable();
        for dest in dests {
            // Both lists are sorted: walk them together.
            while let Some(stale) = old.next_if(|t| t.dest() < dest.as_str()) {
                self.retire(stale);
            }
            match old.next_if(|t| t.dest() == dest) {
                Some(kept) => trackers.push(kept),
                None => trackers.push(Arc::new(PodTracker::new(dest, cc))),
            }
        }
        for stale in old {
            self.retire(stale);
        }
        self.trackers = trackers;
    }

    fn retire(&mut self, tracker: Arc<PodTracker>) {
        if tracker.load() > 0 {
            self.retired.push(tracker);
        }
    }
}

/// Sends granted leases; a lease whose future is already gone is dropped here,
/// outside the lock, which passes its slot on.
fn deliver(grants: Grants) {
    for (tx, lease) in grants {
        drop(tx.send(lease));
    }
}

/// The revision-level capacity (Knative's `calculateCapacity`, §3.3 steps
/// 2–4).
///
/// `backends` is `B` (healthy pods, or K8s-ready pods behind a ClusterIP),
/// `trackers` the pod trackers assigned to this activator (0 in ClusterIP
/// mode) and `activators` the activator count `N` (0 if unknown). With pod
/// trackers each contributes `cc`; via ClusterIP this activator takes its
/// share `cc × B / N`, at least 1. With backends present, `cc = 0` (the
/// infinite breaker: open) and anything above 2^31−1 become 2^31−1.
pub(crate) fn capacity(cc: usize, backends: usize, trackers: usize, activators: usize) -> usize {
    let target = if trackers > 0 {
        cc.saturating_mul(trackers)
    } else {
        match cc.saturating_mul(backends) {
            0 => 0,
            total => (total / activators.max(1)).max(1),
        }
    };
    if backends > 0 && (cc == 0 || target > REVISION_MAX_CONCURRENCY) {
        REVISION_MAX_CONCURRENCY
    } else {
        target
    }
}

#[cfg(test)]
mod tests;
