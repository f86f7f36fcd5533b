//! The activator harness shared by both test binaries (`integration` and
//! `faults`, each includes this file with `#[path]`): the default env, an
//! in-process activator on loopback fed by the fake API server and fake
//! autoscaler, and the Revision and Endpoints objects a test revision needs.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kdp_activator::env::Config;
use kdp_activator::throttle::Throttler;
use kdp_activator::{App, Listeners, cluster};
use kdp_test_support::client::try_get;
use kdp_test_support::{ActivatorEnv, FakeApiServer, FakeAutoscaler};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The routing headers of the test revision.
pub(crate) const REV: [(&str, &str); 2] = [
    ("knative-serving-namespace", "default"),
    ("knative-serving-revision", "hello-00001"),
];

/// A running in-process activator.
pub(crate) struct Activator {
    pub(crate) http1: SocketAddr,
    pub(crate) h2c: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) api: FakeApiServer,
    pub(crate) autoscaler: FakeAutoscaler,
    pub(crate) throttler: Arc<Throttler>,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

/// The activator's environment: the defaults, reporting to `autoscaler`,
/// with `extra` on top.
pub(crate) fn env(autoscaler: &FakeAutoscaler, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = ActivatorEnv {
        pod_name: "activator-abc".into(),
        autoscaler_url: autoscaler.url(),
        drain_timeout: "100ms".into(),
        ports: None,
    }
    .vars()
    .into_iter()
    .collect();
    env.insert("PROBE_FREQUENCY".into(), "50ms".into());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    env
}

/// A kube client for the fake API server.
pub(crate) fn kube_client(api: &FakeApiServer) -> kdp_k8s::kube::Client {
    kdp_k8s::kube::Client::try_from(kdp_k8s::kube::Config::new(api.url().parse().unwrap())).unwrap()
}

/// Revision `name` in `default` with container concurrency `cc`.
pub(crate) fn revision(name: &str, cc: i64, timeout: i64) -> serde_json::Value {
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"serving.knative.dev/service": "hello", "serving.knative.dev/configuration": "hello"}},
        "spec": {"containerConcurrency": cc, "timeoutSeconds": timeout,
                 "containers": [{"image": "x", "ports": [{"name": "http1", "containerPort": 8080}]}]}
    })
}

/// The private Endpoints of revision `rev` in `default`, one subset per pod `ip:port`.
pub(crate) fn private_endpoints(rev: &str, pods: &[SocketAddr]) -> serde_json::Value {
    kdp_test_support::activator::private_endpoints("default", rev, pods)
}

/// Polls `f` until it returns true or 10 s pass.
pub(crate) async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    kdp_test_support::eventually(what, Duration::from_secs(10), f).await;
}

// === impl Activator ===

impl Activator {
    /// Starts an activator with `extra` env on top of the defaults, once its
    /// caches have synced with a fresh fake API server.
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Self {
        let api = FakeApiServer::start().await;
        let autoscaler = FakeAutoscaler::start().await;
        let config = Config::from_env(&env(&autoscaler, extra), None).unwrap();
        let listeners = Listeners {
            http1: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            h2c: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            https: None,
            profiling: None,
        };
        let app = App::build(config, listeners, cluster::Observability::default());
        let http1 = app.http1_addr().unwrap();
        let h2c = app.h2c_addr().unwrap();
        let metrics = app.metrics_addr().unwrap();
        let throttler = app.throttler().clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            cluster::start(kube_client(&api), app.cluster_targets()),
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
            metrics,
            api,
            autoscaler,
            throttler,
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

    /// Creates revision `hello-00001` with `cc` and `pods` (`ip:port`) behind
    /// it, and waits until the activator routes to it.
    pub(crate) async fn revision(&self, cc: i64, pods: &[SocketAddr]) {
        self.api.apply(revision("hello-00001", cc, 300));
        self.api.apply(private_endpoints("hello-00001", pods));
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
                    tokio::time::timeout(Duration::from_millis(500), try_get(&url, &REV))
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
