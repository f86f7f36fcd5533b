//! The activator started the way `main` starts it ([`kdp_activator::start`]):
//! version gate, config-network, every cache including Services and the
//! Secret, TLS on 8112, profiling on 8008, mesh addressing and the ClusterIP
//! fallback, with pods on 127.0.0.x.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kdp_activator::env::Config;
use kdp_activator::{App, StartupError};
use kdp_test_support::tls::{Leaf, TestCa};
use kdp_test_support::{FakeApiServer, FakeAutoscaler, FakePod};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::harness::{env, eventually, kube_client as client};
use super::{REV, ip, private_endpoints, revision, send, send_to, served_by_name};

const NS: &str = "knative-serving";

pub(crate) struct Running {
    pub(crate) http1: SocketAddr,
    pub(crate) h2c: SocketAddr,
    pub(crate) https: Option<SocketAddr>,
    pub(crate) profiling: SocketAddr,
    pub(crate) api: FakeApiServer,
    _autoscaler: FakeAutoscaler,
    _stop: oneshot::Sender<()>,
}

fn config(autoscaler: &FakeAutoscaler) -> Config {
    let ports = [
        ("KDP_BIND_ADDRESS", "127.0.0.1"),
        ("KDP_HTTP1_PORT", "0"),
        ("KDP_H2C_PORT", "0"),
        ("KDP_HTTPS_PORT", "0"),
        ("PROFILING_PORT", "0"),
    ];
    Config::from_env(&env(autoscaler, &ports), None).unwrap()
}

fn config_map(name: &str, data: &[(&str, &str)]) -> Value {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": NS}, "data": data})
}

pub(crate) fn network(data: &[(&str, &str)]) -> Value {
    config_map("config-network", data)
}

/// `routing-serving-certs` with `leaf` as tls.crt/tls.key and `ca` as ca.crt.
pub(crate) fn secret(leaf: &Leaf, ca: Option<&TestCa>) -> Value {
    let mut data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(leaf.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(leaf.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(ca) = ca {
        data.insert("ca.crt".to_owned(), ByteString(ca.cert_pem().into_bytes()));
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("routing-serving-certs".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// The revision's private Service, with `clusterIP` and port `http`.
/// Revision `hello-00001` with one pod at `pod`, and its private Service
/// with `cluster_ip`.
fn behind_cluster_ip(api: &FakeApiServer, pod: SocketAddr, cluster_ip: SocketAddr) {
    api.apply(private_service("hello-00001", cluster_ip));
    api.apply(revision("hello-00001", 0, 300));
    api.apply(private_endpoints("hello-00001", &[pod]));
}

fn private_service(rev: &str, cluster_ip: SocketAddr) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": format!("{rev}-private"), "namespace": "default",
                        "labels": {"serving.knative.dev/revision": rev,
                                   "networking.internal.knative.dev/serviceType": "Private"}},
           "spec": {"clusterIP": cluster_ip.ip().to_string(),
                    "ports": [{"name": "http", "port": cluster_ip.port(), "targetPort": 8012}]}})
}

async fn boot(api: &FakeApiServer, autoscaler: &FakeAutoscaler) -> Result<App, StartupError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        kdp_activator::start(config(autoscaler), client(api), None),
    )
    .await
    .expect("startup does not hang")
}

/// Starts an activator against `api` (already holding config-network).
pub(crate) async fn run(api: FakeApiServer) -> Running {
    let autoscaler = FakeAutoscaler::start().await;
    let app = boot(&api, &autoscaler).await.unwrap();
    let http1 = app.http1_addr().unwrap();
    let h2c = app.h2c_addr().unwrap();
    let https = app.https_addr();
    let profiling = app.profiling_addr().unwrap();
    let (stop, rx) = oneshot::channel();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    Running {
        http1,
        h2c,
        https,
        profiling,
        api,
        _autoscaler: autoscaler,
        _stop: stop,
    }
}

#[tokio::test]
async fn missing_config_network_stops_startup() {
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    let err = boot(&api, &autoscaler).await.unwrap_err();
    assert!(matches!(err, StartupError::NetworkFetch(_)), "{err:?}");
    assert_eq!(err.to_string(), "Failed to fetch network config");
}

