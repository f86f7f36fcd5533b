//! User-facing request metrics, served as Prometheus text on the user metrics port.
//!
//! Recorded by the proxy handler for every non-probe request that reaches the
//! user container, only when `OBSERVABILITY_CONFIG` asks for Prometheus
//! request metrics (otherwise nothing is recorded and nothing listens).
//! Names follow the OTel Prometheus exporter's rendering of Knative's
//! instruments: `kn_serving_invocation_duration_seconds` (histogram, label
//! `http_response_status_code`) and `kn_serving_queue_depth` (gauge, only
//! with a breaker). Kept per instance, so tests can run several queue-proxies
//! in one process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::RevisionIdentity;

/// Knative's histogram bounds for `kn.serving.invocation.duration`, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Histogram name as the OTel Prometheus exporter renders it.
pub const INVOCATION_DURATION: &str = "kn_serving_invocation_duration_seconds";
/// Gauge name as the OTel Prometheus exporter renders it.
pub const QUEUE_DEPTH: &str = "kn_serving_queue_depth";
/// Instrumentation scope of Knative's queue metrics.
pub const SCOPE: &str = "knative.dev/serving/pkg/queue";

/// The request metrics of one queue-proxy.
#[derive(Clone, Debug)]
pub struct AppMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    labels: String,
    histograms: Mutex<BTreeMap<u16, Histogram>>,
    queue_depth: AtomicU64,
    queue_depth_seen: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

// === impl AppMetrics ===

impl AppMetrics {
    /// Metrics labelled with the revision's identity.
    pub fn new(id: &RevisionIdentity) -> Self {
        let labels = format!(
            "k8s_namespace_name=\"{}\",kn_configuration_name=\"{}\",kn_revision_name=\"{}\",kn_service_name=\"{}\",otel_scope_name=\"{SCOPE}\"",
            escape(&id.namespace),
            escape(&id.configuration),
            escape(&id.revision),
            escape(&id.service),
        );
        Self {
            inner: Arc::new(Inner {
                labels,
                histograms: Mutex::default(),
                queue_depth: AtomicU64::new(0),
                queue_depth_seen: false.into(),
            }),
        }
    }

    /// Records the breaker's in-flight count as a request starts executing.
    pub fn queue_depth(&self, depth: usize) {
        self.inner
            .queue_depth
            .store(u64::try_from(depth).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.inner.queue_depth_seen.store(true, Ordering::Relaxed);
    }

    /// Records one request's duration and status.
    pub fn invocation(&self, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut map = self
            .inner
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let h = map.entry(status).or_default();
        h.counts[bucket] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let labels = &self.inner.labels;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {INVOCATION_DURATION} The duration of task execution"
        );
        let _ = writeln!(out, "# TYPE {INVOCATION_DURATION} histogram");
        let map = self
            .inner
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (status, h) in map.iter() {
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "{INVOCATION_DURATION}_bucket{{http_response_status_code=\"{status}\",{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{INVOCATION_DURATION}_bucket{{http_response_status_code=\"{status}\",{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "{INVOCATION_DURATION}_sum{{http_response_status_code=\"{status}\",{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "{INVOCATION_DURATION}_count{{http_response_status_code=\"{status}\",{labels}}} {}",
                h.count
            );
        }
        drop(map);
        if self.inner.queue_depth_seen.load(Ordering::Relaxed) {
            let _ = writeln!(
                out,
                "# HELP {QUEUE_DEPTH} Number of current requests in the queue"
            );
            let _ = writeln!(out, "# TYPE {QUEUE_DEPTH} gauge");
            let _ = writeln!(
                out,
                "{QUEUE_DEPTH}{{{labels}}} {}",
                self.inner.queue_depth.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_request_lands_in_the_one_second_bucket() {
        let m = AppMetrics::new(&RevisionIdentity::default());
        m.invocation(200, Duration::from_secs(1));
        let text = m.render();
        assert!(text.contains("le=\"0.75\"} 0"), "{text}");
        assert!(text.contains("le=\"1\"} 1"), "{text}");
        assert!(
            text.contains(
                "kn_serving_invocation_duration_seconds_count{http_response_status_code=\"200\""
            ),
            "{text}"
        );
        assert!(!text.contains(QUEUE_DEPTH), "no gauge without a breaker");
        m.queue_depth(3);
        assert!(m.render().contains("kn_serving_queue_depth{"));
    }
}
