//! Per-revision timeouts: the shared timeout stage, configured from each
//! request's revision.
//!
//! Sits after the reporter and before activation. Knative's activator reads
//! `timeoutSeconds`, `responseStartTimeoutSeconds` and `idleTimeoutSeconds`
//! from the Revision, so unlike the queue-proxy the limits differ per
//! request; on expiry the client gets 504 `activator request timeout` (or the
//! text appended to a started body).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use kdp_core::Error;
use kdp_proxy::body::BoxBody;
use kdp_proxy::timeout::{ACTIVATOR_MESSAGE, Timeout, Timeouts};
use tower::Service;

use crate::revision::RevisionInfo;

/// Knative's default revision timeout, used if a request somehow lacks its revision.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Applies the request's revision timeouts around `inner`.
#[derive(Clone, Debug)]
pub struct RevisionTimeout<S> {
    inner: S,
}

impl<S> RevisionTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for RevisionTimeout<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Error> + Clone,
    Timeout<S>: Service<Request<B>, Response = Response<BoxBody>, Error = Error>,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Future = <Timeout<S> as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeouts = match req.extensions().get::<Arc<RevisionInfo>>() {
            Some(info) => Timeouts {
                total: info.timeout,
                response_start: info.response_start_timeout,
                idle: info.idle_timeout,
                message: ACTIVATOR_MESSAGE,
            },
            None => Timeouts {
                total: DEFAULT_TIMEOUT,
                response_start: None,
                idle: None,
                message: ACTIVATOR_MESSAGE,
            },
        };
        // The inner service was polled ready above; hand that readiness to the
        // clone that serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Timeout::new(inner, timeouts).call(req)
    }
}
