//! The environment an activator under test starts with, shared by its
//! in-process test harness and `kdp-bench`, which spawns the binary.
//!
//! Only what both need lives here: who the activator is, where it reports,
//! how long it drains and, for a spawned binary, where it listens. Each
//! caller adds its own variables on top (`PROBE_FREQUENCY` in the tests,
//! `KUBECONFIG` in the bench driver).

use std::net::SocketAddr;

use serde_json::{Value, json};

/// The activator's `SYSTEM_NAMESPACE`, where its ConfigMaps live.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";

/// The private Endpoints of revision `rev` in `namespace`, one subset per
/// pod `ip:port`, labelled as Knative's controller labels them (the
/// activator watches by those labels).
pub fn private_endpoints(namespace: &str, rev: &str, pods: &[SocketAddr]) -> Value {
    let subsets: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({"addresses": [{"ip": p.ip().to_string()}],
                   "ports": [{"name": "http", "port": p.port()}]})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": format!("{rev}-private"), "namespace": namespace,
                     "labels": {"serving.knative.dev/revision": rev,
                                "serving.knative.dev/revisionUID": format!("uid-{rev}"),
                                "networking.internal.knative.dev/serviceType": "Private"}},
        "subsets": subsets
    })
}

/// The variables an activator needs to start against the fakes
/// ([`FakeAutoscaler`](crate::FakeAutoscaler), [`FakeApiServer`](crate::FakeApiServer)).
#[derive(Clone, Debug)]
pub struct ActivatorEnv {
    /// `POD_NAME`: the name it reports its stats under.
    pub pod_name: String,
    /// `KDP_AUTOSCALER_URL`: where it reports, the fake autoscaler's
    /// [`url`](crate::FakeAutoscaler::url).
    pub autoscaler_url: String,
    /// `KDP_DRAIN_TIMEOUT`: how long SIGTERM waits for requests, e.g. `100ms`.
    pub drain_timeout: String,
    /// Where a spawned binary listens; `None` for an in-process activator,
    /// whose caller binds the listeners.
    pub ports: Option<ActivatorPorts>,
}

/// The loopback ports a spawned activator binary listens on.
#[derive(Clone, Copy, Debug)]
pub struct ActivatorPorts {
    /// `KDP_HTTP1_PORT`.
    pub http1: u16,
    /// `KDP_H2C_PORT`.
    pub h2c: u16,
    /// `METRICS_PROMETHEUS_PORT`; `None` leaves the activator's default.
    pub metrics: Option<u16>,
}

// === impl ActivatorEnv ===

impl ActivatorEnv {
    /// The variables as `(name, value)` pairs; each name appears once.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("POD_NAME", self.pod_name.clone()),
            ("POD_IP", "127.0.0.1".to_owned()),
            ("SYSTEM_NAMESPACE", SYSTEM_NAMESPACE.to_owned()),
            ("KDP_AUTOSCALER_URL", self.autoscaler_url.clone()),
            ("KDP_DRAIN_TIMEOUT", self.drain_timeout.clone()),
        ];
        if let Some(ports) = self.ports {
            vars.extend([
                ("KDP_BIND_ADDRESS", "127.0.0.1".to_owned()),
                ("KDP_HTTP1_PORT", ports.http1.to_string()),
                ("KDP_H2C_PORT", ports.h2c.to_string()),
                // Not 8008: `0` picks a free port.
                ("PROFILING_PORT", "0".to_owned()),
            ]);
            if let Some(metrics) = ports.metrics {
                vars.push(("METRICS_PROMETHEUS_PORT", metrics.to_string()));
            }
        }
        vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{ActivatorEnv, ActivatorPorts};

    fn env(ports: Option<ActivatorPorts>) -> HashMap<String, String> {
        ActivatorEnv {
            pod_name: "activator-abc".into(),
            autoscaler_url: "ws://127.0.0.1:1/".into(),
            drain_timeout: "0s".into(),
            ports,
        }
        .vars()
        .into_iter()
        .collect()
    }

    #[test]
    fn in_process_env_leaves_the_listeners_out() {
        let env = env(None);
        assert_eq!(env["POD_NAME"], "activator-abc");
        assert_eq!(env["SYSTEM_NAMESPACE"], "knative-serving");
        assert_eq!(env["KDP_AUTOSCALER_URL"], "ws://127.0.0.1:1/");
        assert_eq!(env["KDP_DRAIN_TIMEOUT"], "0s");
        assert!(!env.contains_key("KDP_HTTP1_PORT"));
        assert_eq!(env.len(), 5);
    }

    #[test]
    fn spawned_env_names_every_port() {
        let env = env(Some(ActivatorPorts {
            http1: 1,
            h2c: 2,
            metrics: Some(3),
        }));
        assert_eq!(env["KDP_BIND_ADDRESS"], "127.0.0.1");
        assert_eq!(env["KDP_HTTP1_PORT"], "1");
        assert_eq!(env["KDP_H2C_PORT"], "2");
        assert_eq!(env["METRICS_PROMETHEUS_PORT"], "3");
        assert_eq!(env["PROFILING_PORT"], "0");
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn spawned_env_may_leave_the_metrics_port_to_the_default() {
        let env = env(Some(ActivatorPorts {
            http1: 0,
            h2c: 0,
            metrics: None,
        }));
        assert!(!env.contains_key("METRICS_PROMETHEUS_PORT"));
        assert_eq!(env.len(), 9);
    }
}
