//! The upstream client: connection pools to the user container or to pods.
//!
//! Last stage of the request flow. [`Upstream`] holds two hyper-util pools,
//! one speaking HTTP/1.1 and one speaking HTTP/2 with prior knowledge (h2c);
//! the forwarder picks one per request by the *inbound* protocol version, as
//! Knative does. Connections are dialled by [`Dialer`], which mirrors
//! Knative's dialer: TCP keepalive 5 s, no Nagle, and an exponential
//! back-off that retries only dial *timeouts* (a refused connection fails at
//! once and becomes a 502). Each connection carries a [`ConnUses`] counter,
//! so the forwarder can tell a reused connection that the upstream closed
//! under it (safe to retry an idempotent request on) from a fresh one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::BoxBody;

mod http1;

pub use http1::{Http1Error, Http1Pool, PooledBody};

/// Idle upstream connections are closed after this long (Go's transport default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive on upstream connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(5);

/// Where upstream connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Always this address, whatever the request URI says (the queue-proxy's user container).
    Fixed(SocketAddr),
    /// The address in each request URI's authority (the activator's pods).
    FromUri,
}

/// Upstream pool settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Where to connect.
    pub target: Target,
    /// Idle connections kept per host (Knative: containerConcurrency, or 1000 when 0).
    pub max_idle_per_host: usize,
}

/// The two upstream pools, HTTP/1.1 and h2c.
#[derive(Clone, Debug)]
pub struct Upstream {
    http1: Http1Pool,
    http2: Client<Dialer, BoxBody>,
}

/// Dials upstream TCP connections with Knative's timeout back-off.
#[derive(Clone, Copy, Debug)]
pub struct Dialer {
    target: Target,
}

/// Responses an upstream connection has delivered so far.
///
/// Every response (and every error) of the pool carries its connection's
/// counter in its extensions / connect info; the forwarder bumps it when
/// response headers arrive. A connection that fails before answering while
/// its count is above zero was *reused*: Go's transport retries idempotent
/// requests in exactly that case.
#[derive(Clone, Debug, Default)]
pub struct ConnUses(Arc<AtomicUsize>);

/// An upstream TCP connection, tagged with its [`ConnUses`].
#[derive(Debug)]
pub struct UpstreamConn {
    tcp: TcpStream,
    uses: ConnUses,
}

/// A failed dial. `Display` reads like Go's `net` errors so 502 bodies match Knative's.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The connection was refused or failed at once.
    #[error("dial tcp {addr}: connect: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The OS error, in Go's words where they differ from Rust's.
        reason: String,
    },
    /// Every attempt timed out.
    #[error("timed out dialing {addr} after {secs:.2}s")]
    TimedOut {
        /// The address dialled.
        addr: String,
        /// Seconds spent.
        secs: f64,
    },
    /// The URI named no usable address.
    #[error("dial tcp: missing address in {0}")]
    NoAddress(String),
}

// === impl Upstream ===

impl Upstream {
    /// Builds both pools.
    pub fn new(config: &PoolConfig) -> Self {
        let dialer = Dialer {
            target: config.target,
        };
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_adaptive_window(true);
        Self {
            http1: Http1Pool::new(dialer, config.max_idle_per_host),
            http2: h2.build(dialer),
        }
    }

    /// The HTTP/1.1 pool.
    pub fn http1(&self) -> &Http1Pool {
        &self.http1
    }

    /// The h2c (prior knowledge) pool.
    pub fn http2(&self) -> &Client<Dialer, BoxBody> {
        &self.http2
    }
}

// === impl Dialer ===

impl Dialer {
    /// Connects to the target (or to `authority`, the request's), with
    /// Knative's socket options and dial back-off.
    async fn dial(&self, authority: Option<&Authority>) -> Result<TcpStream, DialError> {
        let addr = match Self::addr_for(self.target, authority)? {
            DialTarget::Addr(addr) => addr,
            DialTarget::Name(name) => tokio::net::lookup_host(&name)
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| DialError::Connect {
                    addr: name.clone(),
                    reason: "no such host".to_owned(),
                })?,
        };
        let stream = dial_with_backoff(addr).await?;
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(TCP_KEEPALIVE)
                .with_interval(TCP_KEEPALIVE),
        );
        Ok(stream)
    }

    fn addr_for(target: Target, authority: Option<&Authority>) -> Result<DialTarget, DialError> {
        match target {
            Target::Fixed(addr) => Ok(DialTarget::Addr(addr)),
            Target::FromUri => {
                let authority = authority.ok_or_else(|| DialError::NoAddress(String::new()))?;
                let port = authority.port_u16().unwrap_or(80);
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                match host.parse() {
                    Ok(ip) => Ok(DialTarget::Addr(SocketAddr::new(ip, port))),
                    Err(_) => Ok(DialTarget::Name(format!("{host}:{port}"))),
                }
            }
        }
    }
}

enum DialTarget {
    Addr(SocketAddr),
    Name(String),
}

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<UpstreamConn>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = *self;
        Box::pin(async move {
            Ok(TokioIo::new(UpstreamConn {
                tcp: dialer.dial(uri.authority()).await.map_err(|e| match e {
                    DialError::NoAddress(_) => DialError::NoAddress(uri.to_string()),
                    e => e,
                })?,
                uses: ConnUses::default(),
            }))
        })
    }
}

// === impl ConnUses ===

impl ConnUses {
    /// Responses delivered on this connection so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Records one more response.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

// === impl UpstreamConn ===

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        self.tcp.connected().extra(self.uses.clone())
    }
}

impl AsyncRead for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Knative's dial loop: the first attempt may take 50 ms, each later one 1.4×
/// longer (up to 15 retries, 30–60 ms apart); only timeouts are retried.
async fn dial_with_backoff(addr: SocketAddr) -> Result<TcpStream, DialError> {
    const FIRST_ATTEMPT: Duration = Duration::from_millis(50);
    const RETRIES: u32 = 15;
    let start = Instant::now();
    let mut attempt_timeout = FIRST_ATTEMPT;
    for attempt in 0..=RETRIES {
        match tokio::time::timeout(attempt_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => {
                return Err(DialError::Connect {
                    addr: addr.to_string(),
                    reason: go_error_text(&err),
                });
            }
            Err(_elapsed) if attempt < RETRIES => {
                let pause = 30 + u64::from(rand_u8() % 31);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt_timeout = attempt_timeout.mul_f64(1.4);
            }
            Err(_elapsed) => break,
        }
    }
    Err(DialError::TimedOut {
        addr: addr.to_string(),
        secs: start.elapsed().as_secs_f64(),
    })
}

fn rand_u8() -> u8 {
    // Jitter only; the low bits of the clock are random enough and avoid a dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos.to_le_bytes()[1]
}

/// Go spells common socket errors differently from Rust's `io::Error` Display.
fn go_error_text(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "cannot assign requested address".to_owned(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn refused_dial_reads_like_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dialer = Dialer {
            target: Target::Fixed(addr),
        };
        let err = dialer
            .oneshot(Uri::from_static("http://example.com/"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("dial tcp {addr}: connect: connection refused")
        );
    }

    #[tokio::test]
    async fn dials_uri_authority() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialer = Dialer {
            target: Target::FromUri,
        };
        let uri: Uri = format!("http://{addr}/x").parse().unwrap();
        let (conn, accepted) = tokio::join!(dialer.oneshot(uri), listener.accept());
        assert!(conn.is_ok());
        assert!(accepted.is_ok());
    }
}
