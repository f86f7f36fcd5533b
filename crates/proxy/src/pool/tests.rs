use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;

use super::*;
use crate::body;
use crate::pool::Target;
use futures_util::StreamExt as _;

/// An upstream that counts the connections it accepts. `/close` answers
/// with `Connection: close`; `/stream` sends one chunk and never ends.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn counting_upstream() -> Counting {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let rsp = match req.uri().path() {
                        "/close" => Response::builder()
                            .header("connection", "close")
                            .body(body::full("bye")),
                        "/stream" => {
                            let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(
                                Frame::data(Bytes::from_static(b"first")),
                            )])
                            .chain(futures_util::stream::pending());
                            Response::builder().body(body::boxed(StreamBody::new(chunks)))
                        }
                        _ => Response::builder().body(body::full("hello")),
                    };
                    Ok::<_, std::convert::Infallible>(rsp.unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Counting { addr, accepted }
}

fn pool_to(addr: SocketAddr, max_idle: usize) -> Http1Pool {
    Http1Pool::new(
        Dialer {
            target: Target::Fixed(addr),
        },
        max_idle,
    )
}

fn get(path: &str) -> Request<BoxBody> {
    Request::get(path)
        .header("host", "app")
        .body(body::empty())
        .unwrap()
}

async fn text(rsp: Response<PooledBody>) -> String {
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let up = counting_upstream().await;
    let pool = pool_to(up.addr, 10);
    for _ in 0..5 {
        let rsp = pool.send(get("/")).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(text(rsp).await, "hello");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn connection_closed_by_the_upstream_is_not_reused() {
    let up = counting_upstream().await;
    let pool = pool_to(up.addr, 10);
    for _ in 0..3 {
        let rsp = pool.send(get("/close")).await.unwrap();
        assert_eq!(text(rsp).await, "bye");
    }
    // Every request found its connection closed and dialled a new one, without error.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn response_dropped_mid_body_closes_its_connection() {
    let up = counting_upstream().await;
    let pool = pool_to(up.addr, 10);
    let mut rsp = pool.send(get("/stream")).await.unwrap();
    let first = rsp.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    drop(rsp);
    assert_eq!(
        pool.idle_count(),
        0,
        "a half-read connection must not be pooled"
    );
    let rsp = pool.send(get("/")).await.unwrap();
    assert_eq!(text(rsp).await, "hello");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_are_capped_per_host() {
    let up = counting_upstream().await;
    let pool = pool_to(up.addr, 2);
    // Five responses held at once need five connections; only two stay pooled.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(pool.send(get("/")).await.unwrap());
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 5);
    for rsp in held {
        assert_eq!(text(rsp).await, "hello");
    }
    assert_eq!(pool.idle_count(), 2);
}

#[tokio::test]
async fn absolute_uri_goes_out_in_origin_form_with_its_host() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = Http1Pool::new(
        Dialer {
            target: Target::FromUri,
        },
        10,
    );
    let req = Request::get(format!("http://{addr}/path?q=1"))
        .body(body::empty())
        .unwrap();
    let send = tokio::spawn(async move { pool.send(req).await.map(|r| r.status()) });
    let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("no connection")
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await
        .expect("request head never came")
        .unwrap();
        assert!(n > 0, "request head cut short: {head:?}");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("host: {addr}\r\n")),
        "{head}"
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn refused_dial_is_a_dial_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = pool_to(addr, 1).send(get("/")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Dial(_)), "{err:?}");
    assert!(!err.closed_before_answering());
}
