//! The KPA decider: demand → desired pod count (activator spec §8.5).
//!
//! Fifth stage. One [`Decider`] per revision records incoming stats into its
//! metric buckets ([`Decider::record`], which also says when a poke should
//! run the scaler at once) and runs [`Decider::scale`] every 2 s. The
//! resulting [`ScaleResult`] (desired pods and excess burst capacity) goes to
//! the [`crate::reconciler`]; [`DeciderStatus::notifies`] tells the caller
//! when the reconciler must be told. The only failure is [`NoData`]: pods
//! are scraped but nothing arrived in the stable window yet.
//!
//! Behaviour mirrors `pkg/autoscaler/scaling/autoscaler.go` (panic mode,
//! rate limits, activation scale, scale-down delay) and the status handling
//! of `multiscaler.go`.

use kdp_stats::Stat;

use crate::aggregation::{Buckets, MaxWindow};
use crate::config::TICK_INTERVAL;
use crate::spec::{DeciderSpec, ScalingMetric};
use crate::time::Timestamp;

/// The scaler's answer for one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleResult {
    /// Pods the revision should run.
    pub desired: u32,
    /// Spare capacity beyond the target burst capacity; negative means the
    /// activator must stay in the path. −1 also encodes TBC = −1.
    pub excess_burst_capacity: i32,
}

/// Stable and panic window averages of the scaling metric.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// Stable-window average.
    pub stable: f64,
    /// Panic-window average.
    pub panic: f64,
}

/// The decider's last published values (Knative's `Decider.Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeciderStatus {
    /// Last desired scale; `None` until the first successful run (Go's −1).
    pub desired_scale: Option<u32>,
    /// Last excess burst capacity.
    pub excess_burst_capacity: i32,
}

/// The stable window holds no data yet while pods are being scraped, so no
/// decision can be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no data to scale on yet")]
pub struct NoData;

/// Per-revision scaling state.
#[derive(Debug)]
pub struct Decider {
    spec: DeciderSpec,
    windows: MetricWindows,
    /// Set while panicking: the last time the panic threshold was crossed.
    panic_time: Option<Timestamp>,
    /// Highest desired scale during the current panic.
    max_panic_pods: u32,
    /// Present when a scale-down delay was configured at creation.
    delay_window: Option<MaxWindow>,
    status: DeciderStatus,
}

/// Stable and panic buckets for both metrics (Knative's metric collection).
#[derive(Debug)]
struct MetricWindows {
    stable_concurrency: Buckets,
    panic_concurrency: Buckets,
    stable_rps: Buckets,
    panic_rps: Buckets,
}

// === impl Decider ===

impl Decider {
    /// A decider for a revision that has `ready_pods` ready right now.
    ///
    /// With more than one ready pod it starts in panic mode, holding at least
    /// that many pods until the stable window has filled: after a restart the
    /// metric history is gone, and scaling down on an empty window would be
    /// wrong.
    pub fn new(spec: DeciderSpec, ready_pods: u32, now: Timestamp) -> Self {
        let delay_window = (!spec.scale_down_delay.is_zero())
            .then(|| MaxWindow::new(spec.scale_down_delay, TICK_INTERVAL));
        let status = DeciderStatus {
            desired_scale: None,
            excess_burst_capacity: initial_excess_burst_capacity(&spec),
        };
        Self {
            windows: MetricWindows::new(&spec),
            panic_time: (ready_pods > 1).then_some(now),
            max_panic_pods: ready_pods,
            delay_window,
            status,
            spec,
        }
    }

    /// The parameters in use.
    pub fn spec(&self) -> &DeciderSpec {
        &self.spec
    }

    /// Replaces the parameters. Metric windows are rebuilt (losing history)
    /// only when their length or algorithm changed. As in Knative, a
    /// scale-down delay window is kept from creation.
    pub fn update(&mut self, spec: DeciderSpec) {
        if spec.stable_window != self.spec.stable_window
            || spec.panic_window != self.spec.panic_window
            || spec.aggregation != self.spec.aggregation
        {
            self.windows = MetricWindows::new(&spec);
        }
        self.spec = spec;
    }

    /// The last published status.
    pub fn status(&self) -> DeciderStatus {
        self.status
    }

    /// Whether the decider is in panic mode.
    pub fn is_panicking(&self) -> bool {
        self.panic_time.is_some()
    }

    /// Records one stat received at `at` (the stat's `timestamp`, or receipt
    /// time). Proxied values are subtracted: the activator reported them
    /// already. Returns true when this is a poke: the last decision was zero
    /// pods and the stat shows demand, so [`scale`](Self::scale) should run
    /// now instead of at the next tick.
    pub fn record(&mut self, at: Timestamp, stat: &Stat) -> bool {
        self.windows.record(at, stat);
        self.status.desired_scale == Some(0) && stat.average_concurrent_requests != 0.0
    }

    /// Runs the scaler on the recorded metrics, with `ready_pods` ready.
    ///
    /// # Errors
    ///
    /// [`NoData`] when pods are scraped and the stable window is still empty;
    /// the status is left unchanged.
    pub fn scale(&mut self, now: Timestamp, ready_pods: u32) -> Result<ScaleResult, NoData> {
        let observation = self.windows.observe(&self.spec, now)?;
        Ok(self.scale_with(now, ready_pods, observation))
    }

