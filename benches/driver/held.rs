//! The activator's memory per held request, and its bound (DESIGN.md §7:
//! "activator memory per held request: ≤ 4 KB, bounded in total").
//!
//! * Per request: an activator process against its own fake API server,
//!   with Prometheus metrics on so that it says how many requests it holds
//!   (`kn_revision_request_queued`). Revision `held-00001` has no ready pod
//!   (empty private Endpoints). One request is held first (the revision is
//!   known, the throttler exists), then `VmRSS` is read; then N more
//!   keep-alive connections each send one request, which the activator
//!   holds. Once it reports N + 1 queued (and a short settle), `VmRSS` again:
//!   the figure is the difference over N. Then the pod starts (a queue-proxy
//!   on `127.0.0.2`) and turns ready in the Endpoints, and every held
//!   request must answer 200.
//! * Bound: a second activator with `KDP_MAX_QUEUED_PER_REVISION` set small
//!   holds that many requests on `bound-00001`; more requests, each on its
//!   own connection, must get 503 at once, and the activator must still
//!   report the bound as queued. They go in two waves, with `VmRSS` after
//!   each: the first brings the rejection path's buffers in (the allocator
//!   keeps them), over the second `VmRSS` must stay flat. Then the clients
//!   go away and the queue must empty.
//!
//! Both activators are stopped with SIGTERM at the end and must exit within
//! a few seconds. Every wait is bounded in time, every loop in count.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::activator::{self, FakeCluster};
use crate::cold::{self, ActivatorBins};
use crate::load;
use crate::procs::{Managed, free_port};
use crate::targets::{HOST, QueueProxy, loopback, queue_probe_headers, wait_ready};

/// Connections opened at once (a few thousand simultaneous connects would
/// overflow the listen backlog).
const BATCH: usize = 50;
/// Settle time before reading `VmRSS`.
const SETTLE: Duration = Duration::from_millis(300);
/// A rejected request answers within this to count as "at once".
pub(crate) const QUICK_REJECT: Duration = Duration::from_secs(1);
/// `VmRSS` growth allowed per rejected request (of the second wave) for it
/// to count as flat: half the 4 KB target (decimal, as the report's MB).
/// A request the activator kept would cost at least the held figure; the
/// allocator's page-sized noise stays well under this.
const FLAT_BYTES_PER_REJECTED: f64 = 2000.0;

/// How many requests each phase sends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    /// Held requests measured (beside the one held first).
    pub(crate) held: usize,
    /// `KDP_MAX_QUEUED_PER_REVISION` of the second phase.
    pub(crate) bound: usize,
    /// Requests sent past that bound.
    pub(crate) extra: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                held: 500,
                bound: 200,
                extra: 1000,
            }
        } else {
            Self {
                held: 2000,
                bound: 200,
                extra: 2000,
            }
        }
    }

    /// Caps the counts to what the open-file limit allows: the driver holds
    /// two sockets per held request (the client's, and the user
    /// container's when they are released), the activator two as well.
    fn capped(self, limit: Option<u64>) -> (Self, Option<String>) {
        let Some(limit) = limit else {
            return (self, None);
        };
        let room = usize::try_from(limit.saturating_sub(256) / 2).unwrap_or(usize::MAX);
        if self.held < room && self.bound + BATCH <= room {
            return (self, None);
        }
        let capped = Self {
            held: self.held.min(room.saturating_sub(1)),
            bound: self.bound.min(room.saturating_sub(BATCH)),
            extra: self.extra,
        };
        let note = format!(
            "open-file limit {limit}: {} held requests instead of {} (raise it with `ulimit -n`)",
            capped.held, self.held
        );
        (capped, Some(note))
    }
}

