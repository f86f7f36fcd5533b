//! Stat reporting: request concurrency per revision, sent to the autoscaler.
//!
//! The [`Report`] stage sits after revision identification and before the
//! timeout and throttle, so queued requests count as concurrency. The first
//! request of a revision with no live state is reported at once (the
//! scale-from-zero *poke*); every second a [`Reporter`] tick sends one frame
//! with an entry per active revision. Frames go over one websocket to the
//! autoscaler ([`connect_loop`]), which reconnects with back-off, pings every
//! 3.3 s and drops frames while disconnected (as Knative does). Readiness
//! follows the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use kdp_core::Error;
use kdp_proxy::body::{BoxBody, Guarded};
use kdp_stats::{ConcurrencyReporter, RevisionKey, WireStatMessage, WireStatMessages};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::Metrics;

/// How often stats are sent.
pub const REPORTING_PERIOD: Duration = Duration::from_secs(1);
/// Ping period on the autoscaler connection (Knative: 10 s / 3).
pub const PING_PERIOD: Duration = Duration::from_millis(3333);
/// The connection is considered dead without a pong for this long.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);
/// Websocket handshake timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// The revision a request belongs to, put in its extensions by the revision stage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Revision(pub RevisionKey);

/// Counts requests per revision and produces stat frames.
#[derive(Clone, Debug)]
pub struct Reporter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pod_name: String,
    state: Mutex<ConcurrencyReporter<RevisionKey>>,
    frames: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
}

/// The reporter stage.
#[derive(Clone, Debug)]
pub struct Report<S> {
    inner: S,
    reporter: Reporter,
}

struct OutGuard {
    reporter: Reporter,
    key: RevisionKey,
}

// === impl Reporter ===

impl Reporter {
    /// A reporter for pod `pod_name`; frames are queued on `frames` (a
    /// bounded channel: when the connection cannot keep up, frames drop).
    pub fn new(pod_name: String, frames: mpsc::Sender<Vec<u8>>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pod_name,
                state: Mutex::default(),
                frames,
                metrics,
            }),
        }
    }

    /// Records a request for `key`; sends the poke when the revision was idle.
    pub fn request_in(&self, key: &RevisionKey) {
        let poke = self.lock().request_in(key, Instant::now());
        if let Some(stat) = poke {
            let frame = WireStatMessages {
                messages: vec![key.wire_message(stat, &self.inner.pod_name)],
            };
            self.send(frame);
        }
    }

    /// Records the end of a request for `key`.
    pub fn request_out(&self, key: &RevisionKey) {
        self.lock().request_out(key, Instant::now());
    }

    /// Closes the window and sends one frame with every active revision.
    pub fn tick(&self) {
        let (entries, live) = {
            let mut state = self.lock();
            let entries = state.tick(Instant::now());
            let live: Vec<bool> = entries.iter().map(|(k, _)| state.contains(k)).collect();
            (entries, live)
        };
        for ((key, stat), live) in entries.iter().zip(live) {
            if live {
                self.inner
                    .metrics
                    .concurrency(key, stat.average_concurrency);
            } else {
                self.inner.metrics.forget(key);
            }
        }
        if entries.is_empty() {
            return;
        }
        let messages: Vec<WireStatMessage> = entries
            .into_iter()
            .map(|(key, stat)| key.wire_message(stat, &self.inner.pod_name))
            .collect();
        self.send(WireStatMessages { messages });
    }

    /// Ticks every [`REPORTING_PERIOD`] forever.
    pub async fn run(self) {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + REPORTING_PERIOD, REPORTING_PERIOD);
        loop {
            ticker.tick().await;
            self.tick();
        }
    }

    fn send(&self, frame: WireStatMessages) {
        if self.inner.frames.try_send(frame.to_bytes()).is_err() {
            tracing::debug!("stat frame dropped: autoscaler connection busy or closed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConcurrencyReporter<RevisionKey>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for OutGuard {
    fn drop(&mut self) {
        self.reporter.request_out(&self.key);
    }
}

// === impl Report ===

impl<S> Report<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, reporter: Reporter) -> Self {
        Self { inner, reporter }
    }
}

impl<S, B> tower::Service<Request<B>> for Report<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(Revision(key)) = req.extensions().get::<Revision>().cloned() else {
            return Box::pin(self.inner.call(req));
        };
        self.reporter.request_in(&key);
        let guard = OutGuard {
            reporter: self.reporter.clone(),
            key,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let rsp = fut.await?;
            Ok(rsp.map(|body| Guarded::boxed(body, guard)))
        })
    }
}

/// Keeps a websocket to the autoscaler open and sends queued frames.
///
/// `connected` turns true while a connection is up (the health check reads it).
/// Attempts back off from 100 ms by 1.3× with up to 50% jitter for 20 tries,
/// then start over, forever.
pub async fn connect_loop(
    url: String,
    mut frames: mpsc::Receiver<Vec<u8>>,
    connected: watch::Sender<bool>,
    metrics: Arc<Metrics>,
) {
    let mut attempt: u32 = 0;
    loop {
        let conn =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(&url)).await;
        match conn {
            Ok(Ok((ws, _))) => {
                attempt = 0;
                tracing::info!(%url, "connected to the autoscaler");
                connected.send_replace(true);
                metrics.connected();
                serve_connection(ws, &mut frames).await;
                connected.send_replace(false);
                metrics.disconnected();
                tracing::warn!(%url, "autoscaler connection lost; reconnecting");
            }
            Ok(Err(error)) => tracing::debug!(%url, %error, "autoscaler connect failed"),
            Err(_) => tracing::debug!(%url, "autoscaler handshake timed out"),
        }
        // Frames queued while disconnected are dropped, as Knative does.
        while frames.try_recv().is_ok() {}
        let backoff = Duration::from_millis(100)
            .mul_f64(1.3f64.powi(i32::try_from(attempt % 20).unwrap_or(0)));
        let jitter = 1.0 + f64::from(rand::random::<u8>()) / 510.0;
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        attempt += 1;
    }
}

async fn serve_connection<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    frames: &mut mpsc::Receiver<Vec<u8>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(PING_PERIOD);
    let mut deadline = Instant::now() + READ_DEADLINE;
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                if let Err(error) = sink.send(Message::binary(frame)).await {
                    tracing::warn!(%error, "stat frame not sent");
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => deadline = Instant::now() + READ_DEADLINE,
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn first_request_pokes_then_ticks() {
        let (tx, mut rx) = mpsc::channel(16);
        let reporter = Reporter::new("activator-abc".into(), tx, Arc::new(Metrics::new()));
        let key = RevisionKey::new("default", "hello-00001");
        reporter.request_in(&key);
        let poke = WireStatMessages::decode(rx.recv().await.unwrap().as_slice()).unwrap();
        assert_eq!(poke.messages.len(), 1);
        let stat = poke.messages[0].stat.clone().unwrap();
        assert_eq!(
            (stat.average_concurrent_requests, stat.request_count),
            (1.0, 1.0)
        );
        assert_eq!(stat.pod_name, "activator-abc");
        tokio::time::advance(Duration::from_secs(1)).await;
        reporter.tick();
        let tick = WireStatMessages::decode(rx.recv().await.unwrap().as_slice()).unwrap();
        let stat = tick.messages[0].stat.clone().unwrap();
        // One open request over the whole second, minus the poke already reported.
        assert_eq!(
            (stat.average_concurrent_requests, stat.request_count),
            (0.0, 0.0)
        );
        reporter.request_out(&key);
    }
}
