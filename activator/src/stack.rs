//! The activator's request pipeline, composed in one place.
//!
//! Order follows Knative's `cmd/activator/main.go`, outermost first; each
//! layer says why it sits where it does.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use kdp_proxy::body::BoxBody;
use kdp_proxy::request_log::{RequestLogLayer, RequestLogger, RevisionInfo};
use kdp_proxy::respond::RespondLayer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder};

use crate::activate::Activate;
use crate::probe::{Health, Probe};
use crate::report::{Report, Reporter};
use crate::revision::{Identify, Revisions};
use crate::timeout::RevisionTimeout;

/// The erased serving stack handed to [`kdp_proxy::serve`].
pub type ServingStack = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

/// Seconds a client is told to wait after a queue-full 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Everything the stack is built from.
pub struct Parts {
    /// Health and drain state for kubelet probes.
    pub health: Health,
    /// The revision cache.
    pub revisions: Arc<dyn Revisions>,
    /// Cluster domain for Host-based identification.
    pub cluster_domain: String,
    /// Stat reporting.
    pub reporter: Reporter,
    /// Throttling and forwarding.
    pub activate: Activate,
    /// Request logging, when config-observability enables it.
    pub request_log: Option<RequestLogger>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// Builds the serving stack.
pub fn build(parts: Parts) -> ServingStack {
    let Parts {
        health,
        revisions,
        cluster_domain,
        reporter,
        activate,
        request_log,
    } = parts;
    // Innermost: wait for a pod with room, then proxy to it.
    let svc = activate;
    // Timeouts wrap activation so time held in the queue counts, as in Knative.
    let svc = RevisionTimeout::new(svc);
    // The reporter counts requests before they queue: held requests are demand.
    let svc = Report::new(svc, reporter);
    // The request log sees each identified request once, with its revision;
    // latency includes queueing and timeouts, as in Knative.
    let log_fields = request_log.is_some();
    let svc = RequestLogLayer::new(request_log, RevisionInfo::default()).layer(svc);
    // Identify the revision before anything per-revision happens; 404 if unknown.
    let svc = Identify::new(svc, revisions, &cluster_domain, log_fields);
    // Kubelet, ingress and autoscaler probes never create revision state.
    let svc = Probe::new(svc, health);
    // Errors become Knative's 502/503 answers (queue-full with Retry-After).
    let svc = ServiceBuilder::new()
        .layer(RespondLayer::with_retry_after(RETRY_AFTER_SECS))
        .service(svc);
    BoxCloneSyncService::new(svc)
}
