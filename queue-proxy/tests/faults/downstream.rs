//! Downstream abuse (DESIGN §8, issue 6 item 2): malformed and oversized
//! requests, slow headers, clients that vanish mid-request or mid-response,
//! and thousands of idle connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

const FAST: Duration = Duration::from_secs(2);

#[tokio::test]
async fn malformed_requests_are_400_and_never_reach_the_app() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls to a plain port\r\n\r\n",
    ] {
        let rsp = raw_exchange(qp.main, bad, FAST).await;
        assert!(
            rsp.starts_with("HTTP/1.1 400 "),
            "{:?} -> {rsp:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(up.requests.load(Ordering::Relaxed), 0);
    assert_eq!(get_within(&qp.url("/"), FAST).await.status, 200);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(up.addr.port(), &[]).await;
    // Go's limit is MaxHeaderBytes (1 MiB) plus 4 KiB of slack; well past both.
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.resize(req.len() + (1 << 20) + (128 << 10), b'a');
    req.extend_from_slice(b"\r\n\r\n");
    // The server closes with part of the head unread, so the kernel may
    // reset the connection before the client reads the 431: an attempt that
    // reads nothing at all is retried.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        let (mut rd, mut wr) = tcp.split();
        let write = async {
            let _ = wr.write_all(&req).await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(FAST, rd.read_to_end(&mut out)).await;
            out
        };
        let ((), out) = tokio::join!(write, read);
        let rsp = String::from_utf8_lossy(&out).into_owned();
        if rsp.starts_with("HTTP/1.1 431 ") {
            seen.push(rsp);
            break;
        }
        assert!(rsp.is_empty(), "{:?}", &rsp[..rsp.len().min(200)]);
    }
    assert_eq!(seen.len(), 1, "no 431 in five attempts");
    assert_eq!(up.requests.load(Ordering::Relaxed), 0);
    assert_eq!(get_within(&qp.url("/"), FAST).await.status, 200);
}

/// `KDP_HEADER_READ_TIMEOUT` (Go's `ReadHeaderTimeout`, 60 s by default)
/// counts from accept: a head trickled byte by byte, a silent connection and
/// a stalled HTTP/2 preface are all cut when it passes.
#[tokio::test]
async fn slow_headers_are_cut_by_the_header_read_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(up.addr.port(), &[("KDP_HEADER_READ_TIMEOUT", "500ms")]).await;
    let trickle = async {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        let start = Instant::now();
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if tcp.write_all(&[*b]).await.is_err() || start.elapsed() > Duration::from_secs(3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    };
    let silent = async {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        let start = Instant::now();
        let (_, ended) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
        assert!(ended, "a silent connection is closed");
        start.elapsed()
    };
    let preface = async {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        let start = Instant::now();
        tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let (_, ended) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
        assert!(ended, "a stalled h2 preface is closed");
        start.elapsed()
    };
    let (trickle, silent, preface) = tokio::join!(trickle, silent, preface);
    for (what, took) in [
        ("trickle", trickle),
        ("silent", silent),
        ("preface", preface),
    ] {
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
            "{what}: cut after {took:?}"
        );
    }
    // A prompt client on a long-lived connection is not affected.
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            try_send(&c, get_req(&qp.url("/"), &[]))
                .await
                .unwrap()
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// As in Go, the header read timeout of a later request on a keep-alive
/// connection counts from that request's first byte: a connection idle for
/// longer than the timeout still serves its next request, even one whose
/// head arrives in pieces, while a head that stalls half-way is still cut.
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_read_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(up.addr.port(), &[("KDP_HEADER_READ_TIMEOUT", "500ms")]).await;
    let tcp = TcpStream::connect(qp.main).await.unwrap();
    outlives_the_header_read_timeout(tcp).await;
    assert_eq!(up.requests.load(Ordering::Relaxed), 2);
}

