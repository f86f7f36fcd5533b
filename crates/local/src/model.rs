//! The model: validated desired state that the local runtime consumes.
//!
//! Sits after [`crate::manifest`] and before the runtime (router, activator core, per-replica
//! queue-proxy core, KPA): [`Model::build`] applies every [`Document`] in input order like
//! `kubectl apply` (so one file may hold `v1` and then `v2` of the same Service), updates the
//! [`RevisionHistory`], resolves traffic and builds the [`RouteTable`]. Building is
//! all-or-nothing: on a [`LoadError`] the history is untouched and the runtime keeps the model
//! it has. Services that left the input are removed (like `kubectl apply --prune`).
//!
//! [`Model::changes`] compares two models for the lifecycle lines `kdp run` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{CLUSTER_LOCAL_DOMAIN, DomainConfig, LocalConfig};
use crate::manifest::{Document, Location, ManifestError, Object, Service, Source};
use crate::revision::{
    BuildContext, ResolvedTarget, Revision, RevisionHistory, RevisionKey, ServiceKey,
};
use crate::route::{RouteTable, ServiceRoute, service_hosts, tag_hosts};

/// `Result` alias for loading a model.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// Everything the runtime needs: configuration, Services, revisions and routes.
#[derive(Clone, Debug)]
pub struct Model {
    /// The effective configuration (ConfigMaps in the input, `--domain`).
    pub config: LocalConfig,
    /// Services, in input order.
    pub services: Vec<ServiceModel>,
    /// Every revision of every Service. A key always names the same content.
    pub revisions: BTreeMap<RevisionKey, Arc<Revision>>,
    /// Host (and tag header) to revision.
    pub routes: RouteTable,
}

/// One Service's resolved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceModel {
    /// Namespace and name.
    pub key: ServiceKey,
    /// The domain config-domain picked for it.
    pub domain: String,
    /// `http://<svc>.<ns>.<domain>`.
    pub url: String,
    /// `http://<svc>.<ns>.svc.cluster.local`.
    pub cluster_url: String,
    /// The latest created revision.
    pub latest_created: RevisionKey,
    /// `spec.traffic` resolved to revisions.
    pub traffic: Vec<ResolvedTarget>,
    /// Its revisions, oldest first.
    pub revisions: Vec<RevisionKey>,
    /// The last document that applied it.
    pub source: Source,
}

/// What the model is built with besides the manifests.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--domain`: replaces config-domain.
    pub domain: Option<String>,
    /// What `command: ["kdp", ...]` runs: normally `std::env::current_exe()`.
    pub self_exe: PathBuf,
}

/// Why the input was refused; nothing running is disturbed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read or a document was refused on its own.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The documents do not fit together (traffic to a missing revision, a bad ConfigMap
    /// value, two Services claiming one host, ...).
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Location,
        /// What is wrong.
        message: String,
    },
}

/// A difference between two models, for lifecycle lines.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A Service appeared.
    ServiceAdded(ServiceKey),
    /// A Service left the input.
    ServiceRemoved(ServiceKey),
    /// A revision was created.
    RevisionCreated(RevisionKey),
    /// A revision went away with its Service.
    RevisionRemoved(RevisionKey),
    /// A Service's traffic targets changed (or were set for the first time).
    TrafficChanged {
        /// The Service.
        service: ServiceKey,
        /// The new targets.
        traffic: Vec<ResolvedTarget>,
    },
    /// The configuration changed.
    ConfigChanged,
}

// === impl Model ===

