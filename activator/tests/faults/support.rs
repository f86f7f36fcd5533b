//! An in-process activator on loopback fed by the fake API server, in-process
//! queue-proxies as its pods, and helpers shared by the fault tests.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use kdp_activator::env::Config;
use kdp_activator::throttle::Throttler;
use kdp_activator::{App, Listeners, cluster};
use kdp_test_support::{FakeApiServer, FakeAutoscaler};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Tests that measure process-wide resources (memory) take this exclusively;
/// every other test takes it shared.
pub(crate) static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The routing headers of the test revision.
pub(crate) const REV: [(&str, &str); 2] = [
    ("knative-serving-namespace", "default"),
    ("knative-serving-revision", "hello-00001"),
];

/// A running in-process activator.
pub(crate) struct Activator {
    pub(crate) http1: SocketAddr,
    pub(crate) h2c: SocketAddr,
    pub(crate) api: FakeApiServer,
    pub(crate) throttler: Arc<Throttler>,
    _autoscaler: FakeAutoscaler,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

impl Activator {
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Self {
        let api = FakeApiServer::start().await;
        let autoscaler = FakeAutoscaler::start().await;
        let mut env: HashMap<String, String> = [
            ("POD_NAME", "activator-abc"),
            ("POD_IP", "127.0.0.1"),
            ("SYSTEM_NAMESPACE", "knative-serving"),
            ("KDP_DRAIN_TIMEOUT", "100ms"),
            ("PROBE_FREQUENCY", "50ms"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("KDP_AUTOSCALER_URL".into(), autoscaler.url());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let config = Config::from_env(&env, None).unwrap();
        let listeners = Listeners {
            http1: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            h2c: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: None,
            https: None,
            profiling: None,
        };
        let app = App::build(config, listeners, cluster::Observability::default());
        let http1 = app.http1_addr().unwrap();
        let h2c = app.h2c_addr().unwrap();
        let throttler = app.throttler().clone();
        let client =
            kdp_k8s::kube::Client::try_from(kdp_k8s::kube::Config::new(api.url().parse().unwrap()))
                .unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            cluster::start(client, app.cluster_targets()),
        )
        .await
        .expect("caches sync")
        .unwrap();
        let (tx, rx) = oneshot::channel();
        let done = tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        Self {
            http1,
            h2c,
            api,
            throttler,
            _autoscaler: autoscaler,
            stop: Some(tx),
            done,
        }
    }

    /// Simulates SIGTERM.
    pub(crate) fn terminate(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Creates revision `hello-00001` with `cc` and `pods` (`ip:port`) behind it.
    pub(crate) async fn revision(&self, cc: i64, pods: &[SocketAddr]) {
        self.api.apply(json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "default",
                         "labels": {"serving.knative.dev/service": "hello",
                                    "serving.knative.dev/configuration": "hello"}},
            "spec": {"containerConcurrency": cc, "timeoutSeconds": 300,
                     "containers": [{"image": "x", "ports": [{"name": "http1", "containerPort": 8080}]}]}
        }));
        let subsets: Vec<_> = pods
            .iter()
            .map(|p| {
                json!({"addresses": [{"ip": p.ip().to_string()}],
                       "ports": [{"name": "http", "port": p.port()}]})
            })
            .collect();
        self.api.apply(json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "hello-00001-private", "namespace": "default",
                         "labels": {"serving.knative.dev/revision": "hello-00001",
                                    "serving.knative.dev/revisionUID": "uid-1",
                                    "networking.internal.knative.dev/serviceType": "Private"}},
            "subsets": subsets
        }));
        let throttler = self.throttler.clone();
        eventually("revision known", || {
            let known = !throttler.revisions().is_empty();
            async move { known }
        })
        .await;
        if !pods.is_empty() {
            // Ready once a request goes through.
            let url = format!("http://{}/", self.http1);
            eventually("pods probed ready", || {
                let url = url.clone();
                async move {
                    tokio::time::timeout(Duration::from_millis(500), get(&url, &REV))
                        .await
                        .is_ok_and(|g| g.is_ok_and(|g| g.status == 200))
                }
            })
            .await;
        }
    }

    /// Requests held in the revision's queue.
    pub(crate) fn queued(&self) -> usize {
        self.throttler.revisions().iter().map(|r| r.queued()).sum()
    }

    /// Leases out (requests being proxied).
    pub(crate) fn in_flight(&self) -> usize {
        self.throttler
            .revisions()
            .iter()
            .map(|r| r.in_flight())
            .sum()
    }
}

/// A queue-proxy in front of `user_port`, as one of the activator's pods.
pub(crate) struct Pod {
    pub(crate) addr: SocketAddr,
    pub(crate) stats: kdp_queue_proxy::stats::Stats,
    _stop: oneshot::Sender<()>,
}

impl Pod {
    pub(crate) async fn start(user_port: u16, cc: usize) -> Self {
        let env: HashMap<String, String> = [
            ("CONTAINER_CONCURRENCY", cc.to_string()),
            ("QUEUE_SERVING_PORT", "1".into()),
            ("QUEUE_SERVING_TLS_PORT", "8112".into()),
            ("USER_PORT", user_port.to_string()),
            ("REVISION_TIMEOUT_SECONDS", "300".into()),
            ("SERVING_LOGGING_CONFIG", String::new()),
            ("SERVING_LOGGING_LEVEL", "info".into()),
            ("SERVING_NAMESPACE", "default".into()),
            ("SERVING_CONFIGURATION", "hello".into()),
            ("SERVING_REVISION", "hello-00001".into()),
            ("SERVING_POD", "hello-00001-pod".into()),
            ("SERVING_POD_IP", "127.0.0.1".into()),
            ("KDP_BIND_ADDRESS", "127.0.0.1".into()),
            ("KDP_DRAIN_QUIET_PERIOD", "100ms".into()),
            ("KDP_CERT_DIR", "/nonexistent/kdp-test-certs".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = kdp_queue_proxy::env::Config::from_env(&env).unwrap();
        let listeners = kdp_queue_proxy::Listeners {
            main: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            user_metrics: None,
            tls: None,
        };
        let app = kdp_queue_proxy::App::build(config, listeners).unwrap();
        let addr = app.main_addr().unwrap();
        let stats = app.stats().clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stats,
            _stop: tx,
        }
    }
}

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub(crate) fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client: one connection, many streams.
pub(crate) fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

pub(crate) fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).unwrap()
}

/// Sends `req`; `Err` carries the client-visible error.
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

pub(crate) async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    try_send(&client(), request("GET", url, headers, Bytes::new())).await
}

/// Polls `f` until it returns true or 10 s pass.
pub(crate) async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10s");
}

/// This process's resident set size, in bytes, from /proc/self/status.
pub(crate) fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
