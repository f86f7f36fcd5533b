//! The install overlay and the queue-proxy container spec, checked against
//! what kdp's binaries read and serve.
//!
//! There is no cluster here, so the Knative side is test data written from
//! Knative v1.23's sources (`deploy/kustomize/testdata`): the release's
//! objects the overlay patches, and the pod Knative's controller builds for a
//! revision. The overlays are rendered by a small kustomize
//! (`kustomize.rs`), and by `kubectl kustomize` as well when kubectl is
//! installed. Then:
//!
//! * the overlays change the two images and nothing else;
//! * the activator Deployment's env parses with kdp's own parser, its ports
//!   are the ones kdp binds, its probes reach kdp's health check (checked on
//!   a live activator), and Knative's RBAC covers every watch kdp opens;
//! * the queue-proxy container Knative injects parses with kdp's parser, its
//!   ports are the ones kdp binds, and its readiness probe gets `200 queue`
//!   from a live queue-proxy;
//! * the Dockerfiles match (numeric user, entrypoint, exposed ports), and the
//!   operator docs name every env var the binaries read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

mod kustomize;

use kustomize::{by_key, diff, load_docs, render, repo_path};

const DEPLOYMENT: &str = "Deployment/knative-serving/activator";
const SERVICE: &str = "Service/knative-serving/activator-service";
const CONFIG_DEPLOYMENT: &str = "ConfigMap/knative-serving/config-deployment";
const IMAGE_CACHE: &str = "Image/knative-serving/queue-proxy";
const QP_IMAGE: &str = "ghcr.io/kdp-project/queue-proxy";
const ACTIVATOR_IMAGE: &str = "ghcr.io/kdp-project/activator";

/// A kubelet's User-Agent (`kube-probe/<major>.<minor>`).
const KUBELET_UA: &str = "kube-probe/1.34";

fn overlay(name: &str) -> BTreeMap<String, Value> {
    by_key(render(&repo_path(&format!("deploy/kustomize/{name}"))))
}

fn release() -> BTreeMap<String, Value> {
    by_key(load_docs(&repo_path(kustomize::RELEASE_EXCERPT)))
}

/// The `newTag` the overlay's `images:` gives `name`.
fn overlay_tag(overlay: &str, name: &str) -> String {
    let k = &load_docs(&repo_path(&format!(
        "deploy/kustomize/{overlay}/kustomization.yaml"
    )))[0];
    k["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == name)
        .and_then(|i| i["newTag"].as_str())
        .unwrap_or_else(|| panic!("{overlay} sets a tag for {name}"))
        .to_owned()
}

fn container<'v>(pod_spec: &'v Value, name: &str) -> &'v Value {
    pod_spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

fn activator_container(objects: &BTreeMap<String, Value>) -> &Value {
    container(
        &objects[DEPLOYMENT]["spec"]["template"]["spec"],
        "activator",
    )
}

/// The environment a container gets, downward-API fields filled the way the
/// kubelet fills them for this pod.
fn container_env(c: &Value, pod_name: &str, namespace: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for var in c["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = var.get("value") {
            v.as_str().expect("env values are strings").to_owned()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod_name.to_owned(),
                Some("metadata.namespace") => namespace.to_owned(),
                Some("status.podIP") => "10.244.1.23".to_owned(),
                Some("status.hostIP") => "172.18.0.2".to_owned(),
                other => panic!("{name}: unexpected env source {other:?}"),
            }
        };
        env.insert(name, value);
    }
    env
}

fn ports(c: &Value) -> BTreeMap<String, u16> {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().expect("named port").to_owned(),
                u16::try_from(p["containerPort"].as_u64().expect("port")).expect("u16"),
            )
        })
        .collect()
}

fn probe_port(probe: &Value) -> u16 {
    u16::try_from(
        probe["httpGet"]["port"]
            .as_u64()
            .expect("numeric probe port"),
    )
    .expect("u16")
}

