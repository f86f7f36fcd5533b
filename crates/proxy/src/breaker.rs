//! Knative's concurrency breaker: a bounded pending queue in front of a
//! resizable set of execution slots.
//!
//! **Where it sits.** The queue-proxy's proxy handler (step 10 of
//! `queue-proxy.md` §3.1) calls [`Breaker::acquire`] for every non-probe request
//! when `containerConcurrency >= 1`, holds the [`Permit`] while the request is
//! forwarded, and drops it when the response is done. The activator's throttler
//! keeps one revision-level breaker per revision (waited on with
//! [`Breaker::acquire`], resized with [`Breaker::update_concurrency`]) and one
//! breaker per pod tracker (only ever [`Breaker::try_acquire`]d).
//!
//! **What it hands on.** A [`Permit`] that frees its slot when dropped, or a
//! [`QueueFull`] error when `queue_depth + max_concurrency` requests are already
//! inside (waiting or executing). The edge (`respond.rs`) maps `QueueFull` to
//! `503 pending request queue full`.
//!
//! Two kinds, chosen at construction (`activator.md` §3.1):
//!
//! * **Counting** ([`Breaker::new`]): at most `capacity` permits are out at a
//!   time; up to `queue_depth` more requests wait; anything beyond that is
//!   rejected at once. Mirrors `pkg/queue/breaker.go` `Breaker`.
//! * **Infinite** ([`Breaker::infinite`]): the activator's breaker for
//!   `containerConcurrency: 0`. It is either *closed* (capacity 0: everybody
//!   waits, without a queue limit) or *open* (any capacity > 0: every request
//!   passes, and opening releases all waiters at once). Mirrors
//!   `pkg/activator/net/throttler.go` `infiniteBreaker`.
//!
//! # Design
//!
//! All bookkeeping (capacity, executing, waiting) lives in one small
//! `std::sync::Mutex`, held only for a few instructions and never across an
//! `.await`; waiters park on a [`tokio::sync::Notify`]. This was preferred to
//! an `AtomicUsize` + [`tokio::sync::Semaphore`] pair because shrinking a
//! semaphore below the number of permits it has handed out needs a separate
//! "debt" counter that races with concurrent releases, whereas here a shrink is
//! exact: no new permit is granted until `executing < capacity` again. The
//! cost on the hot path is one uncontended lock to acquire and one to release,
//! which is what the semaphore pays internally as well.
//!
//! Waiting is cancel-safe: a waiter registers with the `Notify` while holding
//! the lock, so a release can never slip between "is it full?" and "park"; a
//! waiter dropped after it was picked by `notify_one` passes the wake-up on
//! (tokio's `Notified` does that on drop); and the waiter's guard removes it
//! from the admission count the moment it is dropped. A woken waiter re-checks
//! the state, so wake-ups are approximately FIFO and newcomers may barge, as in
//! Knative (`queue-proxy.md` §3.3).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use kdp_proxy::breaker::{Breaker, BreakerParams};
//!
//! // containerConcurrency = 1 in the queue-proxy: 1 executing, 10 queued.
//! let breaker = Breaker::new(BreakerParams { queue_depth: 10, max_concurrency: 1, initial_capacity: 1 });
//! let permit = breaker.acquire().await.expect("empty breaker admits");
//! assert_eq!(breaker.in_flight(), 1);
//! assert!(breaker.try_acquire().is_none());
//! drop(permit);
//! assert_eq!(breaker.in_flight(), 0);
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[cfg(test)]
mod tests;

/// Sizes of a counting [`Breaker`].
///
/// The queue-proxy uses `queue_depth = 10 * cc`, `max_concurrency = cc`,
/// `initial_capacity = cc`; the activator uses `queue_depth = 10000`,
/// `max_concurrency = i32::MAX` for revisions and `initial_capacity = cc` per
/// pod tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerParams {
    /// How many requests may wait for a slot on top of those executing.
    pub queue_depth: usize,
    /// The largest capacity the breaker may ever have; together with
    /// `queue_depth` it bounds admission.
    pub max_concurrency: usize,
    /// The capacity (concurrent executions) at construction, clamped to
    /// `max_concurrency`.
    pub initial_capacity: usize,
}

/// The breaker was full: `queue_depth + max_concurrency` requests are already
/// waiting or executing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pending request queue full")]
pub struct QueueFull;

/// Knative's concurrency breaker; see the [module docs](self).
///
/// Cloning is cheap and every clone shares the same slots.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// One execution slot of a [`Breaker`], released when dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Waiters park here; registered under `state`'s lock.
    notify: Notify,
}

#[derive(Debug)]
struct State {
    kind: Kind,
    /// Permits that may be out at once. For [`Kind::Infinite`], 0 (closed) or
    /// anything else (open).
    capacity: usize,
    /// Permits currently out. May exceed `capacity` right after a shrink.
    executing: usize,
    /// Admitted requests still waiting for a permit.
    waiting: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counting {
        /// `queue_depth + max_concurrency`: admission limit for `waiting + executing`.
        total_slots: usize,
        max_concurrency: usize,
    },
    Infinite,
}

