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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use kdp_core::Error;
use kdp_core::header::{
    K_ORIGINAL_HOST, K_PASSTHROUGH_LB, K_PROXY_REQUEST, KNATIVE_SERVING_NAMESPACE,
    KNATIVE_SERVING_REVISION, PROXY_REQUEST_ACTIVATOR,
};
use kdp_proxy::body::{BoxBody, Guarded};
use kdp_proxy::forward::Forward;
use kdp_proxy::pool::UpstreamTls;
use kdp_proxy::respond::raw;
use rustls::pki_types::ServerName;

use crate::certs::{self, UpstreamTrust};
use crate::report::Revision;
use crate::revision::RevisionInfo;
use crate::throttle::{Protocol, QueueFull, ThrottleError, Throttler};

/// The activation stage.
#[derive(Clone, Debug)]
pub struct Activate {
    throttler: Arc<Throttler>,
    // Behind an `Arc`: every request's future holds a clone of `Activate`,
    // and a `Forward` (two pooled clients) is ~700 bytes.
    forward: Arc<Forward>,
    budget: Arc<HeldBudget>,
    /// `enable-mesh-pod-addressability`: address pods through the mesh.
    passthrough_lb: bool,
    /// system-internal-tls: what pods must prove over TLS, and the server
    /// name sent to them.
    upstream_tls: Option<(Arc<UpstreamTrust>, ServerName<'static>)>,
}

/// A process-wide bound on the memory of held requests, across revisions.
///
/// A held request costs its head (method, URI, headers) plus a fixed
/// allowance for its future and queue entry; its body stays unread in the
/// socket. When the budget is spent, new requests get the queue-full 503
/// instead of growing the heap.
#[derive(Debug)]
pub struct HeldBudget {
    limit: usize,
    used: AtomicUsize,
}

/// A held request's share of the [`HeldBudget`], returned on drop.
#[derive(Debug)]
struct Held<'a> {
    budget: &'a HeldBudget,
    bytes: usize,
}

// === impl Activate ===

impl Activate {
    /// Activation through `throttler`, forwarding with `forward`; held
    /// requests may use at most `budget` bytes in total.
    pub fn new(throttler: Arc<Throttler>, forward: Forward, budget: usize) -> Self {
        Self {
            throttler,
            forward: Arc::new(forward),
            budget: Arc::new(HeldBudget {
                limit: budget,
                used: AtomicUsize::new(0),
            }),
            passthrough_lb: false,
            upstream_tls: None,
        }
    }

    /// With system-internal-tls: requests go to pods (port 8112) and private
    /// ClusterIPs (port 443) over TLS, verified by `trust` for the
    /// revision's namespace.
    #[must_use]
    pub fn with_upstream_tls(mut self, trust: Option<Arc<UpstreamTrust>>) -> Self {
        let name = ServerName::try_from(certs::DATA_PLANE_SERVER_NAME)
            .expect("the data-plane server name is a DNS name");
        self.upstream_tls = trust.map(|trust| (trust, name));
        self
    }

    /// With `enable-mesh-pod-addressability`: upstream requests carry
    /// `Host: <rev>-private.<ns>` and `K-Passthrough-Lb: true`.
    #[must_use]
    pub fn with_passthrough_lb(mut self, enabled: bool) -> Self {
        self.passthrough_lb = enabled;
        self
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
        let Some(held) = self.budget.reserve(head_size(&req)) else {
            return Err(QueueFull.into());
        };
        let acquired = revision.try_acquire().await;
        drop(held);
        let lease = match acquired {
            Ok(lease) => lease,
            Err(ThrottleError::QueueFull(full)) => return Err(full.into()),
            Err(error) => {
                tracing::debug!(%error, revision = %key.name, "throttler refused the request");
                return Ok(raw(StatusCode::INTERNAL_SERVER_ERROR, ""));
            }
        };
        let passthrough = self.passthrough_lb.then_some(&key);
        match &self.upstream_tls {
            Some((trust, name)) => {
                let dest = certs::tls_dest(lease.dest(), lease.is_cluster_ip());
                rewrite(&mut req, "https", &dest, passthrough)?;
                req.extensions_mut().insert(UpstreamTls::new(
                    trust.client_config(&key.namespace),
                    name.clone(),
                ));
            }
            None => rewrite(&mut req, "http", lease.dest(), passthrough)?,
        }
        // Boxed so that a held request does not carry the forwarding state.
        let rsp = Box::pin(self.forward.forward(req)).await?;
        Ok(rsp.map(|body| Guarded::boxed(body, lease)))
    }
}

/// Fixed cost of a held HTTP/1 request beyond its head bytes: the request
/// future, the queue entry, and the connection it occupies (hyper keeps an
/// 8 KiB read and an 8 KiB write buffer per connection). `kdp-bench`'s
/// held-request figure: 21.3 KB of resident memory per held request.
pub const HELD_REQUEST_OVERHEAD: usize = 20 << 10;