/// Sends one HTTP/1.1 GET and returns (status, headers, body) as text.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_owned(), body.to_owned())
}

// ---------------------------------------------------------------- overlays

#[test]
fn full_overlay_swaps_the_two_images_and_nothing_else() {
    let base = release();
    let full = overlay("full");
    assert_eq!(
        base.keys().collect::<Vec<_>>(),
        full.keys().collect::<Vec<_>>(),
        "the overlay adds or drops no object"
    );
    let tag_qp = overlay_tag("full", QP_IMAGE);
    let tag_act = overlay_tag("full", ACTIVATOR_IMAGE);
    let mut changed = BTreeSet::new();
    for (k, obj) in &base {
        for path in diff(obj, &full[k]) {
            changed.insert(format!("{k} {path}"));
        }
    }
    let expected: BTreeSet<String> = [
        format!("{CONFIG_DEPLOYMENT} data.queue-sidecar-image"),
        format!("{IMAGE_CACHE} spec.image"),
        format!("{DEPLOYMENT} spec.template.spec.containers[name=activator].image"),
    ]
    .into();
    assert_eq!(changed, expected);
    assert_eq!(
        full[CONFIG_DEPLOYMENT]["data"]["queue-sidecar-image"],
        format!("{QP_IMAGE}:{tag_qp}")
    );
    assert_eq!(
        full[IMAGE_CACHE]["spec"]["image"],
        format!("{QP_IMAGE}:{tag_qp}")
    );
    assert_eq!(
        activator_container(&full)["image"],
        format!("{ACTIVATOR_IMAGE}:{tag_act}")
    );
}

#[test]
fn queue_proxy_only_overlay_leaves_the_activator_alone() {
    let base = release();
    let qp = overlay("queue-proxy-only");
    let mut changed = BTreeSet::new();
    for (k, obj) in &base {
        for path in diff(obj, &qp[k]) {
            changed.insert(format!("{k} {path}"));
        }
    }
    let expected: BTreeSet<String> = [
        format!("{CONFIG_DEPLOYMENT} data.queue-sidecar-image"),
        format!("{IMAGE_CACHE} spec.image"),
    ]
    .into();
    assert_eq!(changed, expected);
    assert_eq!(qp[DEPLOYMENT], base[DEPLOYMENT]);
    let tag = overlay_tag("queue-proxy-only", QP_IMAGE);
    assert_eq!(
        qp[CONFIG_DEPLOYMENT]["data"]["queue-sidecar-image"],
        format!("{QP_IMAGE}:{tag}")
    );
}

#[test]
fn kubectl_kustomize_renders_what_the_test_renderer_renders() {
    for name in ["full", "queue-proxy-only"] {
        let Some(real) = kustomize::kubectl_render(name) else {
            // kubectl is not installed: the renderer above is the only check.
            return;
        };
        assert_eq!(by_key(real), overlay(name), "overlay {name}");
    }
}

#[test]
fn base_is_the_pinned_knative_release() {
    let k = &load_docs(&repo_path("deploy/kustomize/base/kustomization.yaml"))[0];
    assert_eq!(
        k["resources"],
        serde_json::json!([kustomize::KNATIVE_RELEASE_URL])
    );
    let install = std::fs::read_to_string(repo_path("docs/install.md")).unwrap();
    assert!(
        install.contains("knative-v1.23.0"),
        "docs/install.md names the release"
    );
}

#[test]
fn image_names_split_like_kustomize() {
    use kustomize::split_image;
    assert_eq!(
        split_image("gcr.io/a/b@sha256:00"),
        ("gcr.io/a/b", None, Some("sha256:00"))
    );
    assert_eq!(
        split_image("localhost:5000/qp:v1"),
        ("localhost:5000/qp", Some("v1"), None)
    );
    assert_eq!(
        split_image("localhost:5000/qp"),
        ("localhost:5000/qp", None, None)
    );
}

