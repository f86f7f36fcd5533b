use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio::time::sleep;
use tower::ServiceExt;

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn timeouts(total: Duration, response_start: Option<Duration>, idle: Option<Duration>) -> Timeouts {
    Timeouts {
        total,
        response_start,
        idle,
        message: QUEUE_PROXY_MESSAGE,
    }
}

fn request() -> Request<BoxBody> {
    Request::new(crate::body::empty())
}

/// A response body fed by a channel; the sender sees `is_closed()` once the
/// body is dropped.
fn channel_body() -> (mpsc::UnboundedSender<&'static str>, BoxBody) {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| {
            chunk.map(|c| Ok::<_, Error>(Frame::data(Bytes::from_static(c.as_bytes()))))
        })
    });
    (tx, boxed(StreamBody::new(stream)))
}

/// Runs one request through `Timeout` over `inner`, returning status, body
/// and which timer fired (if a 504 was written here).
async fn run<F, Fut>(t: Timeouts, inner: F) -> (StatusCode, String, Option<TimeoutKind>)
where
    F: FnOnce(Request<BoxBody>) -> Fut,
    Fut: Future<Output = Result<Response<BoxBody>, Error>>,
{
    let mut inner = Some(inner);
    let svc = tower::service_fn(move |req| (inner.take().expect("called once"))(req));
    let rsp = Timeout::new(svc, t)
        .oneshot(request())
        .await
        .expect("no error");
    let status = rsp.status();
    let kind = rsp.extensions().get::<TimeoutKind>().copied();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf-8"),
        kind,
    )
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// O1
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fast_response_passes() {
    let t = timeouts(SEC, Some(SEC), Some(SEC));
    let out = run(t, |_| async { Ok(Response::new(full("hi"))) }).await;
    assert_eq!(out, (StatusCode::OK, "hi".to_owned(), None));
}

// O2
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_headers_before_response_start_is_504() {
    let start = Instant::now();
    let t = timeouts(10 * SEC, Some(SEC), None);
    let out = run(t, |_| async {
        sleep(2 * SEC).await;
        Ok(Response::new(full("too late")))
    })
    .await;
    assert_eq!(
        out,
        (
            StatusCode::GATEWAY_TIMEOUT,
            "request timeout".to_owned(),
            Some(TimeoutKind::ResponseStart)
        )
    );
    assert_eq!(start.elapsed(), SEC);
}

// O3
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn started_response_ignores_response_start() {
    let t = timeouts(10 * SEC, Some(SEC), None);
    let out = run(t, |_| async {
        sleep(SEC / 2).await;
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            sleep(SEC).await;
            tx.send("response started").expect("open");
            sleep(SEC).await;
            tx.send(" and finished").expect("open");
        });
        Ok(Response::new(body))
    })
    .await;
    assert_eq!(
        out,
        (
            StatusCode::OK,
            "response started and finished".to_owned(),
            None
        )
    );
}

// O4
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_without_write_is_504() {
    let start = Instant::now();
    let t = timeouts(10 * SEC, None, Some(SEC));
    let out = run(t, |_| std::future::pending()).await;
    assert_eq!(
        out,
        (
            StatusCode::GATEWAY_TIMEOUT,
            "request timeout".to_owned(),
            Some(TimeoutKind::Idle)
        )
    );
    assert_eq!(start.elapsed(), SEC);
}

// O5
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn writes_keep_idle_alive() {
    let start = Instant::now();
    let t = timeouts(10 * SEC, None, Some(SEC));
    let tick = SEC - Duration::from_millis(1);
    let out = run(t, |_| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for chunk in ["foo", "bar", "baz", "test"] {
                sleep(tick).await;
                tx.send(chunk).expect("open");
            }
        });
        Ok(Response::new(body))
    })
    .await;
    assert_eq!(out, (StatusCode::OK, "foobarbaztest".to_owned(), None));
    assert!(start.elapsed() > 3 * SEC);
}

// O6
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn silence_after_write_appends_message() {
    let start = Instant::now();
    let t = timeouts(10 * SEC, None, Some(SEC));
    let (tx, body) = channel_body();
    tx.send("foo").expect("open");
    let out = run(t, |_| async { Ok(Response::new(body)) }).await;
    assert_eq!(out, (StatusCode::OK, "foorequest timeout".to_owned(), None));
    assert_eq!(start.elapsed(), SEC);
    assert!(tx.is_closed(), "upstream body dropped");
}

