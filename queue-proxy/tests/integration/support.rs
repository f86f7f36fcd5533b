//! Test upstreams and a queue-proxy harness on loopback.
use std::future::Future;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kdp_queue_proxy::env::Config;
use kdp_queue_proxy::{App, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// What the upstream saw of each request.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) uri: String,
    pub(crate) version: http::Version,
    pub(crate) headers: http::HeaderMap,
}

/// A user container on 127.0.0.1:0 whose behaviour is a function of the request.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
}

pub(crate) async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
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

pub(crate) fn text(status: u16, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
    rsp
}

/// An upstream that answers `hello` to everything.
pub(crate) async fn hello() -> Upstream {
    upstream(|_req| async { text(200, "hello") }).await
}

/// A running queue-proxy.
pub(crate) struct Qp {
    pub(crate) main: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) user_metrics: Option<SocketAddr>,
    pub(crate) tls: Option<SocketAddr>,
    terminate: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

pub(crate) fn env(user_port: u16) -> HashMap<String, String> {
    [
        ("CONTAINER_CONCURRENCY", "0"),
        ("QUEUE_SERVING_PORT", "1"),
        ("QUEUE_SERVING_TLS_PORT", "8112"),
        ("REVISION_TIMEOUT_SECONDS", "300"),
        ("SERVING_LOGGING_CONFIG", ""),
        ("SERVING_LOGGING_LEVEL", "debug"),
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

impl Qp {
    /// Starts a queue-proxy in front of `user_port` with extra env on top of the defaults.
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
}

/// A plain HTTP/1.1 client.
pub(crate) fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A h2c (prior knowledge) client.
pub(crate) fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
    pub(crate) raw: Bytes,
}

pub(crate) async fn send(req: Request<Full<Bytes>>) -> Got {
    let h2 = req.version() == http::Version::HTTP_2;
    let rsp = if h2 {
        h2_client().request(req).await
    } else {
        client().request(req).await
    }
    .unwrap();
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        raw: body,
    }
}

pub(crate) async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Polls `f` until it returns true or 5 s pass.
pub(crate) async fn eventually<F, Fut>(mut f: F)
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
    panic!("condition not met within 5s");
}
