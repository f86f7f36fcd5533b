//! Test upstreams: HTTP servers standing in for user containers and for
//! queue-proxy pods.
//!
//! A "pod" is a loopback address (`127.0.0.2`, `127.0.0.3`, ...; Linux routes
//! all of `127.0.0.0/8` to `lo`) with a server on an ephemeral port
//! (DESIGN §5). [`Upstream`] runs any handler closure over HTTP/1 and h2c;
//! [`FakePod`] is a queue-proxy as the activator sees it: it answers
//! `K-Network-Probe: queue` probes by its switchable readiness (200 `queue`
//! or 503 with an empty body, activator spec §4.3) and tags every other
//! response with its name.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};

use crate::serve::{self, Server};

/// The probe header the activator sends (activator spec §4.3).
pub const PROBE_HEADER: &str = "k-network-probe";

/// The header on every [`FakePod`] response naming the pod that served it.
pub const POD_HEADER: &str = "x-kdp-pod";

/// An HTTP/1 + h2c server on `ip:<ephemeral>` running a handler closure.
///
/// Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Upstream {
    server: Server,
    requests: Arc<AtomicUsize>,
}

/// A fake queue-proxy pod. See the [module docs](self).
#[derive(Debug)]
pub struct FakePod {
    upstream: Upstream,
    state: Arc<PodState>,
}

/// A non-probe request a [`FakePod`] served.
#[derive(Clone, Debug)]
pub struct PodRequest {
    /// Request method.
    pub method: Method,
    /// Request target as received (path and query for HTTP/1).
    pub uri: Uri,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// The whole request body.
    pub body: Bytes,
}

#[derive(Debug)]
struct PodState {
    name: String,
    ready: AtomicBool,
    probes: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    delay: Mutex<Duration>,
    served: Mutex<Vec<PodRequest>>,
}

/// Decrements the in-flight count when a request finishes.
#[derive(Debug)]
struct InFlight(Arc<PodState>);

// === impl Upstream ===

impl Upstream {
    /// Serves `handler` on `ip` and an ephemeral port. The handler sees every
    /// request, over HTTP/1 or h2c (prior knowledge), on any path.
    ///
    /// # Errors
    ///
    /// If `ip:0` cannot be bound (on Linux every `127.x.y.z` can).
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// use http_body_util::Full;
    /// use kdp_test_support::Upstream;
    ///
    /// let user = Upstream::start([127, 0, 0, 2].into(), |_req| async {
    ///     hyper::Response::new(Full::new(bytes::Bytes::from_static(b"hello")))
    /// })?;
    /// assert_eq!(user.addr().ip().to_string(), "127.0.0.2");
    /// # Ok(()) }
    /// ```
    pub fn start<F, Fut, B>(ip: IpAddr, handler: F) -> io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let listener = serve::bind(SocketAddr::new(ip, 0))?;
        let handler = Arc::new(handler);
        let requests = Arc::new(AtomicUsize::new(0));
        let service = {
            let requests = requests.clone();
            service_fn(move |req| {
                requests.fetch_add(1, Ordering::SeqCst);
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let server = Server::spawn(listener, service)?;
        Ok(Self { server, requests })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://<ip>:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Requests received so far (probes included).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far, to assert on connection reuse.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }
}

// === impl FakePod ===

impl FakePod {
    /// Starts a ready pod named `name` on `ip` and an ephemeral port.
    ///
    /// # Errors
    ///
    /// If `ip:0` cannot be bound.
    pub fn start(name: impl Into<String>, ip: IpAddr) -> io::Result<Self> {
        let state = Arc::new(PodState {
            name: name.into(),
            ready: AtomicBool::new(true),
            probes: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            delay: Mutex::new(Duration::ZERO),
            served: Mutex::new(Vec::new()),
        });
        let upstream = {
            let state = state.clone();
            Upstream::start(ip, move |req| serve_pod(state.clone(), req))?
        };
        Ok(Self { upstream, state })
    }

    /// The pod's name, as echoed in [`POD_HEADER`].
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The pod's `ip:port`, as it would appear in an Endpoints subset.
    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    /// `http://<ip>:<port>`.
    pub fn url(&self) -> String {
        self.upstream.url()
    }

    /// Makes probes pass (`true`) or fail with 503 (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether probes currently pass.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::SeqCst)
    }

    /// Holds every later non-probe request this long before answering, to
    /// keep requests in flight.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Probes answered so far.
    pub fn probes(&self) -> usize {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// Non-probe requests that have arrived so far (finished or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Non-probe requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Every non-probe request served, in arrival order.
    pub fn served(&self) -> Vec<PodRequest> {
        lock(&self.state.served).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.upstream.connections()
    }
}

/// The pod name from a response's [`POD_HEADER`], if present.
pub fn served_by<B>(response: &Response<B>) -> Option<&str> {
    response.headers().get(POD_HEADER)?.to_str().ok()
}

async fn serve_pod(state: Arc<PodState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let pod =
        HeaderValue::from_str(&state.name).unwrap_or(HeaderValue::from_static("invalid-name"));
    if req
        .headers()
        .get(PROBE_HEADER)
        .is_some_and(|v| v == "queue")
    {
        state.probes.fetch_add(1, Ordering::SeqCst);
        // mirrors queue-proxy: 200 "queue" when ready, 503 and no body when not.
        let (status, body) = if state.ready.load(Ordering::SeqCst) {
            (StatusCode::OK, Bytes::from_static(b"queue"))
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(POD_HEADER, pod);
        return response;
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(state.clone());
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    lock(&state.served).push(PodRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    });
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(state.name.clone())));
    response.headers_mut().insert(POD_HEADER, pod);
    response
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl InFlight ===

impl InFlight {
    fn enter(state: Arc<PodState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
