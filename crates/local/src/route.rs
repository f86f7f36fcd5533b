//! The route table: which revision a request goes to.
//!
//! First stage of a local request (what Istio and net-istio do in a cluster): the router looks
//! at the `Host` header (port ignored) and, when config-features enables it, the
//! `Knative-Serving-Tag` header, and picks a [`RevisionKey`] to hand to the activator core.
//! Hosts, for a Service `svc` in namespace `ns` with domain `d`:
//!
//! - `svc.ns.d`, and the cluster-local names `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`:
//!   the traffic split, drawn at random by percentage;
//! - `tag-svc.ns.d` (and the same cluster-local forms): the tagged revision.
//!
//! With tag-header routing on, a request to a split host carrying `Knative-Serving-Tag: t` goes
//! to tag `t`'s revision. An unknown tag falls back to the split: net-istio adds one header
//! match per known tag in front of the default route, so an unknown value matches none of them
//! and takes the default route. The header is ignored on tag hosts and when the feature is off.
//! An unknown host is a [`NoRoute`] error whose message lists the known hosts (the 404 body).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use rand::Rng;

use crate::config::CLUSTER_LOCAL_DOMAIN;
use crate::revision::{RevisionKey, ServiceKey};

/// Host to route, for every Service.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<String, HostRoute>,
    tag_header_routing: bool,
}

/// One Service's routes: its split and its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The Service.
    pub service: ServiceKey,
    /// Revisions and their percentages; entries with 0% never win a draw.
    pub split: Vec<(RevisionKey, u32)>,
    /// Tag to revision.
    pub tags: BTreeMap<String, RevisionKey>,
}

/// The outcome of routing one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The Service the host belongs to.
    pub service: &'a ServiceKey,
    /// The chosen revision.
    pub revision: &'a RevisionKey,
    /// Why this revision.
    pub reason: MatchReason<'a>,
}

/// Why a request went to a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchReason<'a> {
    /// The traffic split.
    Split,
    /// A tag host, `<tag>-<svc>.<ns>.<domain>`.
    TagHost(&'a str),
    /// The `Knative-Serving-Tag` header.
    TagHeader(&'a str),
}

/// No Service answers this host (a 404 in the router).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NoRoute {
    /// The host asked for, as normalised.
    pub host: String,
    /// The external hosts that do route (cluster-local aliases left out), sorted.
    pub known: Vec<String>,
}

/// Two routes claim the same host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host {host:?} is claimed by both {first} and {second}")]
pub struct HostConflict {
    /// The host.
    pub host: String,
    /// The Service that claimed it first.
    pub first: ServiceKey,
    /// The Service that claimed it again.
    pub second: ServiceKey,
}

#[derive(Clone, Debug)]
enum HostRoute {
    Default {
        route: Arc<ServiceRoute>,
        external: bool,
    },
    Tag {
        route: Arc<ServiceRoute>,
        tag: String,
        external: bool,
    },
}

/// The hosts of a Service's split: external first, then the cluster-local names.
#[must_use]
pub fn service_hosts(service: &ServiceKey, domain: &str) -> Vec<String> {
    label_hosts(&service.name, &service.namespace, domain)
}

/// The hosts of a tag: external first, then the cluster-local names.
#[must_use]
pub fn tag_hosts(tag: &str, service: &ServiceKey, domain: &str) -> Vec<String> {
    label_hosts(
        &format!("{tag}-{}", service.name),
        &service.namespace,
        domain,
    )
}

