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
//!
//! When pods cannot be reached directly (a service mesh answers 502/503 for
//! every pod, or `mesh-compatibility-mode: enabled`), the revision switches to
//! its private Service's ClusterIP once that answers the probe, and stays
//! there for the watcher's life ([`HealthSet`], `activator.md` §4.4).
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Endpoints;
use kdp_core::header::{K_NETWORK_PROBE, K_PASSTHROUGH_LB, PROBE_QUEUE, UA_ACTIVATOR_PROBE};
use kdp_proxy::body;
use kdp_proxy::pool::Upstream;
use kdp_stats::RevisionKey;
use tokio::sync::watch;

use crate::network::MeshCompatibilityMode;
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
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// One round's timeout (`PROBE_TIMEOUT`).
    pub timeout: Duration,
    /// Re-probe period while some pod is unhealthy (`PROBE_FREQUENCY`).
    pub frequency: Duration,
    /// Trust a passing probe even on a pod Kubernetes calls not ready
    /// (Knative's probe optimisation; off for exec readiness and startup probes).
    pub optimize: bool,
    /// `mesh-compatibility-mode`.
    pub mesh_mode: MeshCompatibilityMode,
    /// `enable-mesh-pod-addressability`: probes carry `host` and
    /// `K-Passthrough-Lb: true`, and the ClusterIP is never used.
    pub passthrough_host: Option<String>,
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// 200 with body `queue`.
    Healthy,
    /// Some other answer, or none.
    Unhealthy {
        /// An answer came whose status is neither 502 nor 503, which a mesh
        /// would give: pods are reachable directly.
        non_mesh: bool,
    },
}

/// How a [`HealthSet`] reaches pods and the ClusterIP.
pub trait Prober {
    /// Probes `dests` together, within one round's timeout; a dest missing
    /// from the answer timed out.
    fn probe_pods(
        &self,
        dests: Vec<String>,
    ) -> impl Future<Output = Vec<(String, ProbeOutcome)>> + Send;

    /// The private Service's ClusterIP dest (`ip:port`), if it exists.
    fn cluster_ip(&self) -> Option<String>;

    /// Probes the ClusterIP dest with its own timeout.
    fn probe_cluster_ip(&self, dest: String) -> impl Future<Output = bool> + Send;
}

/// One revision's health state: Knative's revision watcher round (§4.4) as
/// a state machine over [`Dests`] and probe results.
#[derive(Debug)]
pub struct HealthSet {
    settings: ProbeSettings,
    healthy: BTreeSet<String>,
    previous: Dests,
    /// Cleared for good once the revision switches to its ClusterIP.
    pods_addressable: bool,
    cluster_ip_healthy: bool,
    sent: Option<Backends>,
}

/// Probes one revision's pods and feeds the throttler.
#[derive(Debug)]
pub struct Watcher {
    key: RevisionKey,
    throttler: Arc<Throttler>,
    prober: HttpProber,
    health: HealthSet,
}

/// Finds the private Service's ClusterIP dest.
pub type ClusterIpLookup = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The [`Prober`] that speaks HTTP through the shared upstream pool.
#[derive(Clone)]
pub struct HttpProber {
    upstream: Upstream,
    timeout: Duration,
    passthrough_host: Option<HeaderValue>,
    cluster_ip: ClusterIpLookup,
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

    /// Whether there are no pods at all.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.not_ready.is_empty()
    }

    /// Whether `dest` is among the pods, ready or not.
    pub fn contains(&self, dest: &str) -> bool {
        self.ready.contains(dest) || self.not_ready.contains(dest)
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.ready.iter().chain(self.not_ready.iter())
    }
}

// === impl HealthSet ===

impl HealthSet {
    /// A revision's state before its first Endpoints event.
    pub fn new(settings: ProbeSettings) -> Self {
        Self {
            settings,
            healthy: BTreeSet::new(),
            previous: Dests::default(),
            pods_addressable: true,
            cluster_ip_healthy: false,
            sent: None,
        }
    }

