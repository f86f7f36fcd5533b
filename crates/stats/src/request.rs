//! Knative's time-weighted request accumulator (queue-proxy spec §5.1).
//!
//! The queue-proxy's stats layer calls [`RequestStats::request_in`] and
//! [`RequestStats::request_out`] around every non-probe request (before the
//! breaker, so queued requests count), and a 1 s ticker calls
//! [`RequestStats::report`], whose [`Report`] becomes the `Stat` snapshot the
//! autoscaler scrapes ([`Report::to_stat`]). The activator's concurrency
//! reporter keeps one accumulator per revision.
//!
//! Between two events the concurrency is constant, so its integral over the
//! window is a sum of `concurrency × elapsed` rectangles. We keep that
//! integral in integer nanoseconds, so it is exact; only the final division in
//! [`RequestStats::report`] rounds. Timestamps older than the last event are
//! not integrated (Knative ignores them as benign races), but the event itself
//! still counts.
//!
//! Nothing here can fail; there is no error type.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::Stat;

/// One accumulator: current concurrency plus the current window's integrals.
///
/// Plain data with `&mut self` methods; share it between tasks through
/// [`SharedRequestStats`].
///
/// ```
/// use std::time::Duration;
/// use kdp_stats::RequestStats;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// let mut stats = RequestStats::new(t0);
/// stats.request_in(t0, false);
/// stats.request_out(t0 + Duration::from_millis(500), false);
/// let report = stats.report(t0 + Duration::from_secs(1));
/// assert_eq!(report.average_concurrency, 0.5);
/// assert_eq!(report.request_count, 1);
/// ```
#[derive(Clone, Debug)]
pub struct RequestStats {
    // State: survives reports.
    concurrency: u64,
    proxied_concurrency: u64,
    last_change: Instant,
    // Window accumulators: reset by every report.
    /// ∫ concurrency dt, in request-nanoseconds.
    concurrency_nanos: u128,
    /// ∫ proxied concurrency dt, in request-nanoseconds.
    proxied_concurrency_nanos: u128,
    /// Length of the window integrated so far, in nanoseconds.
    window_nanos: u128,
    requests: u64,
    proxied_requests: u64,
}

/// What one window looked like; produced by [`RequestStats::report`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    /// Time-weighted average concurrency over the window (0 for an empty window).
    pub average_concurrency: f64,
    /// Time-weighted average concurrency of proxied (`K-Proxy-Request:
    /// activator`) requests over the window.
    pub average_proxied_concurrency: f64,
    /// Requests that arrived during the window.
    pub request_count: u64,
    /// Proxied requests that arrived during the window.
    pub proxied_request_count: u64,
}

/// A cloneable, thread-safe handle to one [`RequestStats`].
///
/// A [`Mutex`] rather than atomics: every event reads the clock position and
/// then updates up to five fields that must move together (integrate up to
/// `now`, then change the concurrency), which atomics can only do with a CAS
/// loop over a packed struct. The critical section is a handful of integer
/// additions and never awaits, so an uncontended lock costs tens of
/// nanoseconds and contention stays short; Knative guards the same state the
/// same way. The lock is never held across `.await`, and a poisoned lock is
/// recovered, since every update leaves the fields consistent.
#[derive(Clone, Debug)]
pub struct SharedRequestStats {
    inner: Arc<Mutex<RequestStats>>,
}

// === impl RequestStats ===

impl RequestStats {
    /// An accumulator whose first window starts at `now`, with nothing in flight.
    pub fn new(now: Instant) -> Self {
        Self {
            concurrency: 0,
            proxied_concurrency: 0,
            last_change: now,
            concurrency_nanos: 0,
            proxied_concurrency_nanos: 0,
            window_nanos: 0,
            requests: 0,
            proxied_requests: 0,
        }
    }

    /// Records a request arriving at `now`; `proxied` marks requests that came
    /// through the activator.
    pub fn request_in(&mut self, now: Instant, proxied: bool) {
        self.integrate(now);
        self.concurrency += 1;
        self.requests += 1;
        if proxied {
            self.proxied_concurrency += 1;
            self.proxied_requests += 1;
        }
    }

