//! Autoscaler statistics: request events in, a `Stat` snapshot every second out.
//!
//! The proxy handler records an *in* event before the breaker (so queued
//! requests count as concurrency) and the matching *out* when the response
//! ends, through a [`StatsGuard`]. A 1 s ticker turns the window into a
//! [`Stat`] and stores it pre-encoded; scrapes of the metrics port read that
//! snapshot and never compute or reset anything (Knative's contract: before
//! the first tick the snapshot holds only `pod_name`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kdp_stats::{SharedRequestStats, Stat};
use prost::Message;
use tokio::time::Instant;

use crate::env::RevisionIdentity;

/// Knative's reporting period.
pub const REPORTING_PERIOD: Duration = Duration::from_secs(1);

/// The stats of one queue-proxy.
#[derive(Clone, Debug)]
pub struct Stats {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: SharedRequestStats,
    started: Instant,
    id: RevisionIdentity,
    snapshot: Mutex<(Stat, Bytes)>,
}

/// Holds one request's place in the concurrency count; dropping it records the *out* event.
#[derive(Debug)]
pub struct StatsGuard {
    requests: SharedRequestStats,
    proxied: bool,
}

// === impl Stats ===

impl Stats {
    /// Stats for the pod in `id`, starting now.
    pub fn new(id: &RevisionIdentity) -> Self {
        let now = Instant::now();
        let stat = Stat {
            pod_name: id.pod.clone(),
            ..Stat::default()
        };
        let bytes = Bytes::from(stat.encode_to_vec());
        Self {
            inner: Arc::new(Inner {
                requests: SharedRequestStats::new(now),
                started: now,
                id: id.clone(),
                snapshot: Mutex::new((stat, bytes)),
            }),
        }
    }

    /// Records a request arriving; `proxied` when the activator sent it.
    pub fn request_in(&self, proxied: bool) -> StatsGuard {
        self.inner.requests.request_in(Instant::now(), proxied);
        StatsGuard {
            requests: self.inner.requests.clone(),
            proxied,
        }
    }

    /// Requests inside the queue-proxy right now (queued or executing).
    pub fn concurrency(&self) -> u64 {
        self.inner.requests.concurrency()
    }

    /// Closes the current window and stores its `Stat` as the snapshot.
    pub fn tick(&self, period: Duration) -> Stat {
        let now = Instant::now();
        let report = self.inner.requests.report(now);
        let stat = report.to_stat(&self.inner.id.pod, period, now - self.inner.started);
        let bytes = Bytes::from(stat.encode_to_vec());
        *self.lock() = (stat.clone(), bytes);
        stat
    }

    /// Ticks every `period` forever (spawn it; abort it to stop).
    pub async fn report_every(self, period: Duration) {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.tick(period);
        }
    }

    /// The latest snapshot, protobuf-encoded.
    pub fn snapshot_bytes(&self) -> Bytes {
        self.lock().1.clone()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Stat {
        self.lock().0.clone()
    }

    /// The latest snapshot as Prometheus text, under the names Knative used
    /// before it dropped text exposition on this port (1.6).
    pub fn prometheus_text(&self) -> String {
        let stat = self.snapshot();
        let id = &self.inner.id;
        let labels = format!(
            "destination_configuration=\"{}\",destination_namespace=\"{}\",destination_pod=\"{}\",destination_revision=\"{}\"",
            id.configuration, id.namespace, id.pod, id.revision
        );
        let mut out = String::new();
        for (name, help, value) in [
            (
                "queue_requests_per_second",
                "Number of requests received since last Stat",
                stat.request_count,
            ),
            (
                "queue_proxied_operations_per_second",
                "Number of proxied requests received since last Stat",
                stat.proxied_request_count,
            ),
            (
                "queue_average_concurrent_requests",
                "Number of requests currently being handled by this pod",
                stat.average_concurrent_requests,
            ),
            (
                "queue_average_proxied_concurrent_requests",
                "Number of proxied requests currently being handled by this pod",
                stat.average_proxied_concurrent_requests,
            ),
            (
                "process_uptime",
                "The number of seconds that the process has been up",
                stat.process_uptime,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Stat, Bytes)> {
        self.inner
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        self.requests.request_out(Instant::now(), self.proxied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats::new(&RevisionIdentity {
            pod: "pod-a".into(),
            ..RevisionIdentity::default()
        })
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn snapshot_before_first_tick_has_only_pod_name() {
        let s = stats();
        assert_eq!(s.snapshot_bytes().as_ref(), b"\x0a\x05pod-a");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn half_second_request_averages_half() {
        let s = stats();
        let guard = s.request_in(false);
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(guard);
        let proxied = s.request_in(true);
        drop(proxied);
        tokio::time::advance(Duration::from_millis(500)).await;
        let stat = s.tick(REPORTING_PERIOD);
        assert!(
            (stat.average_concurrent_requests - 0.5).abs() < 1e-9,
            "{stat:?}"
        );
        assert_eq!(stat.request_count, 2.0);
        assert_eq!(stat.proxied_request_count, 1.0);
        assert!((stat.process_uptime - 1.0).abs() < 1e-9);
        assert_eq!(Stat::decode(s.snapshot_bytes()).unwrap(), stat);
    }
}
