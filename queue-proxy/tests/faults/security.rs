//! Security (issue 6, "Security alongside"): no client header lets a request
//! skip the breaker or the stats except Knative's kubelet-probe markers, and
//! the side ports expose no request contents.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::*;

const SPOOFS: [&[(&str, &str)]; 8] = [
    &[("k-proxy-request", "activator")],
    &[("k-network-probe", "queue"), ("user-agent", "curl/8.5")],
    &[("k-network-probe", "activator"), ("user-agent", "curl/8.5")],
    &[
        ("knative-serving-revision", "hello-00001"),
        ("knative-serving-namespace", "default"),
    ],
    &[("knative-serving-tag", "canary")],
    &[("k-original-host", "other.example.com")],
    &[
        ("k-passthrough-lb", "true"),
        ("x-forwarded-for", "10.0.0.1"),
    ],
    &[("k-kubelet-probe", "")],
];

/// An upstream that holds `/hold` until released and answers the rest at once.
async fn holding() -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let reached = Arc::new(AtomicUsize::new(0));
    let r2 = reached.clone();
    let addr = upstream(move |req: Request<hyper::body::Incoming>| {
        let mut rx = rx.clone();
        let reached = r2.clone();
        async move {
            reached.fetch_add(1, Ordering::Relaxed);
            if req.uri().path() == "/hold" {
                let _ = rx.wait_for(|r| *r).await;
            }
            text(200, "app")
        }
    })
    .await
    .addr;
    (addr, tx, reached)
}

#[tokio::test]
async fn only_kubelet_probe_markers_skip_the_breaker() {
    let _shared = EXCLUSIVE.read().await;
    let (addr, release, reached) = holding().await;
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let c = client();
    let held: Vec<_> = (0..11)
        .map(|_| {
            let (c, url) = (c.clone(), qp.url("/hold"));
            tokio::spawn(async move { try_send(&c, get_req(&url, &[])).await.unwrap().status })
        })
        .collect();
    eventually("breaker full", || {
        let n = qp.stats.concurrency();
        async move { n == 11 }
    })
    .await;
    let before = reached.load(Ordering::Relaxed);
    for headers in SPOOFS {
        let got = get(&qp.url("/"), headers).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (503, "pending request queue full\n"),
            "{headers:?} went around the breaker"
        );
    }
    assert_eq!(reached.load(Ordering::Relaxed), before);
    // Knative honours the legacy kubelet marker: it passes the full breaker.
    let probe = get(&qp.url("/"), &[("k-kubelet-probe", "queue")]).await;
    assert_eq!((probe.status, probe.body.as_str()), (200, "app"));
    // A kubelet User-Agent is answered by the queue-proxy itself.
    let probe = get(&qp.url("/"), &[("user-agent", "kube-probe/1.30")]).await;
    assert_eq!(probe.status, 400);
    release.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    qp.settles().await;
}

#[tokio::test]
async fn only_kubelet_probe_markers_skip_the_stats() {
    let _shared = EXCLUSIVE.read().await;
    let (addr, release, reached) = holding().await;
    let qp = Qp::start(addr.port(), &[]).await;
    let c = client();
    let held: Vec<_> = SPOOFS
        .iter()
        .map(|headers| {
            let (c, req) = (c.clone(), get_req(&qp.url("/hold"), headers));
            tokio::spawn(async move { try_send(&c, req).await.unwrap().status })
        })
        .collect();
    eventually("every spoofed request reached the app", || {
        let n = reached.load(Ordering::Relaxed);
        async move { n == SPOOFS.len() }
    })
    .await;
    assert_eq!(qp.stats.concurrency(), SPOOFS.len() as u64);
    let probe = {
        let (c, req) = (
            c.clone(),
            get_req(&qp.url("/hold"), &[("k-kubelet-probe", "1")]),
        );
        tokio::spawn(async move { try_send(&c, req).await.unwrap().status })
    };
    eventually("probe reached the app", || {
        let n = reached.load(Ordering::Relaxed);
        async move { n == SPOOFS.len() + 1 }
    })
    .await;
    assert_eq!(
        qp.stats.concurrency(),
        SPOOFS.len() as u64,
        "the kubelet probe is not counted"
    );
    release.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(probe.await.unwrap(), 200);
    qp.settles().await;
}

#[tokio::test]
async fn side_ports_expose_no_request_contents() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(
        up.addr.port(),
        &[
            ("CONTAINER_CONCURRENCY", "5"),
            (
                "OBSERVABILITY_CONFIG",
                r#"{"requestMetrics":{"protocol":"prometheus"}}"#,
            ),
        ],
    )
    .await;
    let secret = "s3cr3t-7f1d";
    let req = Request::post(qp.url(&format!("/{secret}/path?token={secret}")))
        .header("authorization", format!("Bearer {secret}"))
        .header("cookie", format!("session={secret}"))
        .header("x-api-key", secret)
        .header("user-agent", secret)
        .header("k-original-host", format!("{secret}.example.com"))
        .body(Full::new(Bytes::from(format!("password={secret}"))))
        .unwrap();
    assert_eq!(try_send(&client(), req).await.unwrap().status, 200);
    // Let the 1 s stats tick capture the request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let user_metrics = qp.user_metrics.unwrap();
    let mut pages = Vec::new();
    for (addr, path, accept) in [
        (qp.metrics, "/metrics", "application/protobuf"),
        (qp.metrics, "/metrics", "text/plain"),
        (qp.metrics, "/", "*/*"),
        (user_metrics, "/metrics", "text/plain"),
        (user_metrics, &format!("/{secret}"), "*/*"),
        (qp.admin, "/", "*/*"),
        (qp.admin, "/debug/pprof/", "*/*"),
        (qp.admin, &format!("/{secret}"), "*/*"),
    ] {
        let got = get(&format!("http://{addr}{path}"), &[("accept", accept)]).await;
        let raw = format!("{:?}{}", got.headers, got.body);
        assert!(!raw.contains("s3cr3t"), "{addr}{path} leaks: {raw}");
        pages.push(got.status);
    }
    assert_eq!(pages[0], 200);
    assert_eq!(pages[3], 200);
}
