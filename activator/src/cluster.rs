//! The Kubernetes side: caches that feed the revision cache, the throttler
//! and the pod probers.
//!
//! Beside the request path. Watches (read-only, as Knative's RBAC allows)
//! Revisions in every namespace, the private Endpoints of every revision
//! (pods), the public Endpoints (which activators serve a revision), the
//! private Services (their ClusterIPs), and the ConfigMaps and the
//! `routing-serving-certs` Secret of the system namespace. Each change is
//! applied at once: Revisions to the [`RevisionCache`] and the
//! [`Throttler`], private Endpoints to a per-revision [`backends::Watcher`]
//! that probes the pods, public Endpoints to the throttler's activator count
//! and index, `config-logging` to the log level, `config-observability` to
//! the request log, and (with system-internal-tls) the Secret and the
//! trust-bundle ConfigMaps to the TLS certificate and upstream trust.
//!
//! Unlike Knative, an Endpoints update that arrives before its Revision is
//! kept and applied when the Revision arrives (Knative drops it, and requests
//! then wait until they time out).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret, Service};
use kdp_k8s::kube::runtime::reflector::Store;
use kdp_k8s::kube::runtime::watcher;
use kdp_k8s::kube::{Api, Client, ResourceExt};
use kdp_k8s::{Cache, Change, Revision};
use kdp_proxy::pool::Upstream;
use kdp_stats::RevisionKey;
use tokio::sync::{mpsc, watch};

use crate::StartupError;
use crate::backends::{self, ClusterIpLookup, Dests, ProbeSettings};
use crate::certs::{self, ServingCert, UpstreamTrust};
use crate::network::{self, NetworkConfig};
use crate::request_log::RequestLogSwitch;
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
    /// `config-network` as read at startup.
    pub network: NetworkConfig,
    /// With system-internal-tls: what the Secret and trust bundles feed.
    pub tls: Option<TlsTargets>,
    /// The request log, following `config-observability`.
    pub request_log: RequestLogSwitch,
    /// The log level, following `config-logging`.
    pub log_level: Option<crate::logging::LevelHandle>,
    /// `CONFIG_LOGGING_NAME`.
    pub config_logging_name: String,
    /// `CONFIG_OBSERVABILITY_NAME`.
    pub config_observability_name: String,
}

/// The TLS state the cluster side keeps current.
#[derive(Clone, Debug)]
pub struct TlsTargets {
    /// The 8112 certificate.
    pub cert: Arc<ServingCert>,
    /// The upstream trust.
    pub trust: Arc<UpstreamTrust>,
}

/// Reads `config-network` (one GET, as Knative does at startup).
///
/// # Errors
/// The map is missing or unreadable, or holds a value the activator cannot use.
pub async fn network(client: &Client, namespace: &str) -> Result<NetworkConfig, StartupError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get(network::CONFIG_NETWORK)
        .await
        .map_err(StartupError::NetworkFetch)?;
    let config = NetworkConfig::from_data(&cm.data.unwrap_or_default())
        .map_err(StartupError::NetworkInvalid)?;
    tracing::info!(?config, "read config-network");
    Ok(config)
}