// ---------------------------------------------------------------- activator

fn activator_config(objects: &BTreeMap<String, Value>) -> kdp_activator::env::Config {
    let env = container_env(
        activator_container(objects),
        "activator-7d9f8b6c5-abcde",
        "knative-serving",
    );
    let resolv = "search knative-serving.svc.cluster.local svc.cluster.local cluster.local\n";
    kdp_activator::env::Config::from_env(&env, Some(resolv))
        .unwrap_or_else(|e| panic!("the activator Deployment's env must parse: {e}"))
}

#[test]
fn activator_env_is_what_kdp_reads() {
    use kdp_activator::env as a;
    let full = overlay("full");
    let c = activator_container(&full);
    let env = container_env(c, "activator-7d9f8b6c5-abcde", "knative-serving");
    let cfg = activator_config(&full);
    assert_eq!(cfg.pod_name, "activator-7d9f8b6c5-abcde");
    assert_eq!(cfg.pod_ip, "10.244.1.23");
    assert_eq!(cfg.system_namespace, "knative-serving");
    assert_eq!(cfg.config_logging_name, "config-logging");
    assert_eq!(cfg.config_observability_name, "config-observability");
    assert_eq!(
        cfg.autoscaler_url,
        "ws://autoscaler.knative-serving.svc.cluster.local:8080"
    );
    // The variables kdp cannot start without are exactly Knative's three,
    // and the manifest sets each of them.
    let resolv = Some("search svc.cluster.local\n");
    let mut required = BTreeSet::new();
    for var in env.keys() {
        let mut less = env.clone();
        less.remove(var);
        if kdp_activator::env::Config::from_env(&less, resolv).is_err() {
            required.insert(var.as_str());
        }
    }
    assert_eq!(
        required,
        BTreeSet::from([a::ENV_POD_NAME, a::ENV_POD_IP, a::ENV_SYSTEM_NAMESPACE])
    );
    // Nothing kdp-only is needed in a cluster.
    assert!(env.keys().all(|k| !k.starts_with("KDP_")), "{env:?}");
}

