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
//! read timeout counts from accept: it also bounds the TLS handshake and the
//! first bytes (hyper's own timer starts only once the protocol is known, so
//! a silent connection or a stalled HTTP/2 preface would otherwise be held
//! forever).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::Instrument;

use crate::body::BoxBody;
use crate::forward::ClientAddr;

/// Go's default `MaxHeaderBytes`.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Knative's `ReadHeaderTimeout` on the serving ports.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// A name for logs (`main`, `admin`, `metrics`).
    pub name: &'static str,
    /// Time allowed to read a request head.
    pub header_read_timeout: Duration,
    /// Serve HTTP/2 (h2c prior knowledge and `Upgrade: h2c`) beside HTTP/1.1.
    pub http2: bool,
}

/// Turns an accepted TCP stream into the stream hyper reads (plain or TLS).
pub trait Accept: Clone + Send + Sync + 'static {
    /// The stream type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Performs the handshake, if any.
    fn accept(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send>>;
}

/// Plain TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

/// The HTTP/2 connection preface; hyper-util reads this much (or up to the
/// first byte that differs) before it picks a protocol.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose reads fail with `TimedOut` at a deadline until the
/// protocol is known: the first byte that is not part of the HTTP/2
/// preface (hyper's HTTP/1 header timer takes over from there), or the whole
/// preface. Afterwards it is a plain pass-through.
struct SniffDeadline<I> {
    io: I,
    deadline: Option<Pin<Box<Sleep>>>,
    matched: usize,
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

// === impl SniffDeadline ===

impl<I> SniffDeadline<I> {
    fn new(io: I, deadline: Instant) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            matched: 0,
        }
    }

    /// Follows the bytes read so far; disarms once the protocol is known.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.deadline = None;
        }
        for b in bytes {
            if H2_PREFACE.get(self.matched) != Some(b) {
                self.deadline = None;
                return;
            }
            self.matched += 1;
        }
        if self.matched >= H2_PREFACE.len() {
            self.deadline = None;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SniffDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(buf.filled().get(before..).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request head within the header read timeout",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SniffDeadline<I> {
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
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Accept for Plain {
    type Io = TcpStream;
    fn accept(
        &self,
        tcp: TcpStream,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        Box::pin(std::future::ready(Ok(tcp)))
    }
}

/// Serves plain HTTP on `listener` until `shutdown` resolves, then drains.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
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
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES + 64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    if !config.http2 {
        builder = builder.http1_only();
    }
    let graceful = GracefulShutdown::new();
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
        let head_deadline = Instant::now() + config.header_read_timeout;
        let acceptor = acceptor.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let span = tracing::debug_span!("conn", server = config.name, %peer);
        tokio::spawn(
            async move {
                let io = match tokio::time::timeout_at(head_deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(io)) => SniffDeadline::new(io, head_deadline),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "handshake failed");
                        return;
                    }
                    Err(_elapsed) => {
                        tracing::debug!("handshake timed out");
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    service.clone().oneshot(req)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                if let Err(error) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error, "connection closed with an error");
                }
            }
            .instrument(span),
        );
    }

    drop(listener);
    tracing::info!(server = config.name, "draining connections");
    graceful.shutdown().await;
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
