//! Activation: wait for capacity on a ready pod, then proxy to it.
//!
//! Innermost stage, inside the timeouts (so time spent held counts against
//! the revision timeout, as in Knative). It asks the revision's throttler for
//! a [`Lease`](crate::throttle::Lease) — held while the revision has no ready
//! pod, 503 `pending request queue full` (with `Retry-After`) past the queue
//! bound — then rewrites the request the way Knative's activator does (Host
//! moved to `K-Original-Host`, `K-Proxy-Request: activator`, routing headers
//! removed) and forwards it to the leased pod, HTTP/1.1 or h2c by the
//! inbound protocol. The lease is held until the response body ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use kdp_core::Error;
use kdp_core::header::{
    K_ORIGINAL_HOST, K_PROXY_REQUEST, KNATIVE_SERVING_NAMESPACE, KNATIVE_SERVING_REVISION,
    PROXY_REQUEST_ACTIVATOR,
};
use kdp_proxy::body::{BoxBody, Guarded};
use kdp_proxy::forward::Forward;
use kdp_proxy::respond::raw;

use crate::report::Revision;
use crate::revision::RevisionInfo;
use crate::throttle::{Protocol, ThrottleError, Throttler};

/// The activation stage.
#[derive(Clone, Debug)]
pub struct Activate {
    throttler: Arc<Throttler>,
    forward: Forward,
}

// === impl Activate ===

impl Activate {
    /// Activation through `throttler`, forwarding with `forward`.
    pub fn new(throttler: Arc<Throttler>, forward: Forward) -> Self {
        Self { throttler, forward }
    }

    async fn handle<B>(self, mut req: Request<B>) -> Result<Response<BoxBody>, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Error>,
    {
        let (Some(Revision(key)), Some(info)) = (
            req.extensions().get::<Revision>().cloned(),
            req.extensions().get::<Arc<RevisionInfo>>().cloned(),
        ) else {
            return Ok(raw(StatusCode::INTERNAL_SERVER_ERROR, ""));
        };
        // Revisions normally exist already (the informer creates them); a
        // request may still beat the informer, as Knative allows.
        let revision = self.throttler.get(&key).unwrap_or_else(|_| {
            let protocol = if info.h2c {
                Protocol::H2c
            } else {
                Protocol::Http1
            };
            let cc = usize::try_from(info.container_concurrency).unwrap_or(usize::MAX);
            self.throttler.upsert_revision(key.clone(), cc, protocol)
        });
        let lease = match revision.try_acquire().await {
            Ok(lease) => lease,
            Err(ThrottleError::QueueFull(full)) => return Err(full.into()),
            Err(error) => {
                tracing::debug!(%error, revision = %key.name, "throttler refused the request");
                return Ok(raw(StatusCode::INTERNAL_SERVER_ERROR, ""));
            }
        };
        rewrite(&mut req, lease.dest())?;
        let rsp = self.forward.forward(req).await?;
        Ok(rsp.map(|body| Guarded::boxed(body, lease)))
    }
}

/// Knative's activator rewrite: the upstream sees `Host: <dest>`, the
/// client's Host in `K-Original-Host`, and `K-Proxy-Request: activator`.
fn rewrite<B>(req: &mut Request<B>, dest: &str) -> Result<(), Error> {
    let original = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::try_from(a.as_str()).ok())
    });
    let headers = req.headers_mut();
    if !headers.contains_key(&K_ORIGINAL_HOST)
        && let Some(host) = original
    {
        headers.insert(&K_ORIGINAL_HOST, host);
    }
    headers.insert(
        &K_PROXY_REQUEST,
        HeaderValue::from_static(PROXY_REQUEST_ACTIVATOR),
    );
    headers.remove(&KNATIVE_SERVING_REVISION);
    headers.remove(&KNATIVE_SERVING_NAMESPACE);
    headers.insert(header::HOST, HeaderValue::try_from(dest)?);
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    *req.uri_mut() = format!("http://{dest}{path}").parse::<Uri>()?;
    Ok(())
}

impl<B> tower::Service<Request<B>> for Activate
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
