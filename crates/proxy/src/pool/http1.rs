//! HTTP/1.1 upstream connections, pooled without a task per request.
//!
//! hyper-util's general-purpose client spawns a task for every HTTP/1
//! response, only to wait until its connection can be pooled again; on a
//! sidecar answering tens of thousands of tiny requests a second that task
//! (and its waker traffic) costs more than parsing the request does. This
//! pool works on hyper's low-level [`SendRequest`] instead: each connection
//! has one task (its I/O driver), and the response body hands the connection
//! back the moment its last frame is read, from whatever task reads it.
//!
//! There is not even a task per connection: the connection's I/O is driven
//! by whoever waits on it, first the request's own task while it waits for
//! the response head, then the response body as the server polls it. Proxy
//! and upstream I/O for one exchange thus happen in one task, with no
//! cross-task wake-ups, as in an event-loop proxy. A connection is given a
//! task of its own only when it must make progress that nobody waits for:
//! an upgrade (websockets), or a request body still uploading after its
//! response ended.
//!
//! A connection handed back while hyper is still finishing the exchange is
//! pooled anyway and skipped by checkouts until it is ready; a closed one
//! is dropped when met. Idle connections are closed after
//! [`IDLE_TIMEOUT`](super::IDLE_TIMEOUT), and at most `max_idle_per_host`
//! are kept per destination, as Go's transport does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{Dest, Dialer, IDLE_TIMEOUT, UpstreamError};
use crate::body::BoxBody;

/// Most attempts at sending one request on pooled connections that turn out
/// to be closing (each attempt consumes one such connection).
const MAX_UNSENT_RETRIES: usize = 8;

/// The HTTP/1.1 upstream pool.
#[derive(Clone, Debug)]
pub struct Http1Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dialer: Dialer,
    max_idle_per_host: usize,
    idle: Mutex<HashMap<Dest, Vec<Idle>>>,
    reaper_started: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// One upstream connection.
struct Conn {
    tx: SendRequest<BoxBody>,
    /// The connection's I/O, while no task of its own drives it.
    driver: Option<Driver>,
    dest: Dest,
}

/// hyper's connection future (its upgradeable variant is unnameable).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A response body that returns its connection to the pool when it ends.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

#[derive(Debug)]
struct Checkin {
    conn: Conn,
    pool: Weak<Inner>,
}

// === impl Http1Pool ===

