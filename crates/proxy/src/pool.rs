//! The upstream client: connection pools to the user container or to pods.
//!
//! Last stage of the request flow. [`Upstream`] holds two pools on hyper's
//! low-level connections, one speaking HTTP/1.1 ([`Http1Pool`]) and one
//! speaking HTTP/2 ([`Http2Pool`], prior knowledge over cleartext, ALPN over
//! TLS); the forwarder picks one per request by the *inbound* protocol
//! version, as Knative does. Connections are dialled by [`Dialer`], which
//! mirrors Knative's dialer: TCP keepalive 5 s, no Nagle, and an exponential
//! back-off that retries only dial *timeouts* (a refused connection fails at
//! once and becomes a 502). A request carrying [`UpstreamTls`] in its
//! extensions goes over TLS with that client configuration (the activator's
//! system-internal-tls); connections are pooled per destination and TLS
//! configuration.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http::uri::Authority;

use crate::body::BoxBody;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod http1;
mod http2;

pub use http1::{Http1Pool, PooledBody};
pub use http2::Http2Pool;

/// Idle upstream connections are closed after this long (Go's transport default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive on upstream connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(5);
/// Longest TLS handshake with an upstream (Go's transport default).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The two upstream pools, HTTP/1.1 and HTTP/2.
#[derive(Clone, Debug)]
pub struct Upstream {
    http1: Http1Pool,
    http2: Http2Pool,
}

/// Request extension: reach this request's upstream over TLS.
///
/// The pool sets ALPN itself (`http/1.1` or `h2`) on a copy of `config`.
/// Two requests share pooled connections only when they carry the *same*
/// configuration (`Arc` identity), so a configuration built per trust
/// domain (the activator's per-namespace SAN check) never reuses another's
/// connection.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

/// Dials upstream connections with Knative's timeout back-off.
#[derive(Clone, Copy, Debug)]
pub struct Dialer {
    target: Target,
}

/// What a pooled connection is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Dest {
    /// `None` with a fixed target.
    authority: Option<Authority>,
    tls: Option<UpstreamTls>,
}

/// An upstream connection, plain or TLS.
#[derive(Debug)]
enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
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
    /// The TLS handshake failed; the text is the verifier's own when it
    /// refused the certificate (the activator's SAN check).
    #[error("{reason}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A failed upstream exchange.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("cannot connect upstream")]
    Dial(#[from] DialError),
    /// The connection failed or the upstream answered garbage.
    #[error("upstream connection failed")]
    Exchange {
        /// hyper's account.
        #[source]
        source: hyper::Error,
        /// The connection had answered before (the upstream may have closed
        /// it as an idle keep-alive connection while the request went out).
        reused: bool,
    },
}

// === impl Upstream ===

impl Upstream {
    /// Builds both pools.
    pub fn new(config: &PoolConfig) -> Self {
        let dialer = Dialer {
            target: config.target,
        };
        Self {
            http1: Http1Pool::new(dialer, config.max_idle_per_host),
            http2: Http2Pool::new(dialer),
        }
    }

    /// Sends `req` over HTTP/2 when `h2`, else HTTP/1.1.
    ///
    /// # Errors
    /// The pool's [`UpstreamError`].
    pub async fn send(
        &self,
        req: Request<BoxBody>,
        h2: bool,
    ) -> Result<http::Response<BoxBody>, UpstreamError> {
        if h2 {
            Ok(self.http2.send(req).await?.map(crate::body::boxed))
        } else {
            Ok(self.http1.send(req).await?.map(crate::body::boxed))
        }
    }

    /// The HTTP/1.1 pool.
    pub fn http1(&self) -> &Http1Pool {
        &self.http1
    }

    /// The HTTP/2 pool.
    pub fn http2(&self) -> &Http2Pool {
        &self.http2
    }
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// TLS with `config`, sending `server_name` (SNI and verification name).
    pub fn new(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self {
            config,
            server_name,
        }
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.config).hash(state);
    }
}

// === impl Dest ===

impl Dest {
    /// The destination of `req` for a pool dialling `target`.
    fn of<B>(target: Target, req: &Request<B>) -> Result<Self, DialError> {
        let authority = match target {
            Target::Fixed(_) => None,
            Target::FromUri => Some(
                req.uri()
                    .authority()
                    .cloned()
                    .ok_or_else(|| DialError::NoAddress(req.uri().to_string()))?,
            ),
        };
        Ok(Self {
            authority,
            tls: req.extensions().get::<UpstreamTls>().cloned(),
        })
    }
}

// === impl Dialer ===

impl Dialer {
    /// Connects to `dest`, with Knative's socket options and dial back-off,
    /// then TLS with `alpn` when the destination asks for it.
    async fn connect(&self, dest: &Dest, alpn: &[u8]) -> Result<UpstreamIo, DialError> {
        let tcp = self.dial(dest.authority.as_ref()).await?;
        let Some(tls) = &dest.tls else {
            return Ok(UpstreamIo::Plain(tcp));
        };
        let addr = tcp
            .peer_addr()
            .map_or_else(|_| String::new(), |a| a.to_string());
        let mut config = (*tls.config).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(tls.server_name.clone(), tcp);
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream))),
            Ok(Err(err)) => Err(DialError::Tls {
                addr,
                reason: tls_error_text(&err),
            }),
            Err(_elapsed) => Err(DialError::Tls {
                addr,
                reason: "net/http: TLS handshake timeout".to_owned(),
            }),
        }
    }

    /// Connects to the target (or to `authority`, the request's).
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

/// A refused certificate reads as the verifier wrote it (rustls would print
/// a custom verifier's error in debug form); anything else as rustls says.
fn tls_error_text(err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            other.0.to_string()
        }
        Some(tls) => format!("tls: {tls}"),
        None => err.to_string(),
    }
}

// === impl UpstreamError ===

impl UpstreamError {
    /// True when a reused connection failed before any response: the
    /// upstream closed it (EOF) or reset it as the request went out. Go's
    /// transport sends a replayable request again in exactly that case.
    pub fn closed_before_answering(&self) -> bool {
        let Self::Exchange { source, reused } = self else {
            return false;
        };
        let reset = kdp_core::cause_ref::<std::io::Error>(source).is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        });
        *reused && (source.is_incomplete_message() || source.is_canceled() || reset)
    }
}

// === impl UpstreamIo ===

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
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

    #[tokio::test]
    async fn refused_dial_reads_like_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dialer = Dialer {
            target: Target::Fixed(addr),
        };
        let err = dialer.dial(None).await.unwrap_err();
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
        let authority = Authority::try_from(addr.to_string()).unwrap();
        let (conn, accepted) = tokio::join!(dialer.dial(Some(&authority)), listener.accept());
        assert!(conn.is_ok());
        assert!(accepted.is_ok());
    }
}