/// Starts every watch; resolves once all caches have their first list.
///
/// # Errors
/// With system-internal-tls, [`StartupError::Certificate`] when the
/// `routing-serving-certs` Secret is missing or unusable.
pub async fn start(client: Client, targets: Targets) -> Result<(), StartupError> {
    let (rev_tx, rev_rx) = mpsc::unbounded_channel();
    let (priv_tx, priv_rx) = mpsc::unbounded_channel();
    let (pub_tx, pub_rx) = mpsc::unbounded_channel();
    let (cm_tx, cm_rx) = mpsc::unbounded_channel();
    let (secret_tx, secret_rx) = mpsc::unbounded_channel();
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
    // Only private Services: the ClusterIP fallback needs nothing else.
    let services = Cache::<Service>::spawn(
        Api::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_SERVICE_TYPE}=Private")),
        None,
    );
    let config_maps = Cache::<ConfigMap>::spawn(
        Api::namespaced(client.clone(), &targets.system_namespace),
        watcher::Config::default(),
        Some(cm_tx),
    );
    // Only the one Secret the activator uses is held in memory.
    let secrets = Cache::<Secret>::spawn(
        Api::namespaced(client, &targets.system_namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", certs::SECRET_NAME)),
        Some(secret_tx),
    );
    tokio::join!(
        revisions.ready(),
        private.ready(),
        public.ready(),
        services.ready(),
        config_maps.ready(),
        secrets.ready(),
    );
    tracing::info!("caches synced");
    let stores = Stores {
        services: services.store().clone(),
        config_maps: config_maps.store().clone(),
        secrets: secrets.store().clone(),
    };
    if let Some(tls) = &targets.tls {
        let secret = stores.secret(&targets.system_namespace);
        let missing = |source| StartupError::Certificate {
            namespace: targets.system_namespace.clone(),
            name: certs::SECRET_NAME,
            source,
        };
        let secret = secret.ok_or_else(|| missing(None))?;
        let data = secret_data(&secret);
        tls.cert.set(&data).map_err(|e| missing(Some(e)))?;
        stores.rebuild_trust(&tls.trust, &targets.system_namespace);
    }
    tokio::spawn(Sync::new(targets, stores).run(Receivers {
        revisions: rev_rx,
        private: priv_rx,
        public: pub_rx,
        config_maps: cm_rx,
        secrets: secret_rx,
    }));
    Ok(())
}

/// The stores the sync loop reads besides the change streams.
#[derive(Clone)]
struct Stores {
    services: Store<Service>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
}

struct Receivers {
    revisions: mpsc::UnboundedReceiver<Change<Revision>>,
    private: mpsc::UnboundedReceiver<Change<Endpoints>>,
    public: mpsc::UnboundedReceiver<Change<Endpoints>>,
    config_maps: mpsc::UnboundedReceiver<Change<ConfigMap>>,
    secrets: mpsc::UnboundedReceiver<Change<Secret>>,
}

impl Stores {
    fn secret(&self, namespace: &str) -> Option<Arc<Secret>> {
        let key = kdp_k8s::kube::runtime::reflector::ObjectRef::<Secret>::new(certs::SECRET_NAME)
            .within(namespace);
        self.secrets.get(&key)
    }

    /// Rebuilds the upstream trust from the Secret's `ca.crt` and every
    /// trust-bundle ConfigMap.
    fn rebuild_trust(&self, trust: &UpstreamTrust, namespace: &str) {
        let ca = self
            .secret(namespace)
            .and_then(|s| s.data.as_ref()?.get(certs::CA_KEY).map(|b| b.0.clone()));
        let maps: Vec<Arc<ConfigMap>> = self
            .config_maps
            .state()
            .into_iter()
            .filter(|cm| cm.labels().contains_key(certs::LABEL_TRUST_BUNDLE))
            .collect();
        let bundles = maps.iter().flat_map(|cm| {
            let name = cm.metadata.name.as_deref().unwrap_or_default();
            cm.data
                .iter()
                .flatten()
                .map(move |(_, pem)| (name, pem.as_str()))
        });
        let anchors = trust.rebuild(ca.as_deref(), bundles);
        tracing::info!(anchors, "upstream trust updated");
    }

    /// The ClusterIP dest of Service `namespace/name`: its `clusterIP` and
    /// the port named `port_name`.
    fn cluster_ip_lookup(
        &self,
        namespace: String,
        name: String,
        port_name: &'static str,
    ) -> ClusterIpLookup {
        let services = self.services.clone();
        Arc::new(move || {
            let key = kdp_k8s::kube::runtime::reflector::ObjectRef::<Service>::new(&name)
                .within(&namespace);
            let svc = services.get(&key)?;
            let spec = svc.spec.as_ref()?;
            let ip = spec
                .cluster_ip
                .as_deref()
                .filter(|ip| !ip.is_empty() && *ip != "None")?;
            let port = spec
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(port_name))?
                .port;
            Some(if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            })
        })
    }
}

fn secret_data(secret: &Secret) -> std::collections::BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

struct Sync {
    targets: Targets,
    stores: Stores,
    known: HashMap<RevisionKey, Arc<RevisionInfo>>,
    dests: HashMap<RevisionKey, watch::Sender<Dests>>,
    pending: HashMap<RevisionKey, Arc<Endpoints>>,
}

