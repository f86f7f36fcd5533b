//! The accept loop: listener → hyper (HTTP/1.1 and h2c on one socket) → service.
//!
//! First stage of every request. The caller binds the listener (so tests use
//! port 0) and passes a future that resolves when the server should stop;
//! [`serve`] then stops accepting, lets in-flight requests finish, closes
//! idle keep-alive connections and returns. Each request gets the peer's
//! address as a [`ClientAddr`] extension. The service must be infallible:
//! [`respond`](crate::respond) has already turned errors into responses.
//!
//! Server settings follow Go's `net/http` as Knative runs it: a header read
//! timeout (60 s), a 1 MiB header limit (larger heads get 431), no idle
//! timeout, and HTTP/2 with 250 concurrent streams. As in Go, the header
//! read timeout counts from accept for the first request (it also bounds
//! the TLS handshake and the protocol sniff), and from the first byte of
//! each later one: an idle keep-alive connection is never timed out.
//!
//! **Parked connections.** hyper keeps an 8 KiB read and an 8 KiB write
//! buffer for every HTTP/1 connection for as long as it lives, and starts its
//! header timer the moment a connection goes idle. So an HTTP/1 connection
//! (plain or TLS) that has been quiet for a second, with no response head
//! still to write, is *parked*: hyper is asked to stop after the current exchange
//! (an idle one stops at once), gives back the socket and any bytes it had
//! read, and the task waits for the socket to become readable with no
//! buffers and no timer. The next request gets a fresh hyper connection. On
//! the wire nothing changes: no `Connection: close` is ever added (parking
//! waits until every response head is out), and bytes hyper had buffered
//! are replayed. A thousand idle clients cost a few KB each instead of
//! about 19 (over TLS, rustls' own state stays).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::Oneshot;
use tracing::Instrument;

use crate::body::BoxBody;
use crate::forward::ClientAddr;

/// Go's default `MaxHeaderBytes`.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Knative's `ReadHeaderTimeout` on the serving ports.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an HTTP/1 connection stays quiet before it is parked (see the
/// module docs), at most; also how often a busy one is checked. A quarter
/// of the header read timeout when that is shorter.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// A name for logs (`main`, `admin`, `metrics`).
    pub name: &'static str,
    /// Time allowed to read a request head.
    pub header_read_timeout: Duration,
    /// Serve HTTP/2 (h2c prior knowledge) beside HTTP/1.1.
    pub http2: bool,
}

/// Turns an accepted TCP stream into the stream hyper reads (plain or TLS).
pub trait Accept: Clone + Send + Sync + 'static {
    /// The stream type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Performs the handshake, if any.
    fn accept(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send>>;
    /// Whether idle HTTP/1 connections on this stream are parked; by
    /// default not. A stream that parks implements [`Accept::parkable`]
    /// too: with the default (never parkable now), its connections would be
    /// handed back and resumed every [`PARK_AFTER`] for nothing.
    const PARKS: bool = false;
    /// The socket to wait on while an idle HTTP/1 connection is parked, if
    /// it can be parked now: the stream holds nothing the socket's
    /// readiness would not announce (decrypted bytes, say). If not, the
    /// connection is served again at once.
    fn parkable(_io: &Self::Io) -> Option<&TcpStream> {
        None
    }
}

/// Plain TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

/// What a server needs of its service: infallible (errors are already
/// responses), cloned for every request, shared by every connection.
pub trait ServeService:
    tower::Service<
        Request<Incoming>,
        Response = Response<BoxBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + Unpin
    + 'static
{
}

impl<S> ServeService for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<BoxBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + Unpin
        + 'static
{
}

/// A stream that an upgraded (switched-protocol) HTTP/1 connection hands
/// over: the socket, with any bytes the client sent after its request.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// Request extension on HTTP/1 requests that ask for a protocol upgrade:
/// resolves to the client's connection once a `101` response is out.
/// (hyper's own [`hyper::upgrade::on`] cannot be used on these connections:
/// they are served without hyper's upgrade support so that they can be
/// parked.)
#[derive(Clone)]
pub struct DownstreamUpgrade(Arc<Mutex<Option<UpgradeReceiver>>>);

/// Where the upgraded connection arrives.
pub type UpgradeReceiver = oneshot::Receiver<Box<dyn UpgradedIo>>;

