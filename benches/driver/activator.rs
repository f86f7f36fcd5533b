//! The activator's surroundings, in the driver's process: a fake Kubernetes
//! API server and a fake autoscaler (`kdp-test-support`, as the activator's
//! integration tests use them), and the release `activator` binary pointed at
//! them.
//!
//! The activator reads Kubernetes through a kubeconfig (`KUBECONFIG`) whose
//! server is the fake API server's `http://127.0.0.1:<port>`, and reports to
//! the fake autoscaler through `KDP_AUTOSCALER_URL`. A pod is a queue-proxy on
//! a loopback address of its own (`127.0.0.2`); the driver publishes it in
//! the revision's private Endpoints, which is what marks it ready.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use kdp_test_support::activator::SYSTEM_NAMESPACE;
use kdp_test_support::{ActivatorEnv, ActivatorPorts, FakeApiServer, FakeAutoscaler};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::procs::{Managed, free_port};

/// Namespace of every benchmark revision.
pub(crate) const NAMESPACE: &str = "default";
/// The address pods (queue-proxies behind the activator) listen on.
pub(crate) const POD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The cluster the activator sees: the fakes and the kubeconfig naming them.
/// Dropping it stops both fakes.
#[derive(Debug)]
pub(crate) struct FakeCluster {
    pub(crate) api: FakeApiServer,
    autoscaler: FakeAutoscaler,
    kubeconfig: PathBuf,
}

impl FakeCluster {
    /// Starts both fakes on the driver's runtime and writes `dir/<name>.kubeconfig`.
    pub(crate) async fn start(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let api = FakeApiServer::start().await;
        let autoscaler = FakeAutoscaler::start().await;
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, kubeconfig_yaml(&api.url()))?;
        // The activator exits without config-network, as Knative's does;
        // empty, it means Knative's defaults.
        api.apply(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "config-network", "namespace": SYSTEM_NAMESPACE},
            "data": {}
        }));
        Ok(Self {
            api,
            autoscaler,
            kubeconfig,
        })
    }

    /// Creates (or replaces) revision `name` with `containerConcurrency: cc`.
    pub(crate) fn revision(&self, name: &str, cc: u32) {
        self.api.apply(json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"serving.knative.dev/service": "bench",
                                    "serving.knative.dev/configuration": "bench"}},
            "spec": {"containerConcurrency": cc, "timeoutSeconds": 300,
                     "containers": [{"image": "bench",
                                     "ports": [{"name": "http1", "containerPort": 8080}]}]}
        }));
    }

    /// Sets revision `name`'s private Endpoints to `pods`, all ready (an
    /// empty list: scaled to zero).
    pub(crate) fn endpoints(&self, name: &str, pods: &[SocketAddr]) {
        self.api.apply(private_endpoints(name, pods));
    }

    /// Turns on the activator's Prometheus metrics (`config-observability`'s
    /// `metrics-protocol: prometheus`, read once at startup), on the port of
    /// `METRICS_PROMETHEUS_PORT`.
    pub(crate) fn prometheus_metrics(&self) {
        self.api.apply(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "config-observability", "namespace": SYSTEM_NAMESPACE},
            "data": {"metrics-protocol": "prometheus"}
        }));
    }

    /// Spawns the activator binary against this cluster, listening on
    /// `127.0.0.1:port`; `env` is set last (it overrides the defaults here).
    pub(crate) fn spawn_activator(
        &self,
        bin: &Path,
        port: u16,
        dir: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Managed> {
        let vars = ActivatorEnv {
            pod_name: "activator-bench".into(),
            autoscaler_url: self.autoscaler.url(),
            drain_timeout: "0s".into(),
            ports: Some(ActivatorPorts {
                http1: port,
                h2c: free_port()?,
                metrics: Some(free_port()?),
            }),
        }
        .vars();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .envs(crate::procs::allocator_env())
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(vars)
            // What the activator gets in a cluster: Knative's Deployment
            // limits it to one CPU (1000m), so its default runtime has one
            // thread there; this machine has no such limit.
            .env("KDP_WORKER_THREADS", "1");
        // For debugging a run: `RUST_LOG=debug kdp-bench ...` reaches the activator.
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Managed::spawn(name, cmd, &dir.join(format!("{name}.log")))
    }
}

/// The headers an ingress adds to route a request to revision `name`.
pub(crate) fn routing_headers(name: &str) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    Ok(vec![
        (
            HeaderName::from_static("knative-serving-namespace"),
            HeaderValue::from_static(NAMESPACE),
        ),
        (
            HeaderName::from_static("knative-serving-revision"),
            HeaderValue::try_from(name)?,
        ),
    ])
}

/// A pod's address: its queue-proxy's port on [`POD_IP`].
pub(crate) fn pod_addr(port: u16) -> SocketAddr {
    SocketAddr::from((POD_IP, port))
}

/// Whether [`POD_IP`] can be bound here (all of 127/8 is loopback on Linux).
pub(crate) fn pod_ip_usable() -> bool {
    std::net::TcpListener::bind(pod_addr(0)).is_ok()
}

fn private_endpoints(rev: &str, pods: &[SocketAddr]) -> Value {
    kdp_test_support::activator::private_endpoints(NAMESPACE, rev, pods)
}

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
current-context: fake
users:
- name: fake
  user: {{}}
"
    )
}