/// The held-request figures, as in the JSON report.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Held {
    /// Why they were not measured (or what went wrong).
    pub(crate) note: Option<String>,
    /// Requests sent to be held, beside the one held first.
    pub(crate) requests: usize,
    /// Of those, answered before the pod was ready (so not held).
    pub(crate) answered_early: usize,
    /// What the activator reported as queued before the second `VmRSS`.
    pub(crate) queued_reported: Option<u64>,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// `(rss_after − rss_before) / requests`, bytes.
    pub(crate) bytes_per_request: Option<f64>,
    /// Held requests answered 200 once the pod was ready (of `requests + 1`).
    pub(crate) released_ok: usize,
    /// From the pod turning ready in the Endpoints to the last answer.
    pub(crate) release_ms: Option<f64>,
    /// The second phase: past the queue bound.
    pub(crate) bound: Option<Bound>,
    /// Both activators exited within a few seconds of SIGTERM.
    pub(crate) clean_shutdown: Option<bool>,
}

/// The second phase: what happens past `KDP_MAX_QUEUED_PER_REVISION`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Bound {
    /// `KDP_MAX_QUEUED_PER_REVISION`.
    pub(crate) max_queued: usize,
    /// Queued as the activator reported it with the bound reached.
    pub(crate) queued_at_bound: Option<u64>,
    /// Requests sent past the bound, each on its own connection.
    pub(crate) extra: usize,
    /// Of those, answered 503.
    pub(crate) extra_503: usize,
    /// Any other outcome, with its count (`200: 3`, `timed out: 1`).
    pub(crate) extra_other: Vec<String>,
    /// Time from send to the 503, median and max.
    pub(crate) reject_p50_ms: Option<f64>,
    pub(crate) reject_max_ms: Option<f64>,
    /// Queued as reported after the extra requests.
    pub(crate) queued_after_extra: Option<u64>,
    pub(crate) rss_at_bound_kib: u64,
    /// The extra requests go in two waves: VmRSS after the first, the
    /// size of the second, VmRSS after it.
    pub(crate) rss_after_first_wave_kib: u64,
    pub(crate) second_wave: usize,
    pub(crate) rss_after_extra_kib: u64,
    /// Queued once the held clients went away.
    pub(crate) queued_after_close: Option<u64>,
}

impl Held {
    /// A row with only a note (not selected, binaries missing).
    pub(crate) fn skipped(note: String) -> Self {
        Self {
            note: Some(note),
            ..Self::default()
        }
    }

    /// `VmRSS` growth past the bound, bytes (negative: it shrank): over
    /// all the extra requests, and over their second wave.
    pub(crate) fn growth_past_bound(&self) -> Option<(f64, f64)> {
        let b = self.bound.as_ref()?;
        let kib = |to: u64, from: u64| (to as f64 - from as f64) * 1024.0;
        Some((
            kib(b.rss_after_extra_kib, b.rss_at_bound_kib),
            kib(b.rss_after_extra_kib, b.rss_after_first_wave_kib),
        ))
    }

    /// Whether the total is bounded: every request past the bound got 503
    /// within [`QUICK_REJECT`], the queue stayed at the bound, `VmRSS`
    /// stayed flat over the second wave of them, and the queue emptied when
    /// the clients went away. `None` when the phase did not run.
    pub(crate) fn bounded(&self) -> Option<bool> {
        let b = self.bound.as_ref()?;
        let (_, growth) = self.growth_past_bound()?;
        Some(
            b.extra > 0
                && b.extra_503 == b.extra
                && b.reject_max_ms
                    .is_some_and(|ms| ms <= QUICK_REJECT.as_secs_f64() * 1e3)
                && b.queued_after_extra == Some(b.max_queued as u64)
                && growth <= b.second_wave as f64 * FLAT_BYTES_PER_REJECTED
                && b.queued_after_close == Some(0),
        )
    }
}

/// Both phases; what failed goes into the note.
pub(crate) async fn measure(bins: ActivatorBins<'_>, dir: &Path, sizes: Sizes) -> Held {
    let (sizes, capped) = sizes.capped(open_file_limit());
    let mut out = Held {
        requests: sizes.held,
        note: capped,
        ..Held::default()
    };
    let mut clean = true;
    let mut errors = Vec::new();
    match per_request(bins, dir, sizes, &mut out).await {
        Ok(exit) => clean &= exit,
        Err(e) => errors.push(format!("held requests: {e:#}")),
    }
    let mut bound = Bound {
        max_queued: sizes.bound,
        extra: sizes.extra,
        ..Bound::default()
    };
    match past_bound(bins.activator, dir, sizes, &mut bound).await {
        Ok(exit) => {
            clean &= exit;
            out.bound = Some(bound);
        }
        Err(e) => errors.push(format!("past the queue bound: {e:#}")),
    }
    out.clean_shutdown = Some(clean);
    if !errors.is_empty() {
        errors.extend(out.note.take());
        out.note = Some(errors.join("; "));
    }
    out
}