    /// Runs the scaler on given window averages (the metric-independent
    /// core of [`scale`](Self::scale)), updating panic state and status.
    pub fn scale_with(
        &mut self,
        now: Timestamp,
        ready_pods: u32,
        observed: Observation,
    ) -> ScaleResult {
        let spec = &self.spec;
        let pods = f64::from(ready_pods.max(1));

        // Rate limits; the ceil lets a slow rate still grow by one pod.
        let max_up = (spec.max_scale_up_rate * pods).ceil();
        let max_down = if spec.reachable {
            (pods / spec.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let want_stable = (observed.stable / spec.target_value).ceil();
        let want_panic = (observed.panic / spec.target_value).ceil();
        let mut stable_pods = to_pods(want_stable.max(max_down).min(max_up));
        let mut panic_pods = to_pods(want_panic.max(max_down).min(max_up));
        if spec.activation_scale > 1 {
            if want_stable > 0.0 {
                stable_pods = stable_pods.max(spec.activation_scale);
            }
            if want_panic > 0.0 {
                panic_pods = panic_pods.max(spec.activation_scale);
            }
        }

        let over_threshold = want_panic / pods >= spec.panic_threshold;
        match self.panic_time {
            // Enter panic, or extend it while demand stays high.
            _ if over_threshold => self.panic_time = Some(now),
            // Leave once the surge has been in the stable window long enough.
            Some(since) if since + spec.stable_window < now => {
                self.panic_time = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }

        let mut desired = stable_pods;
        if self.panic_time.is_some() {
            // Provision for the larger of the two, and never scale down
            // while panicking.
            desired = desired.max(panic_pods);
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
        }

        if spec.reachable
            && let Some(window) = &mut self.delay_window
        {
            window.record(now, desired);
            desired = window.current();
        }

        let result = ScaleResult {
            desired,
            excess_burst_capacity: excess_burst_capacity(spec, ready_pods, observed.panic),
        };
        self.status = DeciderStatus {
            desired_scale: Some(result.desired),
            excess_burst_capacity: result.excess_burst_capacity,
        };
        result
    }
}

// === impl DeciderStatus ===

impl DeciderStatus {
    /// Whether moving from `previous` to `self` must be reported to the
    /// reconciler: the desired scale changed or the excess burst capacity
    /// changed sign (which moves the activator in or out of the path).
    pub fn notifies(&self, previous: &Self) -> bool {
        self.desired_scale != previous.desired_scale
            || (self.excess_burst_capacity < 0) != (previous.excess_burst_capacity < 0)
    }
}

// === impl MetricWindows ===

impl MetricWindows {
    fn new(spec: &DeciderSpec) -> Self {
        let buckets = |window| Buckets::new(window, spec.aggregation);
        Self {
            stable_concurrency: buckets(spec.stable_window),
            panic_concurrency: buckets(spec.panic_window),
            stable_rps: buckets(spec.stable_window),
            panic_rps: buckets(spec.panic_window),
        }
    }

    fn record(&mut self, at: Timestamp, stat: &Stat) {
        let concurrency =
            stat.average_concurrent_requests - stat.average_proxied_concurrent_requests;
        self.stable_concurrency.record(at, concurrency);
        self.panic_concurrency.record(at, concurrency);
        let rps = stat.request_count - stat.proxied_request_count;
        self.stable_rps.record(at, rps);
        self.panic_rps.record(at, rps);
    }

    fn observe(&self, spec: &DeciderSpec, now: Timestamp) -> Result<Observation, NoData> {
        let (stable, panic) = match spec.metric {
            ScalingMetric::Concurrency => (&self.stable_concurrency, &self.panic_concurrency),
            ScalingMetric::Rps => (&self.stable_rps, &self.panic_rps),
        };
        if spec.scrape_pods && stable.is_empty(now) {
            return Err(NoData);
        }
        Ok(Observation {
            stable: stable.window_average(now),
            panic: panic.window_average(now),
        })
    }
}

/// EBC before the first run: TBC itself for −1 and 0, else what the initial
/// scale leaves after the burst capacity.
fn initial_excess_burst_capacity(spec: &DeciderSpec) -> i32 {
    if spec.target_burst_capacity == -1.0 || spec.target_burst_capacity == 0.0 {
        to_i32(spec.target_burst_capacity)
    } else {
        to_i32(f64::from(spec.initial_scale) * spec.total_value - spec.target_burst_capacity)
    }
}

/// `floor(ready × total − TBC − panic)`; 0 for TBC 0, −1 for TBC −1.
fn excess_burst_capacity(spec: &DeciderSpec, ready_pods: u32, panic: f64) -> i32 {
    let tbc = spec.target_burst_capacity;
    if tbc == 0.0 {
        0
    } else if tbc > 0.0 {
        to_i32((f64::from(ready_pods) * spec.total_value - tbc - panic).floor())
    } else {
        -1
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "pod counts saturate at u32 bounds; NaN reads as 0"
)]
fn to_pods(x: f64) -> u32 {
    x as u32
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "truncates toward zero and saturates, like Go's int32(float64)"
)]
fn to_i32(x: f64) -> i32 {
    x as i32
}

#[cfg(test)]
mod tests;
