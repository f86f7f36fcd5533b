//! The queue-proxy seen from outside: real sockets on loopback, a test user
//! container behind it, each section of the spec checked on the wire.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "test code"
)]

#[allow(dead_code, reason = "the harness serves both test binaries")]
#[path = "../common/harness.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use prost::Message;
use support::*;

#[tokio::test]
async fn proxies_and_rewrites_headers() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    let got = get(
        &qp.url("/path?q=1"),
        &[
            ("host", "nimporte.pas"),
            ("k-original-host", "a-better-host.com"),
            ("knative-serving-revision", "r"),
            ("knative-serving-namespace", "n"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("user-agent", "gold"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "hello");
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.uri, "/path?q=1");
    let h = &seen.headers;
    assert_eq!(h["host"], "a-better-host.com");
    assert!(h.get("k-original-host").is_none());
    assert!(h.get("knative-serving-revision").is_none());
    assert!(h.get("knative-serving-namespace").is_none());
    assert!(
        h.get("x-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(h["forwarded"], "for=10.1.1.1;proto=https");
    assert_eq!(h["user-agent"], "gold");
}

#[tokio::test]
async fn no_user_agent_is_added() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    get(&qp.url("/"), &[]).await;
    assert!(
        up.seen.lock().unwrap()[0]
            .headers
            .get("user-agent")
            .is_none()
    );
}

#[tokio::test]
async fn kubelet_probe_answers_queue_without_reaching_the_app() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    let got = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "queue"));
    let got = get(
        &qp.url("/healthz"),
        &[
            ("user-agent", "Knative-Activator-Probe"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "queue"));
    let got = get(&qp.url("/"), &[("user-agent", "kube-probe/1.30")]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (400, "unexpected probe header value: \n")
    );
    let got = get(
        &qp.url("/"),
        &[
            ("user-agent", "Knative-Autoscaling-Probe"),
            ("k-network-probe", "activator"),
        ],
    )
    .await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (400, "unexpected probe header value: activator\n")
    );
    let got = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "probe"),
        ],
    )
    .await;
    assert_eq!(
        got.status, 400,
        "a health-check UA wins over the network probe"
    );
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "probes never reach the user container"
    );
}

#[tokio::test]
async fn readiness_follows_the_user_container() {
    let closed = closed_port();
    let probe = format!(
        r#"{{"tcpSocket":{{"port":{closed},"host":"127.0.0.1"}},"successThreshold":1,"periodSeconds":1,"timeoutSeconds":1}}"#
    );
    let qp = Qp::start(closed, &[("SERVING_READINESS_PROBE", &probe)]).await;
    let got = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (503, ""));

    let up = hello().await;
    let probe = format!(
        r#"{{"httpGet":{{"port":{},"host":"127.0.0.1","path":"/ready"}},"successThreshold":1}}"#,
        up.addr.port()
    );
    let qp = Qp::start(up.addr.port(), &[("SERVING_READINESS_PROBE", &probe)]).await;
    let got = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "queue"));
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.uri, "/ready");
    assert_eq!(seen.headers["user-agent"], "kube-probe//");
}

#[tokio::test]
async fn network_probe_echoes_hash() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    let got = get(
        &qp.url("/"),
        &[("k-network-probe", "probe"), ("k-network-hash", "abc")],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, ""));
    assert_eq!(got.headers["k-network-hash"], "abc");
    let got = get(&qp.url("/"), &[("k-network-probe", "probe")]).await;
    assert_eq!(got.status, 400);
    assert_eq!(
        got.body,
        "a probe request must contain a non-empty \"K-Network-Hash\" header\n"
    );
    // Any other value with an ordinary UA goes to the app.
    let got = get(&qp.url("/"), &[("k-network-probe", "queue")]).await;
    assert_eq!(got.body, "hello");
}