impl Http1Pool {
    /// An empty pool dialling through `dialer`.
    pub(super) fn new(dialer: Dialer, max_idle_per_host: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                dialer,
                max_idle_per_host,
                idle: Mutex::new(HashMap::new()),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` on a pooled or new connection.
    ///
    /// The request URI may be absolute (its authority picks the destination
    /// when the pool dials [`Target::FromUri`]) or origin-form; it goes out
    /// in origin-form, with a `Host` header from the authority if it had none.
    /// A request the connection never started writing (the connection was
    /// closing) is sent again on another one.
    ///
    /// # Errors
    /// [`UpstreamError`]: dial failures and failed exchanges.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let dest = Dest::of(self.inner.dialer.target, &req)?;
        to_origin_form(&mut req);
        let mut attempts = 0;
        loop {
            let (mut conn, reused) = match self.checkout(&dest) {
                Some(conn) => (conn, true),
                None => (self.connect(dest.clone()).await?, false),
            };
            let sent = conn.tx.try_send_request(req);
            let mut sent = std::pin::pin!(sent);
            let result = std::future::poll_fn(|cx| {
                conn_drive(&mut conn.driver, cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(rsp) => return Ok(self.wrap(rsp, conn)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused && attempts < MAX_UNSENT_RETRIES => {
                        tracing::trace!(error = %err.error(), "pooled connection closing; trying another");
                        attempts += 1;
                        req = unsent;
                    }
                    _ => {
                        return Err(UpstreamError::Exchange {
                            source: err.into_error(),
                            reused,
                        });
                    }
                },
            }
        }
    }

    /// Idle connections to every destination (closing ones included).
    pub fn idle_count(&self) -> usize {
        self.inner.lock_idle().values().map(Vec::len).sum()
    }

    /// The most recently used ready connection to `dest`; closed ones met on
    /// the way are dropped, busy ones left for later.
    fn checkout(&self, dest: &Dest) -> Option<Conn> {
        let mut idle = self.inner.lock_idle();
        let list = idle.get_mut(dest)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let entry = &mut list[i];
            if !entry.conn.settle() || now.duration_since(entry.since) >= IDLE_TIMEOUT {
                list.swap_remove(i);
                i = i.min(list.len());
                continue;
            }
            if entry.conn.tx.is_ready() {
                return Some(list.swap_remove(i).conn);
            }
        }
        None
    }

    async fn connect(&self, dest: Dest) -> Result<Conn, UpstreamError> {
        let io = self.inner.dialer.connect(&dest, b"http/1.1").await?;
        let (tx, conn) = http1::Builder::new()
            .handshake::<_, BoxBody>(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamError::Exchange {
                source,
                reused: false,
            })?;
        self.start_reaper();
        Ok(Conn {
            tx,
            driver: Some(Box::pin(conn.with_upgrades())),
            dest,
        })
    }

    fn wrap(&self, rsp: Response<Incoming>, mut conn: Conn) -> Response<PooledBody> {
        // A switched protocol owns the connection from now on: its task
        // completes the upgrade and hands the socket over.
        if rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            conn.detach();
            return rsp.map(|inner| PooledBody {
                inner,
                checkin: None,
            });
        }
        let checkin = Some(Checkin {
            conn,
            pool: Arc::downgrade(&self.inner),
        });
        let mut rsp = rsp.map(|inner| PooledBody { inner, checkin });
        if rsp.body().inner.is_end_stream() {
            rsp.body_mut().release();
        }
        rsp
    }

    /// Closes idle connections past their time, so an upstream that keeps
    /// them open does not hold sockets forever; stops with the pool.
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut idle = pool.lock_idle();
                idle.retain(|_, list| {
                    list.retain_mut(|e| {
                        e.conn.settle() && now.duration_since(e.since) < IDLE_TIMEOUT
                    });
                    !list.is_empty()
                });
            }
        });
    }
}

// === impl Inner ===

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<Dest, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkin(&self, mut conn: Conn) {
        if !conn.settle() {
            return;
        }
        if !conn.tx.is_ready() {
            // Still finishing (a request body uploading after its response
            // ended): nobody would drive it from the pool.
            conn.detach();
        }
        let mut idle = self.lock_idle();
        let list = idle.entry(conn.dest.clone()).or_default();
        if list.len() < self.max_idle_per_host {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

// === impl PooledBody ===

impl PooledBody {
    fn release(&mut self) {
        if let Some(Checkin { conn, pool }) = self.checkin.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(checkin) = &mut this.checkin {
            conn_drive(&mut checkin.conn.driver, cx);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // A broken body broke its connection too.
            Poll::Ready(Some(Err(_))) => self.checkin = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped before its end, the response is still arriving on the
        // connection: hyper closes it, and it must not be pooled.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

// === impl Conn ===

impl Conn {
    /// Lets the connection catch up on what arrived while nobody drove it
    /// (a close, the end of the last exchange); false once it is closed.
    fn settle(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        conn_drive(&mut self.driver, &mut cx);
        !self.tx.is_closed()
    }

    /// Gives the connection a task of its own.
    fn detach(&mut self) {
        if let Some(driver) = self.driver.take() {
            tokio::spawn(async move {
                if let Err(error) = driver.await {
                    tracing::debug!(%error, "upstream connection ended");
                }
            });
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("dest", &self.dest)
            .field("driven_inline", &self.driver.is_some())
            .finish()
    }
}

/// Polls a connection's I/O from the current task; forgets it once it ends.
fn conn_drive(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    if let Some(d) = driver
        && let Poll::Ready(result) = d.as_mut().poll(cx)
    {
        if let Err(error) = result {
            tracing::debug!(%error, "upstream connection ended");
        }
        *driver = None;
    }
}

/// HTTP/1 requests go out in origin-form, with a `Host`.
fn to_origin_form(req: &mut Request<BoxBody>) {
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    if !req.headers().contains_key(header::HOST)
        && let Some(host) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
