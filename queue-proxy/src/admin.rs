//! The side ports: admin (8022), autoscaler metrics (9090), user metrics (9091).
//!
//! None of these carries user traffic. The admin port serves
//! `/wait-for-drain`, the user container's preStop hook: it starts (or joins)
//! the drain and answers 200 once the quiet period passed; if no SIGTERM
//! follows within a second the drain is reset (the container is restarting,
//! not the pod stopping). The metrics port serves the latest 1 s `Stat`
//! snapshot as protobuf, exactly as the autoscaler scrapes it, and as
//! Prometheus text to clients that ask for text. Unknown paths get Go's
//! `404 page not found`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use kdp_core::drain::Drainer;
use kdp_proxy::body::{self, BoxBody};
use kdp_proxy::respond::{http_error, raw};

use crate::metrics::AppMetrics;
use crate::stats::Stats;

/// Knative's safety reset: `/wait-for-drain` without a SIGTERM un-drains after this long.
pub const WAIT_FOR_DRAIN_RESET: Duration = Duration::from_secs(1);

/// State the admin port needs.
#[derive(Clone, Debug)]
pub struct Admin {
    drainer: Drainer,
    terminating: Arc<AtomicBool>,
}

// === impl Admin ===

impl Admin {
    /// Admin routes over `drainer`; `terminating` is set once SIGTERM arrived.
    pub fn new(drainer: Drainer, terminating: Arc<AtomicBool>) -> Self {
        Self {
            drainer,
            terminating,
        }
    }

    /// Serves one admin request.
    pub async fn call<B>(self, req: Request<B>) -> Result<Response<BoxBody>, Infallible> {
        if req.uri().path() != "/wait-for-drain" {
            return Ok(not_found());
        }
        tracing::info!("Attached drain handler from user-container");
        let reset = {
            let drainer = self.drainer.clone();
            let terminating = self.terminating.clone();
            tokio::spawn(async move {
                tokio::time::sleep(WAIT_FOR_DRAIN_RESET).await;
                if !terminating.load(Ordering::Acquire) {
                    drainer.reset();
                }
            })
        };
        self.drainer.drain().await;
        drop(reset);
        Ok(raw(StatusCode::OK, ""))
    }
}

/// Serves the autoscaler metrics port.
pub fn metrics_response<B>(req: &Request<B>, stats: &Stats) -> Response<BoxBody> {
    if req.uri().path() != "/metrics" {
        return not_found();
    }
    if wants_text(req) {
        let mut rsp = Response::new(body::full(stats.prometheus_text()));
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return rsp;
    }
    let mut rsp = Response::new(body::full(stats.snapshot_bytes()));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/protobuf"),
    );
    rsp
}

/// Serves the user metrics port.
pub fn user_metrics_response<B>(req: &Request<B>, metrics: &AppMetrics) -> Response<BoxBody> {
    if req.uri().path() != "/metrics" {
        return not_found();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut rsp = http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        rsp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    let mut rsp = Response::new(body::full(metrics.render()));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    rsp
}

/// The autoscaler always gets protobuf; only a client that asks for text
/// (Prometheus, a person with curl `-H 'Accept: text/plain'`) and not for
/// protobuf gets the text exposition.
fn wants_text<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .fold((false, false), |(text, proto), v| {
            (
                text || v.contains("text/plain") || v.contains("openmetrics"),
                proto || v.contains("application/protobuf"),
            )
        })
        == (true, false)
}

fn not_found() -> Response<BoxBody> {
    http_error(StatusCode::NOT_FOUND, "404 page not found")
}