/// Phase one: `VmRSS` per held request, then the release. Returns whether
/// the activator exited cleanly on SIGTERM.
async fn per_request(
    bins: ActivatorBins<'_>,
    dir: &Path,
    sizes: Sizes,
    out: &mut Held,
) -> anyhow::Result<bool> {
    const REV: &str = "held-00001";
    let cluster = FakeCluster::start(dir, "activator-held").await?;
    cluster.prometheus_metrics();
    cluster.revision(REV, 0);
    cluster.endpoints(REV, &[]);
    let (user_addr, _arrivals, user) = cold::recording_upstream().await?;
    let (proc, addr, metrics) = spawn(&cluster, bins.activator, dir, "activator-held", None)?;
    let mut held = JoinSet::new();
    let mut pod = None;
    let result = async {
        cold::wait_listening(addr).await?;
        // The first request: held once the activator knows the revision.
        let first = cold::hold(addr, REV, "/held/first").await?;
        held.spawn(async move {
            let _abort = AbortOnDrop(first.abort_handle());
            let started = Instant::now();
            let (status, _) = first.await.context("request task")??;
            anyhow::Ok((status, started.elapsed()))
        });
        wait_queued(metrics, REV, 1).await;
        tokio::time::sleep(SETTLE).await;
        out.rss_before_kib = proc.usage()?.rss_kib;

        let headers = activator::routing_headers(REV)?;
        open_held(&mut held, addr, &headers, sizes.held).await?;
        let want = sizes.held as u64 + 1;
        out.queued_reported = wait_queued(metrics, REV, want).await;
        tokio::time::sleep(SETTLE).await;
        out.rss_after_kib = proc.usage()?.rss_kib;
        // Early answers: not held (the count above is then short too).
        while let Some(done) = held.try_join_next() {
            out.answered_early += 1;
            let outcome = done.map_or_else(|e| e.to_string(), |r| describe(&r));
            out.note
                .get_or_insert(format!("answered before the pod was ready: {outcome}"));
        }
        if sizes.held > 0 && out.queued_reported == Some(want) {
            let grown = out.rss_after_kib as f64 - out.rss_before_kib as f64;
            out.bytes_per_request = Some(grown * 1024.0 / sizes.held as f64);
        } else {
            bail!(
                "the activator reported {:?} requests queued, not {want}",
                out.queued_reported
            );
        }

        // The pod starts, answers the kubelet's probe, and turns ready.
        let qp_port = free_port()?;
        pod = Some(
            QueueProxy {
                bin: bins.queue_proxy,
                cc: 0,
                bind: activator::POD_IP,
                port: qp_port,
                user_port: user_addr.port(),
                readiness_probe: None,
            }
            .spawn(dir, "activator-held-queue-proxy")
            .await?,
        );
        let pod_addr = activator::pod_addr(qp_port);
        wait_ready(pod_addr, &queue_probe_headers(), Duration::from_secs(10)).await?;
        let ready = Instant::now();
        cluster.endpoints(REV, &[pod_addr]);
        let deadline = ready + Duration::from_secs(30);
        let mut last = None;
        let mut other = Vec::new();
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, held.join_next()).await {
            match done {
                Ok(Ok((200, _))) => {
                    out.released_ok += 1;
                    last = Some(Instant::now());
                }
                Ok(r) => other.push(describe(&r)),
                Err(e) => other.push(e.to_string()),
            }
        }
        out.release_ms = last.map(|t| t.saturating_duration_since(ready).as_secs_f64() * 1e3);
        if out.released_ok != sizes.held + 1 {
            bail!(
                "{} of {} held requests answered 200 once the pod was ready ({})",
                out.released_ok,
                sizes.held + 1,
                summarize(&other).join(", ")
            );
        }
        anyhow::Ok(())
    }
    .await;
    held.abort_all();
    let result = result.map_err(|e| e.context(proc.log_tail()));
    let exited = stop(proc).await;
    if let Some(mut qp) = pod {
        qp.kill().await;
    }
    user.abort();
    result.map(|()| exited)
}