/// The same over TLS (port 8112), where rustls sits between the socket and
/// hyper.
#[tokio::test]
async fn idle_tls_keep_alive_connections_outlive_the_header_read_timeout() {
    let _shared = EXCLUSIVE.read().await;
    let ca = kdp_test_support::tls::TestCa::new();
    let leaf = ca.leaf(&["kn-user-default"]);
    let dir = std::env::temp_dir().join(format!("kdp-qp-idle-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    let up = scripted(|_, _| Act::Ok).await;
    let qp = Qp::start(
        up.addr.port(),
        &[
            ("KDP_HEADER_READ_TIMEOUT", "500ms"),
            ("KDP_CERT_DIR", dir.to_str().unwrap()),
        ],
    )
    .await;
    let tcp = TcpStream::connect(qp.tls.expect("TLS port opened"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("kn-user-default").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config()))
        .connect(name, tcp)
        .await
        .unwrap();
    outlives_the_header_read_timeout(tls).await;
    assert_eq!(up.requests.load(Ordering::Relaxed), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request; idle for three header timeouts (500 ms), then a head in two
/// pieces, served; idle again, then half a head, cut by the timeout.
async fn outlives_the_header_read_timeout<S>(mut conn: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A `200 ok` (two body bytes) on the same connection.
    async fn ok_on<S: AsyncRead + Unpin>(conn: &mut S, buf: &mut Vec<u8>) -> bool {
        let Some(head) = read_head(conn, buf).await else {
            return false;
        };
        while buf.len() < 2 {
            let mut chunk = [0_u8; 64];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..2);
        head.starts_with("HTTP/1.1 200 ")
    }
    let mut buf = Vec::new();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(ok_on(&mut conn, &mut buf).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.write_all(b"Host: x\r\n\r\n").await.unwrap();
    assert!(ok_on(&mut conn, &mut buf).await, "served after idling");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let start = Instant::now();
    let (_, ended) = read_until_closed(&mut conn, Duration::from_secs(4)).await;
    assert!(ended, "a stalled head is closed");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "cut after {:?}",
        start.elapsed()
    );
}

/// An upstream that reads the whole request body before answering, and
/// counts the bodies that ended in an error.
async fn body_reader() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let aborted = Arc::new(AtomicUsize::new(0));
    let a2 = aborted.clone();
    let addr = upstream(move |req: Request<hyper::body::Incoming>| {
        let aborted = a2.clone();
        async move {
            if req.into_body().collect().await.is_err() {
                aborted.fetch_add(1, Ordering::Relaxed);
            }
            text(200, "read")
        }
    })
    .await
    .addr;
    (addr, aborted)
}

#[tokio::test]
async fn client_gone_mid_request_frees_its_slot_at_once() {
    let _shared = EXCLUSIVE.read().await;
    let (addr, aborted) = body_reader().await;
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await
            .unwrap();
        eventually("request inside", || {
            let n = qp.stats.concurrency();
            async move { n == 1 }
        })
        .await;
        drop(tcp);
        let gone = Instant::now();
        qp.settles().await;
        assert!(gone.elapsed() < Duration::from_millis(500));
        // The slot is free: a fresh request runs at once.
        let got = tokio::time::timeout(FAST, async {
            let req = Request::post(qp.url("/"))
                .body(http_body_util::Full::new(Bytes::from_static(b"x")))
                .unwrap();
            try_send(&client(), req).await.unwrap()
        })
        .await
        .unwrap();
        assert_eq!(got.status, 200);
    }
    eventually("upstream saw the aborted bodies", || {
        let n = aborted.load(Ordering::Relaxed);
        async move { n == 3 }
    })
    .await;
}

/// An upstream whose `/stream` answers one chunk and then never ends.
async fn endless() -> std::net::SocketAddr {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() != "/stream" {
            return text(200, "ok");
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(http_body::Frame::data(Bytes::from_static(b"first"))))
                .await;
            // Held until the proxy drops the body.
            tx.closed().await;
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        http::Response::new(StreamBody::new(stream).boxed())
    })
    .await
    .addr
}