    /// One round over the pods `current` (on an Endpoints change or a tick):
    /// probes what needs probing and returns the update for the throttler,
    /// if there is a new one.
    pub async fn round<P: Prober>(&mut self, current: &Dests, prober: &P) -> Option<Backends> {
        let update = self.decide(current, prober).await;
        self.previous = current.clone();
        let update = update?;
        if self.sent.as_ref() == Some(&update) {
            return None;
        }
        self.sent = Some(update.clone());
        Some(update)
    }

    async fn decide<P: Prober>(&mut self, current: &Dests, prober: &P) -> Option<Backends> {
        // Scaled to zero: nothing to probe, capacity 0.
        if current.is_empty() {
            self.cluster_ip_healthy = false;
            self.healthy.clear();
            return Some(Backends::None);
        }
        let mode = self.settings.mesh_mode;
        if self.pods_addressable && mode != MeshCompatibilityMode::Enabled {
            // Pods that went from ready to not ready are probed again.
            let before = self.healthy.len();
            let previous = &self.previous;
            self.healthy
                .retain(|d| !(previous.ready.contains(d) && current.not_ready.contains(d)));
            let demoted = self.healthy.len() != before;
            let (changed, non_mesh) = self.probe_pods(current, prober).await;
            if changed || demoted {
                return Some(self.pods_update());
            }
            if !self.healthy.is_empty() || non_mesh {
                return None;
            }
        }
        if self.settings.passthrough_host.is_some() || mode == MeshCompatibilityMode::Disabled {
            return None;
        }
        let Some(dest) = prober.cluster_ip() else {
            tracing::debug!("private service has no usable ClusterIP; no fallback");
            return None;
        };
        if !self.cluster_ip_healthy {
            if !prober.probe_cluster_ip(dest.clone()).await {
                return None;
            }
            tracing::info!(%dest, "pods not reachable directly; using the private service's ClusterIP");
            self.pods_addressable = false;
            self.cluster_ip_healthy = true;
            self.healthy.clear();
        }
        Some(Backends::ClusterIp {
            dest,
            ready_pods: current.ready.len(),
        })
    }

    /// Probes the pods not yet healthy; returns whether the healthy set
    /// changed and whether some pod answered as no mesh would.
    async fn probe_pods<P: Prober>(&mut self, current: &Dests, prober: &P) -> (bool, bool) {
        if current.all().all(|d| self.healthy.contains(d)) {
            return (false, false);
        }
        let before = self.healthy.clone();
        if self.settings.mesh_mode == MeshCompatibilityMode::Disabled {
            // Kubernetes-ready pods are trusted as they are.
            self.healthy.extend(current.ready.iter().cloned());
        }
        let candidates: Vec<String> = current
            .all()
            .filter(|d| !self.healthy.contains(*d))
            .cloned()
            .collect();
        let mut non_mesh = false;
        if !candidates.is_empty() {
            for (dest, outcome) in prober.probe_pods(candidates).await {
                match outcome {
                    ProbeOutcome::Healthy => {
                        if current.ready.contains(&dest) || self.settings.optimize {
                            self.healthy.insert(dest);
                        }
                        non_mesh = true;
                    }
                    ProbeOutcome::Unhealthy { non_mesh: n } => non_mesh |= n,
                }
            }
        }
        self.healthy.retain(|d| current.contains(d));
        (self.healthy != before, non_mesh)
    }

    fn pods_update(&self) -> Backends {
        Backends::Pods {
            healthy: self.healthy.iter().cloned().collect(),
        }
    }

    /// Whether rounds should repeat on the ticker: some pod is not yet
    /// healthy and the ClusterIP is not in use.
    pub fn needs_reprobe(&self, current: &Dests) -> bool {
        !self.cluster_ip_healthy && current.all().any(|d| !self.healthy.contains(d))
    }
}

// === impl Watcher ===

