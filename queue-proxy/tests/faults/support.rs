//! A queue-proxy on loopback, scripted raw-TCP upstreams that misbehave on
//! demand, raw downstream sockets, and small helpers shared by the fault tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kdp_queue_proxy::env::Config;
use kdp_queue_proxy::stats::Stats;
use kdp_queue_proxy::{App, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Tests that measure or exhaust process-wide resources (fds, memory) take
/// this exclusively; every other test takes it shared.
pub(crate) static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The default environment of a queue-proxy in front of `user_port`.
pub(crate) fn env(user_port: u16) -> HashMap<String, String> {
    [
        ("CONTAINER_CONCURRENCY", "0"),
        ("QUEUE_SERVING_PORT", "1"),
        ("QUEUE_SERVING_TLS_PORT", "8112"),
        ("REVISION_TIMEOUT_SECONDS", "300"),
        ("SERVING_LOGGING_CONFIG", ""),
        ("SERVING_LOGGING_LEVEL", "info"),
        ("SERVING_NAMESPACE", "default"),
        ("SERVING_CONFIGURATION", "hello"),
        ("SERVING_REVISION", "hello-00001"),
        ("SERVING_POD", "hello-00001-pod"),
        ("SERVING_POD_IP", "127.0.0.1"),
        ("KDP_BIND_ADDRESS", "127.0.0.1"),
        ("KDP_DRAIN_QUIET_PERIOD", "200ms"),
        ("KDP_CERT_DIR", "/nonexistent/kdp-test-certs"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("USER_PORT".to_owned(), user_port.to_string())])
    .collect()
}

/// A running in-process queue-proxy.
pub(crate) struct Qp {
    pub(crate) main: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) user_metrics: Option<SocketAddr>,
    pub(crate) stats: Stats,
    terminate: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

impl Qp {
    /// Starts a queue-proxy in front of `user_port` with `extra` env on top of the defaults.
    pub(crate) async fn start(user_port: u16, extra: &[(&str, &str)]) -> Self {
        let mut env = env(user_port);
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_env(&env).unwrap();
        let listeners = Listeners {
            main: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            user_metrics: if config.observability.prometheus_request_metrics() {
                Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
            } else {
                None
            },
            tls: None,
        };
        let app = App::build(config, listeners).unwrap();
        let main = app.main_addr().unwrap();
        let admin = app.admin_addr().unwrap();
        let metrics = app.metrics_addr().unwrap();
        let user_metrics = app.user_metrics_addr();
        let stats = app.stats().clone();
        let (tx, rx) = oneshot::channel();
        let done = tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        Self {
            main,
            admin,
            metrics,
            user_metrics,
            stats,
            terminate: Some(tx),
            done,
        }
    }

    /// Simulates SIGTERM.
    pub(crate) fn terminate(&mut self) {
        if let Some(tx) = self.terminate.take() {
            let _ = tx.send(());
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.main)
    }

    /// Waits until no request is counted in the autoscaler stats (the
    /// `StatsGuard`s and the breaker permits travel together in the handler).
    pub(crate) async fn settles(&self) {
        let stats = self.stats.clone();
        eventually("stats concurrency back to 0", || {
            let n = stats.concurrency();
            async move { n == 0 }
        })
        .await;
    }
}

/// A hyper user container on 127.0.0.1:0.
pub(crate) async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

pub(crate) fn text(status: u16, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
    rsp
}

/// What a scripted upstream does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// `200 ok`, connection kept alive.
    Ok,
    /// `200 ok`, then the connection is closed.
    OkThenClose,
    /// Reads the request and closes without a byte of response (an idle
    /// timeout racing a reused connection).
    CloseSilently,
    /// Never answers.
    Hang,
    /// Headers with `Content-Length: 1000`, 10 body bytes, then a TCP reset.
    ResetMidBody,
    /// Chunked headers, one chunk, then a TCP reset.
    ResetMidChunks,
    /// Bytes that are not HTTP, then close.
    Garbage,
}

/// A raw-TCP user container whose behaviour is `script(path, nth request on
/// this connection)`. Counts requests it read.
pub(crate) struct Scripted {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<AtomicUsize>,
}

pub(crate) async fn scripted<F>(script: F) -> Scripted
where
    F: Fn(&str, usize) -> Act + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let req2 = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_scripted(tcp, script.clone(), req2.clone()));
        }
    });
    Scripted { addr, requests }
}

async fn serve_scripted<F>(mut tcp: TcpStream, script: F, requests: Arc<AtomicUsize>)
where
    F: Fn(&str, usize) -> Act,
{
    let mut buf = Vec::new();
    for nth in 0.. {
        let Some(head) = read_head(&mut tcp, &mut buf).await else {
            return;
        };
        // Bodies are skipped by Content-Length (the tests send small ones).
        let len = header_value(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len);
        requests.fetch_add(1, Ordering::Relaxed);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        match script(&path, nth) {
            Act::Ok => {
                if tcp.write_all(OK).await.is_err() {
                    return;
                }
            }
            Act::OkThenClose => {
                let _ = tcp.write_all(OK).await;
                return;
            }
            Act::CloseSilently => return,
            Act::Hang => {
                let _ = tcp.read(&mut [0u8; 1]).await;
                return;
            }
            Act::ResetMidBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tcp.set_zero_linger();
                return;
            }
            Act::ResetMidChunks => {
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tcp.set_zero_linger();
                return;
            }
            Act::Garbage => {
                let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                return;
            }
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Reads one request head (through `\r\n\r\n`) from `tcp`, keeping what follows in `buf`.
pub(crate) async fn read_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Writes `bytes` on a fresh connection to `addr` and returns everything
/// read until the server closes, errors, or `limit` passes.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    read_until_closed(&mut tcp, limit).await.0
}

/// Reads until EOF, an error, or `limit`; returns the text and whether the
/// connection ended (rather than the limit passing).
pub(crate) async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A plain HTTP/1.1 client with a keep-alive pool.
pub(crate) fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

/// Sends `req`; `Err` carries the client-visible error text.
pub(crate) async fn try_send(client: &Client, req: Request<Full<Bytes>>) -> Result<Got, String> {
    let rsp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(crate) fn get_req(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

pub(crate) async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    try_send(&client(), get_req(url, headers)).await.unwrap()
}

/// A GET that must be answered within `limit`.
pub(crate) async fn get_within(url: &str, limit: Duration) -> Got {
    tokio::time::timeout(limit, get(url, &[]))
        .await
        .unwrap_or_else(|_| panic!("GET {url} not answered within {limit:?}"))
}

/// Polls `f` until it returns true or 5 s pass.
pub(crate) async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 5s");
}

/// A port nobody listens on.
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