#[test]
fn activator_ports_are_the_ones_kdp_listens_on() {
    let full = overlay("full");
    let cfg = activator_config(&full);
    let declared = ports(activator_container(&full));
    assert_eq!(declared["http1"], cfg.http1_port);
    assert_eq!(declared["h2c"], cfg.h2c_port);
    // The Service sends its `http`/`http2` ports to those two.
    let svc: BTreeMap<String, u64> = full[SERVICE]["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["targetPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(svc["http"], u64::from(cfg.http1_port));
    assert_eq!(svc["http2"], u64::from(cfg.h2c_port));
    // Declared ports kdp does not serve yet are listed as differences.
    let compat = std::fs::read_to_string(repo_path("docs/compatibility.md")).unwrap();
    for port in declared
        .values()
        .copied()
        .chain([u16::try_from(svc["https"]).unwrap()])
    {
        if port != cfg.http1_port && port != cfg.h2c_port {
            assert!(
                compat.contains(&port.to_string()),
                "docs/compatibility.md must say that the activator does not serve {port}"
            );
        }
    }
}

#[test]
fn activator_probes_target_a_served_port_with_the_kubelet_user_agent() {
    let full = overlay("full");
    let cfg = activator_config(&full);
    let c = activator_container(&full);
    for which in ["readinessProbe", "livenessProbe"] {
        let probe = &c[which];
        let port = probe_port(probe);
        assert!(
            port == cfg.http1_port || port == cfg.h2c_port,
            "{which} targets {port}"
        );
        assert!(probe["httpGet"]["scheme"].is_null() || probe["httpGet"]["scheme"] == "HTTP");
        // kubelet's own User-Agent is what marks the request as a health check.
        let mut headers = vec![("user-agent", KUBELET_UA)];
        for h in probe["httpGet"]["httpHeaders"]
            .as_array()
            .into_iter()
            .flatten()
        {
            headers.push((h["name"].as_str().unwrap(), h["value"].as_str().unwrap()));
        }
        let map = header_map(&headers);
        assert!(kdp_core::header::is_kubelet_probe(&map), "{which}");
    }
}

fn header_map(headers: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

#[tokio::test]
async fn activator_answers_the_manifest_probes_live() {
    let full = overlay("full");
    let mut cfg = activator_config(&full);
    let c = activator_container(&full).clone();
    let autoscaler = kdp_test_support::FakeAutoscaler::start().await;
    // Same configuration, on loopback and ephemeral ports.
    cfg.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let by_port = BTreeMap::from([(cfg.http1_port, "http1"), (cfg.h2c_port, "h2c")]);
    cfg.http1_port = 0;
    cfg.h2c_port = 0;
    cfg.autoscaler_url = autoscaler.url();
    cfg.drain_timeout = Duration::ZERO;
    let listeners = kdp_activator::Listeners::bind(&cfg).await.unwrap();
    let app = kdp_activator::App::build(
        cfg,
        listeners,
        kdp_activator::cluster::Observability::default(),
    );
    let addrs = BTreeMap::from([
        ("http1", app.http1_addr().unwrap()),
        ("h2c", app.h2c_addr().unwrap()),
    ]);
    tokio::time::timeout(Duration::from_secs(10), app.autoscaler_connected())
        .await
        .expect("the activator connects to the autoscaler");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run(async {
        let _ = stop_rx.await;
    }));
    for which in ["readinessProbe", "livenessProbe"] {
        let probe = &c[which];
        let addr = addrs[by_port[&probe_port(probe)]];
        let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
        let (status, _, body) = get(addr, path, &[("User-Agent", KUBELET_UA)]).await;
        assert_eq!((status, body.as_str()), (200, ""), "{which}");
    }
    // The autoscaler's "is the activator in the path" probe.
    let (status, _, body) = get(
        addrs["http1"],
        "//healthz",
        &[
            ("User-Agent", "Knative-Autoscaling-Probe"),
            ("K-Network-Probe", "activator"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "activator"));
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("drains")
        .unwrap();
}

/// What kdp's activator watches (activator/src/cluster.rs), as RBAC rules:
/// (API group, resource, cluster-wide?).
const ACTIVATOR_WATCHES: &[(&str, &str, bool)] = &[
    ("serving.knative.dev", "revisions", true),
    ("", "endpoints", true),
    ("", "configmaps", false),
    ("", "services", true),
    ("", "secrets", false),
];

#[test]
fn knatives_activator_rbac_covers_every_watch_kdp_opens() {
    let full = overlay("full");
    let cluster_role = &full["ClusterRole//knative-serving-activator-cluster"];
    let role = &full["Role/knative-serving/knative-serving-activator"];
    let allows = |rules: &Value, group: &str, resource: &str| {
        rules["rules"].as_array().unwrap().iter().any(|r| {
            let has = |field: &str, v: &str| {
                r[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == v || x == "*")
            };
            r["resourceNames"].is_null()
                && has("apiGroups", group)
                && has("resources", resource)
                && has("verbs", "list")
                && has("verbs", "watch")
        })
    };
    for (group, resource, cluster_wide) in ACTIVATOR_WATCHES {
        let ok = allows(cluster_role, group, resource)
            || (!cluster_wide && allows(role, group, resource));
        assert!(ok, "RBAC must allow list/watch on {group}/{resource}");
    }
    // The overlay touches no RBAC.
    let base = release();
    for k in [
        "ClusterRole//knative-serving-activator-cluster",
        "Role/knative-serving/knative-serving-activator",
    ] {
        assert_eq!(full[k], base[k], "{k}");
    }
}

#[test]
fn activator_security_context_fits_the_image() {
    let full = overlay("full");
    let sc = &activator_container(&full)["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let df = Dockerfile::read("deploy/activator.Dockerfile");
    df.check_runtime("kdp-activator", "activator");
    let cfg = activator_config(&full);
    assert!(df.exposes(cfg.http1_port) && df.exposes(cfg.h2c_port));
    assert!(
        ports(activator_container(&full))
            .values()
            .all(|p| *p >= 1024)
    );
}

// ---------------------------------------------------------------- queue-proxy

const QP_POD: &str = "deploy/kustomize/testdata/queue-proxy-pod.yaml";

fn qp_pod() -> Value {
    load_docs(&repo_path(QP_POD)).remove(0)
}

fn qp_env(pod: &Value) -> HashMap<String, String> {
    container_env(
        container(&pod["spec"], "queue-proxy"),
        pod["metadata"]["name"].as_str().unwrap(),
        pod["metadata"]["namespace"].as_str().unwrap(),
    )
}

fn qp_config(env: &HashMap<String, String>) -> kdp_queue_proxy::env::Config {
    kdp_queue_proxy::env::Config::from_env(env)
        .unwrap_or_else(|e| panic!("the controller's queue-proxy env must parse: {e}"))
}

#[test]
fn controller_queue_proxy_env_parses() {
    let pod = qp_pod();
    let cfg = qp_config(&qp_env(&pod));
    assert_eq!(cfg.container_concurrency, 0);
    assert_eq!(cfg.serving_port, 8012);
    assert_eq!(cfg.tls_port, 8112);
    assert_eq!(cfg.user_port, 8080);
    assert_eq!(cfg.revision_timeout, Duration::from_secs(300));
    assert_eq!(cfg.response_start_timeout, None);
    assert_eq!(cfg.idle_timeout, None);
    assert_eq!(cfg.revision.pod, "hello-00001-deployment-5d7c9b8f6-x2x7q");
    assert_eq!(cfg.revision.pod_ip, "10.244.1.23");
    assert_eq!(cfg.revision.service, "hello");
    assert!(!cfg.observability.prometheus_request_metrics());
    assert_eq!(cfg.cert_dir, std::path::Path::new("/var/lib/knative/certs"));
}

#[test]
fn controller_queue_proxy_env_is_all_known_to_kdp() {
    use kdp_queue_proxy::env as q;
    let read_by_kdp = BTreeSet::from([
        q::ENV_CONTAINER_CONCURRENCY,
        q::ENV_QUEUE_SERVING_PORT,
        q::ENV_QUEUE_SERVING_TLS_PORT,
        q::ENV_USER_PORT,
        q::ENV_REVISION_TIMEOUT_SECONDS,
        q::ENV_REVISION_RESPONSE_START_TIMEOUT_SECONDS,
        q::ENV_REVISION_IDLE_TIMEOUT_SECONDS,
        q::ENV_SERVING_READINESS_PROBE,
        q::ENV_ENABLE_HTTP_FULL_DUPLEX,
        q::ENV_ENABLE_HTTP2_AUTO_DETECTION,
        q::ENV_ENABLE_MULTI_CONTAINER_PROBES,
        q::ENV_SERVING_LOGGING_CONFIG,
        q::ENV_SERVING_LOGGING_LEVEL,
        q::ENV_SERVING_NAMESPACE,
        q::ENV_SERVING_SERVICE,
        q::ENV_SERVING_CONFIGURATION,
        q::ENV_SERVING_REVISION,
        q::ENV_SERVING_POD,
        q::ENV_SERVING_POD_IP,
        q::ENV_OBSERVABILITY_CONFIG,
        "QUEUE_PROXY_TLS_MIN_VERSION",
        "QUEUE_PROXY_TLS_MAX_VERSION",
        "QUEUE_PROXY_TLS_CIPHER_SUITES",
        "QUEUE_PROXY_TLS_CURVE_PREFERENCES",
    ]);
    // Set by the controller for Go extensions; Knative's core ignores them too.
    let ignored = BTreeSet::from(["SYSTEM_NAMESPACE", "HOST_IP", "ROOT_CA"]);
    let env = qp_env(&qp_pod());
    for var in env.keys() {
        assert!(
            read_by_kdp.contains(var.as_str()) || ignored.contains(var.as_str()),
            "{var} is injected by Knative but unknown to kdp"
        );
    }
    // Every variable kdp requires is injected.
    let mut required = BTreeSet::new();
    for var in env.keys() {
        let mut less = env.clone();
        less.remove(var);
        if kdp_queue_proxy::env::Config::from_env(&less).is_err() {
            required.insert(var.as_str());
        }
    }
    for var in &required {
        assert!(read_by_kdp.contains(var), "{var}");
    }
    assert!(required.contains(q::ENV_SERVING_POD) && required.contains(q::ENV_USER_PORT));
    assert!(env.keys().all(|k| !k.starts_with("KDP_")));
}

#[test]
fn controller_variants_parse_h2c_and_prometheus() {
    let mut env = qp_env(&qp_pod());
    // An h2c revision: serving port 8013, still named queue-port.
    env.insert("QUEUE_SERVING_PORT".into(), "8013".into());
    // request-metrics-protocol: prometheus, tracing on, request log on.
    env.insert(
        "OBSERVABILITY_CONFIG".into(),
        r#"{"tracing":{"protocol":"grpc","endpoint":"otel-collector.observability:4317","samplingRate":0.1},"metrics":{"protocol":"prometheus","exportInterval":30000000000},"runtime":{"profiling":"enabled","exportInterval":15000000000},"requestMetrics":{"protocol":"prometheus"},"enableRequestLog":true,"enableProbeRequestLog":false}"#.into(),
    );
    env.insert("CONTAINER_CONCURRENCY".into(), "10".into());
    env.insert("SERVING_LOGGING_LEVEL".into(), "debug".into());
    env.insert("ENABLE_HTTP_FULL_DUPLEX".into(), "true".into());
    env.insert("QUEUE_PROXY_TLS_MIN_VERSION".into(), "1.2".into());
    env.insert(
        "QUEUE_PROXY_TLS_CIPHER_SUITES".into(),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
    );
    let cfg = qp_config(&env);
    assert_eq!(cfg.serving_port, 8013);
    assert_eq!(cfg.container_concurrency, 10);
    assert!(cfg.observability.prometheus_request_metrics());
    assert_eq!(cfg.user_metrics_port, 9091);
}

#[test]
fn queue_proxy_ports_are_the_ones_kdp_listens_on() {
    let pod = qp_pod();
    let cfg = qp_config(&qp_env(&pod));
    let declared = ports(container(&pod["spec"], "queue-proxy"));
    assert_eq!(declared["queue-port"], cfg.serving_port);
    assert_eq!(declared["https-port"], cfg.tls_port);
    assert_eq!(declared["http-autometric"], cfg.metrics_port);
    assert_eq!(declared["http-usermetric"], cfg.user_metrics_port);
    // The user container's preStop hook waits on the admin port.
    let pre_stop = &container(&pod["spec"], "user-container")["lifecycle"]["preStop"]["httpGet"];
    assert_eq!(pre_stop["port"], u64::from(cfg.admin_port));
    assert_eq!(pre_stop["path"], "/wait-for-drain");
    // Every port the image exposes is one of these.
    let df = Dockerfile::read("deploy/queue-proxy.Dockerfile");
    for p in [
        cfg.serving_port,
        8013,
        cfg.tls_port,
        cfg.admin_port,
        cfg.metrics_port,
        cfg.user_metrics_port,
    ] {
        assert!(df.exposes(p), "queue-proxy.Dockerfile must EXPOSE {p}");
    }
}

#[test]
fn queue_proxy_readiness_probe_is_a_kdp_health_check() {
    let pod = qp_pod();
    let c = container(&pod["spec"], "queue-proxy");
    let cfg = qp_config(&qp_env(&pod));
    let probe = &c["readinessProbe"];
    assert_eq!(probe_port(probe), cfg.serving_port);
    let mut headers = vec![("user-agent", KUBELET_UA)];
    for h in probe["httpGet"]["httpHeaders"].as_array().unwrap() {
        headers.push((h["name"].as_str().unwrap(), h["value"].as_str().unwrap()));
    }
    let map = header_map(&headers);
    assert!(kdp_core::header::is_health_check_user_agent(
        map["user-agent"].as_bytes()
    ));
    assert_eq!(
        map[&kdp_core::header::K_NETWORK_PROBE],
        kdp_core::header::PROBE_QUEUE
    );
    assert!(c["livenessProbe"].is_null() && c["startupProbe"].is_null());
}

#[tokio::test]
async fn queue_proxy_answers_the_controllers_readiness_probe_live() {
    let pod = qp_pod();
    let c = container(&pod["spec"], "queue-proxy").clone();
    let env = qp_env(&pod);
    let mut cfg = qp_config(&env);
    // A user container that accepts connections (the probe is tcpSocket).
    let user = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let user_port = user.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = user.accept().await {
            drop(tcp);
        }
    });
    // Same configuration, on loopback and ephemeral ports.
    assert_eq!(
        cfg.readiness_probe,
        format!(
            r#"{{"tcpSocket":{{"port":{},"host":"127.0.0.1"}},"successThreshold":1}}"#,
            cfg.user_port
        )
    );
    cfg.readiness_probe = cfg
        .readiness_probe
        .replace(&cfg.user_port.to_string(), &user_port.to_string());
    cfg.user_port = user_port;
    cfg.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(probe_port(&c["readinessProbe"]), cfg.serving_port);
    cfg.serving_port = 0;
    cfg.admin_port = 0;
    cfg.metrics_port = 0;
    cfg.drain_quiet_period = Duration::ZERO;
    cfg.cert_dir = std::env::temp_dir().join("kdp-deploy-test-no-certs");
    let listeners = kdp_queue_proxy::Listeners::bind(&cfg).await.unwrap();
    let app = kdp_queue_proxy::App::build(cfg, listeners).unwrap();
    let main = app.main_addr().unwrap();
    let metrics = app.metrics_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run(async {
        let _ = stop_rx.await;
    }));
    let mut headers = vec![("User-Agent", KUBELET_UA)];
    for h in c["readinessProbe"]["httpGet"]["httpHeaders"]
        .as_array()
        .unwrap()
    {
        headers.push((h["name"].as_str().unwrap(), h["value"].as_str().unwrap()));
    }
    let path = c["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap_or("/");
    let (status, _, body) = get(main, path, &headers).await;
    assert_eq!((status, body.as_str()), (200, "queue"));
    // The autoscaler's scrape of http-autometric.
    let (status, head, _) = get(metrics, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/protobuf"),
        "{head}"
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("drains")
        .unwrap();
}

// ---------------------------------------------------------------- images and docs

/// The final stage of a Dockerfile, continuation lines joined.
struct Dockerfile {
    path: String,
    build: Vec<String>,
    runtime: Vec<String>,
}

impl Dockerfile {
    fn read(rel: &str) -> Self {
        let text = std::fs::read_to_string(repo_path(rel)).unwrap();
        let mut lines = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            if let Some(cont) = trimmed.strip_suffix('\\') {
                current.push_str(cont);
                current.push(' ');
            } else {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
        let last_from = lines
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .expect("a FROM");
        let runtime = lines.split_off(last_from);
        Self {
            path: rel.to_owned(),
            build: lines,
            runtime,
        }
    }

    fn instr(&self, name: &str) -> Vec<&str> {
        self.runtime
            .iter()
            .filter_map(|l| l.strip_prefix(name).map(str::trim))
            .collect()
    }

    fn exposes(&self, port: u16) -> bool {
        self.instr("EXPOSE ")
            .iter()
            .flat_map(|l| l.split_whitespace())
            .any(|p| p == port.to_string())
    }

    /// Multi-stage, `--locked` release build of `package` with glibc linked
    /// statically (as scripts/build-release.sh builds what CI checks),
    /// distroless runtime with the builder's glibc, numeric non-root user,
    /// exec-form entrypoint on the copied binary.
    fn check_runtime(&self, package: &str, binary: &str) {
        let path = &self.path;
        let build = self.build.join("\n");
        assert!(build.contains("FROM rust:1.95-bookworm"), "{path}");
        assert!(
            build.contains(&format!(
                "cargo build --release --locked --target \"$host\" -p {package}"
            )),
            "{path}"
        );
        assert!(
            build.contains("RUSTFLAGS=\"-C target-feature=+crt-static\""),
            "{path}: static glibc"
        );
        assert!(
            build.contains(&format!("\"target/$host/release/{binary}\" ")),
            "{path}"
        );
        assert_eq!(
            self.runtime[0], "FROM gcr.io/distroless/cc-debian12:nonroot",
            "{path}"
        );
        let user = self.instr("USER ");
        let [user] = user.as_slice() else {
            panic!("{path}: one USER")
        };
        let uid: u32 = user
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{path}: USER must be numeric for runAsNonRoot"));
        assert_ne!(uid, 0, "{path}");
        let entry = self.instr("ENTRYPOINT ");
        let [entry] = entry.as_slice() else {
            panic!("{path}: one ENTRYPOINT")
        };
        let entry: Vec<String> =
            serde_json::from_str(entry).expect("exec-form ENTRYPOINT: there is no shell");
        let copied = self
            .instr("COPY ")
            .iter()
            .any(|c| c.starts_with("--from=") && c.ends_with(&format!(" {}", entry[0])));
        assert!(
            copied,
            "{path}: ENTRYPOINT {} is the copied binary",
            entry[0]
        );
        assert!(
            entry[0].ends_with(&format!("/{binary}")),
            "{path}: {entry:?}"
        );
    }
}

#[test]
fn queue_proxy_dockerfile_fits_the_controllers_container() {
    let df = Dockerfile::read("deploy/queue-proxy.Dockerfile");
    df.check_runtime("kdp-queue-proxy", "queue-proxy");
    // The controller's security context needs nothing else from the image.
    let pod = qp_pod();
    let sc = &container(&pod["spec"], "queue-proxy")["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(df.instr("VOLUME ").is_empty(), "nothing is written to disk");
}

/// The string values of `pub const ENV_*` in a source file.
fn env_consts(rel: &str) -> Vec<String> {
    let src = std::fs::read_to_string(repo_path(rel)).unwrap();
    let mut out = Vec::new();
    let mut pending = false;
    for line in src.lines() {
        let line = line.trim();
        if line.starts_with("pub const ENV_") {
            pending = true;
        }
        if pending && let Some(start) = line.find('"') {
            let rest = &line[start + 1..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
            pending = false;
        }
    }
    out
}

#[test]
fn tuning_doc_names_every_env_var_the_binaries_read() {
    let tuning = std::fs::read_to_string(repo_path("docs/tuning.md")).unwrap();
    let qp = env_consts("queue-proxy/src/env.rs");
    let act = env_consts("activator/src/env.rs");
    assert!(qp.len() > 20 && act.len() > 10, "{qp:?} {act:?}");
    let tls = [
        "MIN_VERSION",
        "MAX_VERSION",
        "CIPHER_SUITES",
        "CURVE_PREFERENCES",
    ]
    .map(|s| format!("QUEUE_PROXY_TLS_{s}"));
    for var in qp.iter().chain(&act).chain(&tls) {
        assert!(
            tuning.contains(&format!("`{var}`")),
            "docs/tuning.md must document `{var}`"
        );
    }
}
