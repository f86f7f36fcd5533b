//! The queue-proxy's request pipeline, composed in one place.
//!
//! Order follows Knative's `mainHandler` (`pkg/queue/sharedmain/handlers.go`),
//! outermost first. Each layer says why it sits where it does.

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use kdp_core::drain::Drainer;
use kdp_proxy::body::BoxBody;
use kdp_proxy::request_log::{RequestLogLayer, RequestLogger, RevisionInfo};
use kdp_proxy::respond::RespondLayer;
use kdp_proxy::timeout::{TimeoutLayer, Timeouts};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::handler::Handler;
use crate::probe::ProbeLayer;
use crate::readiness::Prober;

/// The erased serving stack handed to [`kdp_proxy::serve`].
pub type ServingStack = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

/// Everything the stack is built from.
#[derive(Debug)]
pub struct Parts {
    /// Drain latch shared with the admin port and the signal handler.
    pub drainer: Drainer,
    /// User-container readiness.
    pub prober: Prober,
    /// The three revision timeouts.
    pub timeouts: Timeouts,
    /// Request logging, when enabled.
    pub request_log: Option<RequestLogger>,
    /// What `.Revision` renders in the request log.
    pub revision: RevisionInfo,
    /// Stats, breaker and forwarding.
    pub handler: Handler,
}

/// Builds the serving stack.
pub fn build(parts: Parts) -> ServingStack {
    let svc = ServiceBuilder::new()
        // The request log wraps everything, probes included, so probe answers
        // can be logged and latency covers queueing.
        .layer(RequestLogLayer::new(parts.request_log, parts.revision))
        // Errors become Knative's 502/503 answers before hyper sees them:
        // a service error would make hyper drop the connection instead.
        .layer(RespondLayer::new())
        // Probes and drain are answered before any other work: they must not
        // count as traffic, wait for the breaker, or reach the user container.
        .layer(ProbeLayer::new(parts.drainer, parts.prober))
        // Timeouts sit outside the breaker on purpose: time spent queued counts
        // against the revision timeout, as in Knative.
        .layer(TimeoutLayer::new(parts.timeouts))
        // Stats, `K-Original-Host`, breaker, then the user container.
        .service(parts.handler);
    BoxCloneSyncService::new(svc)
}
