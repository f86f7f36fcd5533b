//! The load generator: HTTP/1.1 keep-alive connections on loopback, driven
//! open loop (a fixed rate) or closed loop (as fast as answers come back).
//!
//! Each connection is one worker. In open loop, worker after worker claims
//! the next slot of the schedule (`start + i / rate`), waits for it and
//! sends. Latency is measured from the slot's intended time when the worker
//! claimed it late, that is when every connection was still busy with
//! earlier requests (the server was slow: coordinated omission corrected, as
//! wrk2 does), and from the actual send otherwise, so the 1 ms granularity of
//! the tokio timer does not count as latency. Closed loop measures each
//! request from its send. Every run stops at its duration or its request
//! count, whichever comes first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A fixed rate, requests per second, whatever the answers do.
    Open { rate: u64 },
    /// Each connection sends its next request when the last one is answered.
    Closed,
}

/// Latencies above this (60 s) are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Lateness past which an open-loop request counts as `late`.
const LATE: Duration = Duration::from_millis(1);

/// One load run.
#[derive(Clone, Debug)]
pub(crate) struct LoadSpec {
    pub(crate) addr: SocketAddr,
    /// `Host` header.
    pub(crate) host: String,
    pub(crate) path: String,
    /// Extra request headers.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) connections: usize,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) max_requests: u64,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct LoadResult {
    /// 2xx answers with their whole body read.
    pub(crate) ok: u64,
    /// Transport errors and non-2xx answers.
    pub(crate) failed: u64,
    /// Open loop: requests sent more than [`LATE`] behind schedule because
    /// every connection was busy.
    pub(crate) late: u64,
    /// Response body bytes of the `ok` requests.
    pub(crate) bytes: u64,
    /// From the start to the last answer.
    pub(crate) elapsed: Duration,
    /// Latency of the `ok` requests, nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

#[derive(Default)]
struct WorkerResult {
    ok: u64,
    failed: u64,
    late: u64,
    bytes: u64,
    latencies: Vec<u64>,
    end: Option<Instant>,
}

/// A keep-alive HTTP/1.1 client connection.
pub(crate) type Conn = SendRequest<Empty<Bytes>>;

/// Opens one connection (`TCP_NODELAY`, HTTP/1.1, keep-alive).
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one GET on `conn` and reads the whole body. Returns the status and
/// the body length.
pub(crate) async fn get(
    conn: &mut Conn,
    host: &str,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
) -> anyhow::Result<(u16, u64)> {
    conn.ready().await?;
    let mut req = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::new())?;
    for (name, value) in headers {
        req.headers_mut().insert(name, value.clone());
    }
    let resp = conn.send_request(req).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut len = 0_u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len() as u64;
        }
    }
    Ok((status, len))
}

/// Runs `spec`. Connections are opened and each sends one unmeasured
/// request before the clock starts.
pub(crate) async fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let spec = Arc::new(spec.clone());
    let conns = join_all((0..spec.connections).map(|_| {
        let spec = Arc::clone(&spec);
        async move {
            let mut conn = connect(spec.addr).await?;
            get(&mut conn, &spec.host, &spec.path, &spec.headers).await?;
            anyhow::Ok(conn)
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()
    .context("warming up the connections")?;

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(worker(conn, Arc::clone(&spec), Arc::clone(&next), start)))
        .collect();
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 4).context("histogram")?;
    let mut total = WorkerResult::default();
    for w in join_all(workers).await {
        let w = w.context("load worker panicked")?;
        total.ok += w.ok;
        total.failed += w.failed;
        total.late += w.late;
        total.bytes += w.bytes;
        total.end = total.end.max(w.end);
        for ns in w.latencies {
            latency.saturating_record(ns);
        }
    }
    Ok(LoadResult {
        ok: total.ok,
        failed: total.failed,
        late: total.late,
        bytes: total.bytes,
        elapsed: total.end.unwrap_or(start).saturating_duration_since(start),
        latency,
    })
}

async fn worker(
    mut conn: Conn,
    spec: Arc<LoadSpec>,
    next: Arc<AtomicU64>,
    start: Instant,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let deadline = start + spec.duration;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= spec.max_requests {
            break;
        }
        // Where the measurement starts, once the request is sent.
        let from = match spec.mode {
            Mode::Closed => {
                if Instant::now() >= deadline {
                    break;
                }
                None
            }
            Mode::Open { rate } => {
                let offset = slot_offset(i, rate);
                if offset >= spec.duration {
                    break;
                }
                let intended = start + offset;
                let now = Instant::now();
                if now > intended {
                    if now - intended > LATE {
                        out.late += 1;
                    }
                    Some(intended)
                } else {
                    tokio::time::sleep_until(intended).await;
                    None
                }
            }
        };
        let sent = Instant::now();
        let result = get(&mut conn, &spec.host, &spec.path, &spec.headers).await;
        let done = Instant::now();
        out.end = Some(done);
        match result {
            Ok((status, len)) if (200..300).contains(&status) => {
                out.ok += 1;
                out.bytes += len;
                out.latencies.push(nanos(done - from.unwrap_or(sent)));
            }
            Ok(_) => out.failed += 1,
            Err(_) => {
                out.failed += 1;
                // The connection may be gone; open another one.
                match connect(spec.addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    out
}

/// `i / rate` seconds, in integer nanoseconds.
fn slot_offset(i: u64, rate: u64) -> Duration {
    let ns = u128::from(i) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A duration in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Opens `n` keep-alive connections, each answered once, and keeps them
/// open (idle) until the returned handles are dropped.
pub(crate) async fn open_idle(
    addr: SocketAddr,
    host: &str,
    headers: &[(HeaderName, HeaderValue)],
    n: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    // A few at a time: a thousand simultaneous connects overflow the backlog.
    for batch in 0..n.div_ceil(50) {
        let size = 50.min(n - batch * 50);
        let opened = join_all((0..size).map(|_| async {
            let mut conn = connect(addr).await?;
            get(&mut conn, host, "/", headers).await?;
            anyhow::Ok(conn)
        }))
        .await;
        for conn in opened {
            conns.push(conn?);
        }
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_rate() {
        assert_eq!(slot_offset(0, 1000), Duration::ZERO);
        assert_eq!(slot_offset(3, 1000), Duration::from_millis(3));
        assert_eq!(slot_offset(1, 3), Duration::from_nanos(333_333_333));
    }
}
