//! A fake autoscaler websocket endpoint: what the activator's stat reporter
//! dials (activator spec §5.1) and sends `WireStatMessages` frames to (§5.2).
//!
//! Any path upgrades. Each binary frame is decoded as
//! [`kdp_stats::WireStatMessages`] and recorded with its receive time and
//! connection number; text frames and undecodable payloads are dropped and
//! counted, as the autoscaler drops non-binary frames. Pings are answered
//! with pongs. For reconnect tests the server can close every connection with
//! code 1012 (`Restart`, what the real autoscaler sends on shutdown), stop
//! listening, and start again on the same port.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kdp_stats::WireStatMessages;
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::WaitTimeout;
use crate::serve;

/// How long a closing connection waits for the peer's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A running fake autoscaler on `127.0.0.1:<ephemeral>`.
///
/// Dropping it stops listening and drops every connection without a close
/// frame.
#[derive(Debug)]
pub struct FakeAutoscaler {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

/// One decoded binary frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedFrame {
    /// When the frame was read (tokio clock, so paused-time tests work).
    pub at: Instant,
    /// Which connection carried it: 1 for the first accepted, and so on.
    pub connection: usize,
    /// The decoded payload.
    pub message: WireStatMessages,
}

#[derive(Debug)]
struct Shared {
    frames: Mutex<Vec<ReceivedFrame>>,
    paths: Mutex<Vec<String>>,
    /// Websocket handshakes completed, ever.
    connections: AtomicUsize,
    /// Connections currently open.
    open: AtomicUsize,
    dropped: AtomicUsize,
    /// Bumped to make every open connection close with 1012.
    kick: watch::Sender<u64>,
}

/// Handshake callback recording the request path; accepts every path.
#[derive(Debug)]
struct RecordPath(Arc<Shared>);

/// Decrements the open count when a connection ends.
#[derive(Debug)]
struct Open(Arc<Shared>);

// === impl FakeAutoscaler ===

impl FakeAutoscaler {
    /// Starts listening.
    ///
    /// # Panics
    ///
    /// If `127.0.0.1:0` cannot be bound.
    pub async fn start() -> Self {
        let listener = serve::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0 always succeeds on a test host");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let shared = Arc::new(Shared {
            frames: Mutex::new(Vec::new()),
            paths: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            kick: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::debug!(%addr, "fake autoscaler listening");
        Self {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// `ws://127.0.0.1:<port>`, for the activator's autoscaler URL.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The listening address (kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every frame recorded so far, in arrival order.
    pub fn frames(&self) -> Vec<ReceivedFrame> {
        lock(&self.shared.frames).clone()
    }

    /// Forgets the recorded frames.
    pub fn clear_frames(&self) {
        lock(&self.shared.frames).clear();
    }

    /// Waits until at least `n` frames have been recorded and returns all of
    /// them.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] if fewer than `n` arrive within `timeout`.
    pub async fn wait_for_frames(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedFrame>, WaitTimeout> {
        crate::poll_until(
            timeout,
            || format!("{n} frames (got {})", self.frames().len()),
            || {
                let frames = lock(&self.shared.frames);
                (frames.len() >= n).then(|| frames.clone())
            },
        )
        .await
    }

    /// Websocket connections accepted since start (across restarts).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The request path of every accepted handshake, in order.
    pub fn paths(&self) -> Vec<String> {
        lock(&self.shared.paths).clone()
    }

    /// Frames dropped: text frames and binary frames that do not decode.
    pub fn dropped_frames(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been accepted in total.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] if that does not happen within `timeout`.
    pub async fn wait_for_connections(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        crate::poll_until(
            timeout,
            || format!("{n} connections (got {})", self.connections()),
            || (self.connections() >= n).then_some(()),
        )
        .await
    }

    /// Closes every open connection with code 1012 (`Restart`) and keeps
    /// listening, so clients can reconnect.
    pub fn disconnect_all(&self) {
        self.shared.kick.send_modify(|epoch| *epoch += 1);
    }

    /// Shuts down like the real autoscaler: closes every connection with
    /// 1012, waits up to a second for them to finish, then stops listening.
    /// Dials are refused until [`restart`](Self::restart).
    pub async fn stop(&self) {
        self.disconnect_all();
        let _closed = crate::poll_until(CLOSE_GRACE, String::new, || {
            (self.open_connections() == 0).then_some(())
        })
        .await;
        self.kill();
        // Aborted connection tasks are dropped asynchronously; wait for them
        // so `open_connections` reads 0 once `stop` returns.
        let _dropped = crate::poll_until(CLOSE_GRACE, String::new, || {
            (self.open_connections() == 0).then_some(())
        })
        .await;
    }

    /// Stops listening and drops every connection without a close frame, as
    /// a crashed process would.
    pub fn kill(&self) {
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
    }

    /// Listens again on the same address after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); a no-op while running. Recorded frames and
    /// counters are kept.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound again.
    pub fn restart(&self) -> io::Result<()> {
        let mut accept = lock(&self.accept);
        if accept.as_ref().is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let listener = serve::bind(self.addr)?;
        *accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        Ok(())
    }
}

impl Drop for FakeAutoscaler {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the connection tasks here means aborting this task aborts them.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next() => continue,
        };
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(serve_connection(stream, shared.clone()));
            }
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut ws = match tokio_tungstenite::accept_hdr_async(stream, RecordPath(shared.clone())).await
    {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%error, "websocket handshake failed");
            return;
        }
    };
    let mut kick = shared.kick.subscribe();
    kick.borrow_and_update();
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let _open = Open::enter(shared.clone());
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(payload))) => match WireStatMessages::decode(payload) {
                    Ok(message) => lock(&shared.frames).push(ReceivedFrame {
                        at: Instant::now(),
                        connection,
                        message,
                    }),
                    Err(error) => {
                        tracing::debug!(%error, "undecodable stat frame dropped");
                        shared.dropped.fetch_add(1, Ordering::SeqCst);
                    }
                },
                Some(Ok(Message::Text(_))) => {
                    shared.dropped.fetch_add(1, Ordering::SeqCst);
                }
                // Pongs to pings and the reply to a close are queued by
                // tungstenite and flushed by the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_))) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    return;
                }
                None => return,
            },
            _ = kick.changed() => {
                let frame = CloseFrame {
                    code: CloseCode::Restart,
                    reason: "autoscaler restarting".into(),
                };
                let _closed = ws.send(Message::Close(Some(frame))).await;
                // Read until the peer's close reply ends the stream.
                let _drained = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
        }
    }
}

// === impl RecordPath ===

impl Callback for RecordPath {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        lock(&self.0.paths).push(request.uri().path().to_owned());
        Ok(response)
    }
}

// === impl Open ===

impl Open {
    fn enter(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