/// The same for an HTTP/2 stream, which shares its connection: about 4.2 KB
/// per held request in the overload fault test (20,000 streams over h2c).
pub const HELD_STREAM_OVERHEAD: usize = 4 << 10;

fn head_size<B>(req: &Request<B>) -> usize {
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum();
    let overhead = if req.version() == http::Version::HTTP_2 {
        HELD_STREAM_OVERHEAD
    } else {
        HELD_REQUEST_OVERHEAD
    };
    overhead + uri_len(req.uri()) + headers
}

/// The length of `uri.to_string()`, without building the string: the parts
/// `Uri`'s `Display` writes (`scheme://`, authority, path, `?query`).
fn uri_len(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| "?".len() + q.len())
}

// === impl HeldBudget ===

impl HeldBudget {
    fn reserve(&self, bytes: usize) -> Option<Held<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .ok()
            .map(|_| Held {
                budget: self,
                bytes,
            })
    }

    /// Bytes currently reserved by held requests.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Knative's activator rewrite: the upstream sees `Host: <dest>`, the
/// client's Host in `K-Original-Host`, and `K-Proxy-Request: activator`.
/// With `passthrough` (mesh pod addressability) the Host names the
/// revision's private Service instead and `K-Passthrough-Lb: true` is added.
fn rewrite<B>(
    req: &mut Request<B>,
    scheme: &str,
    dest: &str,
    passthrough: Option<&kdp_stats::RevisionKey>,
) -> Result<(), Error> {
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
    match passthrough {
        Some(key) => {
            let host = format!(
                "{}.{}",
                crate::names::private_service(&key.name),
                key.namespace
            );
            headers.insert(header::HOST, HeaderValue::try_from(host)?);
            headers.append(&K_PASSTHROUGH_LB, HeaderValue::from_static("true"));
        }
        None => {
            headers.insert(header::HOST, HeaderValue::try_from(dest)?);
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    *req.uri_mut() = format!("{scheme}://{dest}{path}").parse::<Uri>()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_its_limit_and_returns_on_drop() {
        let budget = HeldBudget {
            limit: 5000,
            used: AtomicUsize::new(0),
        };
        let a = budget.reserve(3000).unwrap();
        assert!(budget.reserve(3000).is_none());
        let b = budget.reserve(2000).unwrap();
        assert_eq!(budget.used(), 5000);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn rewrite_moves_host_and_marks_the_request() {
        let mut req = Request::get("/p?q=1")
            .header("host", "hello.default.example.com")
            .header("knative-serving-revision", "hello-00001")
            .header("knative-serving-namespace", "default")
            .body(())
            .unwrap();
        rewrite(&mut req, "http", "10.0.0.1:8012", None).unwrap();
        assert_eq!(req.uri(), "http://10.0.0.1:8012/p?q=1");
        assert_eq!(req.headers()["host"], "10.0.0.1:8012");
        assert_eq!(
            req.headers()["k-original-host"],
            "hello.default.example.com"
        );
        assert_eq!(req.headers()["k-proxy-request"], "activator");
        assert!(req.headers().get("knative-serving-revision").is_none());
        assert!(req.headers().get("k-passthrough-lb").is_none());
    }

    #[test]
    fn rewrite_with_mesh_pod_addressability() {
        let key = kdp_stats::RevisionKey::new("real-namespace", "real-name");
        let mut req = Request::get("/").header("host", "h").body(()).unwrap();
        rewrite(&mut req, "http", "10.0.0.1:8012", Some(&key)).unwrap();
        assert_eq!(req.uri(), "http://10.0.0.1:8012/");
        assert_eq!(req.headers()["host"], "real-name-private.real-namespace");
        assert_eq!(req.headers()["k-passthrough-lb"], "true");
    }

    #[test]
    fn head_size_counts_headers_and_uri() {
        let small = Request::get("/").body(()).unwrap();
        let big = Request::get("/a-long-path?with=query")
            .header("x-big", "v".repeat(1000))
            .body(())
            .unwrap();
        assert_eq!(head_size(&small), HELD_REQUEST_OVERHEAD + 1);
        assert!(head_size(&big) > HELD_REQUEST_OVERHEAD + 1000);
        let stream = Request::get("/")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(head_size(&stream), HELD_STREAM_OVERHEAD + 1);
    }

    #[test]
    fn uri_len_is_the_length_of_the_uri_string() {
        for uri in [
            "/",
            "*",
            "/a-long-path",
            "/p?q=1&r=two",
            "/p?",
            "http://10.0.0.1:8012",
            "http://10.0.0.1:8012/",
            "https://user@hello.default.example.com:8443/p/q?x=y",
            "example.com:443",
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{uri}");
        }
    }
}
