//! The Kubernetes side: caches that feed the revision cache, the throttler
//! and the pod probers.
//!
//! Beside the request path. Watches (read-only, as Knative's RBAC allows)
//! Revisions in every namespace, the private Endpoints of every revision
//! (pods), the public Endpoints (which activators serve a revision), and the
//! ConfigMaps of the system namespace. Each change is applied at once:
//! Revisions to the [`RevisionCache`] and the [`Throttler`], private
//! Endpoints to a per-revision [`backends::Watcher`] that probes the pods,
//! public Endpoints to the throttler's activator count and index.
//!
//! Unlike Knative, an Endpoints update that arrives before its Revision is
//! kept and applied when the Revision arrives (Knative drops it, and requests
//! then wait until they time out).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints};
use kdp_k8s::kube::runtime::watcher;
use kdp_k8s::kube::{Api, Client, ResourceExt};
use kdp_k8s::{Cache, Change, Revision};
use kdp_proxy::pool::Upstream;
use kdp_stats::RevisionKey;
use tokio::sync::{mpsc, watch};

use crate::backends::{self, Dests, ProbeSettings};
use crate::revision::{RevisionCache, RevisionInfo};
use crate::throttle::{Protocol, Throttler};

/// Label carrying a revision's name on its Services and Endpoints.
pub const LABEL_REVISION: &str = "serving.knative.dev/revision";
/// Label carrying a revision's UID.
pub const LABEL_REVISION_UID: &str = "serving.knative.dev/revisionUID";
/// Label telling private from public services.
pub const LABEL_SERVICE_TYPE: &str = "networking.internal.knative.dev/serviceType";

/// What the cluster side feeds.
#[derive(Clone, Debug)]
pub struct Targets {
    /// Revision cache of the request path.
    pub revisions: Arc<RevisionCache>,
    /// The throttler.
    pub throttler: Arc<Throttler>,
    /// Pool used for pod probes (shared with proxying, so probe connections are reused).
    pub upstream: Upstream,
    /// Probe timing.
    pub probe_timeout: Duration,
    /// Re-probe period.
    pub probe_frequency: Duration,
    /// This activator's `POD_IP`.
    pub pod_ip: String,
    /// `SYSTEM_NAMESPACE`.
    pub system_namespace: String,
}

/// Starts every watch; resolves once all caches have their first list.
pub async fn start(client: Client, targets: Targets) {
    let (rev_tx, rev_rx) = mpsc::unbounded_channel();
    let (priv_tx, priv_rx) = mpsc::unbounded_channel();
    let (pub_tx, pub_rx) = mpsc::unbounded_channel();
    let revisions = Cache::<Revision>::spawn(
        Api::all(client.clone()),
        watcher::Config::default(),
        Some(rev_tx),
    );
    let private = Cache::<Endpoints>::spawn(
        Api::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{LABEL_REVISION_UID},{LABEL_SERVICE_TYPE}=Private"
        )),
        Some(priv_tx),
    );
    let public = Cache::<Endpoints>::spawn(
        Api::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_SERVICE_TYPE}=Public")),
        Some(pub_tx),
    );
    let config_maps = Cache::<ConfigMap>::spawn(
        Api::namespaced(client, &targets.system_namespace),
        watcher::Config::default(),
        None,
    );
    tokio::spawn(Sync::new(targets).run(rev_rx, priv_rx, pub_rx));
    tokio::join!(
        revisions.ready(),
        private.ready(),
        public.ready(),
        config_maps.ready()
    );
    tracing::info!("caches synced");
}

struct Sync {
    targets: Targets,
    known: HashMap<RevisionKey, Arc<RevisionInfo>>,
    dests: HashMap<RevisionKey, watch::Sender<Dests>>,
    pending: HashMap<RevisionKey, Arc<Endpoints>>,
}