impl Sync {
    fn new(targets: Targets, stores: Stores) -> Self {
        Self {
            targets,
            stores,
            known: HashMap::new(),
            dests: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: Receivers) {
        loop {
            tokio::select! {
                Some(change) = rx.revisions.recv() => self.revision(change),
                Some(change) = rx.private.recv() => self.private(change),
                Some(change) = rx.public.recv() => self.public(change),
                Some(change) = rx.config_maps.recv() => self.config_map(change),
                Some(change) = rx.secrets.recv() => self.secret(&change),
                else => return,
            }
        }
    }

    fn config_map(&mut self, change: Change<ConfigMap>) {
        let (maps, deleted) = match change {
            Change::Applied(cm) => (vec![cm], false),
            Change::Deleted(cm) => (vec![cm], true),
            Change::Relisted(all) => (all, false),
        };
        let mut trust_changed = false;
        for cm in maps {
            trust_changed |= cm.labels().contains_key(certs::LABEL_TRUST_BUNDLE);
            if deleted {
                // Knative keeps the last configuration of a deleted map.
                continue;
            }
            let name = cm.name_any();
            let data = cm.data.clone().unwrap_or_default();
            if name == self.targets.config_observability_name {
                match self.targets.request_log.apply(&data) {
                    Ok(()) => tracing::info!(
                        enabled = self.targets.request_log.is_enabled(),
                        "Updated the request log template."
                    ),
                    Err(error) => tracing::error!(
                        error = %kdp_core::ErrorChain(&error),
                        "Failed to update the request log template."
                    ),
                }
            } else if name == self.targets.config_logging_name
                && let Some(level) = &self.targets.log_level
            {
                level.apply(&data);
            }
        }
        if trust_changed && let Some(tls) = &self.targets.tls {
            self.stores
                .rebuild_trust(&tls.trust, &self.targets.system_namespace);
        }
    }

    fn secret(&mut self, change: &Change<Secret>) {
        let Some(tls) = &self.targets.tls else {
            return;
        };
        let secret = match change {
            Change::Applied(s) => Some(s),
            Change::Relisted(all) => all.first(),
            // As in Knative, a deleted Secret leaves the last certificate in service.
            Change::Deleted(_) => None,
        };
        if let Some(secret) = secret {
            match tls.cert.set(&secret_data(secret)) {
                Ok(()) => tracing::info!("serving certificate updated"),
                Err(error) => tracing::warn!(
                    error = %kdp_core::ErrorChain(&error),
                    "failed to parse the certificate in secret {}; keeping the previous one",
                    certs::SECRET_NAME
                ),
            }
        }
        self.stores
            .rebuild_trust(&tls.trust, &self.targets.system_namespace);
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
        let network = self.targets.network;
        let passthrough_host = network.mesh_pod_addressability.then(|| {
            format!(
                "{}.{}",
                crate::names::private_service(&key.name),
                key.namespace
            )
        });
        // The private Service is named like its Endpoints.
        let cluster_ip =
            self.stores
                .cluster_ip_lookup(key.namespace.clone(), ep.name_any(), port_name);
        let watcher = backends::Watcher::new(
            key.clone(),
            Arc::clone(&self.targets.throttler),
            self.targets.upstream.clone(),
            ProbeSettings {
                timeout: self.targets.probe_timeout,
                frequency: self.targets.probe_frequency,
                optimize: info.probe_optimization,
                mesh_mode: network.mesh_compatibility_mode,
                passthrough_host,
            },
            cluster_ip,
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
        probe_optimization: rev.probe_optimization(),
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
        let request_log = match crate::request_log::settings(data).map(|(enabled, template)| {
            kdp_proxy::request_log::RequestLogger::new(enabled, &template)
        }) {
            Ok(Ok(logger)) if logger.is_enabled() => Some(logger),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::error!(error = %kdp_core::ErrorChain(&error), "request log disabled");
                None
            }
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
        // Enabled without a template: Knative's default template.
        let data = BTreeMap::from([("logging.enable-request-log".to_owned(), "true".to_owned())]);
        assert!(
            Observability::from_data(&data, &config())
                .request_log
                .is_some()
        );
        // Enabled with an empty template is refused, as in Knative.
        let data = BTreeMap::from([
            ("logging.enable-request-log".to_owned(), "true".to_owned()),
            ("logging.request-log-template".to_owned(), String::new()),
        ]);
        assert!(
            Observability::from_data(&data, &config())
                .request_log
                .is_none()
        );
    }
}
