//! Probes and drain: the queue-proxy's answers before any proxying.
//!
//! Sits just inside the request log, outside the timeouts (Knative's
//! drainer position). Health checks — a `kube-probe/`,
//! `Knative-Activator-Probe` or `Knative-Autoscaling-Probe` User-Agent — get
//! `200 queue` when the user container passes its readiness probe, `503`
//! when it does not, `400` for a wrong `K-Network-Probe` value, and `503
//! shutting down` while draining. Ingress probes (`K-Network-Probe: probe`)
//! get their hash echoed. Everything else restarts the drain's quiet period
//! and goes on to the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response, StatusCode, header};
use kdp_core::Error;
use kdp_core::drain::Drainer;
use kdp_core::header::{K_NETWORK_PROBE, PROBE_QUEUE};
use kdp_proxy::body::BoxBody;
use kdp_proxy::respond::{http_error, raw};

use crate::readiness::Prober;

/// Answers probes, tracks drain traffic, and passes the rest on.
#[derive(Clone, Debug)]
pub struct Probe<S> {
    inner: S,
    drainer: Drainer,
    prober: Prober,
}

/// Layer for [`Probe`].
#[derive(Clone, Debug)]
pub struct ProbeLayer {
    drainer: Drainer,
    prober: Prober,
}

// === impl ProbeLayer ===

impl ProbeLayer {
    /// Probes answered from `prober`, drain state from `drainer`.
    pub fn new(drainer: Drainer, prober: Prober) -> Self {
        Self { drainer, prober }
    }
}

impl<S> tower::Layer<S> for ProbeLayer {
    type Service = Probe<S>;
    fn layer(&self, inner: S) -> Probe<S> {
        Probe {
            inner,
            drainer: self.drainer.clone(),
            prober: self.prober.clone(),
        }
    }
}

// === impl Probe ===

impl<S, B> tower::Service<Request<B>> for Probe<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    /// Requests pass the inner future through unboxed; probe answers are
    /// boxed (they are rare, and some wait for the readiness probe).
    type Future = Either<S::Future, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let headers = req.headers();
        let health_check = headers
            .get(header::USER_AGENT)
            .is_some_and(|ua| kdp_core::header::is_health_check_user_agent(ua.as_bytes()));
        let probe = headers.get(&K_NETWORK_PROBE);
        if health_check {
            if self.drainer.is_draining() {
                return ready(shutting_down());
            }
            let value = probe.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            if value.as_deref() != Some(PROBE_QUEUE) {
                let msg = format!(
                    "unexpected probe header value: {}",
                    value.unwrap_or_default()
                );
                return ready(http_error(StatusCode::BAD_REQUEST, &msg));
            }
            let prober = self.prober.clone();
            return Either::Right(Box::pin(async move {
                Ok(if prober.probe().await {
                    raw(StatusCode::OK, PROBE_QUEUE)
                } else {
                    raw(StatusCode::SERVICE_UNAVAILABLE, "")
                })
            }));
        }
        if kdp_proxy::probe::is_network_probe(headers) {
            if self.drainer.is_draining() {
                return ready(shutting_down());
            }
            return ready(kdp_proxy::probe::network_probe_response(headers));
        }
        self.drainer.touch();
        Either::Left(self.inner.call(req))
    }
}

fn shutting_down() -> Response<BoxBody> {
    http_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
}

/// A probe's answer, from this layer.
pub type Answer = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Error>> + Send>>;

fn ready<F>(rsp: Response<BoxBody>) -> Either<F, Answer> {
    Either::Right(Box::pin(std::future::ready(Ok(rsp))))
}