impl Sync {
    fn new(targets: Targets) -> Self {
        Self {
            targets,
            known: HashMap::new(),
            dests: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut revisions: mpsc::UnboundedReceiver<Change<Revision>>,
        mut private: mpsc::UnboundedReceiver<Change<Endpoints>>,
        mut public: mpsc::UnboundedReceiver<Change<Endpoints>>,
    ) {
        loop {
            tokio::select! {
                Some(change) = revisions.recv() => self.revision(change),
                Some(change) = private.recv() => self.private(change),
                Some(change) = public.recv() => self.public(change),
                else => return,
            }
        }
    }

    fn revision(&mut self, change: Change<Revision>) {
        match change {
            Change::Applied(rev) => self.add_revision(&rev),
            Change::Deleted(rev) => self.remove_revision(&key_of_revision(&rev)),
            Change::Relisted(all) => {
                let keep: std::collections::HashSet<_> =
                    all.iter().map(|r| key_of_revision(r)).collect();
                let gone: Vec<_> = self
                    .known
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove_revision(&key);
                }
                for rev in all {
                    self.add_revision(&rev);
                }
            }
        }
    }

    fn add_revision(&mut self, rev: &Revision) {
        let info = Arc::new(revision_info(rev));
        let key = RevisionKey::new(info.namespace.clone(), info.name.clone());
        self.targets.revisions.upsert((*info).clone());
        let cc = usize::try_from(info.container_concurrency).unwrap_or(usize::MAX);
        let protocol = if info.h2c {
            Protocol::H2c
        } else {
            Protocol::Http1
        };
        self.targets
            .throttler
            .upsert_revision(key.clone(), cc, protocol);
        self.known.insert(key.clone(), info);
        if let Some(ep) = self.pending.remove(&key) {
            self.apply_endpoints(&key, &ep);
        }
    }

    fn remove_revision(&mut self, key: &RevisionKey) {
        self.known.remove(key);
        self.targets.revisions.remove(&key.namespace, &key.name);
        self.targets.throttler.remove_revision(key);
        self.dests.remove(key);
    }

    fn private(&mut self, change: Change<Endpoints>) {
        match change {
            Change::Applied(ep) => {
                if let Some(key) = key_of_endpoints(&ep) {
                    self.apply_endpoints(&key, &ep);
                }
            }
            Change::Deleted(ep) => {
                if let Some(key) = key_of_endpoints(&ep) {
                    // Dropping the sender stops the watcher; the throttler keeps its last state.
                    self.dests.remove(&key);
                    self.pending.remove(&key);
                }
            }
            Change::Relisted(all) => {
                for ep in all {
                    if let Some(key) = key_of_endpoints(&ep) {
                        self.apply_endpoints(&key, &ep);
                    }
                }
            }
        }
    }

    fn apply_endpoints(&mut self, key: &RevisionKey, ep: &Arc<Endpoints>) {
        let Some(info) = self.known.get(key) else {
            // Kept until the Revision arrives (Knative drops it).
            self.pending.insert(key.clone(), Arc::clone(ep));
            return;
        };
        let port_name = if info.h2c { "http2" } else { "http" };
        let dests = Dests::from_endpoints(ep, port_name);
        if let Some(tx) = self.dests.get(key) {
            tx.send_replace(dests);
            return;
        }
        let (tx, rx) = watch::channel(dests);
        let watcher = backends::Watcher::new(
            key.clone(),
            Arc::clone(&self.targets.throttler),
            self.targets.upstream.clone(),
            ProbeSettings {
                timeout: self.targets.probe_timeout,
                frequency: self.targets.probe_frequency,
                optimize: true,
            },
        );
        tokio::spawn(watcher.run(rx));
        self.dests.insert(key.clone(), tx);
    }

    fn public(&mut self, change: Change<Endpoints>) {
        let eps = match change {
            Change::Applied(ep) | Change::Deleted(ep) => vec![ep],
            Change::Relisted(all) => all,
        };
        for ep in eps {
            let Some(key) = key_of_endpoints(&ep) else {
                continue;
            };
            let port_name = match self.known.get(&key) {
                Some(info) if info.h2c => "http2",
                _ => "http",
            };
            let ips: Vec<String> = ep
                .subsets
                .iter()
                .flatten()
                .filter(|s| {
                    s.ports
                        .iter()
                        .flatten()
                        .any(|p| p.name.as_deref() == Some(port_name))
                })
                .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
                .collect();
            self.targets
                .throttler
                .update_activator_ips(&key, &ips, &self.targets.pod_ip);
        }
    }
}

fn key_of_revision(rev: &Revision) -> RevisionKey {
    RevisionKey::new(rev.namespace().unwrap_or_default(), rev.name_any())
}

fn key_of_endpoints(ep: &Endpoints) -> Option<RevisionKey> {
    let name = ep.labels().get(LABEL_REVISION)?.clone();
    Some(RevisionKey::new(ep.namespace().unwrap_or_default(), name))
}

