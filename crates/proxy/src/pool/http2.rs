//! HTTP/2 upstream connections: one multiplexed connection per destination.
//!
//! Requests from HTTP/2 clients go upstream over HTTP/2 (h2c with prior
//! knowledge, or ALPN `h2` over TLS), as Knative does. One connection per
//! destination carries every stream, so the pool is a map from destination
//! to hyper's cloneable [`SendRequest`]; each connection has its own task
//! (streams of many requests share it). A closed connection, or one idle
//! past [`IDLE_TIMEOUT`](super::IDLE_TIMEOUT), is replaced on the next
//! request; a request the connection refused before sending it (it was
//! going away) is sent again on a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{Dest, Dialer, IDLE_TIMEOUT, UpstreamError};
use crate::body::BoxBody;

/// Most attempts at sending one request on connections that turn out to be going away.
const MAX_UNSENT_RETRIES: usize = 4;

/// The HTTP/2 upstream pool.
#[derive(Clone, Debug)]
pub struct Http2Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dialer: Dialer,
    conns: Mutex<HashMap<Dest, Shared>>,
}

#[derive(Debug)]
struct Shared {
    tx: SendRequest<BoxBody>,
    last_used: Instant,
}

// === impl Http2Pool ===

impl Http2Pool {
    /// An empty pool dialling through `dialer`.
    pub(super) fn new(dialer: Dialer) -> Self {
        Self {
            inner: Arc::new(Inner {
                dialer,
                conns: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `req`, whose URI must be absolute (scheme and authority become
    /// the `:scheme` and `:authority` pseudo-headers).
    ///
    /// # Errors
    /// [`UpstreamError`]: dial failures and failed exchanges.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let dest = Dest::of(self.inner.dialer.target, &req)?;
        let mut attempts = 0;
        loop {
            let (mut tx, reused) = match self.checkout(&dest) {
                Some(tx) => (tx, true),
                None => (self.connect(&dest).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if attempts < MAX_UNSENT_RETRIES => {
                        tracing::trace!(error = %err.error(), "h2 connection going away; trying another");
                        self.forget(&dest);
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

    fn checkout(&self, dest: &Dest) -> Option<SendRequest<BoxBody>> {
        let mut conns = self.inner.lock();
        let shared = conns.get_mut(dest)?;
        let now = Instant::now();
        if shared.tx.is_closed() || now.duration_since(shared.last_used) >= IDLE_TIMEOUT {
            conns.remove(dest);
            return None;
        }
        shared.last_used = now;
        Some(shared.tx.clone())
    }

    fn forget(&self, dest: &Dest) {
        let mut conns = self.inner.lock();
        if conns.get(dest).is_some_and(|s| s.tx.is_closed()) {
            conns.remove(dest);
        }
    }

    async fn connect(&self, dest: &Dest) -> Result<SendRequest<BoxBody>, UpstreamError> {
        let io = self.inner.dialer.connect(dest, b"h2").await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake::<_, BoxBody>(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamError::Exchange {
                source,
                reused: false,
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream h2 connection ended");
            }
        });
        self.inner.lock().insert(
            dest.clone(),
            Shared {
                tx: tx.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(tx)
    }
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Dest, Shared>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
