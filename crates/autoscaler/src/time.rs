//! Wall-clock instants for the autoscaler.
//!
//! Knative's autoscaler works in Unix time: the stats server stamps every
//! [`Stat`](kdp_stats::Stat) with Unix seconds, metric buckets are indexed by
//! Unix second, and the scale-down-delay window by Unix second / 2. So the
//! decider and the reconciler take `now` as a [`Timestamp`], a duration since
//! the Unix epoch, rather than a monotonic `Instant`. The caller owns the
//! clock (`SystemTime`, or a paused-time mapping in tests).

use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime};

/// A point in time, as a duration since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Duration);

// === impl Timestamp ===

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Self = Self(Duration::ZERO);

    /// `since_epoch` after the Unix epoch.
    pub const fn from_unix(since_epoch: Duration) -> Self {
        Self(since_epoch)
    }

    /// Whole Unix seconds (the stats `timestamp` field).
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Converts a wall-clock time; times before the epoch map to the epoch.
    pub fn from_system_time(time: SystemTime) -> Self {
        Self(
            time.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// Duration since the Unix epoch.
    pub const fn as_unix(self) -> Duration {
        self.0
    }

    /// Whole seconds since the Unix epoch (Go's `time.Unix()`; truncates).
    pub const fn unix_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Self;

    /// Saturates at the largest representable time.
    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(rhs))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;

    /// Saturates at the epoch.
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0.saturating_sub(rhs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_secs(10);
        assert_eq!((t + Duration::from_millis(1500)).unix_secs(), 11);
        assert_eq!(t - Duration::from_secs(20), Timestamp::UNIX_EPOCH);
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            (t + Duration::from_secs(3)).saturating_duration_since(t),
            Duration::from_secs(3)
        );
        assert_eq!(
            Timestamp::from_system_time(SystemTime::UNIX_EPOCH),
            Timestamp::UNIX_EPOCH
        );
    }
}
