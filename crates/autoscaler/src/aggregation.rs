//! Metric buckets and the scale-down-delay window (activator spec §8.4–8.5).
//!
//! Fourth stage: the decider records every stat value into [`Buckets`] (one
//! per window and metric) and reads back a window average when it scales;
//! [`MaxWindow`] then holds a scale-down back for the scale-down delay.
//!
//! [`Buckets`] is a ring of 1 s buckets indexed by Unix second. Values landing
//! in one second are summed (several activators and the pod scraper add up),
//! skipped seconds read as zero, values older than the window are dropped and
//! a window-long silence resets the data start. Mirrors
//! `pkg/autoscaler/aggregation/bucketing.go` and `aggregation/max`. Nothing
//! here can fail.

use std::collections::VecDeque;
use std::time::Duration;

use crate::spec::AggregationAlgorithm;
use crate::time::Timestamp;

/// Weights of the exponential average must add up to at least this much.
const WEIGHT_PRECISION: f64 = 0.9999;
/// Smallest smoothing coefficient, so long windows still favour recent data.
const MIN_SMOOTHING: f64 = 0.2;

/// One metric window of 1 s buckets.
///
/// ```
/// use std::time::Duration;
/// use kdp_autoscaler::{AggregationAlgorithm, Buckets, Timestamp};
///
/// let mut b = Buckets::new(Duration::from_secs(60), AggregationAlgorithm::Linear);
/// b.record(Timestamp::from_unix_secs(100), 4.0);
/// b.record(Timestamp::from_unix_secs(101), 2.0);
/// // Only two seconds of data so far: averaged over those two.
/// assert_eq!(b.window_average(Timestamp::from_unix_secs(101)), 3.0);
/// ```
#[derive(Clone, Debug)]
pub struct Buckets {
    algorithm: AggregationAlgorithm,
    /// Smoothing coefficient α of the weighted-exponential average.
    smoothing: f64,
    buckets: Vec<f64>,
    /// Sum of all buckets (including ones outside the valid data range).
    total: f64,
    /// Unix second of the first write since the last reset.
    first_write: Option<u64>,
    /// Unix second of the newest write.
    last_write: Option<u64>,
}

/// A sliding maximum over time slots: the scale-down delay (§8.5 step 9).
///
/// Recording `d` at time `t` and reading [`current`](Self::current) yields
/// the largest value recorded in the last `ceil(delay / granularity)` slots,
/// so a scale-down takes effect only once the higher values have scrolled
/// out. Uses the ascending-minima deque: amortised O(1) per record.
#[derive(Clone, Debug)]
pub struct MaxWindow {
    slots: u64,
    granularity_secs: u64,
    /// (slot index, value), indexes ascending and values strictly descending.
    maxima: VecDeque<(u64, u32)>,
}

// === impl Buckets ===

impl Buckets {
    /// Empty buckets covering `window` (rounded up to whole seconds, at
    /// least one).
    pub fn new(window: Duration, algorithm: AggregationAlgorithm) -> Self {
        let len = window_secs(window);
        // 1 - (1 - precision)^(1/n): the coefficient whose first n weights
        // sum to the precision.
        let smoothing = (1.0 - (1.0 - WEIGHT_PRECISION).powf(1.0 / len as f64)).max(MIN_SMOOTHING);
        Self {
            algorithm,
            smoothing,
            buckets: vec![0.0; usize::try_from(len).unwrap_or(usize::MAX)],
            total: 0.0,
            first_write: None,
            last_write: None,
        }
    }

