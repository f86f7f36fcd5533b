//! The activator's request pipeline, composed in one place.
//!
//! Order follows Knative's `cmd/activator/main.go`, outermost first; each
//! layer says why it sits where it does.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use kdp_proxy::body::BoxBody;
use kdp_proxy::respond::RespondLayer;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::activate::Activate;
use crate::probe::{Health, Probe};
use crate::report::{Report, Reporter};
use crate::request_log::{DynamicRequestLog, RequestLogSwitch};
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
    /// Request logging, as config-observability says at the moment.
    pub request_log: RequestLogSwitch,
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
    // Failures become Knative's 502/503/504 answers (queue-full with
    // Retry-After) here, inside the request log, so that failed requests are
    // logged with the status the client gets, as in Knative.
    let svc = ServiceBuilder::new()
        .map_err(|never: Infallible| -> kdp_core::Error { match never {} })
        .layer(RespondLayer::with_retry_after(RETRY_AFTER_SECS))
        .service(svc);
    // The request log sees each identified request once, with its revision;
    // latency includes queueing and timeouts, as in Knative.
    let svc = DynamicRequestLog::new(svc, request_log.clone());
    // Identify the revision before anything per-revision happens; 404 if unknown.
    let svc = Identify::new(svc, revisions, &cluster_domain, request_log);
    // Kubelet, ingress and autoscaler probes never create revision state.
    let svc = Probe::new(svc, health);
    // Nothing inside fails any more; this only satisfies hyper's Infallible.
    let svc = ServiceBuilder::new()
        .layer(RespondLayer::with_retry_after(RETRY_AFTER_SECS))
        .service(svc);
    BoxCloneSyncService::new(svc)
}
