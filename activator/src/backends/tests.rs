use super::*;

#[test]
fn endpoints_to_dests_uses_the_named_port() {
    let ep: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rev-private", "namespace": "ns"},
        "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "notReadyAddresses": [{"ip": "10.0.0.3"}],
             "ports": [{"name": "http", "port": 8012}, {"name": "https", "port": 8112}]},
            {"addresses": [{"ip": "10.0.0.9"}], "ports": [{"name": "other", "port": 1}]},
            {"addresses": [{"ip": "::1"}], "ports": [{"name": "http", "port": 8012}]}
        ]
    }))
    .unwrap();
    let d = Dests::from_endpoints(&ep, "http");
    assert_eq!(
        d.ready.iter().map(String::as_str).collect::<Vec<_>>(),
        ["10.0.0.1:8012", "10.0.0.2:8012", "[::1]:8012"]
    );
    assert_eq!(
        d.not_ready.iter().map(String::as_str).collect::<Vec<_>>(),
        ["10.0.0.3:8012"]
    );
    assert!(Dests::from_endpoints(&ep, "http2").is_empty());
}

// === HealthSet (activator.md §4.4) ===

use std::collections::HashMap;
use std::sync::Mutex;

const CLUSTER_IP: &str = "10.96.0.7:80";

/// Scripted probe answers; pods not listed time out.
#[derive(Default)]
struct Script {
    pods: Mutex<HashMap<String, ProbeOutcome>>,
    cluster_ip: Option<String>,
    cluster_ip_ok: Mutex<bool>,
    probed: Mutex<Vec<String>>,
    cluster_ip_probes: Mutex<usize>,
}

const OK: ProbeOutcome = ProbeOutcome::Healthy;
const MESH_503: ProbeOutcome = ProbeOutcome::Unhealthy { non_mesh: false };
const NOT_MESH: ProbeOutcome = ProbeOutcome::Unhealthy { non_mesh: true };

impl Script {
    fn new(pods: &[(&str, ProbeOutcome)]) -> Self {
        Self {
            pods: Mutex::new(pods.iter().map(|(d, o)| ((*d).to_owned(), *o)).collect()),
            cluster_ip: Some(CLUSTER_IP.to_owned()),
            ..Self::default()
        }
    }

    fn cluster_ip_ok(self, ok: bool) -> Self {
        *self.cluster_ip_ok.lock().unwrap() = ok;
        self
    }

    fn set(&self, dest: &str, outcome: ProbeOutcome) {
        self.pods.lock().unwrap().insert(dest.to_owned(), outcome);
    }

    fn take_probed(&self) -> Vec<String> {
        std::mem::take(&mut *self.probed.lock().unwrap())
    }
}

impl Prober for Script {
    fn probe_pods(
        &self,
        dests: Vec<String>,
    ) -> impl Future<Output = Vec<(String, ProbeOutcome)>> + Send {
        self.probed.lock().unwrap().extend(dests.iter().cloned());
        let pods = self.pods.lock().unwrap();
        let out: Vec<_> = dests
            .into_iter()
            .filter_map(|d| pods.get(&d).map(|o| (d, *o)))
            .collect();
        std::future::ready(out)
    }

    fn cluster_ip(&self) -> Option<String> {
        self.cluster_ip.clone()
    }

    fn probe_cluster_ip(&self, _dest: String) -> impl Future<Output = bool> + Send {
        *self.cluster_ip_probes.lock().unwrap() += 1;
        std::future::ready(*self.cluster_ip_ok.lock().unwrap())
    }
}

fn settings(mode: MeshCompatibilityMode) -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(300),
        frequency: Duration::from_millis(200),
        optimize: true,
        mesh_mode: mode,
        passthrough_host: None,
    }
}