// O7
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn total_without_write_is_504() {
    let start = Instant::now();
    let t = timeouts(5 * SEC, None, None);
    let out = run(t, |_| std::future::pending()).await;
    assert_eq!(
        out,
        (
            StatusCode::GATEWAY_TIMEOUT,
            "request timeout".to_owned(),
            Some(TimeoutKind::Request)
        )
    );
    assert_eq!(start.elapsed(), 5 * SEC);
}

// O8
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn total_after_partial_write_appends_message() {
    let start = Instant::now();
    let t = timeouts(5 * SEC, None, None);
    let (tx, body) = channel_body();
    let sender = tx.clone();
    let out = run(t, |_| async move {
        sleep(SEC).await;
        sender.send("partial response").expect("open");
        let mut rsp = Response::new(body);
        *rsp.status_mut() = StatusCode::CREATED;
        Ok(rsp)
    })
    .await;
    assert_eq!(
        out,
        (
            StatusCode::CREATED,
            "partial responserequest timeout".to_owned(),
            None
        )
    );
    assert_eq!(start.elapsed(), 5 * SEC);
    assert!(tx.is_closed(), "upstream body dropped");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn activator_message_is_appended() {
    let t = Timeouts {
        message: ACTIVATOR_MESSAGE,
        ..timeouts(5 * SEC, None, Some(SEC))
    };
    let (tx, body) = channel_body();
    tx.send("partial").expect("open");
    let out = run(t, |_| async { Ok(Response::new(body)) }).await;
    assert_eq!(
        out,
        (
            StatusCode::OK,
            "partialactivator request timeout".to_owned(),
            None
        )
    );
}

// O9: an upstream failure before any timeout is passed on, for the edge to abort.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_error_before_timeout_passes_through() {
    let svc = tower::service_fn(|_req: Request<BoxBody>| async {
        Err::<Response<BoxBody>, Error>(io::Error::other("upstream reset").into())
    });
    let t = timeouts(5 * SEC, None, None);
    let err = Timeout::new(svc, t)
        .oneshot(request())
        .await
        .expect_err("passes the error on");
    assert_eq!(err.to_string(), "upstream reset");

    let svc = tower::service_fn(|_req: Request<BoxBody>| async {
        let body = StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err::<Frame<Bytes>, Error>(io::Error::other("body reset").into()),
        ]));
        Ok::<_, Error>(Response::new(boxed(body)))
    });
    let rsp = Timeout::new(svc, t)
        .oneshot(request())
        .await
        .expect("headers");
    let err = rsp.into_body().collect().await.expect_err("body error");
    assert_eq!(err.to_string(), "body reset");
}

