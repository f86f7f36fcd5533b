//! The activator seen from outside: the fake API server for Kubernetes, the
//! fake autoscaler for stats, fake queue-proxy pods on 127.0.0.x addresses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "test code"
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kdp_test_support::FakePod;
use kdp_test_support::client::{Got, get};
use kdp_test_support::upstream::served_by;

mod binary;
#[allow(dead_code, reason = "the harness serves both test binaries")]
#[path = "../common/harness.rs"]
mod harness;
mod startup;
mod upstream_tls;

use harness::{Activator, REV, private_endpoints, revision};

/// `GET /path?x=1` on `addr`.
async fn send(addr: SocketAddr, headers: &[(&str, &str)]) -> Got {
    send_to(addr, "/path?x=1", headers).await
}

/// `GET path` on `addr`.
async fn send_to(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    get(&format!("http://{addr}{path}"), headers).await
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test]
async fn health_follows_the_autoscaler_connection() {
    let h = Activator::start(&[]).await;
    h.autoscaler
        .wait_for_connections(1, Duration::from_secs(5))
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if send(h.http1, &[("user-agent", "kube-probe/1.30")])
            .await
            .status
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "healthy once connected");
    h.autoscaler.kill();
    let mut unhealthy = None;
    for _ in 0..200 {
        let got = send(h.http1, &[("user-agent", "kube-probe/1.30")]).await;
        if got.status == 500 {
            unhealthy = Some(got.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        unhealthy.as_deref(),
        Some("connection has not yet been established\n")
    );
    h.autoscaler.restart().unwrap();
    h.autoscaler
        .wait_for_connections(2, Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test]
async fn probes_are_answered_without_a_revision() {
    let h = Activator::start(&[]).await;
    let got = send(
        h.http1,
        &[
            ("k-network-probe", "activator"),
            ("user-agent", "Knative-Autoscaling-Probe"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "activator"));
    let got = send(h.http1, &[("k-network-probe", "queue")]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (400, "unexpected probe header value: \"queue\"\n")
    );
    let got = send(
        h.http1,
        &[("k-network-probe", "probe"), ("k-network-hash", "h1")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["k-network-hash"], "h1");
    let got = send(h.http1, &[("k-network-probe", "probe")]).await;
    assert_eq!(
        got.body,
        "a probe request must contain a non-empty \"K-Network-Hash\" header\n"
    );
}

#[tokio::test]
async fn unknown_revision_is_404() {
    let h = Activator::start(&[]).await;
    let got = send(
        h.http1,
        &[
            ("knative-serving-namespace", "default"),
            ("knative-serving-revision", "fooname"),
        ],
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.body,
        "Error getting active endpoint: revision.serving.knative.dev \"fooname\" not found\n"
    );
}

#[tokio::test]
async fn scale_from_zero_holds_pokes_and_releases() {
    let h = Activator::start(&[]).await;
    h.autoscaler
        .wait_for_connections(1, Duration::from_secs(5))
        .await
        .unwrap();
    h.api.apply(revision("hello-00001", 0, 300));
    h.api.apply(private_endpoints("hello-00001", &[]));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let addr = h.http1;
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { send(addr, &REV).await }))
        .collect();
    // The poke goes out at once, while the requests are still held.
    let frames = h
        .autoscaler
        .wait_for_frames(1, Duration::from_secs(2))
        .await
        .unwrap();
    let stat = frames[0].message.messages[0].stat.clone().unwrap();
    assert_eq!(frames[0].message.messages[0].name, "hello-00001");
    assert_eq!(
        (stat.average_concurrent_requests, stat.request_count),
        (1.0, 1.0)
    );
    assert_eq!(stat.pod_name, "activator-abc");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        held.iter().all(|t| !t.is_finished()),
        "held while no pod is ready"
    );

    let pod = FakePod::start("pod-a", ip(2)).unwrap();
    h.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    for t in held {
        let got = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(served_by_name(&got), Some("pod-a"));
    }
    let seen = pod.served();
    assert_eq!(seen.len(), 3);
    let headers = &seen[0].headers;
    assert_eq!(headers["k-proxy-request"], "activator");
    assert_eq!(headers["host"], pod.addr().to_string());
    assert!(headers.get("k-original-host").is_some());
    assert!(headers.get("knative-serving-revision").is_none());
    assert!(pod.probes() >= 1, "the pod was probed before traffic");
}

fn served_by_name(got: &Got) -> Option<&str> {
    got.headers
        .get(kdp_test_support::upstream::POD_HEADER)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cc1_spreads_over_distinct_pods() {
    let h = Activator::start(&[]).await;
    let pods: Vec<FakePod> = (0..5)
        .map(|i| FakePod::start(format!("pod-{i}"), ip(10 + i)).unwrap())
        .collect();
    for p in &pods {
        p.set_delay(Duration::from_millis(300));
    }
    h.api.apply(revision("hello-00001", 1, 300));
    h.api.apply(private_endpoints(
        "hello-00001",
        &pods.iter().map(FakePod::addr).collect::<Vec<_>>(),
    ));
    // Wait until every pod has been probed healthy.
    for _ in 0..200 {
        if pods.iter().all(|p| p.probes() > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.http1;
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { send(addr, &REV).await }))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.status, 200);
        names.insert(served_by_name(&got).unwrap().to_owned());
    }
    assert_eq!(
        names.len(),
        5,
        "each concurrent request on its own pod: {names:?}"
    );
    let _ = served_by::<()>;
}