fn label_hosts(label: &str, namespace: &str, domain: &str) -> Vec<String> {
    let mut hosts = vec![format!("{label}.{namespace}.{domain}")];
    for suffix in ["", ".svc", ".svc.cluster.local"] {
        let host = format!("{label}.{namespace}{suffix}");
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// Lowercases a `Host` header value and strips its port and a trailing dot.
#[must_use]
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        Some((name, port)) if name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

// === impl RouteTable ===

impl RouteTable {
    /// An empty table; `tag_header_routing` is config-features' `tag-header-based-routing`.
    #[must_use]
    pub fn new(tag_header_routing: bool) -> Self {
        Self {
            hosts: HashMap::new(),
            tag_header_routing,
        }
    }

    /// Whether the `Knative-Serving-Tag` header is honoured.
    #[must_use]
    pub fn tag_header_routing(&self) -> bool {
        self.tag_header_routing
    }

    /// Adds a Service's routes under `domain`.
    ///
    /// # Errors
    /// A host already routed elsewhere (say Service `a-b` and tag `a` of Service `b`); the
    /// table is left unchanged.
    pub fn add_service(&mut self, route: ServiceRoute, domain: &str) -> Result<(), HostConflict> {
        let route = Arc::new(route);
        let mut new: Vec<(String, HostRoute)> = service_hosts(&route.service, domain)
            .into_iter()
            .enumerate()
            .map(|(i, host)| {
                let route = Arc::clone(&route);
                (
                    host,
                    HostRoute::Default {
                        route,
                        external: i == 0,
                    },
                )
            })
            .collect();
        for tag in route.tags.keys() {
            for (i, host) in tag_hosts(tag, &route.service, domain)
                .into_iter()
                .enumerate()
            {
                let entry = HostRoute::Tag {
                    route: Arc::clone(&route),
                    tag: tag.clone(),
                    external: i == 0,
                };
                new.push((host, entry));
            }
        }
        for (i, (host, _)) in new.iter().enumerate() {
            let earlier = new[..i].iter().find(|(h, _)| h == host).map(|(_, r)| r);
            if let Some(other) = self.hosts.get(host).or(earlier) {
                return Err(HostConflict {
                    host: host.clone(),
                    first: other.route().service.clone(),
                    second: route.service.clone(),
                });
            }
        }
        self.hosts.extend(new);
        Ok(())
    }

    /// Routes a request with a random draw.
    ///
    /// # Errors
    /// [`NoRoute`] for an unknown host.
    pub fn route<R: Rng + ?Sized>(
        &self,
        host: &str,
        tag_header: Option<&str>,
        rng: &mut R,
    ) -> Result<RouteMatch<'_>, NoRoute> {
        self.resolve(host, tag_header, rng.random_range(0..100))
    }

    /// Routes a request; `draw` in `0..100` picks from the split (the revision whose cumulative
    /// percentage first exceeds it).
    ///
    /// # Errors
    /// [`NoRoute`] for an unknown host.
    pub fn resolve(
        &self,
        host: &str,
        tag_header: Option<&str>,
        draw: u32,
    ) -> Result<RouteMatch<'_>, NoRoute> {
        let host = normalize_host(host);
        let Some(entry) = self.hosts.get(&host) else {
            return Err(NoRoute {
                host,
                known: self.external_hosts(),
            });
        };
        match entry {
            HostRoute::Tag { route, tag, .. } => Ok(RouteMatch {
                service: &route.service,
                revision: &route.tags[tag],
                reason: MatchReason::TagHost(tag),
            }),
            HostRoute::Default { route, .. } => {
                if self.tag_header_routing
                    && let Some((tag, revision)) =
                        tag_header.and_then(|t| route.tags.get_key_value(t.trim()))
                {
                    return Ok(RouteMatch {
                        service: &route.service,
                        revision,
                        reason: MatchReason::TagHeader(tag),
                    });
                }
                // A route without targets is never built by the model; answer it like a
                // missing host rather than panic.
                let revision = route.pick(draw).ok_or_else(|| NoRoute {
                    host: host.clone(),
                    known: self.external_hosts(),
                })?;
                Ok(RouteMatch {
                    service: &route.service,
                    revision,
                    reason: MatchReason::Split,
                })
            }
        }
    }

    /// The external hosts (split and tag hosts under the domain), sorted.
    #[must_use]
    pub fn external_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, r)| r.is_external())
            .map(|(h, _)| h.clone())
            .collect();
        hosts.sort();
        hosts
    }
}

// === impl ServiceRoute ===

impl ServiceRoute {
    fn pick(&self, draw: u32) -> Option<&RevisionKey> {
        let mut acc = 0;
        for (revision, percent) in &self.split {
            acc += percent;
            if draw < acc {
                return Some(revision);
            }
        }
        // Only reachable for draws >= 100: take the last target that gets traffic.
        self.split
            .iter()
            .rev()
            .find(|(_, p)| *p > 0)
            .or(self.split.last())
            .map(|(r, _)| r)
    }
}

// === impl HostRoute ===

impl HostRoute {
    fn route(&self) -> &ServiceRoute {
        match self {
            Self::Default { route, .. } | Self::Tag { route, .. } => route,
        }
    }

    fn is_external(&self) -> bool {
        match self {
            Self::Default { external, .. } | Self::Tag { external, .. } => *external,
        }
    }
}

// === impl NoRoute ===

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no service answers host {:?}", self.host)?;
        if self.known.is_empty() {
            return f.write_str("; no services are running");
        }
        write!(
            f,
            "; known hosts: {} (cluster-local names like <service>.<namespace>.{CLUSTER_LOCAL_DOMAIN} work too)",
            self.known.join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