// O10
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeout_before_abort_is_504() {
    let t = timeouts(5 * SEC, None, None);
    let out = run(t, |_| async {
        sleep(10 * SEC).await;
        Err(io::Error::other("aborted").into())
    })
    .await;
    assert_eq!(out.0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(out.1, "request timeout");
}

// B4: a request queued in the breaker past the revision timeout gets the 504,
// and its place in the breaker is given back.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queued_past_timeout_is_504_and_leaves_breaker() {
    use crate::breaker::{Breaker, BreakerParams};

    let breaker = Breaker::new(BreakerParams {
        queue_depth: 10,
        max_concurrency: 1,
        initial_capacity: 1,
    });
    let running = breaker.try_acquire().expect("free");
    let queued = breaker.clone();
    let out = run(timeouts(5 * SEC, None, None), |_| async move {
        let _permit = queued.acquire().await?;
        Ok(Response::new(full("served")))
    })
    .await;
    assert_eq!(out.0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(out.1, "request timeout");
    assert_eq!(breaker.in_flight(), 1);
    drop(running);
    assert_eq!(breaker.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_future_dropped_on_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let svc = tower::service_fn(move |_req: Request<BoxBody>| {
        let flag = DropFlag(Arc::clone(&flag.0));
        async move {
            let _flag = flag;
            std::future::pending::<Result<Response<BoxBody>, Error>>().await
        }
    });
    let mut svc = Timeout::new(svc, timeouts(SEC, None, None));
    let fut = svc.ready().await.expect("ready").call(request());
    let mut fut = std::pin::pin!(fut);
    let rsp = fut.as_mut().await.expect("504");
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    // The response future is still alive; the inner one is already gone.
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeout_response_headers() {
    let svc = tower::service_fn(|_req: Request<BoxBody>| std::future::pending());
    let rsp = Timeout::new(svc, timeouts(SEC, None, None))
        .oneshot(request())
        .await
        .expect("504");
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        rsp.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(rsp.body().size_hint().exact(), Some(15));
}

// A body that is always ready is still cut at the deadline: the timer is
// checked before the inner body.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_checked_before_ready_data() {
    let svc = tower::service_fn(|_req: Request<BoxBody>| async {
        let chunks = futures_util::stream::repeat_with(|| {
            Ok::<_, Error>(Frame::data(Bytes::from_static(b"x")))
        });
        Ok::<_, Error>(Response::new(boxed(StreamBody::new(chunks))))
    });
    let rsp = Timeout::new(svc, timeouts(5 * SEC, None, None))
        .oneshot(request())
        .await
        .expect("headers");
    let mut body = rsp.into_body();
    let first = body.frame().await.expect("frame").expect("ok");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"x")));
    tokio::time::advance(6 * SEC).await;
    let last = body.frame().await.expect("frame").expect("ok");
    assert_eq!(
        last.into_data().ok(),
        Some(Bytes::from_static(b"request timeout"))
    );
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn zero_total_times_out_at_once() {
    let t = timeouts(Duration::ZERO, None, None);
    let out = run(t, |_| async { Ok(Response::new(full("hi"))) }).await;
    assert_eq!(out.0, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn zero_response_start_and_idle_are_off() {
    let t = timeouts(5 * SEC, Some(Duration::ZERO), Some(Duration::ZERO));
    let out = run(t, |_| async {
        sleep(2 * SEC).await;
        Ok(Response::new(full("hi")))
    })
    .await;
    assert_eq!(out, (StatusCode::OK, "hi".to_owned(), None));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadline_extension_is_earliest_timer() {
    for (t, expect) in [
        (timeouts(300 * SEC, None, None), 300 * SEC),
        (timeouts(300 * SEC, Some(10 * SEC), None), 10 * SEC),
        (timeouts(300 * SEC, Some(10 * SEC), Some(5 * SEC)), 5 * SEC),
    ] {
        let start = Instant::now();
        let out = run(t, |req| async move {
            let deadline = req.extensions().get::<RequestDeadline>().copied();
            assert_eq!(deadline, Some(RequestDeadline(start + expect)));
            Ok(Response::new(crate::body::empty()))
        })
        .await;
        assert_eq!(out.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn size_hint_leaves_room_for_message() {
    let svc = tower::service_fn(|_req: Request<BoxBody>| async {
        Ok::<_, Error>(Response::new(full("hello")))
    });
    let rsp = Timeout::new(svc, timeouts(SEC, None, None))
        .oneshot(request())
        .await
        .expect("ok");
    let hint = rsp.body().size_hint();
    assert_eq!((hint.lower(), hint.upper()), (5, Some(20)));
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeouts_log_at_warn() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    run(timeouts(300 * SEC, None, None), |_| std::future::pending()).await;
    run(timeouts(300 * SEC, Some(10 * SEC), None), |_| {
        std::future::pending()
    })
    .await;
    run(timeouts(300 * SEC, None, Some(SEC + SEC / 2)), |_| {
        std::future::pending()
    })
    .await;

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<_> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(lines[0].contains("WARN"), "{logs}");
    assert!(lines[0].ends_with("Request timeout: 5m0s"), "{logs}");
    assert!(lines[1].ends_with("Response start timeout: 10s"), "{logs}");
    assert!(lines[2].ends_with("Idle timeout: 1.5s"), "{logs}");
}

#[test]
fn go_duration_format() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(2), "2ns"),
        (Duration::from_nanos(1_500), "1.5µs"),
        (Duration::from_millis(300), "300ms"),
        (Duration::from_micros(1_250), "1.25ms"),
        (Duration::from_secs(10), "10s"),
        (Duration::from_millis(1_500), "1.5s"),
        (Duration::from_secs(300), "5m0s"),
        (Duration::from_secs(600), "10m0s"),
        (Duration::from_secs(3_600), "1h0m0s"),
        (Duration::from_millis(3_723_004), "1h2m3.004s"),
        (Duration::new(1, 1), "1.000000001s"),
    ];
    for (d, want) in cases {
        assert_eq!(GoDuration(d).to_string(), want, "{d:?}");
    }
}