/// The activator's view of a Revision.
pub fn revision_info(rev: &Revision) -> RevisionInfo {
    let secs = |s: Option<i64>| {
        s.filter(|s| *s > 0)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
    };
    RevisionInfo {
        namespace: rev.namespace().unwrap_or_default(),
        name: rev.name_any(),
        container_concurrency: rev
            .spec
            .container_concurrency
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        timeout: secs(rev.spec.timeout_seconds).unwrap_or(crate::timeout::DEFAULT_TIMEOUT),
        response_start_timeout: secs(rev.spec.response_start_timeout_seconds),
        idle_timeout: secs(rev.spec.idle_timeout_seconds),
        service: rev.label("serving.knative.dev/service").to_owned(),
        configuration: rev.label("serving.knative.dev/configuration").to_owned(),
        h2c: rev.is_h2c(),
    }
}

/// What `config-observability` asks of the activator (read once at startup).
#[derive(Debug, Default)]
pub struct Observability {
    /// Where to serve Prometheus metrics: set when `metrics-protocol:
    /// prometheus` (port from `metrics-endpoint`, else `METRICS_PROMETHEUS_PORT`,
    /// else 9090); `None` by default, as in Knative.
    pub metrics: Option<std::net::SocketAddr>,
    /// The request logger, when `logging.enable-request-log` is true with a
    /// template that parses.
    pub request_log: Option<kdp_proxy::request_log::RequestLogger>,
}

/// Reads `config-observability` (a missing map means the defaults).
///
/// # Errors
/// The API server could not be asked.
pub async fn observability(
    client: &Client,
    config: &crate::env::Config,
) -> Result<Observability, kdp_core::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.system_namespace);
    let data = api
        .get_opt(&config.config_observability_name)
        .await?
        .and_then(|cm| cm.data)
        .unwrap_or_default();
    Ok(Observability::from_data(&data, config))
}

// === impl Observability ===

impl Observability {
    /// Interprets config-observability data.
    pub fn from_data(
        data: &std::collections::BTreeMap<String, String>,
        config: &crate::env::Config,
    ) -> Self {
        let metrics = (data.get("metrics-protocol").map(String::as_str) == Some("prometheus"))
            .then(|| {
                let port = data
                    .get("metrics-endpoint")
                    .and_then(|e| e.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(config.metrics_port);
                std::net::SocketAddr::new(config.bind, port)
            });
        let enabled = data
            .get("logging.enable-request-log")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let template = data
            .get("logging.request-log-template")
            .map_or("", String::as_str);
        let request_log = match kdp_proxy::request_log::RequestLogger::new(enabled, template) {
            Ok(logger) if logger.is_enabled() => Some(logger),
            Ok(_) => None,
            Err(error) => {
                tracing::error!(error = %kdp_core::ErrorChain(&error), "request log disabled");
                None
            }
        };
        Self {
            metrics,
            request_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn config() -> crate::env::Config {
        let env = HashMap::from([
            ("POD_NAME", "a"),
            ("POD_IP", "10.0.0.1"),
            ("SYSTEM_NAMESPACE", "knative-serving"),
        ]);
        crate::env::Config::from_env(&env, None).unwrap()
    }

    #[test]
    fn observability_defaults_to_nothing() {
        let o = Observability::from_data(&BTreeMap::new(), &config());
        assert!(o.metrics.is_none());
        assert!(o.request_log.is_none());
    }

    #[test]
    fn observability_turns_on_metrics_and_request_log() {
        let data = BTreeMap::from([
            ("metrics-protocol".to_owned(), "prometheus".to_owned()),
            ("metrics-endpoint".to_owned(), ":9999".to_owned()),
            ("logging.enable-request-log".to_owned(), "true".to_owned()),
            (
                "logging.request-log-template".to_owned(),
                "{{.Request.Method}}".to_owned(),
            ),
        ]);
        let o = Observability::from_data(&data, &config());
        assert_eq!(o.metrics.map(|a| a.port()), Some(9999));
        assert!(o.request_log.is_some_and(|l| l.is_enabled()));
        // Enabled with an empty template is refused, as in Knative.
        let data = BTreeMap::from([("logging.enable-request-log".to_owned(), "true".to_owned())]);
        assert!(
            Observability::from_data(&data, &config())
                .request_log
                .is_none()
        );
    }
}