/// Phase two: a small queue bound, and more requests than it. Returns
/// whether the activator exited cleanly on SIGTERM.
async fn past_bound(bin: &Path, dir: &Path, sizes: Sizes, out: &mut Bound) -> anyhow::Result<bool> {
    const REV: &str = "bound-00001";
    let cluster = FakeCluster::start(dir, "activator-bound").await?;
    cluster.prometheus_metrics();
    cluster.revision(REV, 0);
    cluster.endpoints(REV, &[]);
    let (proc, addr, metrics) = spawn(&cluster, bin, dir, "activator-bound", Some(sizes.bound))?;
    let mut held = JoinSet::new();
    let result = async {
        cold::wait_listening(addr).await?;
        let first = cold::hold(addr, REV, "/held/first").await?;
        held.spawn(async move {
            let _abort = AbortOnDrop(first.abort_handle());
            let (status, _) = first.await.context("request task")??;
            anyhow::Ok((status, Duration::ZERO))
        });
        let headers = activator::routing_headers(REV)?;
        open_held(&mut held, addr, &headers, sizes.bound.saturating_sub(1)).await?;
        out.queued_at_bound = wait_queued(metrics, REV, sizes.bound as u64).await;
        tokio::time::sleep(SETTLE).await;
        out.rss_at_bound_kib = proc.usage()?.rss_kib;
        if out.queued_at_bound != Some(sizes.bound as u64) {
            bail!(
                "the activator reported {:?} requests queued, not {}",
                out.queued_at_bound,
                sizes.bound
            );
        }

        // Past the bound: each request on its own connection, a batch at a
        // time; the client closes each connection once answered. Two
        // waves, with VmRSS after each: the first also brings the rejection
        // path's buffers in, the second must find them.
        let mut rejected = Vec::new();
        let mut other = Vec::new();
        let first_wave = sizes.extra.div_ceil(BATCH).div_ceil(2);
        for batch in 0..sizes.extra.div_ceil(BATCH) {
            if batch == first_wave {
                tokio::time::sleep(SETTLE).await;
                out.rss_after_first_wave_kib = proc.usage()?.rss_kib;
                out.second_wave = sizes.extra - batch * BATCH;
            }
            let size = BATCH.min(sizes.extra - batch * BATCH);
            let answers = join_all((0..size).map(|_| {
                let headers = &headers;
                async move {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        request(addr, "/held/extra", headers, None),
                    )
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
                }
            }))
            .await;
            for a in answers {
                match a {
                    Ok((503, took)) => rejected.push(took.as_secs_f64() * 1e3),
                    r => other.push(describe(&r)),
                }
            }
        }
        out.extra_503 = rejected.len();
        out.extra_other = summarize(&other);
        rejected.sort_by(f64::total_cmp);
        out.reject_p50_ms = rejected.get(rejected.len() / 2).copied();
        out.reject_max_ms = rejected.last().copied();
        out.queued_after_extra = queued(metrics, REV).await;
        tokio::time::sleep(SETTLE).await;
        out.rss_after_extra_kib = proc.usage()?.rss_kib;

        // The held clients go away: their places free at once.
        held.abort_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while held.join_next().await.is_some() && Instant::now() < deadline {}
        out.queued_after_close = wait_queued(metrics, REV, 0).await;
        anyhow::Ok(())
    }
    .await;
    held.abort_all();
    let result = result.map_err(|e| e.context(proc.log_tail()));
    let exited = stop(proc).await;
    result.map(|()| exited)
}

/// An activator with Prometheus metrics on a known port (and a queue bound
/// when given): the process, its `http1` address and its metrics address.
fn spawn(
    cluster: &FakeCluster,
    bin: &Path,
    dir: &Path,
    name: &str,
    bound: Option<usize>,
) -> anyhow::Result<(Managed, SocketAddr, SocketAddr)> {
    let port = free_port()?;
    let metrics = free_port()?;
    let mut env = vec![("METRICS_PROMETHEUS_PORT", metrics.to_string())];
    if let Some(bound) = bound {
        env.push(("KDP_MAX_QUEUED_PER_REVISION", bound.to_string()));
    }
    let proc = cluster.spawn_activator(bin, port, dir, name, &env)?;
    Ok((proc, loopback(port), loopback(metrics)))
}