#[tokio::test]
async fn queue_full_is_503_with_retry_after() {
    let h = Activator::start(&[("KDP_MAX_QUEUED_PER_REVISION", "2")]).await;
    h.api.apply(revision("hello-00001", 0, 300));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.http1;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(addr, &REV).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = send(h.http1, &REV).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (503, "pending request queue full\n")
    );
    assert_eq!(got.headers["retry-after"], "1");
    assert!(
        held.iter().all(|t| !t.is_finished()),
        "the first two requests are held, not refused"
    );
    for t in held {
        t.abort();
    }
    // Clients that went away free their places at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pod = FakePod::start("pod-a", ip(3)).unwrap();
    h.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    let got = send(h.http1, &REV).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn held_past_the_revision_timeout_is_504() {
    let h = Activator::start(&[]).await;
    h.api.apply(revision("hello-00001", 0, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = send(h.http1, &REV).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (504, "activator request timeout")
    );
}

#[tokio::test]
async fn ticks_report_concurrency_every_second() {
    let h = Activator::start(&[]).await;
    h.autoscaler
        .wait_for_connections(1, Duration::from_secs(5))
        .await
        .unwrap();
    let pod = FakePod::start("pod-a", ip(4)).unwrap();
    h.api.apply(revision("hello-00001", 0, 300));
    h.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(h.http1, &REV).await;
    let frames = h
        .autoscaler
        .wait_for_frames(2, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        frames
            .iter()
            .all(|f| f.message.messages.iter().all(|m| m.stat.is_some()))
    );
}

#[tokio::test]
async fn drain_keeps_serving_then_stops() {
    let mut h = Activator::start(&[]).await;
    let pod = FakePod::start("pod-a", ip(5)).unwrap();
    h.api.apply(revision("hello-00001", 0, 300));
    h.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.terminate();
    let probe = send(h.http1, &[("user-agent", "kube-probe/1.30")]).await;
    assert_eq!(
        (probe.status, probe.body.as_str()),
        (500, "received SIGTERM from kubelet\n")
    );
    assert_eq!(
        send(h.http1, &REV).await.status,
        200,
        "traffic still served while draining"
    );
    tokio::time::timeout(Duration::from_secs(5), &mut h.done)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn bad_env_exits_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_activator"))
        .env_clear()
        .env("POD_NAME", "a")
        .env("SYSTEM_NAMESPACE", "knative-serving")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("POD_IP"));
}

#[tokio::test]
async fn metrics_in_prometheus_text() {
    let h = Activator::start(&[]).await;
    h.autoscaler
        .wait_for_connections(1, Duration::from_secs(5))
        .await
        .unwrap();
    let pod = FakePod::start("pod-a", ip(6)).unwrap();
    h.api.apply(revision("hello-00001", 0, 300));
    h.api.apply(private_endpoints("hello-00001", &[pod.addr()]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send(h.http1, &REV).await.status, 200);
    let mut body = String::new();
    for _ in 0..300 {
        body = send_to(h.metrics, "/metrics", &[]).await.body;
        if body.contains("kn_revision_request_concurrency{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(body.contains(r#"kn_revision_request_concurrency{k8s_namespace_name="default",kn_configuration_name="hello",kn_revision_name="hello-00001",kn_service_name="hello""#), "{body}");
    assert!(body.contains("kn_revision_request_active{"), "{body}");
    assert!(
        body.contains(r#"kn_activator_stats_conn_reachable{peer="autoscaler"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"kn_activator_stats_conn_errors_total{peer="autoscaler"} 0"#),
        "{body}"
    );
}

#[tokio::test]
async fn held_bytes_budget_bounds_memory_across_revisions() {
    // Room for two held requests (20 KiB each plus their heads), not three.
    let h = Activator::start(&[("KDP_HELD_BYTES_BUDGET", "50000")]).await;
    h.api.apply(revision("hello-00001", 0, 300));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.http1;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { send(addr, &REV).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = send(h.http1, &REV).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (503, "pending request queue full\n")
    );
    assert_eq!(got.headers["retry-after"], "1");
    assert!(
        held.iter().all(|t| !t.is_finished()),
        "the first two requests are held, not refused"
    );
    for t in held {
        t.abort();
    }
}