#[tokio::test]
async fn client_gone_mid_response_frees_its_slot_at_once() {
    let _shared = EXCLUSIVE.read().await;
    let addr = endless().await;
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    // HTTP/1.1: the client closes its socket after the first chunk.
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(qp.main).await.unwrap();
        tcp.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("first") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(qp.stats.concurrency(), 1);
        drop(tcp);
        let gone = Instant::now();
        qp.settles().await;
        assert!(
            gone.elapsed() < Duration::from_millis(500),
            "{:?}",
            gone.elapsed()
        );
        assert_eq!(get_within(&qp.url("/"), FAST).await.status, 200);
    }
    // HTTP/2: the client resets the stream and keeps the connection.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let rsp = h2.request(get_req(&qp.url("/stream"), &[])).await.unwrap();
    let mut body = rsp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    drop(body);
    qp.settles().await;
    let got = tokio::time::timeout(FAST, h2.request(get_req(&qp.url("/"), &[])))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status(), 200);
}

#[tokio::test]
async fn clients_gone_while_queued_free_their_places() {
    let _shared = EXCLUSIVE.read().await;
    let addr = endless().await;
    // CC=1: one executing, ten queued, the twelfth rejected.
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "1")]).await;
    let mut holder = TcpStream::connect(qp.main).await.unwrap();
    holder
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for round in 0..3 {
        let mut queued = Vec::new();
        for _ in 0..10 {
            let mut tcp = TcpStream::connect(qp.main).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            queued.push(tcp);
        }
        eventually("ten queued", || {
            let n = qp.stats.concurrency();
            async move { n == 11 }
        })
        .await;
        let full = get_within(&qp.url("/"), FAST).await;
        assert_eq!(
            (full.status, full.body.as_str()),
            (503, "pending request queue full\n"),
            "round {round}"
        );
        drop(queued);
        eventually("queue emptied", || {
            let n = qp.stats.concurrency();
            async move { n == 1 }
        })
        .await;
    }
    drop(holder);
    qp.settles().await;
    assert_eq!(get_within(&qp.url("/"), FAST).await.status, 200);
}

/// Idle connections (silent ones and keep-alive ones after a request) held
/// against the real binary do not stop new requests. The soft and hard
/// `RLIMIT_NOFILE` here are 20,000 and the test process holds the client
/// side, so the count is capped below that.
#[tokio::test]
async fn thousands_of_idle_connections_do_not_stop_new_requests() {
    let _exclusive = EXCLUSIVE.write().await;
    let want: usize = std::env::var("KDP_FAULTS_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let n = want.min(fd_limit().saturating_sub(1_000));
    let up = scripted(|_, _| Act::Ok).await;
    let mut qp = Binary::spawn(
        up.addr.port(),
        &[("CONTAINER_CONCURRENCY", "10")],
        std::process::Stdio::null(),
    )
    .await;
    let addr = qp.main;
    let start = Instant::now();
    let opened = futures_util::future::join_all((0..64).map(|w| async move {
        let mut conns = Vec::new();
        for i in (w..n).step_by(64) {
            let Ok(mut tcp) = TcpStream::connect(addr).await else {
                break;
            };
            // One in ten makes a request first and then idles on keep-alive.
            if i % 10 == 0 {
                tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                while !buf.ends_with(b"ok") {
                    let mut chunk = [0u8; 256];
                    let k = tcp.read(&mut chunk).await.unwrap();
                    assert!(k > 0);
                    buf.extend_from_slice(&chunk[..k]);
                }
            }
            conns.push(tcp);
        }
        conns
    }))
    .await;
    let held: usize = opened.iter().map(Vec::len).sum();
    let open_took = start.elapsed();
    assert_eq!(held, n, "every idle connection opened");
    // New requests on new connections are still served promptly.
    for _ in 0..20 {
        let t = Instant::now();
        let got = get_within(&format!("http://{addr}/"), FAST).await;
        assert_eq!(got.status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    eprintln!("held {held} idle connections (opened in {open_took:?}); new requests served");
    drop(opened);
    qp.child.kill().await.unwrap();
}

/// The soft `RLIMIT_NOFILE`, read from /proc (no unsafe `getrlimit` needed).
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}