impl DownstreamUpgrade {
    /// The connection, once the upgrade's `101` is out; `None` if taken already.
    pub fn take(&self) -> Option<UpgradeReceiver> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl std::fmt::Debug for DownstreamUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownstreamUpgrade").finish_non_exhaustive()
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's requests tell its driver.
#[derive(Default)]
struct ConnState {
    /// Requests so far.
    requests: AtomicU64,
    /// Requests whose response head is not out yet.
    heads_pending: AtomicUsize,
    /// A request asked to close the connection after its exchange.
    client_closes: AtomicBool,
    /// The last response was `101 Switching Protocols`.
    switched: AtomicBool,
    /// Where the connection goes if the current request's upgrade succeeds.
    upgrade: Mutex<Option<oneshot::Sender<Box<dyn UpgradedIo>>>>,
}

pin_project! {
    /// A request's response future, noting when its head is out.
    struct Tracked<F> {
        #[pin]
        inner: F,
        state: Option<Arc<ConnState>>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(state) = this.project().state.take() {
                state.heads_pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The first bytes of a connection, replayed before the rest of the stream.
struct Rewind<I> {
    prefix: Bytes,
    io: I,
    /// Set while the connection is being parked: hyper's closing shutdown
    /// must not reach the socket.
    parking: Option<Arc<AtomicBool>>,
}

// === impl ServeConfig ===

impl ServeConfig {
    /// Knative's defaults for a port named `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            header_read_timeout: HEADER_READ_TIMEOUT,
            http2: true,
        }
    }

    /// HTTP/1.1 only (admin and metrics ports).
    pub fn http1_only(mut self) -> Self {
        self.http2 = false;
        self
    }
}

impl Accept for Plain {
    type Io = TcpStream;
    const PARKS: bool = true;
    fn accept(
        &self,
        tcp: TcpStream,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        Box::pin(std::future::ready(Ok(tcp)))
    }

    fn parkable(io: &TcpStream) -> Option<&TcpStream> {
        Some(io)
    }
}

/// Serves plain HTTP on `listener` until `shutdown` resolves, then drains.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: ServeService,
{
    serve_with(listener, Plain, service, config, shutdown).await;
}

/// Serves on `listener` through `acceptor` until `shutdown` resolves, then
/// waits for in-flight requests (upgraded connections are not waited for;
/// see [`Tunnels`](crate::forward::Tunnels)).
pub async fn serve_with<A, S>(
    listener: TcpListener,
    acceptor: A,
    service: S,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) where
    A: Accept,
    S: ServeService,
{
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES + 64 * 1024)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new()).max_concurrent_streams(250);
    let builders = Arc::new(Builders {
        h1,
        h2: config.http2.then_some(h2),
        // An idle connection is parked within two checks; that must come
        // well before hyper's header timer, which runs while it waits for
        // the next request, could close it.
        park_after: PARK_AFTER.min(config.header_read_timeout / 4),
    });
    // Every connection holds a receiver: `closed()` resolves when the last
    // one has finished.
    let (stop, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let local = listener.local_addr().ok();
    tracing::info!(server = config.name, addr = ?local, "listening");

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    handle_accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            head_deadline: Instant::now() + config.header_read_timeout,
            builders: builders.clone(),
            service: service.clone(),
            peer,
            stop: stop.subscribe(),
            state: Arc::default(),
        };
        let acceptor = acceptor.clone();
        let span = tracing::debug_span!("conn", server = config.name, %peer);
        tokio::spawn(conn.run(acceptor, tcp).instrument(span));
    }

    drop(listener);
    tracing::info!(server = config.name, "draining connections");
    let _ = stop.send(true);
    stop.closed().await;
}

/// The hyper settings every connection of a server shares.
struct Builders {
    h1: http1::Builder,
    /// `None` on HTTP/1-only ports.
    h2: Option<http2::Builder<TokioExecutor>>,
    /// Quiet time before an HTTP/1 connection is parked.
    park_after: Duration,
}

/// One accepted connection.
struct Conn<S> {
    /// The first request head must be complete by then.
    head_deadline: Instant,
    builders: Arc<Builders>,
    service: S,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
    state: Arc<ConnState>,
}

