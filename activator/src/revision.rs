//! Revision identification: which revision a request is for.
//!
//! Sits after the probe stage and before the reporter. The revision comes
//! from the ingress's `Knative-Serving-Namespace` / `Knative-Serving-Revision`
//! headers, or, when either is empty, from a Host of the form
//! `<rev>.<ns>.svc.<cluster-domain>[:port]`. It is looked up in the
//! [`Revisions`] cache (never the API server): unknown → 404 with Knative's
//! body. On success the request carries the [`RevisionInfo`] and the
//! reporter's [`Revision`](crate::report::Revision) key as extensions.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use kdp_core::Error;
use kdp_core::header::{KNATIVE_SERVING_NAMESPACE, KNATIVE_SERVING_REVISION};
use kdp_proxy::body::BoxBody;
use kdp_proxy::respond::http_error;
use kdp_stats::RevisionKey;

use crate::report::Revision;

/// What the activator needs to know about a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.containerConcurrency` (0 = unlimited).
    pub container_concurrency: u64,
    /// `spec.timeoutSeconds`.
    pub timeout: Duration,
    /// `spec.responseStartTimeoutSeconds`.
    pub response_start_timeout: Option<Duration>,
    /// `spec.idleTimeoutSeconds`.
    pub idle_timeout: Option<Duration>,
    /// Label `serving.knative.dev/service`.
    pub service: String,
    /// Label `serving.knative.dev/configuration`.
    pub configuration: String,
    /// The serving container's first port is named `h2c`.
    pub h2c: bool,
    /// Pods that pass the activator's probe may be used before Kubernetes
    /// calls them ready.
    pub probe_optimization: bool,
}

impl RevisionInfo {
    /// What the request log's `.Revision` renders (PodName and PodIP stay
    /// empty in the activator, as in Knative).
    pub fn log_fields(&self) -> kdp_proxy::request_log::RevisionInfo {
        kdp_proxy::request_log::RevisionInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            configuration: self.configuration.clone(),
            pod_name: String::new(),
            pod_ip: String::new(),
        }
    }
}

/// A cache of revisions.
pub trait Revisions: Send + Sync + 'static {
    /// The revision `namespace/name`, if known.
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<RevisionInfo>>;
}

/// An in-memory [`Revisions`] cache, filled by a reflector or by tests.
#[derive(Debug, Default)]
pub struct RevisionCache {
    map: RwLock<HashMap<(String, String), Arc<RevisionInfo>>>,
}

/// The identification stage.
#[derive(Clone)]
pub struct Identify<S> {
    inner: S,
    revisions: Arc<dyn Revisions>,
    cluster_domain: Arc<str>,
    request_log: crate::request_log::RequestLogSwitch,
}

// === impl RevisionCache ===

impl RevisionCache {
    /// Adds or replaces a revision.
    pub fn upsert(&self, info: RevisionInfo) {
        let key = (info.namespace.clone(), info.name.clone());
        self.write().insert(key, Arc::new(info));
    }

    /// Removes a revision.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.write()
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Arc<RevisionInfo>>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Revisions for RevisionCache {
    fn get(&self, namespace: &str, name: &str) -> Option<Arc<RevisionInfo>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

// === impl Identify ===

impl<S> Identify<S> {
    /// Wraps `inner`, looking revisions up in `revisions`.
    /// While `request_log` is on, the request also carries the request
    /// log's view of its revision.
    pub fn new(
        inner: S,
        revisions: Arc<dyn Revisions>,
        cluster_domain: &str,
        request_log: crate::request_log::RequestLogSwitch,
    ) -> Self {
        Self {
            inner,
            revisions,
            cluster_domain: cluster_domain.into(),
            request_log,
        }
    }
}

impl<S> std::fmt::Debug for Identify<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identify").finish_non_exhaustive()
    }
}

impl<S, B> tower::Service<Request<B>> for Identify<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (namespace, name) = identify(&req, &self.cluster_domain);
        let Some(info) = self.revisions.get(&namespace, &name) else {
            let msg = format!(
                "Error getting active endpoint: revision.serving.knative.dev {name:?} not found"
            );
            return Box::pin(std::future::ready(Ok(http_error(
                StatusCode::NOT_FOUND,
                &msg,
            ))));
        };
        req.extensions_mut()
            .insert(Revision(RevisionKey::new(namespace, name)));
        if self.request_log.is_enabled() {
            req.extensions_mut().insert(Arc::new(info.log_fields()));
        }
        req.extensions_mut().insert(info);
        Box::pin(self.inner.call(req))
    }
}

/// The (namespace, name) a request is for.
pub fn identify<B>(req: &Request<B>, cluster_domain: &str) -> (String, String) {
    let header = |name: &http::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let namespace = header(&KNATIVE_SERVING_NAMESPACE);
    let name = header(&KNATIVE_SERVING_REVISION);
    if !namespace.is_empty() && !name.is_empty() {
        return (namespace, name);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let parts: Vec<&str> = host.splitn(4, '.').collect();
    if let [rev, ns, "svc", domain] = parts.as_slice() {
        let domain = domain.rsplit_once(':').map_or(*domain, |(d, _)| d);
        if domain == cluster_domain {
            return ((*ns).to_owned(), (*rev).to_owned());
        }
    }
    (namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn headers_select_the_revision() {
        let r = req(&[
            ("knative-serving-namespace", "real-namespace"),
            ("knative-serving-revision", "real-name"),
            ("host", "other.example.com"),
        ]);
        assert_eq!(
            identify(&r, "cluster.local"),
            ("real-namespace".into(), "real-name".into())
        );
    }

    #[test]
    fn host_selects_the_revision_without_headers() {
        for host in [
            "real-name.real-namespace.svc.cluster.local",
            "real-name.real-namespace.svc.cluster.local:80",
        ] {
            let r = req(&[("host", host)]);
            assert_eq!(
                identify(&r, "cluster.local"),
                ("real-namespace".into(), "real-name".into())
            );
        }
        let r = req(&[("host", "real-name.real-namespace.svc.other.domain")]);
        assert_eq!(
            identify(&r, "cluster.local"),
            (String::new(), String::new())
        );
    }
}
