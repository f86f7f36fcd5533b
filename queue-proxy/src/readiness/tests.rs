//! Readiness prober tests against loopback user containers (spec §8 P1–P16,
//! J1–J3).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use ::http::{HeaderMap, Request, Response, Version};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

// === helpers ===

#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

#[derive(Debug, Clone, Copy)]
enum Serve {
    Http1,
    H2c,
    Both,
}

type Reply = Arc<dyn Fn(usize, &Seen) -> (Response<Full<Bytes>>, Duration) + Send + Sync>;

struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap()
}

fn redirect(location: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(302)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A fake user container; `reply` gets the 1-based request number.
async fn upstream(
    serve: Serve,
    reply: impl Fn(usize, &Seen) -> (Response<Full<Bytes>>, Duration) + Send + Sync + 'static,
) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reply: Reply = Arc::new(reply);
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            let reply = Arc::clone(&reply);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    let reply = Arc::clone(&reply);
                    async move {
                        let seen = Seen {
                            version: req.version(),
                            path: req.uri().path().to_owned(),
                            query: req.uri().query().map(str::to_owned),
                            headers: req.headers().clone(),
                        };
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(seen.clone());
                            log.len()
                        };
                        let (response, delay) = reply(n, &seen);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let builder = match serve {
                    Serve::Http1 => builder.http1_only(),
                    Serve::H2c => builder.http2_only(),
                    Serve::Both => builder,
                };
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, seen, task }
}

async fn ok_upstream(serve: Serve) -> Upstream {
    upstream(serve, |_, _| (status(200), Duration::ZERO)).await
}

/// Accepts and counts TCP connections.
async fn tcp_listener(addr: &str) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (local, count, task)
}

/// A port with nothing listening.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn spec(value: serde_json::Value) -> ProbeSpec {
    serde_json::from_value(value).unwrap()
}

fn http_spec(port: u16, path: &str, period: i32, timeout: i32, threshold: i32) -> ProbeSpec {
    spec(json!({
        "httpGet": {"path": path, "port": port, "host": "127.0.0.1", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "successThreshold": threshold,
    }))
}

fn tcp_spec(port: u16, period: i32, threshold: i32) -> ProbeSpec {
    spec(json!({
        "tcpSocket": {"port": port, "host": "127.0.0.1"},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "successThreshold": threshold,
    }))
}

/// Aggressive timing with a short window, for runs expected to fail.
fn short_window() -> Timing {
    Timing {
        poll_window: Duration::from_millis(300),
        ..Timing::default()
    }
}

fn prober_with(
    probes: Vec<ProbeSpec>,
    autodetect: bool,
    timing: Timing,
) -> (Prober, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let prober = Prober::with_options(
        probes,
        autodetect,
        timing,
        Output::Capture(Arc::clone(&lines)),
    );
    (prober, lines)
}

fn new_prober(probes: Vec<ProbeSpec>) -> (Prober, Arc<Mutex<Vec<String>>>) {
    prober_with(probes, false, Timing::default())
}

fn lines(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines.lock().unwrap().clone()
}

// === probe JSON (J1–J3) ===

#[tokio::test]
async fn single_object_with_string_port_decodes_and_works() {
    let (addr, _count, _task) = tcp_listener("127.0.0.1:0").await;
    let json = format!(
        r#"{{"tcpSocket":{{"port":"{}","host":"127.0.0.1"}},"periodSeconds":1,"timeoutSeconds":2,"successThreshold":1,"failureThreshold":1}}"#,
        addr.port()
    );
    let probes = parse_probes(&json, false).unwrap();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].period_seconds, 1);
    assert_eq!(probes[0].timeout_seconds, 2);
    assert_eq!(probes[0].failure_threshold, 1);
    assert_eq!(
        probes[0].tcp_socket.as_ref().unwrap().port,
        IntOrString::String(addr.port().to_string())
    );
    assert!(new_prober(probes).0.probe().await);
}

