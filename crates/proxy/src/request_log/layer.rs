//! The request-log stage: one templated line per request, when enabled.
//!
//! Outermost stage of both binaries (in the queue-proxy outside the drainer,
//! so probe answers can be logged; in the activator probes are never logged).
//! It notes what the template may read from the request, lets the request
//! run, and writes the line when the response body ends (or is dropped), so
//! `.Response.Size` and `.Response.Latency` cover the whole response. With
//! logging disabled the stage is a plain pass-through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{LogEntry, RequestInfo, RequestLogger, ResponseInfo, RevisionInfo, trace_id};
use crate::body::BoxBody;
use crate::forward::ClientAddr;
use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use kdp_core::Error;
use tokio::time::Instant;

/// Wraps the stack with request logging.
#[derive(Clone, Debug)]
pub struct RequestLogLayer {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    logger: RequestLogger,
    revision: RevisionInfo,
}

/// The request-log service.
#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

/// What the template may read of a request, kept until the response ends.
#[derive(Debug)]
struct Noted {
    method: String,
    request_uri: String,
    url: String,
    host: String,
    proto: &'static str,
    content_length: i64,
    remote_addr: String,
    headers: http::HeaderMap,
    start: Instant,
    revision: Option<Arc<RevisionInfo>>,
}

pin_project_lite::pin_project! {
    struct LoggedBody {
        #[pin]
        body: BoxBody,
        log: Option<(Arc<Shared>, Noted, u16)>,
        size: u64,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((shared, noted, code)) = this.log.take() {
                write(&shared, &noted, code, *this.size);
            }
        }
    }
}

// === impl RequestLogLayer ===

impl RequestLogLayer {
    /// A layer that logs with `logger`, or passes through when `None`.
    /// `revision` is what `.Revision` renders when the request carries no
    /// [`RevisionInfo`] extension of its own (the activator sets one per request).
    pub fn new(logger: Option<RequestLogger>, revision: RevisionInfo) -> Self {
        Self {
            shared: logger.map(|logger| Arc::new(Shared { logger, revision })),
        }
    }
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl RequestLog ===

impl<S, B> tower::Service<Request<B>> for RequestLog<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    /// Unlogged requests (the common case: logging off, or a probe) pass
    /// the inner future through without boxing it again.
    type Future = Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<Response<BoxBody>, S::Error>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(shared) = self
            .shared
            .clone()
            .filter(|s| s.logger.wants(kdp_core::header::is_probe(req.headers())))
        else {
            return Either::Left(self.inner.call(req));
        };
        let mut noted = note(&req);
        noted.revision = req.extensions().get::<Arc<RevisionInfo>>().cloned();
        let fut = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let rsp = fut.await?;
            let code = rsp.status().as_u16();
            Ok(rsp.map(|body| {
                http_body_util::BodyExt::boxed_unsync(LoggedBody {
                    body,
                    log: Some((shared, noted, code)),
                    size: 0,
                })
            }))
        }))
    }
}

fn note<B>(req: &Request<B>) -> Noted {
    let uri = req.uri();
    let request_uri = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let url = if uri.scheme().is_some() && req.version() != Version::HTTP_2 {
        uri.to_string()
    } else {
        request_uri.clone()
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(ToString::to_string))
        .unwrap_or_default();
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(
            if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
                0
            } else {
                -1
            },
        );
    Noted {
        method: req.method().to_string(),
        request_uri,
        url,
        host,
        proto: match req.version() {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        content_length,
        remote_addr: req
            .extensions()
            .get::<ClientAddr>()
            .map(|a| a.0.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        start: Instant::now(),
        revision: None,
    }
}

fn write(shared: &Shared, noted: &Noted, code: u16, size: u64) {
    let first = |name| {
        noted
            .headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    let trace = trace_id(&noted.headers);
    let entry = LogEntry {
        request: RequestInfo {
            method: &noted.method,
            request_uri: &noted.request_uri,
            url: &noted.url,
            host: &noted.host,
            proto: noted.proto,
            content_length: noted.content_length,
            remote_addr: &noted.remote_addr,
            user_agent: first(header::USER_AGENT),
            referer: first(header::REFERER),
            headers: &noted.headers,
        },
        response: ResponseInfo {
            code,
            size,
            latency: noted.start.elapsed().as_secs_f64(),
        },
        revision: noted.revision.as_deref().unwrap_or(&shared.revision),
        trace_id: &trace,
    };
    shared.logger.log(&entry);
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            *this.size += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