#[tokio::test]
async fn refused_upstream_is_502_with_go_text() {
    let closed = closed_port();
    let qp = Qp::start(closed, &[]).await;
    let got = get(&qp.url("/"), &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.body,
        format!("dial tcp 127.0.0.1:{closed}: connect: connection refused\n")
    );
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn breaker_queues_then_rejects_past_ten_times_cc() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = upstream(move |_req| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|r| *r).await;
            text(200, "done")
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let url = qp.url("/");
    let held: Vec<_> = (0..11)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get(&url, &[]).await.status }
            })
        })
        .collect();
    // One executes, ten wait in the breaker.
    let seen = up.seen.clone();
    eventually("one request at the app", || {
        let n = seen.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = get(&url, &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (503, "pending request queue full\n")
    );
    release_tx.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(up.seen.lock().unwrap().len(), 11);
}

#[tokio::test]
async fn kubelet_probe_header_bypasses_the_breaker() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = upstream(move |_req| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|r| *r).await;
            text(200, "done")
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let held: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn({
                let url = qp.url("/");
                async move { get(&url, &[("k-kubelet-probe", "queue")]).await.status }
            })
        })
        .collect();
    let seen = up.seen.clone();
    eventually("three requests at the app", || {
        let n = seen.lock().unwrap().len();
        async move { n == 3 }
    })
    .await;
    release_tx.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn autoscaler_scrapes_protobuf_stat() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "10")]).await;
    let metrics = format!("http://{}/metrics", qp.metrics);
    // Before the first tick: only the pod name.
    let got = get(&metrics, &[("accept", "application/protobuf")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "application/protobuf");
    let stat = kdp_stats::Stat::decode(got.raw).unwrap();
    assert_eq!(stat.pod_name, "hello-00001-pod");
    get(&qp.url("/"), &[("k-proxy-request", "activator")]).await;
    get(&qp.url("/"), &[]).await;
    let mut last = kdp_stats::Stat::default();
    for _ in 0..300 {
        let got = get(&metrics, &[]).await;
        last = kdp_stats::Stat::decode(got.raw).unwrap();
        if last.request_count > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last.request_count, 2.0);
    assert_eq!(last.proxied_request_count, 1.0);
    assert!(last.process_uptime >= 1.0);
    let got = get(&format!("http://{}/other", qp.metrics), &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, "404 page not found\n")
    );
    let got = get(&metrics, &[("accept", "text/plain")]).await;
    assert!(
        got.body.contains("queue_requests_per_second{"),
        "{}",
        got.body
    );
}

#[tokio::test]
async fn response_start_timeout_is_504() {
    let up = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(200, "late")
    })
    .await;
    let qp = Qp::start(
        up.addr.port(),
        &[("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let got = get(&qp.url("/"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (504, "request timeout"));
}

#[tokio::test]
async fn h2c_clients_reach_the_app_over_h2c() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    let req = Request::get(qp.url("/h2"))
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(req).await;
    assert_eq!((got.status, got.body.as_str()), (200, "hello"));
    assert_eq!(up.seen.lock().unwrap()[0].version, http::Version::HTTP_2);
}

#[tokio::test]
async fn bodies_stream_both_ways_at_once() {
    // The app echoes each request chunk as it arrives; the client sends the
    // second chunk only after reading the first echo back.
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body();
        let mut rsp = http::Response::new(body.boxed());
        *rsp.status_mut() = http::StatusCode::OK;
        rsp
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    let (tx, body) = {
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >(1);
        (tx, http_body_util::StreamBody::new(tokio_stream_from(rx)))
    };
    let req = Request::post(qp.url("/echo")).body(body).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"ping-1"))))
        .await
        .unwrap();
    let rsp = client.request(req).await.unwrap();
    let mut body = rsp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"ping-1");
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"ping-2"))))
        .await
        .unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"ping-2");
    drop(tx);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let qp = Qp::start(port, &[]).await;
    let (mut ws, rsp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", qp.main))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 101);
    for i in 0..3 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
}

#[tokio::test]
async fn drain_fails_probes_and_finishes_in_flight_requests() {
    let up = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        text(200, "slow")
    })
    .await;
    let mut qp = Qp::start(up.addr.port(), &[]).await;
    let url = qp.url("/");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    qp.terminate();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let probe = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!(
        (probe.status, probe.body.as_str()),
        (503, "shutting down\n")
    );
    // Ordinary traffic is still served during the quiet period.
    let during = get(&qp.url("/"), &[]).await;
    assert_eq!(during.status, 200);
    let got = in_flight.await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, "slow"));
    tokio::time::timeout(Duration::from_secs(5), &mut qp.done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(qp.main).await.is_err(),
        "listener closed after drain"
    );
}