    /// Window length in seconds (= number of buckets).
    pub fn window_secs(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// The averaging algorithm.
    pub fn algorithm(&self) -> AggregationAlgorithm {
        self.algorithm
    }

    /// Adds `value` to the bucket of `at`'s second.
    pub fn record(&mut self, at: Timestamp, value: f64) {
        let second = at.unix_secs();
        let window = self.window_secs();
        if self.last_write != Some(second) {
            match self.last_write {
                // Older than a window before the newest write: dropped.
                Some(last) if second.saturating_add(window) <= last => return,
                // Late but within the window: just add to its bucket.
                Some(last) if second < last => {
                    if self.first_write.is_none_or(|first| first > second) {
                        self.first_write = Some(second);
                    }
                }
                // Newer after a short gap: zero the skipped buckets.
                Some(last) if second - last < window => {
                    for skipped in last + 1..=second {
                        let idx = self.index(skipped);
                        self.total -= self.buckets[idx];
                        self.buckets[idx] = 0.0;
                    }
                    self.last_write = Some(second);
                }
                // First write, or a window-long silence: start over.
                _ => {
                    self.buckets.fill(0.0);
                    self.total = 0.0;
                    self.first_write = Some(second);
                    self.last_write = Some(second);
                }
            }
        }
        let idx = self.index(second);
        self.buckets[idx] += value;
        self.total += value;
    }

    /// True when nothing was recorded in the window ending at `now`.
    pub fn is_empty(&self, now: Timestamp) -> bool {
        self.last_write
            .is_none_or(|last| now.unix_secs().saturating_sub(last) > self.window_secs())
    }

    /// The window's average at `now` per the configured algorithm.
    pub fn window_average(&self, now: Timestamp) -> f64 {
        match self.algorithm {
            AggregationAlgorithm::Linear => self.linear_average(now),
            AggregationAlgorithm::WeightedExponential => self.weighted_average(now),
        }
    }

    /// Plain average over the valid buckets, rounded to 6 decimals. A window
    /// that started less than a window ago (or has not been written lately)
    /// averages only over the seconds that hold data.
    fn linear_average(&self, now: Timestamp) -> f64 {
        let (Some(last), Some(first)) = (self.last_write, self.first_write) else {
            return 0.0;
        };
        let now = now.unix_secs();
        let window = self.window_secs();
        let written = last.saturating_sub(first) + 1;
        if now <= last {
            return round6(self.total / written.min(window) as f64);
        }
        let silent = now - last;
        if silent >= window {
            return 0.0;
        }
        // The buckets after the last write up to now belong to older seconds
        // of the ring; leave them out.
        let stale: f64 = (last + 1..=now).map(|s| self.buckets[self.index(s)]).sum();
        round6((self.total - stale) / written.min(window - silent) as f64)
    }

    /// Exponentially weighted sum, newest second first; seconds without data
    /// since the last write count as zeros. Not normalised.
    fn weighted_average(&self, now: Timestamp) -> f64 {
        if self.is_empty(now) {
            return 0.0;
        }
        let Some(last) = self.last_write else {
            return 0.0;
        };
        let now = now.unix_secs();
        let decay = 1.0 - self.smoothing;
        let mut weight = self.smoothing;
        let mut count = self.window_secs();
        if now > last {
            let silent = now - last;
            weight *= decay.powf(silent as f64);
            count = count.saturating_sub(silent);
        }
        let mut sum = 0.0;
        for back in 0..count {
            sum += self.buckets[self.index_before(last, back)] * weight;
            weight *= decay;
        }
        sum
    }

    fn index(&self, second: u64) -> usize {
        // The remainder is below the bucket count, which is a usize.
        usize::try_from(second % self.window_secs()).unwrap_or(0)
    }

    /// Ring index of the second `back` seconds before `second`.
    fn index_before(&self, second: u64, back: u64) -> usize {
        let len = self.window_secs();
        let idx = (second % len + len - back % len) % len;
        usize::try_from(idx).unwrap_or(0)
    }
}

// === impl MaxWindow ===

impl MaxWindow {
    /// A window covering `duration` in slots of `granularity` (both rounded
    /// up to whole seconds; the scaler uses its 2 s tick).
    pub fn new(duration: Duration, granularity: Duration) -> Self {
        let granularity_secs = window_secs(granularity);
        let slots = window_secs(duration).div_ceil(granularity_secs).max(1);
        Self {
            slots,
            granularity_secs,
            maxima: VecDeque::new(),
        }
    }

    /// Records `value` in the slot of `at`.
    pub fn record(&mut self, at: Timestamp, value: u32) {
        let index = at.unix_secs() / self.granularity_secs;
        // Smaller (or equal) older values can never be the maximum again.
        let mut value = value;
        while self.maxima.back().is_some_and(|&(_, v)| v <= value) {
            self.maxima.pop_back();
        }
        // Drop slots that left the window.
        while self
            .maxima
            .front()
            .is_some_and(|&(i, _)| index.saturating_sub(i) >= self.slots)
        {
            self.maxima.pop_front();
        }
        // Several records in one slot keep the largest.
        if let Some(&(i, v)) = self.maxima.back()
            && i == index
        {
            value = value.max(v);
            self.maxima.pop_back();
        }
        self.maxima.push_back((index, value));
    }

    /// The largest value recorded in the window (0 before any record).
    pub fn current(&self) -> u32 {
        self.maxima.front().map_or(0, |&(_, v)| v)
    }
}

/// Whole seconds, rounded up, at least one.
fn window_secs(window: Duration) -> u64 {
    let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    secs.max(1)
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests;