impl Watcher {
    /// A watcher for revision `key`; `cluster_ip` finds its private
    /// Service's ClusterIP dest.
    pub fn new(
        key: RevisionKey,
        throttler: Arc<Throttler>,
        upstream: Upstream,
        settings: ProbeSettings,
        cluster_ip: ClusterIpLookup,
    ) -> Self {
        let prober = HttpProber {
            upstream,
            timeout: settings.timeout,
            passthrough_host: settings
                .passthrough_host
                .as_deref()
                .and_then(|h| HeaderValue::try_from(h).ok()),
            cluster_ip,
        };
        Self {
            key,
            throttler,
            prober,
            health: HealthSet::new(settings),
        }
    }

    /// Follows `dests` until the sender is dropped (the Endpoints were deleted).
    pub async fn run(mut self, mut dests: watch::Receiver<Dests>) {
        let mut ticker = tokio::time::interval(self.health.settings.frequency);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let current = dests.borrow_and_update().clone();
            if let Some(update) = self.health.round(&current, &self.prober).await {
                tracing::debug!(revision = %self.key.name, ?update, "backends changed");
                self.throttler.update_backends(&self.key, update);
            }
            let reprobe = self.health.needs_reprobe(&current);
            tokio::select! {
                changed = dests.changed() => if changed.is_err() { return },
                _ = ticker.tick(), if reprobe => {}
            }
        }
    }
}

// === impl HttpProber ===

impl std::fmt::Debug for HttpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProber")
            .field("timeout", &self.timeout)
            .field("passthrough_host", &self.passthrough_host)
            .finish_non_exhaustive()
    }
}

impl Prober for HttpProber {
    fn probe_pods(
        &self,
        dests: Vec<String>,
    ) -> impl Future<Output = Vec<(String, ProbeOutcome)>> + Send {
        let this = self.clone();
        async move {
            // One deadline for the whole round; every probe is attempted.
            let deadline = tokio::time::Instant::now() + this.timeout;
            let probes = dests.into_iter().map(|dest| {
                let this = this.clone();
                async move {
                    let outcome = tokio::time::timeout_at(
                        deadline,
                        probe(&this.upstream, &dest, this.passthrough_host.as_ref()),
                    )
                    .await
                    .unwrap_or(ProbeOutcome::Unhealthy { non_mesh: false });
                    (dest, outcome)
                }
            });
            futures_util::future::join_all(probes).await
        }
    }

    fn cluster_ip(&self) -> Option<String> {
        (self.cluster_ip)()
    }

    fn probe_cluster_ip(&self, dest: String) -> impl Future<Output = bool> + Send {
        let upstream = self.upstream.clone();
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, probe(&upstream, &dest, None))
                .await
                .is_ok_and(|o| o == ProbeOutcome::Healthy)
        }
    }
}

/// One activator probe of a queue-proxy (or of the ClusterIP in front of
/// them); with `passthrough_host`, addressed through the mesh.
pub async fn probe(
    upstream: &Upstream,
    dest: &str,
    passthrough_host: Option<&HeaderValue>,
) -> ProbeOutcome {
    let mut req = Request::get(format!("http://{dest}/healthz"))
        .header(&K_NETWORK_PROBE, PROBE_QUEUE)
        .header(header::USER_AGENT, UA_ACTIVATOR_PROBE);
    if let Some(host) = passthrough_host {
        req = req
            .header(header::HOST, host.clone())
            .header(&K_PASSTHROUGH_LB, "true");
    }
    let unreachable = ProbeOutcome::Unhealthy { non_mesh: false };
    let Ok(req) = req.body(body::empty()) else {
        return unreachable;
    };
    let Ok(rsp) = upstream.http1().send(req).await else {
        return unreachable;
    };
    let status = rsp.status();
    let non_mesh = status != StatusCode::BAD_GATEWAY && status != StatusCode::SERVICE_UNAVAILABLE;
    let body_ok = rsp
        .into_body()
        .collect()
        .await
        .is_ok_and(|b| b.to_bytes() == Bytes::from_static(PROBE_QUEUE.as_bytes()));
    if status == StatusCode::OK && body_ok {
        ProbeOutcome::Healthy
    } else {
        ProbeOutcome::Unhealthy { non_mesh }
    }
}

#[cfg(test)]
mod tests;