impl Model {
    /// Applies `docs` on top of `history` and builds the model. On error `history` is left as
    /// it was.
    ///
    /// # Errors
    /// See [`LoadError`].
    pub fn build(
        docs: &[Document],
        history: &mut RevisionHistory,
        options: &Options,
    ) -> Result<Self> {
        let config = build_config(docs, options)?;
        let mut next = history.clone();
        let ctx = BuildContext {
            defaults: &config.defaults,
            self_exe: &options.self_exe,
        };
        // Last document per Service, in order of first appearance.
        let mut order: Vec<(ServiceKey, &Service, &Source)> = Vec::new();
        for doc in docs {
            let Object::Service(svc) = &doc.object else {
                continue;
            };
            next.apply(svc, &doc.source, ctx)
                .map_err(|e| LoadError::Invalid {
                    at: e.at,
                    message: e.message,
                })?;
            let key = ServiceKey::of(svc);
            match order.iter_mut().find(|(k, _, _)| *k == key) {
                Some(slot) => *slot = (key, svc, &doc.source),
                None => order.push((key, svc, &doc.source)),
            }
        }
        next.retain(|k| order.iter().any(|(key, _, _)| key == k));

        let mut routes = RouteTable::new(config.features.tag_header_based_routing);
        let mut services = Vec::with_capacity(order.len());
        let mut revisions = BTreeMap::new();
        for (key, svc, source) in order {
            let traffic = next
                .resolve_traffic(svc, source)
                .map_err(|e| LoadError::Invalid {
                    at: e.at,
                    message: e.message,
                })?;
            let domain = config.domain.domain_for(&svc.labels).to_owned();
            let route = ServiceRoute {
                service: key.clone(),
                split: traffic
                    .iter()
                    .map(|t| (t.revision.clone(), t.percent))
                    .collect(),
                tags: traffic
                    .iter()
                    .filter_map(|t| Some((t.tag.clone()?, t.revision.clone())))
                    .collect(),
            };
            routes
                .add_service(route, &domain)
                .map_err(|e| LoadError::Invalid {
                    at: Location::new(source, "metadata.name"),
                    message: e.to_string(),
                })?;
            for rev in next.revisions(&key) {
                revisions.insert(rev.key.clone(), Arc::clone(rev));
            }
            services.push(ServiceModel {
                url: format!("http://{}", service_hosts(&key, &domain)[0]),
                cluster_url: format!(
                    "http://{}.{}.{CLUSTER_LOCAL_DOMAIN}",
                    key.name, key.namespace
                ),
                latest_created: next
                    .latest(&key)
                    .cloned()
                    .expect("an applied service has a latest revision"),
                revisions: next.revisions(&key).map(|r| r.key.clone()).collect(),
                key,
                domain,
                traffic,
                source: source.clone(),
            });
        }
        *history = next;
        Ok(Self {
            config,
            services,
            revisions,
            routes,
        })
    }

    /// The Service with this key.
    #[must_use]
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceModel> {
        self.services.iter().find(|s| s.key == *key)
    }

    /// Revisions that receive traffic or have a tag: the ones worth keeping warm.
    pub fn routed_revisions(&self) -> impl Iterator<Item = &Arc<Revision>> {
        self.revisions.values().filter(|r| {
            self.services
                .iter()
                .flat_map(|s| &s.traffic)
                .any(|t| t.revision == r.key && (t.percent > 0 || t.tag.is_some()))
        })
    }

    /// What changed from `old` (None: nothing was loaded yet) to `self`.
    #[must_use]
    pub fn changes(&self, old: Option<&Self>) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(old) = old {
            if old.config != self.config {
                out.push(Change::ConfigChanged);
            }
            for s in &old.services {
                if self.service(&s.key).is_none() {
                    out.push(Change::ServiceRemoved(s.key.clone()));
                }
            }
            for key in old.revisions.keys() {
                if !self.revisions.contains_key(key) {
                    out.push(Change::RevisionRemoved(key.clone()));
                }
            }
        }
        for s in &self.services {
            let before = old.and_then(|o| o.service(&s.key));
            if before.is_none() {
                out.push(Change::ServiceAdded(s.key.clone()));
            }
            for key in &s.revisions {
                if old.is_none_or(|o| !o.revisions.contains_key(key)) {
                    out.push(Change::RevisionCreated(key.clone()));
                }
            }
            if before.is_none_or(|b| b.traffic != s.traffic) {
                out.push(Change::TrafficChanged {
                    service: s.key.clone(),
                    traffic: s.traffic.clone(),
                });
            }
        }
        out
    }
}

fn build_config(docs: &[Document], options: &Options) -> Result<LocalConfig> {
    let mut config = LocalConfig::default();
    for doc in docs {
        if let Object::ConfigMap(cm) = &doc.object {
            config.apply(cm).map_err(|e| LoadError::Invalid {
                at: Location::new(&doc.source, &format!("data.{}", e.key)),
                message: e.message,
            })?;
        }
    }
    if let Some(domain) = options.domain.as_deref() {
        config.domain = DomainConfig::single(domain);
    }
    Ok(config)
}

// === impl ServiceModel ===

impl ServiceModel {
    /// The URL of a tag: `http://<tag>-<svc>.<ns>.<domain>`.
    #[must_use]
    pub fn tag_url(&self, tag: &str) -> String {
        format!("http://{}", tag_hosts(tag, &self.key, &self.domain)[0])
    }
}

// === impl Change ===

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAdded(k) => write!(f, "service {k} added"),
            Self::ServiceRemoved(k) => write!(f, "service {k} removed"),
            Self::RevisionCreated(k) => write!(f, "revision {k} created"),
            Self::RevisionRemoved(k) => write!(f, "revision {k} removed"),
            Self::ConfigChanged => f.write_str("configuration changed"),
            Self::TrafficChanged { service, traffic } => {
                write!(f, "traffic of {service} changed:")?;
                for (i, t) in traffic.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{}% {}", t.percent, t.revision.name)?;
                    if let Some(tag) = &t.tag {
                        write!(f, " @{tag}")?;
                    }
                    if t.latest_revision {
                        f.write_str(" (latest)")?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
