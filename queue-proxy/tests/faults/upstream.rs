//! Upstream faults (DESIGN §8, issue 6 item 1): the user container refuses,
//! hangs, resets, speaks garbage or drops keep-alive connections. After each
//! fault the breaker slot (CC=1: the next request is served at once) and the
//! stats concurrency are back to zero.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::support::*;

const FAST: Duration = Duration::from_secs(2);

#[tokio::test]
async fn refused_is_502_and_frees_the_slot() {
    let _shared = EXCLUSIVE.read().await;
    let port = closed_port();
    let qp = Qp::start(port, &[("CONTAINER_CONCURRENCY", "1")]).await;
    for _ in 0..3 {
        let got = get_within(&qp.url("/"), FAST).await;
        assert_eq!(got.status, 502);
        assert_eq!(
            got.body,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused\n")
        );
    }
    qp.settles().await;
}

#[tokio::test]
async fn hanging_upstream_is_504_after_response_start_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|path, _| if path == "/hang" { Act::Hang } else { Act::Ok }).await;
    let qp = Qp::start(
        up.addr.port(),
        &[
            ("CONTAINER_CONCURRENCY", "1"),
            ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let start = Instant::now();
    let got = get_within(&qp.url("/hang"), Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert_eq!((got.status, got.body.as_str()), (504, "request timeout"));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    assert_eq!(get_within(&qp.url("/ok"), FAST).await.body, "ok");
    qp.settles().await;
}

#[tokio::test]
async fn reset_mid_response_aborts_the_body_and_serves_on() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|path, _| match path {
        "/reset" => Act::ResetMidBody,
        "/reset-chunked" => Act::ResetMidChunks,
        _ => Act::Ok,
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    for path in ["/reset", "/reset-chunked"] {
        let rsp = client().request(get_req(&qp.url(path), &[])).await.unwrap();
        assert_eq!(rsp.status(), 200, "headers were already on their way");
        let body = tokio::time::timeout(FAST, rsp.into_body().collect())
            .await
            .expect("aborted, not hanging");
        assert!(body.is_err(), "{path}: the client must see an aborted body");
        assert_eq!(get_within(&qp.url("/ok"), FAST).await.body, "ok");
    }
    qp.settles().await;
}

/// Over h2 (h2c in, h2c to the user container) a body error upstream resets
/// the client's stream and the connection serves on.
#[tokio::test]
async fn h2_reset_mid_response_resets_the_stream_only() {
    let _shared = EXCLUSIVE.read().await;
    let addr = upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() != "/reset" {
            return text(200, "ok");
        }
        // One chunk, a pause (so the headers are surely through), then an error.
        let frames = futures_util::stream::unfold(0, |step| async move {
            let frame: Result<http_body::Frame<Bytes>, BoxError> = match step {
                0 => Ok(http_body::Frame::data(Bytes::from_static(b"partial"))),
                1 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err("upstream gave up".into())
                }
                _ => return None,
            };
            Some((frame, step + 1))
        });
        let body = http_body_util::StreamBody::new(frames);
        http::Response::new(BodyExt::boxed(body))
    })
    .await
    .addr;
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for _ in 0..2 {
        let rsp = h2.request(get_req(&qp.url("/reset"), &[])).await.unwrap();
        assert_eq!(rsp.status(), 200);
        let body = tokio::time::timeout(FAST, rsp.into_body().collect())
            .await
            .unwrap();
        assert!(body.is_err(), "h2: the client must see a reset stream");
        let ok = tokio::time::timeout(FAST, h2.request(get_req(&qp.url("/ok"), &[])))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    qp.settles().await;
    assert_eq!(get_within(&qp.url("/ok"), FAST).await.status, 200);
}

#[tokio::test]
async fn garbage_instead_of_http_is_502() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|path, _| {
        if path == "/garbage" {
            Act::Garbage
        } else {
            Act::Ok
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    for _ in 0..3 {
        let got = get_within(&qp.url("/garbage"), FAST).await;
        assert_eq!(got.status, 502, "{}", got.body);
    }
    assert_eq!(get_within(&qp.url("/ok"), FAST).await.body, "ok");
    qp.settles().await;
}

/// Every connection serves one request; the next request on it is read and
/// the connection closed without an answer (an idle timeout racing reuse).
/// Idempotent bodiless requests must be retried on a fresh connection, as
/// Go's transport does; a POST must not be replayed.
#[tokio::test]
async fn keep_alive_closed_after_each_request_is_invisible_to_gets() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, nth| {
        if nth == 0 {
            Act::Ok
        } else {
            Act::CloseSilently
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let c = client();
    for i in 0..50 {
        let got = try_send(&c, get_req(&qp.url("/"), &[])).await;
        assert_eq!(got.map(|g| g.status), Ok(200), "GET #{i}");
    }
    qp.settles().await;
}

/// Connections close at random: right after a response, or after reading the
/// next request; concurrent GETs and HEADs see no error.
#[tokio::test]
async fn random_keep_alive_closes_are_invisible_to_idempotent_requests() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, nth| {
        let r = fastrand(nth);
        if nth == 0 || r.is_multiple_of(3) {
            Act::Ok
        } else if r % 3 == 1 {
            Act::OkThenClose
        } else {
            Act::CloseSilently
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "4")]).await;
    let c = client();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let c = c.clone();
            let url = qp.url("/");
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..40 {
                    let method = if (w + i) % 4 == 0 { "HEAD" } else { "GET" };
                    let req = Request::builder()
                        .method(method)
                        .uri(&url)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match try_send(&c, req).await {
                        Ok(g) if g.status == 200 => {}
                        other => failures.push(format!("{method}: {:?}", other.map(|g| g.status))),
                    }
                }
                failures
            })
        })
        .collect();
    for t in tasks {
        let failures = t.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    qp.settles().await;
}

/// A POST with a body on a connection the upstream drops is not replayed:
/// the upstream reads it at most once and the client gets a 502.
#[tokio::test]
async fn posts_are_not_replayed_on_a_dropped_connection() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|path, nth| {
        if path == "/warm" && nth == 0 {
            Act::Ok
        } else {
            Act::CloseSilently
        }
    })
    .await;
    let qp = Qp::start(up.addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let c = client();
    assert_eq!(get_within(&qp.url("/warm"), FAST).await.status, 200);
    let before = up.requests.load(std::sync::atomic::Ordering::Relaxed);
    let post = Request::post(qp.url("/charge"))
        .body(Full::new(Bytes::from_static(b"once")))
        .unwrap();
    let got = try_send(&c, post).await.unwrap();
    assert_eq!(got.status, 502);
    let after = up.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        after - before,
        1,
        "the POST reached the upstream exactly once"
    );
    qp.settles().await;
}

/// A cheap pseudo-random number mixed with `n` (no RNG dependency needed).
fn fastrand(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (usize::try_from(nanos).unwrap_or(0) ^ n.wrapping_mul(0x9e37_79b9)) >> 3
}
