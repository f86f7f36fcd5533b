//! Health checks and probes: answered before any revision work.
//!
//! First stages of the activator's chain (after the accept loop), in
//! Knative's order:
//! 1. kubelet probes (`kube-probe/` User-Agent or `K-Kubelet-Probe`): 500
//!    `received SIGTERM from kubelet` once draining, 500 `connection has not
//!    yet been established` while the autoscaler websocket is down, else 200;
//! 2. ingress probes (`K-Network-Probe: probe`): the `K-Network-Hash` echoed;
//!    for every other request that header is removed;
//! 3. `K-Network-Probe: activator` (the autoscaler checking that we are in the
//!    path): 200 `activator`; any other non-empty value: 400 with the value
//!    quoted as Go's `%q` of its HTML-escaped form.
//!
//! Such requests never create revision state, stats, metrics or logs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use kdp_core::Error;
use kdp_core::header::{
    K_NETWORK_HASH, K_NETWORK_PROBE, PROBE_ACTIVATOR, PROBE_NETWORK, is_kubelet_probe,
};
use kdp_proxy::body::BoxBody;
use kdp_proxy::respond::{http_error, raw};
use tokio::sync::watch;

/// Shared health state.
#[derive(Clone, Debug)]
pub struct Health {
    draining: Arc<AtomicBool>,
    autoscaler: watch::Receiver<bool>,
}

/// The probe stage.
#[derive(Clone, Debug)]
pub struct Probe<S> {
    inner: S,
    health: Health,
}

// === impl Health ===

impl Health {
    /// Health from the drain flag and the autoscaler connection state.
    pub fn new(draining: Arc<AtomicBool>, autoscaler: watch::Receiver<bool>) -> Self {
        Self {
            draining,
            autoscaler,
        }
    }
}

// === impl Probe ===

impl<S> Probe<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, health: Health) -> Self {
        Self { inner, health }
    }
}

impl<S, B> tower::Service<Request<B>> for Probe<S>
where
    S: tower::Service<Request<B>, Response = Response<BoxBody>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if is_kubelet_probe(req.headers()) {
            let rsp = if self.health.draining.load(Ordering::Acquire) {
                http_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "received SIGTERM from kubelet",
                )
            } else if !*self.health.autoscaler.borrow() {
                http_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "connection has not yet been established",
                )
            } else {
                raw(StatusCode::OK, "")
            };
            return ready(rsp);
        }
        let probe = req.headers().get(&K_NETWORK_PROBE).cloned();
        match probe {
            Some(v) if v == PROBE_NETWORK => {
                return ready(kdp_proxy::probe::network_probe_response(req.headers()));
            }
            Some(v) if v == PROBE_ACTIVATOR => return ready(raw(StatusCode::OK, PROBE_ACTIVATOR)),
            Some(v) if !v.is_empty() => {
                let value = String::from_utf8_lossy(v.as_bytes());
                let msg = format!(
                    "unexpected probe header value: {}",
                    go_quote(&html_escape(&value))
                );
                return ready(http_error(StatusCode::BAD_REQUEST, &msg));
            }
            _ => {}
        }
        req.headers_mut().remove(&K_NETWORK_HASH);
        Box::pin(self.inner.call(req))
    }
}

fn ready(
    rsp: Response<BoxBody>,
) -> Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Error>> + Send>> {
    Box::pin(std::future::ready(Ok(rsp)))
}

/// Go's `html.EscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// Go's `%q` for printable text: double quotes, `\"` and `\\` escaped,
/// control characters as `\xNN`/`\n`/`\t`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ =
                    std::fmt::Write::write_fmt(&mut out, format_args!("\\x{:02x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote(&html_escape("queue")), "\"queue\"");
        assert_eq!(
            go_quote(&html_escape("<a&'\">")),
            "\"&lt;a&amp;&#39;&#34;&gt;\""
        );
        assert_eq!(go_quote("a\\b"), "\"a\\\\b\"");
    }
}
