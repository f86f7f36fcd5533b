//! Test upstreams driven by hyper clients over HTTP/1 and h2c.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{FakePod, POD_HEADER, PROBE_HEADER, Upstream, served_by};
use crate::within;

const T: Duration = Duration::from_secs(5);

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (Response<()>, Bytes) {
    let response = within(T, "response", client.request(req)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = within(T, "body", body.collect()).await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), body)
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn probe(url: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{url}/healthz"))
        .header(PROBE_HEADER, "queue")
        .header("user-agent", "Knative-Activator-Probe")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn upstream_serves_http1_and_h2c_on_any_loopback_ip() {
    let upstream = Upstream::start(ip(2), |req: Request<hyper::body::Incoming>| async move {
        Response::new(Full::new(Bytes::from(format!(
            "{:?} {}",
            req.version(),
            req.uri().path()
        ))))
    })
    .unwrap();
    assert_eq!(upstream.addr().ip(), ip(2));
    assert_eq!(upstream.url(), format!("http://{}", upstream.addr()));

    let (response, body) = send(&http1(), get(&format!("{}/a", upstream.url()))).await;
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(body, "HTTP/1.1 /a");
    let (response, body) = send(&h2c(), get(&format!("{}/b", upstream.url()))).await;
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(body, "HTTP/2.0 /b");
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let upstream = Upstream::start(ip(1), |_req| async {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .unwrap();
    let client = http1();
    for _ in 0..3 {
        let (response, _) = send(&client, get(&upstream.url())).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn fake_pod_answers_probes_by_readiness() {
    let pod = FakePod::start("hello-00001-deployment-abc", ip(3)).unwrap();
    let client = http1();
    assert!(pod.is_ready());
    let (response, body) = send(&client, probe(&pod.url())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "queue");

    pod.set_ready(false);
    let (response, body) = send(&client, probe(&pod.url())).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.is_empty());

    pod.set_ready(true);
    let (response, _) = send(&client, probe(&pod.url())).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(pod.probes(), 3);
    assert_eq!(pod.requests(), 0, "probes are not requests");
}

#[tokio::test]
async fn fake_pod_echoes_its_name_and_records_requests() {
    let pods = [
        FakePod::start("pod-a", ip(4)).unwrap(),
        FakePod::start("pod-b", ip(5)).unwrap(),
    ];
    let client = h2c();
    for pod in &pods {
        let req = Request::post(format!("{}/work?x=1", pod.url()))
            .header("knative-serving-revision", "hello-00001")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let (response, body) = send(&client, req).await;
        assert_eq!(served_by(&response), Some(pod.name()));
        assert_eq!(response.headers()[POD_HEADER], pod.name());
        assert_eq!(body, pod.name());
        let served = pod.served();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].method, http::Method::POST);
        assert_eq!(
            served[0].uri.path_and_query().unwrap().as_str(),
            "/work?x=1"
        );
        assert_eq!(served[0].headers["knative-serving-revision"], "hello-00001");
        assert_eq!(served[0].body, "payload");
    }
    // Not-ready pods still serve traffic; readiness only affects probes.
    pods[0].set_ready(false);
    let (response, _) = send(&client, get(&pods[0].url())).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn fake_pod_delay_keeps_requests_in_flight() {
    let pod = FakePod::start("slow", ip(6)).unwrap();
    pod.set_delay(Duration::from_millis(300));
    let client = http1();
    let url = pod.url();
    let request = tokio::spawn(async move { send(&client, get(&url)).await });
    crate::poll_until(T, String::new, || (pod.in_flight() == 1).then_some(()))
        .await
        .unwrap();
    assert_eq!(pod.requests(), 1);
    let (response, _) = within(T, "slow response", request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(pod.in_flight(), 0);
}

#[tokio::test]
async fn dropping_an_upstream_refuses_connections() {
    let pod = FakePod::start("gone", ip(7)).unwrap();
    let url = pod.url();
    drop(pod);
    let result = within(T, "refused", http1().request(get(&url))).await;
    assert!(result.is_err(), "the listener is closed");
}
