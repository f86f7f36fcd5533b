//! The drain latch: the quiet period a component waits out before it stops.
//!
//! Knative's drainer (`knative.dev/pkg/network/handlers/drain.go`) starts a
//! quiet-period timer when draining begins; every ordinary request that
//! arrives while the timer runs restarts it, and [`Drainer::drain`] returns
//! once a whole quiet period has passed with no traffic. Probes consult
//! [`Drainer::is_draining`] to answer 503 `shutting down` meanwhile.
//! [`Drainer::reset`] returns to the serving state and releases every waiter
//! (the queue-proxy's `/wait-for-drain` safety reset).
//!
//! The request path only pays an atomic load while not draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Quiet period of Knative's drainer.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(30);

/// A cloneable handle to one drain latch.
#[derive(Clone, Debug)]
pub struct Drainer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    quiet_period: Duration,
    draining: AtomicBool,
    state: Mutex<State>,
    phase: watch::Sender<Phase>,
}

#[derive(Debug)]
struct State {
    deadline: Instant,
    generation: u64,
}

/// Where the latch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving normally.
    Serving,
    /// Draining; the quiet period has not yet passed.
    Draining,
    /// The quiet period passed; the component may stop.
    Drained,
}

// === impl Drainer ===

impl Drainer {
    /// A latch with the given quiet period.
    pub fn new(quiet_period: Duration) -> Self {
        let (phase, _) = watch::channel(Phase::Serving);
        Self {
            inner: Arc::new(Inner {
                quiet_period,
                draining: AtomicBool::new(false),
                state: Mutex::new(State {
                    deadline: Instant::now(),
                    generation: 0,
                }),
                phase,
            }),
        }
    }

    /// True from the start of a drain until a reset (probes answer 503 meanwhile).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Records an ordinary request: while draining, restarts the quiet period.
    pub fn touch(&self) {
        if !self.is_draining() {
            return;
        }
        let mut state = self.lock();
        if *self.inner.phase.borrow() == Phase::Draining {
            state.deadline = Instant::now() + self.inner.quiet_period;
        }
    }

    /// Starts draining (or joins a drain in progress) and waits until a whole
    /// quiet period passed with no [`touch`](Self::touch), or until a
    /// [`reset`](Self::reset). Returns at once when already drained.
    pub async fn drain(&self) {
        let mut rx = self.inner.phase.subscribe();
        self.start();
        // Changes to Drained, or back to Serving on reset, release us.
        let _ = rx.wait_for(|p| *p != Phase::Draining).await;
    }

    /// Starts draining without waiting.
    pub fn start(&self) {
        let mut state = self.lock();
        if *self.inner.phase.borrow() != Phase::Serving {
            return;
        }
        state.generation += 1;
        state.deadline = Instant::now() + self.inner.quiet_period;
        self.inner.draining.store(true, Ordering::Release);
        self.inner.phase.send_replace(Phase::Draining);
        let generation = state.generation;
        drop(state);
        tokio::spawn(self.clone().run_timer(generation));
    }

    /// Leaves the drain: probes turn healthy again and every waiter is released.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.generation += 1;
        self.inner.draining.store(false, Ordering::Release);
        self.inner.phase.send_replace(Phase::Serving);
    }

    async fn run_timer(self, generation: u64) {
        loop {
            let deadline = {
                let state = self.lock();
                if state.generation != generation {
                    return;
                }
                if Instant::now() >= state.deadline {
                    self.inner.phase.send_replace(Phase::Drained);
                    return;
                }
                state.deadline
            };
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The critical sections never panic, so a poisoned lock still holds consistent state.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Drainer {
    fn default() -> Self {
        Self::new(DEFAULT_QUIET_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Instant, advance, sleep};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn drain_waits_for_quiet_period() {
        let d = Drainer::new(Duration::from_secs(30));
        assert!(!d.is_draining());
        let start = Instant::now();
        d.drain().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(d.is_draining());
        assert_eq!(d.phase(), Phase::Drained);
        // Later calls return at once.
        let again = Instant::now();
        d.drain().await;
        assert_eq!(again.elapsed(), Duration::ZERO);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn traffic_extends_the_drain() {
        let d = Drainer::new(Duration::from_secs(30));
        let start = Instant::now();
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.drain().await }
        });
        sleep(Duration::from_secs(20)).await;
        d.touch();
        waiter.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waiters_release_together_and_reset_restarts() {
        let d = Drainer::new(Duration::from_secs(30));
        let a = tokio::spawn({
            let d = d.clone();
            async move { d.drain().await }
        });
        advance(Duration::from_secs(5)).await;
        let b = tokio::spawn({
            let d = d.clone();
            async move { d.drain().await }
        });
        advance(Duration::from_secs(1)).await;
        d.reset();
        a.await.unwrap();
        b.await.unwrap();
        assert!(!d.is_draining());
        // A fresh drain waits the full period again.
        let start = Instant::now();
        d.drain().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }
}
