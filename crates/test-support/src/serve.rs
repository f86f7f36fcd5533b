//! The accept loop shared by the HTTP fakes: HTTP/1 and h2c on one listener
//! (hyper-util `auto`), one task per connection, everything torn down when
//! the [`Server`] handle is dropped.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A running accept loop. Dropping it aborts the loop and every connection
/// it accepted, as a killed process would.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Binds `ip:port` with `SO_REUSEADDR`, so a fake can be stopped and started
/// again on the same port while old connections sit in `TIME_WAIT`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

// === impl Server ===

impl Server {
    /// Serves `service` on `listener` until the handle is dropped.
    pub(crate) fn spawn<S, B>(listener: TcpListener, service: S) -> io::Result<Self>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, service, connections.clone()));
        Ok(Self {
            addr,
            connections,
            task,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop<S, B>(listener: TcpListener, service: S, connections: Arc<AtomicUsize>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Owning the connection tasks here means aborting this task aborts them.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next() => continue,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning (axum
                // serve/listener.rs does the same).
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let _nodelay = stream.set_nodelay(true);
        let service = service.clone();
        conns.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
}
