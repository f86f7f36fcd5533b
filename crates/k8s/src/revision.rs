//! A minimal typed `serving.knative.dev/v1` Revision: only what the activator reads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

/// A Knative Revision.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Revision {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The parts of the spec the activator uses.
    #[serde(default)]
    pub spec: RevisionSpec,
}

/// The activator's view of a Revision spec.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Concurrent requests per pod (absent = 0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    /// Request timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Time-to-first-byte limit, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<i64>,
    /// Idle limit, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// Containers; only ports and probes are read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

/// The parts of a container the activator reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ports; the first one's name picks HTTP/1 (`http1`) or h2c (`h2c`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// The readiness probe, kept raw (exec probes disable probe optimisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<serde_json::Value>,
    /// The startup probe, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<serde_json::Value>,
}

/// A container port.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    #[serde(default)]
    pub container_port: i32,
}

impl Resource for Revision {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Revision".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "serving.knative.dev".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "revisions".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Revision {
    /// A label value, or empty.
    pub fn label(&self, key: &str) -> &str {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l: &BTreeMap<String, String>| l.get(key))
            .map_or("", String::as_str)
    }

    /// Whether a pod that answers the activator's probe may be used before
    /// Kubernetes calls it ready (Knative's probe optimisation): not when the
    /// serving container's readiness probe is `exec` or it has a startup
    /// probe, nor when any sidecar has a startup probe. The serving
    /// container is the one with ports (else the first).
    pub fn probe_optimization(&self) -> bool {
        let containers = &self.spec.containers;
        let serving = containers
            .iter()
            .position(|c| !c.ports.is_empty())
            .unwrap_or(0);
        !containers.iter().enumerate().any(|(i, c)| {
            let exec_readiness = i == serving
                && c.readiness_probe
                    .as_ref()
                    .is_some_and(|p| p.get("exec").is_some());
            exec_readiness || c.startup_probe.is_some()
        })
    }

    /// True when the serving container's first port is named `h2c`.
    pub fn is_h2c(&self) -> bool {
        self.spec
            .containers
            .first()
            .and_then(|c| c.ports.first())
            .and_then(|p| p.name.as_deref())
            == Some("h2c")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_knative_revision() {
        let json = serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "default",
                         "labels": {"serving.knative.dev/service": "hello"}},
            "spec": {"containerConcurrency": 10, "timeoutSeconds": 300,
                     "containers": [{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}]}
        });
        let rev: Revision = serde_json::from_value(json).unwrap();
        assert_eq!(rev.spec.container_concurrency, Some(10));
        assert!(rev.is_h2c());
        assert_eq!(rev.label("serving.knative.dev/service"), "hello");
        assert_eq!(rev.label("missing"), "");
        assert_eq!(Revision::plural(&()), "revisions");
        assert!(rev.probe_optimization());
    }

    #[test]
    fn exec_readiness_and_startup_probes_disable_probe_optimization() {
        let rev = |containers: serde_json::Value| -> Revision {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "r", "namespace": "n"},
                "spec": {"containers": containers}
            }))
            .unwrap()
        };
        let serving_exec = rev(serde_json::json!([
            {"ports": [{"containerPort": 8080}], "readinessProbe": {"exec": {"command": ["true"]}}}
        ]));
        assert!(!serving_exec.probe_optimization());
        let serving_http = rev(serde_json::json!([
            {"ports": [{"containerPort": 8080}], "readinessProbe": {"httpGet": {"port": 8080}}}
        ]));
        assert!(serving_http.probe_optimization());
        // A sidecar's exec readiness probe does not count; its startup probe does.
        let sidecar_exec = rev(serde_json::json!([
            {"readinessProbe": {"exec": {"command": ["true"]}}},
            {"ports": [{"containerPort": 8080}]}
        ]));
        assert!(sidecar_exec.probe_optimization());
        let sidecar_startup = rev(serde_json::json!([
            {"startupProbe": {"tcpSocket": {"port": 9}}},
            {"ports": [{"containerPort": 8080}]}
        ]));
        assert!(!sidecar_startup.probe_optimization());
    }
}