#[tokio::test]
async fn invalid_config_network_stops_startup() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("system-internal-tls", "sometimes")]));
    let autoscaler = FakeAutoscaler::start().await;
    let err = boot(&api, &autoscaler).await.unwrap_err();
    assert!(matches!(err, StartupError::NetworkInvalid(_)), "{err:?}");
}

#[tokio::test]
async fn old_kubernetes_is_refused_and_current_accepted() {
    let api = FakeApiServer::start().await;
    let min = kdp_activator::version::Version::parse("v1.34.0").unwrap();
    let kube = client(&api);
    let check = |timeout| kdp_activator::version::wait_for_minimum(&kube, &min, timeout);
    check(Duration::from_secs(5)).await.unwrap();
    api.set_version("1", "33", "v1.33.5");
    let err = check(Duration::from_millis(1500)).await.unwrap_err();
    assert!(
        err.to_string().contains("\"1.33.5\" is not compatible"),
        "{err}"
    );
    assert!(
        api.request_count("/version") >= 2,
        "asked again after a second"
    );
    api.set_version("1", "34", "v1.34.1-eks.2");
    check(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn startup_lists_services_and_the_secret_and_serves_404_on_profiling() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[]));
    let r = run(api).await;
    assert!(r.api.list_count("/api/v1/services") >= 1);
    assert!(
        r.api
            .list_count(&format!("/api/v1/namespaces/{NS}/secrets"))
            >= 1
    );
    assert!(r.https.is_none(), "no TLS port without system-internal-tls");
    for path in ["/debug/pprof/", "/debug/pprof/profile", "/"] {
        let got = send_to(r.profiling, path, &[]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (404, "404 page not found\n")
        );
    }
    // Revisions still work through the normal port.
    let got = send(r.http1, &[("k-network-probe", "activator")]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "activator"));
}

#[tokio::test]
async fn mesh_pod_addressability_sends_the_private_host() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("enable-mesh-pod-addressability", "true")]));
    let r = run(api).await;
    let pod = FakePod::start("pod-a", ip(40)).unwrap();
    r.api.apply(revision("hello-00001", 0, 300));
    r.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    let got = tokio::time::timeout(Duration::from_secs(10), send(r.http1, &REV))
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let seen = pod.served();
    assert_eq!(seen[0].headers["host"], "hello-00001-private.default");
    assert_eq!(seen[0].headers["k-passthrough-lb"], "true");
    assert!(seen[0].headers.get("k-original-host").is_some());
}

#[tokio::test]
async fn pods_that_look_meshed_fall_back_to_the_cluster_ip() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[]));
    let r = run(api).await;
    // The pod answers probes 503 (what a mesh sidecar does); the private
    // Service's ClusterIP answers them.
    let pod = FakePod::start("pod-a", ip(41)).unwrap();
    pod.set_ready(false);
    let cluster_ip = FakePod::start("cluster-ip", ip(42)).unwrap();
    behind_cluster_ip(&r.api, pod.addr(), cluster_ip.addr());
    let got = tokio::time::timeout(Duration::from_secs(10), send(r.http1, &REV))
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(served_by_name(&got), Some("cluster-ip"));
    // It stays there even once the pod answers.
    pod.set_ready(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = send(r.http1, &REV).await;
    assert_eq!(served_by_name(&got), Some("cluster-ip"));
    assert_eq!(pod.requests(), 0);
}

#[tokio::test]
async fn mesh_mode_enabled_always_uses_the_cluster_ip() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("mesh-compatibility-mode", "Enabled")]));
    let r = run(api).await;
    let pod = FakePod::start("pod-a", ip(43)).unwrap();
    let cluster_ip = FakePod::start("cluster-ip", ip(44)).unwrap();
    behind_cluster_ip(&r.api, pod.addr(), cluster_ip.addr());
    let got = tokio::time::timeout(Duration::from_secs(10), send(r.http1, &REV))
        .await
        .unwrap();
    assert_eq!(served_by_name(&got), Some("cluster-ip"));
    assert_eq!(pod.probes(), 0, "pods are not probed");
}

#[tokio::test]
async fn mesh_mode_disabled_never_falls_back() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("mesh-compatibility-mode", "disabled")]));
    let r = run(api).await;
    let pod = FakePod::start("pod-a", ip(45)).unwrap();
    pod.set_ready(false);
    let cluster_ip = FakePod::start("cluster-ip", ip(46)).unwrap();
    behind_cluster_ip(&r.api, pod.addr(), cluster_ip.addr());
    // The ready pod is trusted without a probe.
    let got = tokio::time::timeout(Duration::from_secs(10), send(r.http1, &REV))
        .await
        .unwrap();
    assert_eq!(served_by_name(&got), Some("pod-a"));
    assert_eq!(cluster_ip.probes(), 0);
}