/// SIGTERM, and whether it exited with status 0 within 5 s.
async fn stop(proc: Managed) -> bool {
    let name = proc.name.clone();
    match proc.terminate(Duration::from_secs(5)).await {
        Some(status) if status == "exit status: 0" => true,
        Some(status) => {
            eprintln!("kdp-bench: {name} exited with {status} on SIGTERM");
            false
        }
        None => {
            eprintln!("kdp-bench: {name} did not exit within 5 s of SIGTERM");
            false
        }
    }
}

type Answer = anyhow::Result<(u16, Duration)>;

/// Aborts a task when dropped: the first held request's task (from
/// [`cold::hold`]) goes with the task that waits for it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens `n` connections, a batch at a time, each sending one request for
/// the revision of `headers`, and leaves the requests pending in `set`.
/// Returns once every request is written (or failed).
async fn open_held(
    set: &mut JoinSet<Answer>,
    addr: SocketAddr,
    headers: &[(HeaderName, HeaderValue)],
    n: usize,
) -> anyhow::Result<()> {
    for batch in 0..n.div_ceil(BATCH) {
        let size = BATCH.min(n - batch * BATCH);
        let mut sent = Vec::with_capacity(size);
        for i in 0..size {
            let (tx, rx) = oneshot::channel();
            let headers = headers.to_vec();
            let path = format!("/held/{}", batch * BATCH + i);
            set.spawn(async move { request(addr, &path, &headers, Some(tx)).await });
            sent.push(rx);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for rx in sent {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(())) => {}
                // The task ended: its error comes out of the set.
                Ok(Err(_)) => {}
                Err(_) => bail!("connections not open within 10 s"),
            }
        }
    }
    Ok(())
}

/// One GET on a connection of its own; `sent` fires once the connection is
/// open and the request is handed to it. The connection is driven inside
/// this future, so dropping (aborting) it closes the socket. Returns the
/// status and the time from the request to the whole answer.
async fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    sent: Option<oneshot::Sender<()>>,
) -> Answer {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let mut req = Request::get(path)
        .header(header::HOST, HOST)
        .body(Empty::new())?;
    for (name, value) in headers {
        req.headers_mut().insert(name, value.clone());
    }
    let exchange = async move {
        let started = Instant::now();
        let response = sender.send_request(req);
        if let Some(tx) = sent {
            let _ = tx.send(());
        }
        let resp = response.await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        // `sender` drops here: the connection then ends.
        anyhow::Ok((status, started.elapsed()))
    };
    let (answer, _) = tokio::join!(exchange, conn);
    answer
}

/// `kn_revision_request_queued` of revision `rev`, from the metrics port.
async fn queued(metrics: SocketAddr, rev: &str) -> Option<u64> {
    let scrape = async {
        let mut conn = load::connect(metrics).await?;
        let resp = conn
            .send_request(
                Request::get("/metrics")
                    .header(header::HOST, "localhost")
                    .body(Empty::new())?,
            )
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), scrape)
        .await
        .ok()?
        .ok()?;
    let label = format!("kn_revision_name=\"{rev}\"");
    text.lines()
        .filter(|l| l.starts_with("kn_revision_request_queued{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
}

/// Polls [`queued`] until it reads `want`, for at most 10 s; the last value
/// read.
async fn wait_queued(metrics: SocketAddr, rev: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        last = queued(metrics, rev).await;
        if last == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// `503`, `connecting to …: refused`.
fn describe(r: &Answer) -> String {
    match r {
        Ok((status, _)) => status.to_string(),
        Err(e) => format!("{e:#}"),
    }
}

/// Distinct outcomes with their counts, in order of first appearance.
fn summarize(outcomes: &[String]) -> Vec<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for o in outcomes {
        match counts.iter_mut().find(|(k, _)| *k == o) {
            Some((_, n)) => *n += 1,
            None => counts.push((o, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect()
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
