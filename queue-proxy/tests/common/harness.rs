//! The queue-proxy harness shared by both test binaries (`integration` and
//! `faults`, each includes this file with `#[path]`): the default Knative
//! environment, a queue-proxy on loopback (in-process, or the real binary),
//! a hyper user container, and the binary-agnostic clients and waits of
//! `kdp-test-support`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kdp_queue_proxy::env::Config;
use kdp_queue_proxy::stats::Stats;
use kdp_queue_proxy::{App, Listeners};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

pub(crate) use kdp_test_support::client::*;
pub(crate) use kdp_test_support::raw::*;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// What the user container saw of one request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) uri: String,
    pub(crate) version: http::Version,
    pub(crate) headers: http::HeaderMap,
}

/// A hyper user container on 127.0.0.1:0 whose behaviour is a function of the
/// request, recording what it saw.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running in-process queue-proxy.
pub(crate) struct Qp {
    pub(crate) main: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) user_metrics: Option<SocketAddr>,
    pub(crate) tls: Option<SocketAddr>,
    pub(crate) stats: Stats,
    terminate: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

/// The `queue-proxy` binary running as a child process.
pub(crate) struct Binary {
    pub(crate) child: Child,
    /// The serving port.
    pub(crate) main: SocketAddr,
}

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

/// Polls `f` until it returns true or 5 s pass.
pub(crate) async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    kdp_test_support::eventually(what, Duration::from_secs(5), f).await;
}

/// Serves `handler` as the user container.
pub(crate) async fn upstream<F, Fut, B>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(Seen {
                        uri: req.uri().to_string(),
                        version: req.version(),
                        headers: req.headers().clone(),
                    });
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

/// A whole response with `status` and `body`.
pub(crate) fn text(status: u16, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
    rsp
}

/// A user container that answers `hello` to everything.
pub(crate) async fn hello() -> Upstream {
    upstream(|_req| async { text(200, "hello") }).await
}

// === impl Qp ===

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
            tls: match kdp_queue_proxy::tls_acceptor(&config).await.unwrap() {
                Some(acceptor) => Some(kdp_queue_proxy::TlsListener {
                    listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                    acceptor,
                }),
                None => None,
            },
        };
        let app = App::build(config, listeners).unwrap();
        let main = app.main_addr().unwrap();
        let admin = app.admin_addr().unwrap();
        let metrics = app.metrics_addr().unwrap();
        let user_metrics = app.user_metrics_addr();
        let tls = app.tls_addr();
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
            tls,
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

// === impl Binary ===

impl Binary {
    /// Runs the binary in front of `user_port` on free ports with `extra` env
    /// on top of the defaults and stderr discarded; returns once the serving
    /// port accepts connections.
    pub(crate) async fn spawn(user_port: u16, extra: &[(&str, &str)], stdout: Stdio) -> Self {
        let port = closed_port();
        let child = Command::new(env!("CARGO_BIN_EXE_queue-proxy"))
            .env_clear()
            .envs(env(user_port))
            .env("QUEUE_SERVING_PORT", port.to_string())
            .env("KDP_ADMIN_PORT", closed_port().to_string())
            .env("KDP_METRICS_PORT", closed_port().to_string())
            .envs(extra.iter().copied())
            .stdout(stdout)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let main = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("child listening", || async {
            TcpStream::connect(main).await.is_ok()
        })
        .await;
        Self { child, main }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.main)
    }

    /// Sends the child SIGTERM.
    pub(crate) async fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
    }
}