#[test]
fn array_decodes_with_multi_container() {
    let json = r#"[{"tcpSocket":{"port":"8080","host":"127.0.0.1"},"successThreshold":1},{"tcpSocket":{"port":"8090","host":"127.0.0.1"},"successThreshold":1}]"#;
    let probes = parse_probes(json, true).unwrap();
    let ports: Vec<_> = probes
        .iter()
        .map(|p| p.tcp_socket.as_ref().unwrap().port.port().unwrap())
        .collect();
    assert_eq!(ports, [8080, 8090]);
    // An array is not a single probe.
    assert!(parse_probes(json, false).is_err());
}

#[test]
fn json_string_is_rejected() {
    let err = parse_probes(r#""wrongProbeObject""#, false).unwrap_err();
    assert!(matches!(err, ReadinessConfigError::Decode(_)));
    assert!(parse_probes(r#""wrongProbeObject""#, true).is_err());
    assert!(parse_probes("{", false).is_err());
}

#[test]
fn default_revision_probe_decodes_numeric_port() {
    let probes = parse_probes(
        r#"{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}"#,
        false,
    )
    .unwrap();
    let tcp = probes[0].tcp_socket.as_ref().unwrap();
    assert_eq!(tcp.port, IntOrString::Int(8080));
    assert_eq!(tcp.host, "127.0.0.1");
    assert_eq!(probes[0].success_threshold, 1);
    assert!(probes[0].is_aggressive());
}

#[test]
fn null_and_empty_values() {
    assert!(parse_probes("", false).unwrap().is_empty());
    assert!(parse_probes("", true).unwrap().is_empty());
    // The serving container without a probe shows up as `null` in the array.
    let probes = parse_probes(r#"[null,{"tcpSocket":{"port":8090}}]"#, true).unwrap();
    assert_eq!(probes.len(), 1);
    // A single `null` is a probe without a handler, as Go decodes it.
    assert_eq!(parse_probes("null", false).unwrap(), [ProbeSpec::default()]);
    let probes = parse_probes(
        r#"{"httpGet":{"path":null,"port":8080,"httpHeaders":null},"periodSeconds":null}"#,
        false,
    )
    .unwrap();
    assert_eq!(probes[0].http_get.as_ref().unwrap().path, "");
}

#[tokio::test]
async fn no_probes_is_always_ready() {
    let (prober, out) = new_prober(Vec::new());
    assert!(prober.is_empty());
    assert!(prober.probe().await);
    assert!(lines(&out).is_empty());
}

// === TCP (P1, P12) ===

#[tokio::test]
async fn tcp_ready_when_listening() {
    let (addr, count, _task) = tcp_listener("127.0.0.1:0").await;
    let (prober, _) = new_prober(vec![tcp_spec(addr.port(), 1, 1)]);
    assert!(prober.probe().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_not_ready_when_closed() {
    let (prober, out) = new_prober(vec![tcp_spec(closed_port().await, 1, 1)]);
    assert!(!prober.probe().await);
    let out = lines(&out);
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("dial tcp 127.0.0.1:"), "{out:?}");
}

#[tokio::test]
async fn aggressive_tcp_ready_when_listening() {
    let (addr, _count, _task) = tcp_listener("127.0.0.1:0").await;
    let (prober, out) = new_prober(vec![tcp_spec(addr.port(), 0, 1)]);
    assert!(prober.probe().await);
    assert!(lines(&out).is_empty());
}

#[tokio::test]
async fn aggressive_tcp_not_ready_without_listener() {
    let port = closed_port().await;
    let (prober, out) = prober_with(vec![tcp_spec(port, 0, 1)], false, short_window());
    let start = Instant::now();
    assert!(!prober.probe().await);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let out = lines(&out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[0].starts_with("aggressive probe error (failed ") && out[0].contains("dial tcp"),
        "{out:?}"
    );
    assert_eq!(out[1], "context deadline exceeded");
}

#[tokio::test]
async fn aggressive_tcp_streak_persists_and_resets() {
    let (addr, count, task) = tcp_listener("127.0.0.1:0").await;
    let (prober, _) = prober_with(vec![tcp_spec(addr.port(), 0, 3)], false, short_window());

    // Threshold 3: three connections.
    assert!(prober.probe().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(count.load(Ordering::SeqCst), 3);

    // The streak persists: the next run needs a single success.
    assert!(prober.probe().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(count.load(Ordering::SeqCst), 4);

    // The listener disappears: the run fails and the streak resets.
    task.abort();
    let _ = task.await;
    assert!(!prober.probe().await);

    // Back on the same port: three fresh successes are needed again.
    let (_, count, _task) = tcp_listener(&addr.to_string()).await;
    assert!(prober.probe().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

// === HTTP (P2–P6) ===

#[tokio::test]
async fn http_path_query_and_headers() {
    for path in ["health?foo=bar", "/health?foo=bar"] {
        let up = ok_upstream(Serve::Http1).await;
        let mut probe = http_spec(up.port(), path, 1, 1, 1);
        let headers = &mut probe.http_get.as_mut().unwrap().http_headers;
        for (name, value) in [
            ("Testkey", "Testval"),
            ("Testkey", "Second"),
            ("Host", "ignored.example"),
            ("User-Agent", "ignored"),
        ] {
            headers.push(HttpHeader {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
        let (prober, _) = new_prober(vec![probe]);
        assert!(prober.probe().await);
        let seen = up.seen();
        assert_eq!(seen.len(), 1);
        let seen = &seen[0];
        assert_eq!(seen.path, "/health");
        assert_eq!(seen.query.as_deref(), Some("foo=bar"));
        assert_eq!(seen.version, Version::HTTP_11);
        let testkey: Vec<_> = seen.headers.get_all("testkey").iter().collect();
        assert_eq!(testkey, ["Testval", "Second"]);
        let ua: Vec<_> = seen.headers.get_all("user-agent").iter().collect();
        assert_eq!(ua, ["kube-probe//"]);
        assert_eq!(
            seen.headers["host"].to_str().unwrap(),
            format!("127.0.0.1:{}", up.port())
        );
    }
}

#[tokio::test]
async fn http_status_decides_readiness() {
    for (code, ready) in [
        (200, true),
        (204, true),
        (301, true),
        (400, false),
        (500, false),
        (503, false),
    ] {
        let up = upstream(Serve::Http1, move |_, _| (status(code), Duration::ZERO)).await;
        let (prober, out) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
        assert_eq!(prober.probe().await, ready, "status {code}");
        if !ready {
            assert_eq!(
                lines(&out),
                [format!(
                    "HTTP probe did not respond Ready, got status code: {code}"
                )]
            );
        }
    }
}

#[tokio::test]
async fn http_connection_refused_is_not_ready() {
    let (prober, out) = new_prober(vec![http_spec(closed_port().await, "/", 1, 1, 1)]);
    assert!(!prober.probe().await);
    assert!(lines(&out)[0].starts_with("dial tcp"));
}

#[tokio::test]
async fn http_standard_timeout() {
    let up = upstream(Serve::Http1, |_, _| (status(200), Duration::from_secs(10))).await;
    let (prober, out) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
    let start = Instant::now();
    assert!(!prober.probe().await);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(lines(&out), ["timed out after 1s"]);
}

#[tokio::test]
async fn http_slow_but_within_timeout() {
    let up = upstream(Serve::Http1, |_, _| {
        (status(200), Duration::from_millis(50))
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 1, 2, 1)]);
    assert!(prober.probe().await);
}

#[tokio::test]
async fn multi_container_all_must_succeed() {
    for (first, second, ready) in [(200, 200, true), (500, 200, false), (200, 500, false)] {
        let a = upstream(Serve::Http1, move |_, _| (status(first), Duration::ZERO)).await;
        let b = upstream(Serve::Http1, move |_, _| (status(second), Duration::ZERO)).await;
        let (prober, out) = new_prober(vec![
            http_spec(a.port(), "/", 1, 1, 1),
            http_spec(b.port(), "/", 1, 1, 1),
        ]);
        assert_eq!(prober.probe().await, ready, "{first}/{second}");
        // Both probes ran; at most one failure line per run.
        assert_eq!((a.count(), b.count()), (1, 1));
        assert_eq!(lines(&out).len(), usize::from(!ready));
    }
}

#[tokio::test]
async fn redirects_are_followed() {
    let up = upstream(Serve::Http1, |n, _| match n {
        1 => (redirect("/a/next"), Duration::ZERO),
        2 => (redirect("final"), Duration::ZERO),
        _ => (status(200), Duration::ZERO),
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/start", 1, 1, 1)]);
    assert!(prober.probe().await);
    let paths: Vec<_> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/start", "/a/next", "/a/final"]);
}

#[tokio::test]
async fn redirect_loop_is_not_ready() {
    let up = upstream(Serve::Http1, |_, _| (redirect("/loop"), Duration::ZERO)).await;
    let (prober, out) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
    assert!(!prober.probe().await);
    assert_eq!(up.count(), 11);
    assert_eq!(lines(&out), ["stopped after 10 redirects"]);
}

#[tokio::test]
async fn redirect_target_status_counts() {
    let up = upstream(Serve::Http1, |n, _| match n {
        1 => (redirect("/down"), Duration::ZERO),
        _ => (status(503), Duration::ZERO),
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
    assert!(!prober.probe().await);
}

#[tokio::test]
async fn https_needs_a_trusted_certificate() {
    let up = ok_upstream(Serve::Http1).await;
    let mut probe = http_spec(up.port(), "/", 1, 1, 1);
    probe.http_get.as_mut().unwrap().scheme = "HTTPS".to_owned();
    let (prober, out) = new_prober(vec![probe]);
    assert!(!prober.probe().await);
    assert!(lines(&out)[0].starts_with("tls handshake with 127.0.0.1:"));
}

#[tokio::test]
async fn unknown_scheme_and_bad_port_fail() {
    let mut probe = http_spec(8080, "/", 1, 1, 1);
    probe.http_get.as_mut().unwrap().scheme = "ftp".to_owned();
    let (prober, out) = new_prober(vec![probe]);
    assert!(!prober.probe().await);
    assert_eq!(lines(&out), [r#"unsupported probe scheme "ftp""#]);

    let probe = spec(json!({"tcpSocket": {"port": "http"}, "periodSeconds": 1}));
    let (prober, out) = new_prober(vec![probe]);
    assert!(!prober.probe().await);
    assert_eq!(lines(&out), [r#"invalid port "http""#]);
}

// === coalescing (P7) ===

#[tokio::test]
async fn concurrent_checks_share_one_run() {
    let up = upstream(Serve::Http1, |_, _| {
        (status(200), Duration::from_millis(200))
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
    let other = prober.clone();
    let (a, b) = tokio::join!(prober.probe(), other.probe());
    assert!(a && b);
    assert_eq!(up.count(), 1);
    assert!(prober.probe().await);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn abandoned_run_still_completes() {
    let up = upstream(Serve::Http1, |_, _| {
        (status(200), Duration::from_millis(100))
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 1, 1, 1)]);
    let caller = tokio::spawn({
        let prober = prober.clone();
        async move { prober.probe().await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    caller.abort();
    // Joins the run the aborted caller started.
    assert!(prober.probe().await);
    assert_eq!(up.count(), 1);
}

// === aggressive mode (P8–P11, P13) ===

#[tokio::test]
async fn aggressive_retries_until_ready() {
    let up = upstream(Serve::Http1, |n, _| {
        let code = if n == 1 { 400 } else { 200 };
        (status(code), Duration::ZERO)
    })
    .await;
    let (prober, out) = new_prober(vec![http_spec(up.port(), "/", 0, 0, 1)]);
    assert!(prober.probe().await);
    assert_eq!(up.count(), 2);
    // Eventual success writes nothing.
    assert!(lines(&out).is_empty());
}

#[tokio::test]
async fn aggressive_success_threshold() {
    let up = ok_upstream(Serve::Http1).await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 0, 0, 3)]);
    assert!(prober.probe().await);
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn aggressive_failure_resets_streak() {
    let up = upstream(Serve::Http1, |n, _| {
        let code = if n == 2 { 500 } else { 200 };
        (status(code), Duration::ZERO)
    })
    .await;
    let (prober, _) = new_prober(vec![http_spec(up.port(), "/", 0, 0, 3)]);
    assert!(prober.probe().await);
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn aggressive_attempts_time_out() {
    let up = upstream(Serve::Http1, |_, _| {
        (status(200), Duration::from_millis(300))
    })
    .await;
    let (prober, out) = prober_with(
        vec![http_spec(up.port(), "/", 0, 0, 1)],
        false,
        short_window(),
    );
    let start = Instant::now();
    assert!(!prober.probe().await);
    assert!(start.elapsed() < Duration::from_secs(1));
    // Each 100 ms attempt times out; a slow attempt is followed at once.
    let out = lines(&out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[0].starts_with("aggressive probe error (failed ")
            && out[0].ends_with(" times): timed out after 100ms"),
        "{out:?}"
    );
    assert!(up.count() >= 3, "{}", up.count());
}

#[tokio::test]
async fn aggressive_failure_logs_once_per_run() {
    let port = closed_port().await;
    let (prober, out) = prober_with(vec![tcp_spec(port, 0, 1)], false, short_window());
    assert!(!prober.probe().await);
    assert!(!prober.probe().await);
    let out = lines(&out);
    let aggressive = out
        .iter()
        .filter(|line| line.contains("aggressive probe error"))
        .count();
    assert_eq!(aggressive, 2, "{out:?}");
    // About one attempt per retry interval over the 300 ms window (fewer
    // when the machine is busy, never more).
    let failed: u32 = out[0]
        .strip_prefix("aggressive probe error (failed ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let most = u32::try_from(300 / RETRY_INTERVAL.as_millis()).unwrap() + 2;
    assert!(
        (3..=most).contains(&failed),
        "{failed} attempts, at most {most}"
    );
}

// === handlers (P14, P15) ===

#[tokio::test]
async fn missing_and_exec_handlers_fail() {
    for (json, message) in [
        (json!({}), "no probe found"),
        (
            json!({"exec": {"command": ["true"]}}),
            "exec probe not supported",
        ),
    ] {
        let (prober, out) = new_prober(vec![spec(json)]);
        let start = Instant::now();
        assert!(!prober.probe().await);
        // Not polled, even in aggressive mode.
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(lines(&out), [message]);
    }
}

#[tokio::test]
async fn handler_order_prefers_http() {
    let up = ok_upstream(Serve::Http1).await;
    let probe = spec(json!({
        "httpGet": {"port": up.port()},
        "tcpSocket": {"port": closed_port().await},
        "exec": {"command": ["false"]},
        "periodSeconds": 1,
    }));
    assert!(new_prober(vec![probe]).0.probe().await);
    assert_eq!(up.count(), 1);
}

type GrpcBody = BoxBody<Bytes, Infallible>;

/// A `grpc.health.v1.Health` server knowing `services`.
async fn grpc_server(services: HashMap<&'static str, u64>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let services = Arc::new(services);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            let services = Arc::clone(&services);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    let services = Arc::clone(&services);
                    async move {
                        let (parts, body) = req.into_parts();
                        log.lock().unwrap().push(Seen {
                            version: parts.version,
                            path: parts.uri.path().to_owned(),
                            query: None,
                            headers: parts.headers,
                        });
                        let body = body.collect().await.unwrap().to_bytes();
                        let name = grpc::wire::request_service(body);
                        let response =
                            Response::builder().header("content-type", "application/grpc");
                        let response = match services.get(name.as_str()) {
                            Some(&status) => {
                                let mut trailers = HeaderMap::new();
                                trailers.insert("grpc-status", "0".parse().unwrap());
                                let frames = vec![
                                    Frame::data(grpc::wire::response(status)),
                                    Frame::trailers(trailers),
                                ];
                                let stream = futures_util::stream::iter(
                                    frames.into_iter().map(Ok::<_, Infallible>),
                                );
                                response.body(GrpcBody::new(StreamBody::new(stream)))
                            }
                            // Trailers-only NotFound, as grpc-go's health server answers.
                            None => response
                                .header("grpc-status", "5")
                                .header("grpc-message", "unknown service")
                                .body(GrpcBody::new(
                                    Full::new(Bytes::new()).map_err(|never| match never {}),
                                )),
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, seen, task }
}

fn grpc_spec(port: u16, service: Option<&str>, period: i32) -> ProbeSpec {
    spec(json!({
        "grpc": {"port": port, "service": service},
        "periodSeconds": period,
        "timeoutSeconds": 1,
    }))
}

#[tokio::test]
async fn grpc_serving_is_ready() {
    let up = grpc_server(HashMap::from([("", 1), ("db", 1), ("down", 2)])).await;
    for (service, period) in [(None, 1), (Some("db"), 1), (None, 0)] {
        let (prober, out) = new_prober(vec![grpc_spec(up.port(), service, period)]);
        assert!(prober.probe().await, "{service:?}: {:?}", lines(&out));
    }
    let seen = &up.seen()[0];
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.path, "/grpc.health.v1.Health/Check");
    assert_eq!(seen.headers["content-type"], "application/grpc");
    assert!(
        seen.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("kube-probe// ")
    );
    assert!(seen.headers.contains_key("grpc-timeout"));
}

#[tokio::test]
async fn grpc_not_serving_or_unknown_is_not_ready() {
    let up = grpc_server(HashMap::from([("down", 2)])).await;
    for (service, message) in [
        (
            "down",
            r#"service unhealthy (responded with "NOT_SERVING")"#,
        ),
        (
            "missing",
            "rpc error: code = NotFound desc = unknown service",
        ),
    ] {
        let (prober, out) = new_prober(vec![grpc_spec(up.port(), Some(service), 1)]);
        assert!(!prober.probe().await);
        assert_eq!(lines(&out), [message]);
    }
    // A plain HTTP/1 server is no gRPC server.
    let http1 = ok_upstream(Serve::Http1).await;
    let (prober, _) = new_prober(vec![grpc_spec(http1.port(), None, 1)]);
    assert!(!prober.probe().await);
}

// === HTTP/2 auto-detection (P16) ===

async fn autodetect(up: &Upstream) -> (bool, Vec<Seen>) {
    let mut probe = http_spec(up.port(), "/", 1, 1, 1);
    probe
        .http_get
        .as_mut()
        .unwrap()
        .http_headers
        .push(HttpHeader {
            name: "Testkey".to_owned(),
            value: "Testval".to_owned(),
        });
    let (prober, _) = prober_with(vec![probe], true, Timing::default());
    (prober.probe().await, up.seen())
}

fn versions(seen: &[Seen]) -> Vec<(Version, bool)> {
    seen.iter()
        .map(|s| (s.version, s.headers.contains_key("testkey")))
        .collect()
}

fn by_version(h2: u16, h1: u16) -> impl Fn(usize, &Seen) -> (Response<Full<Bytes>>, Duration) {
    move |_, seen| {
        let code = if seen.version == Version::HTTP_2 {
            h2
        } else {
            h1
        };
        (status(code), Duration::ZERO)
    }
}

#[tokio::test]
async fn autodetect_h2c_only() {
    let up = ok_upstream(Serve::H2c).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(ready);
    // Detection without, then the real probe with the custom headers.
    assert_eq!(
        versions(&seen),
        [(Version::HTTP_2, false), (Version::HTTP_2, true)]
    );
    assert_eq!(seen[1].headers["user-agent"], "kube-probe//");
}

#[tokio::test]
async fn autodetect_http1_only() {
    let up = ok_upstream(Serve::Http1).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(ready);
    assert_eq!(versions(&seen), [(Version::HTTP_11, false)]);
}

#[tokio::test]
async fn autodetect_prefers_h2c() {
    let up = ok_upstream(Serve::Both).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(ready);
    assert_eq!(
        versions(&seen),
        [(Version::HTTP_2, false), (Version::HTTP_2, true)]
    );
}

#[tokio::test]
async fn autodetect_falls_back_on_h2c_not_ready() {
    let up = upstream(Serve::Both, by_version(503, 200)).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(ready);
    assert_eq!(
        versions(&seen),
        [(Version::HTTP_2, false), (Version::HTTP_11, false)]
    );
}

#[tokio::test]
async fn autodetect_http1_not_ready() {
    let up = upstream(Serve::Http1, by_version(200, 503)).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(!ready);
    assert_eq!(versions(&seen), [(Version::HTTP_11, false)]);
}

#[tokio::test]
async fn autodetect_both_failing() {
    let up = upstream(Serve::Both, by_version(500, 500)).await;
    let (ready, seen) = autodetect(&up).await;
    assert!(!ready);
    assert_eq!(
        versions(&seen),
        [(Version::HTTP_2, false), (Version::HTTP_11, false)]
    );
}