impl<S> Conn<S>
where
    S: ServeService,
{
    async fn run<A: Accept>(self, acceptor: A, tcp: TcpStream) {
        let mut io = match tokio::time::timeout_at(self.head_deadline, acceptor.accept(tcp)).await {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::debug!(%error, "handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!("handshake timed out");
                return;
            }
        };
        let (h2, prefix) = match sniff(&mut io, self.head_deadline).await {
            Ok(Some(sniffed)) => sniffed,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "no request head");
                return;
            }
        };
        match (self.builders.h2.clone(), h2) {
            (Some(builder), true) => {
                let io = Rewind {
                    prefix,
                    io,
                    parking: None,
                };
                self.serve_h2(builder, io).await;
            }
            _ => self.serve_h1::<A>(io, prefix).await,
        }
    }

    async fn serve_h2<I>(self, builder: http2::Builder<TokioExecutor>, io: Rewind<I>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = self.service_fn();
        let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), svc));
        let mut stop = std::pin::pin!(stopped(self.stop.clone()));
        let mut stopping = false;
        let result = std::future::poll_fn(|cx| {
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            conn.as_mut().poll(cx)
        })
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "connection closed with an error");
        }
    }

    /// Serves HTTP/1 requests on `io`, parking it whenever it is idle.
    async fn serve_h1<A: Accept>(mut self, mut io: A::Io, mut prefix: Bytes) {
        // Not before the first request: until then hyper's header timer
        // bounds the first head, from (nearly) accept, as in Go.
        let mut may_park = false;
        loop {
            let Some((rest, back)) = self.drive_h1::<A>(io, prefix, may_park).await else {
                return;
            };
            // Bytes hyper had read but not used (the start of the next
            // request) are served at once; parking again needs a request
            // to complete first, so a stalled partial head still meets the
            // header timeout.
            may_park = rest.is_empty();
            if may_park && let Some(socket) = A::parkable(&back) {
                tokio::select! {
                    readable = socket.readable() => if readable.is_err() { return },
                    () = stopped(self.stop.clone()) => return,
                }
            }
            io = back;
            prefix = rest;
        }
    }

    /// Runs one hyper HTTP/1 connection until it ends or is parked. Parked,
    /// it returns the bytes hyper read but did not use, and the socket;
    /// otherwise the connection is over (closed by hyper, or handed to an
    /// upgrade).
    async fn drive_h1<A: Accept>(
        &mut self,
        io: A::Io,
        prefix: Bytes,
        may_park: bool,
    ) -> Option<(Bytes, A::Io)> {
        let parkable = A::PARKS;
        let parking = Arc::new(AtomicBool::new(false));
        let io = Rewind {
            prefix,
            io,
            parking: parkable.then(|| parking.clone()),
        };
        let mut conn = self
            .builders
            .h1
            .serve_connection(TokioIo::new(io), self.service_fn());
        let park_after = self.builders.park_after;
        let mut park_check = std::pin::pin!(tokio::time::sleep(park_after));
        let mut stop = std::pin::pin!(stopped(self.stop.clone()));
        let state = &self.state;
        let mut seen = state.requests.load(Ordering::Acquire);
        // A new connection, or one resumed on a partial head, is not parked
        // before a request has started on it.
        let first = seen;
        let may_park = || may_park || state.requests.load(Ordering::Acquire) != first;
        let mut stopping = false;
        let result = std::future::poll_fn(|cx| {
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                // A drain closes the connection for real.
                stopping = true;
                parking.store(false, Ordering::Release);
                Pin::new(&mut conn).graceful_shutdown();
            }
            while parkable
                && !stopping
                && !parking.load(Ordering::Acquire)
                && may_park()
                && park_check.as_mut().poll(cx).is_ready()
            {
                if state.quiet_since(&mut seen) && !state.client_closes.load(Ordering::Acquire) {
                    // hyper stops at once if idle, else after the exchange
                    // whose head is already out; its shutdown of the
                    // socket is skipped (see `Rewind`).
                    parking.store(true, Ordering::Release);
                    Pin::new(&mut conn).graceful_shutdown();
                } else {
                    park_check.as_mut().reset(Instant::now() + park_after);
                }
            }
            Pin::new(&mut conn).poll(cx)
        })
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "connection closed with an error");
            return None;
        }
        let parts = conn.into_parts();
        let (rewound, io) = parts.io.into_inner().into_parts();
        let rest = join(&parts.read_buf, &rewound);
        if state.switched.swap(false, Ordering::AcqRel) {
            let upgrade = state
                .upgrade
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(tx) = upgrade {
                let _ = tx.send(Box::new(Rewind {
                    prefix: rest,
                    io,
                    parking: None,
                }));
            }
            return None;
        }
        // Parked, unless hyper ended the connection for its own reasons (the
        // client closed or asked to, a bad request) and shut it down.
        parking.load(Ordering::Acquire).then_some((rest, io))
    }

    /// The per-request service hyper calls: the peer address in, the
    /// connection state kept up to date.
    fn service_fn(&self) -> ServiceFn<S> {
        ServiceFn {
            service: self.service.clone(),
            state: self.state.clone(),
            peer: self.peer,
        }
    }
}