#[tokio::test]
async fn wait_for_drain_resets_without_sigterm() {
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[("KDP_DRAIN_QUIET_PERIOD", "30s")]).await;
    let start = tokio::time::Instant::now();
    let got = get(&format!("http://{}/wait-for-drain", qp.admin), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, ""));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let probe = get(
        &qp.url("/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!(probe.status, 200, "probes healthy again after the reset");
    let got = get(&format!("http://{}/other", qp.admin), &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, "404 page not found\n")
    );
}

#[tokio::test]
async fn user_metrics_in_prometheus_text() {
    let up = hello().await;
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
    get(&qp.url("/"), &[]).await;
    get(
        &qp.url("/"),
        &[("user-agent", "curl"), ("k-network-probe", "activator")],
    )
    .await;
    let got = get(&format!("http://{}/metrics", qp.user_metrics.unwrap()), &[]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body.contains(
            "kn_serving_invocation_duration_seconds_count{http_response_status_code=\"200\""
        ),
        "{}",
        got.body
    );
    let count_line = got
        .body
        .lines()
        .find(|l| l.starts_with("kn_serving_invocation_duration_seconds_count"))
        .unwrap();
    assert!(
        count_line.ends_with(" 1"),
        "probe-marked requests are not recorded: {count_line}"
    );
    assert!(got.body.contains("kn_serving_queue_depth{"));
}

#[test]
fn bad_env_exits_64_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_queue-proxy"))
        .env_clear()
        .envs(env(8080))
        .env("CONTAINER_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CONTAINER_CONCURRENCY") && stderr.contains("lots"),
        "{stderr}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_queue-proxy"))
        .env_clear()
        .envs(env(8080))
        .env("SERVING_READINESS_PROBE", "\"wrongProbeObject\"")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SERVING_READINESS_PROBE"));
}

#[tokio::test]
async fn serves_tls_when_the_certificate_exists() {
    let dir = std::env::temp_dir().join(format!("kdp-qp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["kn-user-default".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let up = hello().await;
    let qp = Qp::start(up.addr.port(), &[("KDP_CERT_DIR", dir.to_str().unwrap())]).await;
    let tls_addr = qp.tls.expect("TLS port opened");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("kn-user-default").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3),
        "TLS 1.3 minimum by default"
    );
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let rsp = sender
        .send_request(
            Request::get("/secure")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        &rsp.into_body().collect().await.unwrap().to_bytes()[..],
        b"hello"
    );
    // Plain HTTP keeps serving beside TLS.
    assert_eq!(get(&qp.url("/"), &[]).await.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn binary_logs_requests_and_exits_0_on_sigterm() {
    let up = hello().await;
    let mut qp = Binary::spawn(
        up.addr.port(),
        &[
            ("KDP_DRAIN_QUIET_PERIOD", "100ms"),
            (
                "OBSERVABILITY_CONFIG",
                r#"{"enableRequestLog":true,"requestLogTemplate":"{{.Request.Method}} {{.Request.RequestURI}} {{.Response.Code}} {{.Revision.Name}}"}"#,
            ),
        ],
        std::process::Stdio::piped(),
    )
    .await;
    let url = qp.url("");
    assert_eq!(get(&format!("{url}/abc?x=1"), &[]).await.status, 200);
    let probe = get(
        &url,
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!(probe.status, 200);
    qp.sigterm().await;
    let status = tokio::time::timeout(Duration::from_secs(10), qp.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut qp.child.stdout.take().unwrap(), &mut out)
        .await
        .unwrap();
    assert_eq!(
        out, "GET /abc?x=1 200 hello-00001\n",
        "one line per request, probes not logged"
    );
}

#[tokio::test]
async fn websocket_keeps_its_grace_period_during_drain() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let mut qp = Qp::start(port, &[("KDP_DRAIN_QUIET_PERIOD", "100ms")]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", qp.main))
        .await
        .unwrap();
    qp.terminate();
    // Past the quiet period the listeners close, but the open websocket lives on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::net::TcpStream::connect(qp.main).await.is_err(),
        "listener closed"
    );
    assert!(!qp.done.is_finished(), "shutdown waits for the tunnel");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "still here"
    );
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), &mut qp.done)
        .await
        .unwrap()
        .unwrap();
}