// === TLS on 8112 ===

/// A TLS client trusting `ca`, offering `alpn`.
fn tls_client(ca: &TestCa, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut config = ca.client_config();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET /` with `K-Network-Probe: activator` over TLS; status, body and ALPN.
async fn tls_probe(
    addr: SocketAddr,
    ca: &TestCa,
    alpn: &'static [u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("data-plane.knative.dev").unwrap();
    let tls = tls_client(ca, &[alpn])
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let negotiated = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = Request::get("https://activator/")
        .header("k-network-probe", "activator")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = if negotiated == b"h2" {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = "/".parse().unwrap();
        parts.headers.insert("host", "activator".parse().unwrap());
        tx.send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| e.to_string())?
    };
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        negotiated,
    ))
}

#[tokio::test]
async fn tls_without_the_secret_stops_startup() {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("system-internal-tls", "enabled")]));
    let autoscaler = FakeAutoscaler::start().await;
    let err = boot(&api, &autoscaler).await.unwrap_err();
    assert!(matches!(err, StartupError::Certificate { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("knative-serving/routing-serving-certs")
    );
}

#[tokio::test]
async fn tls_port_serves_the_secret_and_follows_its_updates() {
    let ca = TestCa::new();
    let api = FakeApiServer::start().await;
    api.apply(network(&[("system-internal-tls", "Enabled")]));
    api.apply(secret(&ca.leaf(&["data-plane.knative.dev"]), Some(&ca)));
    let r = run(api).await;
    let https = r.https.expect("8112 is served with system-internal-tls");
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let (status, body, negotiated) = tls_probe(https, &ca, alpn).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "activator"));
        assert_eq!(negotiated, alpn);
    }
    // The plain ports stay open.
    assert_eq!(
        send(r.http1, &[("k-network-probe", "activator")])
            .await
            .status,
        200
    );
    // A new certificate from another CA replaces the old one without a restart.
    let ca2 = TestCa::new();
    r.api
        .apply(secret(&ca2.leaf(&["data-plane.knative.dev"]), Some(&ca2)));
    eventually("new certificate served", || async {
        tls_probe(https, &ca2, b"h2").await.is_ok()
    })
    .await;
    assert!(tls_probe(https, &ca, b"h2").await.is_err());
    // A broken update keeps the certificate in service.
    let mut broken = secret(&ca.leaf(&["data-plane.knative.dev"]), None);
    broken["data"]["tls.key"] = json!("");
    r.api.apply(broken);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tls_probe(https, &ca2, b"h2").await.is_ok());
}

#[tokio::test]
async fn upstream_trust_follows_the_secret_and_trust_bundles() {
    let (ca, bundle_ca) = (TestCa::new(), TestCa::new());
    let api = FakeApiServer::start().await;
    api.apply(network(&[("system-internal-tls", "enabled")]));
    api.apply(secret(&ca.leaf(&["data-plane.knative.dev"]), Some(&ca)));
    let autoscaler = FakeAutoscaler::start().await;
    let app = boot(&api, &autoscaler).await.unwrap();
    let trust = app.tls().unwrap().trust.clone();
    assert_eq!(trust.anchors(), 1, "ca.crt of the secret");
    let bundle = |name: &str, pem: &str| {
        let mut cm = config_map(name, &[("ca-bundle.pem", pem)]);
        cm["metadata"]["labels"] = json!({"networking.knative.dev/trust-bundle": "true"});
        cm
    };
    api.apply(bundle("my-bundle", &bundle_ca.cert_pem()));
    let t = trust.clone();
    eventually("bundle trusted", || {
        let n = t.anchors();
        async move { n == 2 }
    })
    .await;
    // An invalid bundle is skipped; the others still count.
    api.apply(bundle(
        "broken",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ));
    api.apply(config_map("unrelated", &[("x", "y")]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trust.anchors(), 2);
    api.delete("v1", "ConfigMap", NS, "my-bundle");
    let t = trust.clone();
    eventually("bundle dropped", || {
        let n = t.anchors();
        async move { n == 1 }
    })
    .await;
    drop(app);
}