/// hyper's view of the stack for one connection.
#[derive(Clone)]
struct ServiceFn<S> {
    service: S,
    state: Arc<ConnState>,
    peer: std::net::SocketAddr,
}

impl<S> hyper::service::Service<Request<Incoming>> for ServiceFn<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible> + Clone,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Tracked<Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let state = &self.state;
        state.requests.fetch_add(1, Ordering::AcqRel);
        state.heads_pending.fetch_add(1, Ordering::AcqRel);
        if req.version() < http::Version::HTTP_2 {
            if !keeps_alive(&req) {
                state.client_closes.store(true, Ordering::Release);
            }
            if req.headers().contains_key(header::UPGRADE) {
                let (tx, rx) = oneshot::channel();
                *state.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
                req.extensions_mut()
                    .insert(DownstreamUpgrade(Arc::new(Mutex::new(Some(rx)))));
            }
        }
        req.extensions_mut().insert(ClientAddr(self.peer));
        Tracked {
            inner: self.service.clone().oneshot(req),
            state: Some(state.clone()),
        }
    }
}

// === impl ConnState ===

impl ConnState {
    /// No request started since `seen` was taken and no response head is
    /// still to be written; updates `seen`.
    fn quiet_since(&self, seen: &mut u64) -> bool {
        let now = self.requests.load(Ordering::Acquire);
        let quiet = now == *seen && self.heads_pending.load(Ordering::Acquire) == 0;
        *seen = now;
        quiet
    }
}

// === impl Tracked ===

impl<F> Future for Tracked<F>
where
    F: Future<Output = Result<Response<BoxBody>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(state) = this.state.take() {
            if let Ok(rsp) = &result
                && rsp.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                state.switched.store(true, Ordering::Release);
            }
            state.heads_pending.fetch_sub(1, Ordering::AcqRel);
        }
        Poll::Ready(result)
    }
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only
/// with `Connection: keep-alive`.
fn keeps_alive<B>(req: &Request<B>) -> bool {
    let has = |token: &[u8]| {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    if req.version() == http::Version::HTTP_10 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}

/// Reads until the protocol is known: the first byte that is not part of
/// the HTTP/2 preface (HTTP/1), or the whole preface (HTTP/2). Returns
/// whether it is HTTP/2 and the bytes read, or `None` if the client closed
/// first. Fails at `deadline`.
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    deadline: Instant,
) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0_u8; H2_PREFACE.len()];
    let mut len = 0;
    while let Some(unread) = buf.get_mut(len..).filter(|u| !u.is_empty()) {
        let n = match tokio::time::timeout_at(deadline, io.read(unread)).await {
            Ok(read) => read?,
            Err(_elapsed) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request head within the header read timeout",
                ));
            }
        };
        if n == 0 {
            return Ok(None);
        }
        len += n;
        let read = buf.get(..len).unwrap_or_default();
        if !H2_PREFACE.starts_with(read) {
            return Ok(Some((false, Bytes::copy_from_slice(read))));
        }
    }
    Ok(Some((true, Bytes::from_static(H2_PREFACE))))
}

/// Resolves once the server is told to stop (or is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// `first` followed by `then`, in a buffer of their own: `first` is a view
/// into hyper's 8 KiB read buffer, which must not outlive the connection.
fn join(first: &[u8], then: &[u8]) -> Bytes {
    if first.is_empty() && then.is_empty() {
        return Bytes::new();
    }
    let mut both = BytesMut::with_capacity(first.len() + then.len());
    both.extend_from_slice(first);
    both.extend_from_slice(then);
    both.freeze()
}

// === impl Rewind ===

impl<I> Rewind<I> {
    /// The prefix bytes not yet read, and the stream.
    fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(self.prefix.get(..n).unwrap_or_default());
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self
            .parking
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Acquire))
        {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Per-connection accept errors are ignored; running out of file descriptors
/// pauses accepting for a second instead of spinning (axum's policy).
async fn handle_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed; pausing for 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
