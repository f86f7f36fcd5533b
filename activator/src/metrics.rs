//! The activator's metrics, as Prometheus text when `metrics-protocol: prometheus`.
//!
//! Beside the request path. Names are those the OTel Prometheus exporter
//! renders for Knative's instruments: `kn_revision_request_concurrency` (the
//! reporter's adjusted per-second concurrency), `kn_revision_request_queued`
//! and `kn_revision_request_active` (read from the throttler when scraped),
//! and `kn_activator_stats_conn_reachable` / `_errors_total` for the
//! autoscaler connection. With the default `metrics-protocol: none` nothing
//! listens, as in Knative.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kdp_stats::RevisionKey;

use crate::revision::Revisions;
use crate::throttle::Throttler;

/// Instrumentation scope of Knative's activator metrics.
pub const SCOPE: &str = "knative.dev/serving/pkg/activator";

/// The activator's metric state.
#[derive(Debug, Default)]
pub struct Metrics {
    concurrency: Mutex<HashMap<RevisionKey, f64>>,
    /// -1 before the first connection attempt settles, then 0 or 1.
    reachable: AtomicI64,
    errors: AtomicU64,
}

// === impl Metrics ===

impl Metrics {
    /// Fresh metrics (nothing recorded before the first connection change).
    pub fn new() -> Self {
        Self {
            reachable: AtomicI64::new(-1),
            ..Self::default()
        }
    }

    /// Records one tick's adjusted concurrency for a revision.
    pub fn concurrency(&self, key: &RevisionKey, value: f64) {
        self.lock().insert(key.clone(), value);
    }

    /// Forgets a revision whose reporter state was dropped.
    pub fn forget(&self, key: &RevisionKey) {
        self.lock().remove(key);
    }

    /// The autoscaler connection came up.
    pub fn connected(&self) {
        self.reachable.store(1, Ordering::Relaxed);
    }

    /// The autoscaler connection went down.
    pub fn disconnected(&self) {
        self.reachable.store(0, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, throttler: &Throttler, revisions: &dyn Revisions) -> String {
        let mut out = String::new();
        let labels = |key: &RevisionKey| {
            let (svc, cfg) = revisions
                .get(&key.namespace, &key.name)
                .map(|r| (r.service.clone(), r.configuration.clone()))
                .unwrap_or_default();
            format!(
                "k8s_namespace_name=\"{}\",kn_configuration_name=\"{cfg}\",kn_revision_name=\"{}\",kn_service_name=\"{svc}\",otel_scope_name=\"{SCOPE}\"",
                key.namespace, key.name
            )
        };
        let concurrency: Vec<(RevisionKey, f64)> =
            self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        header(
            &mut out,
            "kn_revision_request_concurrency",
            "gauge",
            "Concurrent requests that are routed to Activator",
        );
        for (key, value) in &concurrency {
            let _ = writeln!(
                out,
                "kn_revision_request_concurrency{{{}}} {value}",
                labels(key)
            );
        }
        let throttlers = throttler.revisions();
        header(
            &mut out,
            "kn_revision_request_queued",
            "gauge",
            "Requests waiting in the activator for capacity",
        );
        for t in &throttlers {
            let _ = writeln!(
                out,
                "kn_revision_request_queued{{{}}} {}",
                labels(t.key()),
                t.queued()
            );
        }
        header(
            &mut out,
            "kn_revision_request_active",
            "gauge",
            "Requests the activator is proxying",
        );
        for t in &throttlers {
            let _ = writeln!(
                out,
                "kn_revision_request_active{{{}}} {}",
                labels(t.key()),
                t.in_flight()
            );
        }
        let reachable = self.reachable.load(Ordering::Relaxed);
        if reachable >= 0 {
            header(
                &mut out,
                "kn_activator_stats_conn_reachable",
                "gauge",
                "Whether the autoscaler is reachable",
            );
            let _ = writeln!(
                out,
                "kn_activator_stats_conn_reachable{{peer=\"autoscaler\"}} {reachable}"
            );
            header(
                &mut out,
                "kn_activator_stats_conn_errors_total",
                "counter",
                "Connection errors to the autoscaler",
            );
            let _ = writeln!(
                out,
                "kn_activator_stats_conn_errors_total{{peer=\"autoscaler\"}} {}",
                self.errors.load(Ordering::Relaxed)
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RevisionKey, f64>> {
        self.concurrency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