/// Removes a waiter from `State::waiting` however its wait ends.
struct WaitGuard<'a> {
    shared: &'a Shared,
    /// Cleared when the wait ends with a permit (the count moves to `executing`).
    armed: bool,
}

// === impl Breaker ===

impl Breaker {
    /// A counting breaker with the given sizes.
    pub fn new(params: BreakerParams) -> Self {
        let BreakerParams {
            queue_depth,
            max_concurrency,
            initial_capacity,
        } = params;
        Self::with_state(State {
            kind: Kind::Counting {
                total_slots: queue_depth.saturating_add(max_concurrency),
                max_concurrency,
            },
            capacity: initial_capacity.min(max_concurrency),
            executing: 0,
            waiting: 0,
        })
    }

    /// The activator's infinite breaker (for `containerConcurrency: 0`), open
    /// when `capacity > 0`, closed otherwise. It never rejects with
    /// [`QueueFull`].
    pub fn infinite(capacity: usize) -> Self {
        Self::with_state(State {
            kind: Kind::Infinite,
            capacity: capacity.min(1),
            executing: 0,
            waiting: 0,
        })
    }

    fn with_state(state: State) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                notify: Notify::new(),
            }),
        }
    }

    /// Waits for an execution slot.
    ///
    /// Fails at once with [`QueueFull`] when the breaker already holds
    /// `queue_depth + max_concurrency` requests. Cancel-safe: dropping the
    /// future gives its place back immediately and never leaks a permit.
    pub async fn acquire(&self) -> Result<Permit, QueueFull> {
        {
            let mut state = self.shared.lock();
            if !state.admits() {
                return Err(QueueFull);
            }
            if state.has_free_slot() {
                state.executing += 1;
                return Ok(self.permit());
            }
            state.waiting += 1;
        }
        let mut guard = WaitGuard {
            shared: &self.shared,
            armed: true,
        };
        loop {
            let notified = self.shared.notify.notified();
            let mut notified = std::pin::pin!(notified);
            {
                let mut state = self.shared.lock();
                if state.has_free_slot() {
                    state.waiting -= 1;
                    state.executing += 1;
                    guard.armed = false;
                    return Ok(self.permit());
                }
                // Registered under the lock, so a release between the check
                // above and the `.await` below still reaches us.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    /// Takes a slot only if one is free right now (Knative's `Reserve`).
    ///
    /// Used by the activator's pod trackers, which never wait.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut state = self.shared.lock();
        // As in Knative's `Reserve`, the admission limit applies too: after a
        // shrink-then-grow the breaker can hold more waiters than queue_depth.
        if state.admits() && state.has_free_slot() {
            state.executing += 1;
            Some(self.permit())
        } else {
            None
        }
    }

    /// Changes the capacity at runtime (Knative's `UpdateConcurrency`).
    ///
    /// Growing wakes as many waiters as there are new free slots (for the
    /// infinite breaker: opening wakes everybody). Shrinking never revokes a
    /// permit; it takes effect as permits are returned. A counting breaker's
    /// capacity is clamped to `max_concurrency`.
    pub fn update_concurrency(&self, capacity: usize) {
        let mut state = self.shared.lock();
        match state.kind {
            Kind::Counting {
                max_concurrency, ..
            } => {
                state.capacity = capacity.min(max_concurrency);
                let wake = state.free_slots().min(state.waiting);
                drop(state);
                for _ in 0..wake {
                    self.shared.notify.notify_one();
                }
            }
            Kind::Infinite => {
                let was_open = state.capacity > 0;
                state.capacity = capacity.min(1);
                let open = state.capacity > 0;
                drop(state);
                if open && !was_open {
                    self.shared.notify.notify_waiters();
                }
            }
        }
    }

    /// Requests inside the breaker: waiting plus executing. This is
    /// `kn.serving.queue.depth` in the queue-proxy.
    pub fn in_flight(&self) -> usize {
        let state = self.shared.lock();
        state.waiting + state.executing
    }

    /// The current capacity. For the infinite breaker 0 (closed) or 1 (open),
    /// as in Knative.
    pub fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    fn permit(&self) -> Permit {
        Permit {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Breaker")
            .field("kind", &state.kind)
            .field("capacity", &state.capacity)
            .field("executing", &state.executing)
            .field("waiting", &state.waiting)
            .finish()
    }
}

// === impl Permit ===

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.executing -= 1;
        let wake = state.waiting > 0 && state.has_free_slot();
        drop(state);
        if wake {
            self.shared.notify.notify_one();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held, and the counters stay
        // consistent between statements anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl State ===

impl State {
    /// Whether one more request may enter (wait or execute).
    fn admits(&self) -> bool {
        match self.kind {
            Kind::Counting { total_slots, .. } => self.waiting + self.executing < total_slots,
            Kind::Infinite => true,
        }
    }

    fn has_free_slot(&self) -> bool {
        match self.kind {
            Kind::Counting { .. } => self.executing < self.capacity,
            Kind::Infinite => self.capacity > 0,
        }
    }

    fn free_slots(&self) -> usize {
        self.capacity.saturating_sub(self.executing)
    }
}

// === impl WaitGuard ===

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().waiting -= 1;
        }
    }
}
