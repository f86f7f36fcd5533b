//! The proxy handler: stats, host rewrite, breaker, then the user container.
//!
//! Innermost stage, inside the timeouts. Kubelet probes marked by the legacy
//! `K-Kubelet-Probe` header skip stats and the breaker. Every other request
//! is counted for the autoscaler *before* the breaker (queued requests count
//! as concurrency; activator-proxied ones apart, by `K-Proxy-Request`),
//! takes its `K-Original-Host`, waits for a breaker slot (503 `pending
//! request queue full` when 10×CC are already waiting), and is forwarded to
//! `127.0.0.1:$USER_PORT`. The slot and the stats entry are held until the
//! response body ends, as Go's handler holds them until it returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, header};
use kdp_core::Error;
use kdp_core::header::{
    K_ORIGINAL_HOST, K_PROXY_REQUEST, KNATIVE_SERVING_NAMESPACE, KNATIVE_SERVING_REVISION,
    PROXY_REQUEST_ACTIVATOR, is_kubelet_probe, is_probe,
};
use kdp_proxy::body::{BoxBody, Guarded};
use kdp_proxy::breaker::Breaker;
use kdp_proxy::forward::Forward;
use tokio::time::Instant;

use crate::forwarded;
use crate::metrics::AppMetrics;
use crate::stats::{Stats, StatsGuard};

/// The innermost service of the queue-proxy stack.
#[derive(Clone, Debug)]
pub struct Handler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    forward: Forward,
    breaker: Option<Breaker>,
    stats: Stats,
    metrics: Option<AppMetrics>,
}

// === impl Handler ===

impl Handler {
    /// A handler forwarding through `forward`, limited by `breaker` (none = unlimited).
    pub fn new(
        forward: Forward,
        breaker: Option<Breaker>,
        stats: Stats,
        metrics: Option<AppMetrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                forward,
                breaker,
                stats,
                metrics,
            }),
        }
    }

    async fn handle<B>(self, mut req: Request<B>) -> Result<Response<BoxBody>, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Error>,
    {
        let inner = &self.inner;
        forwarded::apply(req.headers_mut());
        let headers = req.headers_mut();
        headers.remove(&KNATIVE_SERVING_REVISION);
        headers.remove(&KNATIVE_SERVING_NAMESPACE);
        if is_kubelet_probe(headers) {
            return inner.send(req, None, None).await;
        }
        let proxied = headers
            .get(&K_PROXY_REQUEST)
            .is_some_and(|v| v == PROXY_REQUEST_ACTIVATOR);
        let stats = inner.stats.request_in(proxied);
        if let Some(host) = headers.remove(&K_ORIGINAL_HOST).filter(|h| !h.is_empty()) {
            rewrite_host(&mut req, host);
        }
        let permit = match &inner.breaker {
            Some(breaker) => Some(breaker.acquire().await?),
            None => None,
        };
        inner.send(req, Some(stats), permit).await
    }
}

impl Inner {
    async fn send<B>(
        &self,
        req: Request<B>,
        stats: Option<StatsGuard>,
        permit: Option<kdp_proxy::breaker::Permit>,
    ) -> Result<Response<BoxBody>, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Error>,
    {
        let record = self
            .metrics
            .as_ref()
            .filter(|_| !is_probe(req.headers()))
            .map(|m| {
                if let Some(b) = &self.breaker {
                    m.queue_depth(b.in_flight());
                }
                (m, Instant::now())
            });
        let result = self.forward.forward(req).await;
        if let Some((metrics, start)) = record {
            let status = result.as_ref().map_or(502, |r| r.status().as_u16());
            metrics.invocation(status, start.elapsed());
        }
        let rsp = result?;
        Ok(if stats.is_some() || permit.is_some() {
            rsp.map(|body| Guarded::boxed(body, (stats, permit)))
        } else {
            rsp
        })
    }
}

/// `K-Original-Host` becomes the Host the user container sees.
fn rewrite_host<B>(req: &mut Request<B>, host: HeaderValue) {
    if req.version() == http::Version::HTTP_2
        && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
    {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority);
        if parts.scheme.is_none() {
            parts.scheme = Some(http::uri::Scheme::HTTP);
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().insert(header::HOST, host);
}

impl<B> tower::Service<Request<B>> for Handler
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Error>,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(self.clone().handle(req))
    }
}