fn dests(ready: &[&str], not_ready: &[&str]) -> Dests {
    Dests {
        ready: ready.iter().map(|d| (*d).to_owned()).collect(),
        not_ready: not_ready.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn pods(healthy: &[&str]) -> Option<Backends> {
    Some(Backends::Pods {
        healthy: healthy.iter().map(|d| (*d).to_owned()).collect(),
    })
}

fn cluster_ip(ready_pods: usize) -> Option<Backends> {
    Some(Backends::ClusterIp {
        dest: CLUSTER_IP.to_owned(),
        ready_pods,
    })
}

#[tokio::test]
async fn healthy_pods_ready_or_not_are_used() {
    let p = Script::new(&[("a:8012", OK), ("b:8012", OK), ("c:8012", OK)]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    let d = dests(&["a:8012", "b:8012"], &["c:8012"]);
    assert_eq!(h.round(&d, &p).await, pods(&["a:8012", "b:8012", "c:8012"]));
    assert!(!h.needs_reprobe(&d));
    // All healthy: the next round probes nothing and sends nothing.
    p.take_probed();
    assert_eq!(h.round(&d, &p).await, None);
    assert!(p.take_probed().is_empty());
}

#[tokio::test]
async fn without_probe_optimisation_only_ready_pods_count() {
    let p = Script::new(&[("a:8012", OK), ("c:8012", OK)]);
    let mut s = settings(MeshCompatibilityMode::Auto);
    s.optimize = false;
    let mut h = HealthSet::new(s);
    assert_eq!(
        h.round(&dests(&["a:8012"], &["c:8012"]), &p).await,
        pods(&["a:8012"])
    );
}

#[tokio::test]
async fn no_pods_means_no_backends_and_no_probes() {
    let p = Script::new(&[]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(h.round(&Dests::default(), &p).await, Some(Backends::None));
    assert!(p.take_probed().is_empty());
    assert_eq!(h.round(&Dests::default(), &p).await, None, "sent once");
}

#[tokio::test]
async fn every_pod_503_and_cluster_ip_healthy_switches_for_good() {
    let p = Script::new(&[("a:8012", MESH_503), ("b:8012", MESH_503)]).cluster_ip_ok(true);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    let d = dests(&["a:8012"], &["b:8012"]);
    assert_eq!(h.round(&d, &p).await, cluster_ip(1));
    assert!(!h.needs_reprobe(&d));
    // Pods recovering does not bring them back; ready-count changes do update.
    p.set("a:8012", OK);
    p.take_probed();
    let d2 = dests(&["a:8012", "b:8012"], &[]);
    assert_eq!(h.round(&d2, &p).await, cluster_ip(2));
    assert!(p.take_probed().is_empty(), "pods are no longer probed");
}

#[tokio::test]
async fn no_fallback_when_the_cluster_ip_fails_or_pods_are_not_meshed() {
    // 503 everywhere.
    let p = Script::new(&[("a:8012", MESH_503)]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(h.round(&dests(&["a:8012"], &[]), &p).await, None);
    // A transport error is no evidence either way.
    let p = Script::new(&[]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(h.round(&dests(&["a:8012"], &[]), &p).await, None);
    // A 404/500 means no mesh: keep trying pods, never the ClusterIP.
    let p = Script::new(&[("a:8012", NOT_MESH)]).cluster_ip_ok(true);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(h.round(&dests(&["a:8012"], &[]), &p).await, None);
    assert_eq!(*p.cluster_ip_probes.lock().unwrap(), 0);
    p.set("a:8012", OK);
    assert_eq!(
        h.round(&dests(&["a:8012"], &[]), &p).await,
        pods(&["a:8012"])
    );
}

#[tokio::test]
async fn missing_private_service_means_no_fallback() {
    let mut p = Script::new(&[("a:8012", MESH_503)]).cluster_ip_ok(true);
    p.cluster_ip = None;
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(h.round(&dests(&["a:8012"], &[]), &p).await, None);
}

#[tokio::test]
async fn passthrough_lb_never_falls_back() {
    let p = Script::new(&[("a:8012", MESH_503)]).cluster_ip_ok(true);
    let mut s = settings(MeshCompatibilityMode::Auto);
    s.passthrough_host = Some("rev-private.ns".to_owned());
    let mut h = HealthSet::new(s);
    let d = dests(&["a:8012"], &[]);
    assert_eq!(h.round(&d, &p).await, None);
    assert!(
        h.needs_reprobe(&d),
        "pods stay addressable and are re-probed"
    );
    assert_eq!(*p.cluster_ip_probes.lock().unwrap(), 0);
}

#[tokio::test]
async fn mesh_mode_enabled_uses_the_cluster_ip_only() {
    let p = Script::new(&[("a:8012", OK)]).cluster_ip_ok(true);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Enabled));
    assert_eq!(h.round(&dests(&["a:8012"], &[]), &p).await, cluster_ip(1));
    assert!(p.take_probed().is_empty());
}

#[tokio::test]
async fn mesh_mode_disabled_trusts_ready_pods_and_probes_the_rest() {
    let p = Script::new(&[("a:8012", MESH_503), ("c:8012", OK)]).cluster_ip_ok(true);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Disabled));
    assert_eq!(
        h.round(&dests(&["a:8012"], &["c:8012"]), &p).await,
        pods(&["a:8012", "c:8012"])
    );
    assert_eq!(p.take_probed(), ["c:8012"]);
    assert_eq!(*p.cluster_ip_probes.lock().unwrap(), 0);
}

#[tokio::test]
async fn ready_to_not_ready_forces_a_reprobe() {
    let p = Script::new(&[("a:8012", OK), ("b:8012", OK)]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    assert_eq!(
        h.round(&dests(&["a:8012", "b:8012"], &[]), &p).await,
        pods(&["a:8012", "b:8012"])
    );
    p.set("b:8012", MESH_503);
    p.take_probed();
    let d = dests(&["a:8012"], &["b:8012"]);
    assert_eq!(h.round(&d, &p).await, pods(&["a:8012"]));
    assert_eq!(p.take_probed(), ["b:8012"]);
    assert!(h.needs_reprobe(&d));
    p.set("b:8012", OK);
    assert_eq!(h.round(&d, &p).await, pods(&["a:8012", "b:8012"]));
}

#[tokio::test]
async fn one_failing_pod_is_left_out_until_it_recovers() {
    let p = Script::new(&[("a:8012", OK), ("b:8012", NOT_MESH)]);
    let mut h = HealthSet::new(settings(MeshCompatibilityMode::Auto));
    let d = dests(&["a:8012", "b:8012"], &[]);
    assert_eq!(h.round(&d, &p).await, pods(&["a:8012"]));
    p.take_probed();
    assert_eq!(h.round(&d, &p).await, None);
    assert_eq!(p.take_probed(), ["b:8012"], "only the unhealthy pod");
    p.set("b:8012", OK);
    assert_eq!(h.round(&d, &p).await, pods(&["a:8012", "b:8012"]));
}

// === the HTTP prober against a fake queue-proxy ===

#[tokio::test]
async fn http_probe_reads_the_queue_proxy_answer() {
    use kdp_proxy::pool::{PoolConfig, Target};
    let upstream = Upstream::new(&PoolConfig {
        target: Target::FromUri,
        max_idle_per_host: 10,
    });
    let pod = kdp_test_support::FakePod::start("p", [127, 0, 0, 1].into()).unwrap();
    let dest = pod.addr().to_string();
    let probe = |host| {
        let upstream = upstream.clone();
        let dest = dest.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), probe(&upstream, &dest, host))
                .await
                .unwrap()
        }
    };
    assert_eq!(probe(None).await, ProbeOutcome::Healthy);
    pod.set_ready(false);
    assert_eq!(
        probe(None).await,
        ProbeOutcome::Unhealthy { non_mesh: false }
    );
    pod.set_ready(true);
    let host = HeaderValue::from_static("rev-private.ns");
    assert_eq!(probe(Some(&host)).await, ProbeOutcome::Healthy);
    assert_eq!(pod.probes(), 3);
}
