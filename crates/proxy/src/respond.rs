//! The edge: errors become Knative's responses before hyper sees them.
//!
//! Outermost stage of every stack. Inside, services fail with
//! [`kdp_core::Error`]; [`Respond`] maps known causes to the status codes and
//! bodies Knative writes (503 `pending request queue full`, 502 with the
//! transport error text) and hands hyper an `Infallible` service, because a
//! service error makes hyper drop the connection instead of answering.
//! The helpers build Go's `http.Error` responses byte for byte.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, StatusCode, header};
use kdp_core::{Error, ErrorChain, cause_ref};
use pin_project_lite::pin_project;

use crate::body::{self, BoxBody};
use crate::breaker::QueueFull;

/// Where a failure came from (pingora's `ErrorSource`): picks the status code
/// and the `error_source` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client went away or sent something bad.
    Downstream,
    /// The user container or pod refused, reset or timed out.
    Upstream,
    /// kdp itself (overload, bug).
    Internal,
}

/// Turns service errors into responses.
#[derive(Clone, Debug)]
pub struct Respond<S> {
    inner: S,
    retry_after: Option<HeaderValue>,
}

pin_project! {
    /// Response future of [`Respond`]: the inner future, unboxed (this stage
    /// runs on every request).
    #[derive(Debug)]
    pub struct RespondFuture<F> {
        #[pin]
        inner: F,
        retry_after: Option<HeaderValue>,
    }
}

/// Layer for [`Respond`].
#[derive(Clone, Debug, Default)]
pub struct RespondLayer {
    retry_after: Option<HeaderValue>,
}

// === impl RespondLayer ===

impl RespondLayer {
    /// Knative's behaviour: no `Retry-After` on queue-full answers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `Retry-After: <secs>` to queue-full 503s (the activator's improvement).
    pub fn with_retry_after(secs: u32) -> Self {
        Self {
            retry_after: Some(HeaderValue::from(secs)),
        }
    }
}

impl<S> tower::Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Respond<S> {
        Respond {
            inner,
            retry_after: self.retry_after.clone(),
        }
    }
}

// === impl Respond ===

impl<S, Req> tower::Service<Req> for Respond<S>
where
    S: tower::Service<Req, Response = Response<BoxBody>, Error = Error>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Stages below are always ready (they queue inside `call`); an error here
        // would have nowhere to go, so it is answered on the next call instead.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        RespondFuture {
            inner: self.inner.call(req),
            retry_after: self.retry_after.clone(),
        }
    }
}

impl<F> Future for RespondFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, Error>>,
{
    type Output = Result<Response<BoxBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(rsp) => rsp,
            Err(err) => error_response(err.as_ref(), this.retry_after.as_ref()),
        }))
    }
}

/// Classifies an error by origin.
pub fn error_source(err: &(dyn std::error::Error + 'static)) -> ErrorSource {
    if cause_ref::<QueueFull>(err).is_some() {
        ErrorSource::Internal
    } else if cause_ref::<hyper::Error>(err)
        .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
        && cause_ref::<crate::pool::UpstreamError>(err).is_none()
    {
        ErrorSource::Downstream
    } else {
        ErrorSource::Upstream
    }
}

/// The response Knative writes for `err`.
pub fn error_response(
    err: &(dyn std::error::Error + 'static),
    retry_after: Option<&HeaderValue>,
) -> Response<BoxBody> {
    if let Some(full) = cause_ref::<QueueFull>(err) {
        let mut rsp = http_error(StatusCode::SERVICE_UNAVAILABLE, &full.to_string());
        if let Some(v) = retry_after {
            rsp.headers_mut().insert(header::RETRY_AFTER, v.clone());
        }
        return rsp;
    }
    let text = upstream_error_text(err);
    tracing::debug!(error = %ErrorChain(err), "request failed");
    http_error(StatusCode::BAD_GATEWAY, &text)
}

/// The text Go's reverse proxy would print for an upstream failure: the
/// innermost cause (the dial error), as its 502 body shows.
fn upstream_error_text(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(dial) = cause_ref::<crate::pool::DialError>(err) {
        return dial.to_string();
    }
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Go's `http.Error`: `text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`, body `msg\n`.
pub fn http_error(status: StatusCode, msg: &str) -> Response<BoxBody> {
    let mut body = String::with_capacity(msg.len() + 1);
    body.push_str(msg);
    body.push('\n');
    let mut rsp = Response::new(body::full(body));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    rsp
}

/// A response written with a plain status and body, as Go's handlers do with
/// `WriteHeader` + `Write`: Go sniffs `text/plain; charset=utf-8` for text
/// bodies and sets nothing for empty ones.
pub fn raw(status: StatusCode, body: &'static str) -> Response<BoxBody> {
    let mut rsp = Response::new(if body.is_empty() {
        body::empty()
    } else {
        body::full(body)
    });
    *rsp.status_mut() = status;
    if !body.is_empty() {
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(rsp: Response<BoxBody>) -> String {
        String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn http_error_matches_go() {
        let rsp = http_error(StatusCode::BAD_REQUEST, "nope");
        assert_eq!(rsp.status(), 400);
        assert_eq!(rsp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(rsp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(text(rsp).await, "nope\n");
    }

    #[tokio::test]
    async fn dial_errors_become_502_with_text() {
        let err: Error = Box::new(crate::pool::DialError::Connect {
            addr: "127.0.0.1:9".into(),
            reason: "connection refused".into(),
        });
        let rsp = error_response(err.as_ref(), None);
        assert_eq!(rsp.status(), 502);
        assert_eq!(
            text(rsp).await,
            "dial tcp 127.0.0.1:9: connect: connection refused\n"
        );
    }

    #[test]
    fn raw_empty_has_no_content_type() {
        let rsp = raw(StatusCode::SERVICE_UNAVAILABLE, "");
        assert!(rsp.headers().get("content-type").is_none());
    }
}