    /// Records a request finishing at `now`; `proxied` must match the value
    /// given to [`request_in`](Self::request_in).
    ///
    /// An *out* without a matching *in* is a caller bug; the concurrency stays
    /// at zero rather than wrapping.
    pub fn request_out(&mut self, now: Instant, proxied: bool) {
        self.integrate(now);
        self.concurrency = self.concurrency.saturating_sub(1);
        if proxied {
            self.proxied_concurrency = self.proxied_concurrency.saturating_sub(1);
        }
    }

    /// Closes the window at `now`: returns its averages and counts and starts
    /// a new window. The in-flight concurrency carries over.
    pub fn report(&mut self, now: Instant) -> Report {
        self.integrate(now);
        let report = if self.window_nanos == 0 {
            Report {
                request_count: self.requests,
                proxied_request_count: self.proxied_requests,
                ..Report::default()
            }
        } else {
            let window = self.window_nanos as f64;
            Report {
                average_concurrency: self.concurrency_nanos as f64 / window,
                average_proxied_concurrency: self.proxied_concurrency_nanos as f64 / window,
                request_count: self.requests,
                proxied_request_count: self.proxied_requests,
            }
        };
        self.concurrency_nanos = 0;
        self.proxied_concurrency_nanos = 0;
        self.window_nanos = 0;
        self.requests = 0;
        self.proxied_requests = 0;
        report
    }

    /// Requests in flight now.
    pub fn concurrency(&self) -> u64 {
        self.concurrency
    }

    /// Proxied requests in flight now.
    pub fn proxied_concurrency(&self) -> u64 {
        self.proxied_concurrency
    }

    /// Adds the rectangle since the last change; ignores timestamps that are
    /// not after it (mirrors `compute` in networking's `stats/request.go`).
    fn integrate(&mut self, now: Instant) {
        if now <= self.last_change {
            return;
        }
        let elapsed = (now - self.last_change).as_nanos();
        self.window_nanos += elapsed;
        self.concurrency_nanos += u128::from(self.concurrency) * elapsed;
        self.proxied_concurrency_nanos += u128::from(self.proxied_concurrency) * elapsed;
        self.last_change = now;
    }
}

// === impl Report ===

impl Report {
    /// The `Stat` snapshot the queue-proxy serves for this window: counts are
    /// turned into rates over `period` (always 1 s in the binary), averages are
    /// copied, `timestamp` stays 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kdp_stats::Report;
    ///
    /// let report = Report { average_concurrency: 3.0, request_count: 39, ..Report::default() };
    /// let stat = report.to_stat("pod", Duration::from_secs(1), Duration::from_secs(5));
    /// assert_eq!(stat.request_count, 39.0);
    /// assert_eq!(stat.process_uptime, 5.0);
    /// ```
    pub fn to_stat(&self, pod_name: &str, period: Duration, process_uptime: Duration) -> Stat {
        let seconds = period.as_secs_f64();
        let per_second = |count: u64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                count as f64
            }
        };
        Stat {
            pod_name: pod_name.to_owned(),
            average_concurrent_requests: self.average_concurrency,
            average_proxied_concurrent_requests: self.average_proxied_concurrency,
            request_count: per_second(self.request_count),
            proxied_request_count: per_second(self.proxied_request_count),
            process_uptime: process_uptime.as_secs_f64(),
            timestamp: 0,
        }
    }
}

// === impl SharedRequestStats ===

impl SharedRequestStats {
    /// A shared accumulator whose first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            inner: Arc::new(Mutex::new(RequestStats::new(now))),
        }
    }

    /// See [`RequestStats::request_in`].
    pub fn request_in(&self, now: Instant, proxied: bool) {
        self.lock().request_in(now, proxied);
    }

    /// See [`RequestStats::request_out`].
    pub fn request_out(&self, now: Instant, proxied: bool) {
        self.lock().request_out(now, proxied);
    }

    /// See [`RequestStats::report`].
    pub fn report(&self, now: Instant) -> Report {
        self.lock().report(now)
    }

    /// Requests in flight now.
    pub fn concurrency(&self) -> u64 {
        self.lock().concurrency()
    }

    fn lock(&self) -> MutexGuard<'_, RequestStats> {
        // Every method leaves the fields consistent, so a panic elsewhere
        // while holding the lock cannot have corrupted them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
