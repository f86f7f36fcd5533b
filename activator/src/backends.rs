//! Discovery: which pods of a revision can take traffic, found by probing.
//!
//! Beside the request path. Each revision's private Endpoints (from the
//! Kubernetes cache, [`cluster`](crate::cluster)) arrive as [`Dests`]; a
//! [`Watcher`] task per revision probes every pod not yet known healthy the
//! moment it appears (`GET /healthz`, `K-Network-Probe: queue`, UA
//! `Knative-Activator-Probe`; healthy = 200 with body `queue`), re-probes on
//! a `PROBE_FREQUENCY` ticker while some pod is still unhealthy, and hands
//! the healthy set to the [`Throttler`] whenever it changes. A held request
//! therefore leaves within milliseconds of its pod's queue-proxy answering
//! ready. No pods at all means "scaled to zero": the throttler holds requests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Endpoints;
use kdp_core::header::{K_NETWORK_PROBE, PROBE_QUEUE, UA_ACTIVATOR_PROBE};
use kdp_proxy::body;
use kdp_proxy::pool::Upstream;
use kdp_stats::RevisionKey;
use tokio::sync::watch;

use crate::throttle::{Backends, Throttler};

/// A revision's pods as Kubernetes lists them, as `ip:port` dests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dests {
    /// Addresses Kubernetes reports ready.
    pub ready: BTreeSet<String>,
    /// Addresses Kubernetes reports not ready.
    pub not_ready: BTreeSet<String>,
}

/// Probing settings.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSettings {
    /// One round's timeout (`PROBE_TIMEOUT`).
    pub timeout: Duration,
    /// Re-probe period while some pod is unhealthy (`PROBE_FREQUENCY`).
    pub frequency: Duration,
    /// Trust a passing probe even on a pod Kubernetes calls not ready
    /// (Knative's probe optimisation; off for exec readiness and startup probes).
    pub optimize: bool,
}

/// Probes one revision's pods and feeds the throttler.
#[derive(Debug)]
pub struct Watcher {
    key: RevisionKey,
    throttler: Arc<Throttler>,
    upstream: Upstream,
    settings: ProbeSettings,
}

// === impl Dests ===

impl Dests {
    /// The dests of an Endpoints object: addresses of the subsets that have a
    /// port named `port_name` (`http`, or `http2` for h2c revisions).
    pub fn from_endpoints(ep: &Endpoints, port_name: &str) -> Self {
        let mut dests = Self::default();
        for subset in ep.subsets.iter().flatten() {
            let Some(port) = subset
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(port_name))
                .map(|p| p.port)
            else {
                continue;
            };
            let fmt = |ip: &str| {
                if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                }
            };
            dests
                .ready
                .extend(subset.addresses.iter().flatten().map(|a| fmt(&a.ip)));
            dests.not_ready.extend(
                subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| fmt(&a.ip)),
            );
        }
        dests
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.not_ready.is_empty()
    }

    fn contains(&self, dest: &str) -> bool {
        self.ready.contains(dest) || self.not_ready.contains(dest)
    }
}

// === impl Watcher ===

impl Watcher {
    /// A watcher for revision `key`.
    pub fn new(
        key: RevisionKey,
        throttler: Arc<Throttler>,
        upstream: Upstream,
        settings: ProbeSettings,
    ) -> Self {
        Self {
            key,
            throttler,
            upstream,
            settings,
        }
    }

    /// Follows `dests` until the sender is dropped (the Endpoints were deleted).
    pub async fn run(self, mut dests: watch::Receiver<Dests>) {
        let mut healthy: BTreeSet<String> = BTreeSet::new();
        let mut previous = Dests::default();
        let mut sent: Option<BTreeSet<String>> = None;
        let mut ticker = tokio::time::interval(self.settings.frequency);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let current = dests.borrow_and_update().clone();
            if current.is_empty() {
                healthy.clear();
                if sent.as_ref().is_none_or(|s| !s.is_empty()) {
                    self.throttler.update_backends(&self.key, Backends::None);
                    sent = Some(BTreeSet::new());
                }
            } else {
                // Pods that went from ready to not ready are re-probed.
                healthy.retain(|d| {
                    current.contains(d)
                        && !(previous.ready.contains(d) && current.not_ready.contains(d))
                });
                let candidates: Vec<String> = current
                    .ready
                    .iter()
                    .chain(current.not_ready.iter())
                    .filter(|d| !healthy.contains(*d))
                    .cloned()
                    .collect();
                let passed = self.probe_round(&candidates).await;
                for dest in passed {
                    if current.ready.contains(&dest) || self.settings.optimize {
                        healthy.insert(dest);
                    }
                }
                if sent.as_ref() != Some(&healthy) {
                    tracing::debug!(revision = %self.key.name, pods = healthy.len(), "healthy pods changed");
                    self.throttler.update_backends(
                        &self.key,
                        Backends::Pods {
                            healthy: healthy.iter().cloned().collect(),
                        },
                    );
                    sent = Some(healthy.clone());
                }
            }
            previous = current.clone();
            let all_healthy = current
                .ready
                .iter()
                .chain(current.not_ready.iter())
                .all(|d| healthy.contains(d));
            tokio::select! {
                changed = dests.changed() => if changed.is_err() { return },
                _ = ticker.tick(), if !all_healthy => {}
            }
        }
    }

    /// Probes `dests` concurrently within one round's timeout; returns those that passed.
    async fn probe_round(&self, dests: &[String]) -> Vec<String> {
        let probes = dests.iter().map(|dest| {
            let upstream = self.upstream.clone();
            let dest = dest.clone();
            async move { probe(&upstream, &dest).await.then_some(dest) }
        });
        match tokio::time::timeout(
            self.settings.timeout,
            futures_util::future::join_all(probes),
        )
        .await
        {
            Ok(results) => results.into_iter().flatten().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// One activator probe of a queue-proxy.
pub async fn probe(upstream: &Upstream, dest: &str) -> bool {
    let Ok(req) = Request::get(format!("http://{dest}/healthz"))
        .header(&K_NETWORK_PROBE, PROBE_QUEUE)
        .header(header::USER_AGENT, UA_ACTIVATOR_PROBE)
        .body(body::empty())
    else {
        return false;
    };
    let Ok(rsp) = upstream.http1().request(req).await else {
        return false;
    };
    if rsp.status() != StatusCode::OK {
        return false;
    }
    rsp.into_body()
        .collect()
        .await
        .is_ok_and(|b| b.to_bytes() == Bytes::from_static(PROBE_QUEUE.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_to_dests_uses_the_named_port() {
        let ep: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rev-private", "namespace": "ns"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                 "notReadyAddresses": [{"ip": "10.0.0.3"}],
                 "ports": [{"name": "http", "port": 8012}, {"name": "https", "port": 8112}]},
                {"addresses": [{"ip": "10.0.0.9"}], "ports": [{"name": "other", "port": 1}]},
                {"addresses": [{"ip": "::1"}], "ports": [{"name": "http", "port": 8012}]}
            ]
        }))
        .unwrap();
        let d = Dests::from_endpoints(&ep, "http");
        assert_eq!(
            d.ready.iter().map(String::as_str).collect::<Vec<_>>(),
            ["10.0.0.1:8012", "10.0.0.2:8012", "[::1]:8012"]
        );
        assert_eq!(
            d.not_ready.iter().map(String::as_str).collect::<Vec<_>>(),
            ["10.0.0.3:8012"]
        );
        assert!(Dests::from_endpoints(&ep, "http2").is_empty());
    }
}
