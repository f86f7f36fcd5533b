//! Cold start figures.
//!
//! * Queue-proxy: the queue-proxy runs with Knative's default readiness
//!   probe (`tcpSocket` on the user port, `periodSeconds: 0`, so it polls
//!   aggressively) and a kubelet probe is already waiting on it; the clock
//!   starts when the driver binds the user port and stops when that probe
//!   answers 200.
//! * Activator: the activator binary runs against the driver's fake API
//!   server. Each round creates a revision whose private Endpoints are empty
//!   (scaled to zero), sends it a request, which the activator holds, starts
//!   the pod (a queue-proxy on `127.0.0.2`) and waits until it answers the
//!   kubelet's readiness probe. The clock starts when the driver then
//!   publishes the pod as ready in the Endpoints (what the endpoints
//!   controller does once the kubelet sees the pod ready) and stops when the
//!   held request reaches the user container behind the queue-proxy. In
//!   between: the watch event, the activator's probe of the pod, the
//!   throttler's dispatch and the forward (a new connection to a new pod).
//! * Local mode: `kdp run` on the bundled hello-world manifest; once its
//!   router accepts connections (no replica yet), the clock starts, and it
//!   stops at the first complete `Hello World!` response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::activator::{self, FakeCluster};
use crate::load;
use crate::procs::{Managed, free_port};
use crate::targets::{HOST, QueueProxy, loopback, queue_probe_headers, wait_ready};

/// `Host` of the bundled app in `deploy/local/hello-world.yaml`.
pub(crate) const HELLO_HOST: &str = "helloworld-go.default.example.com";

/// Time from the user container listening to the queue-proxy answering ready.
pub(crate) async fn queue_proxy(bin: &Path, dir: &Path) -> anyhow::Result<Duration> {
    let user_port = free_port()?;
    let port = free_port()?;
    let qp = QueueProxy {
        bin,
        cc: 0,
        bind: std::net::Ipv4Addr::LOCALHOST,
        port,
        user_port,
        readiness_probe: Some(format!(
            r#"{{"tcpSocket":{{"port":{user_port},"host":"127.0.0.1"}},"successThreshold":1}}"#
        )),
    };
    let mut proc = qp.spawn(dir, "queue-proxy-cold").await?;
    let addr = loopback(port);
    let result = async {
        // Wait for the serving port; the user container is not listening.
        let up = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > up {
                bail!("queue-proxy did not start");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A kubelet probe in flight, as when the pod starts.
        let waiting = tokio::spawn(async move {
            let probe = queue_probe_headers();
            let mut conn = load::connect(addr).await?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let (status, _) = load::get(&mut conn, HOST, "/", &probe).await?;
                if status == 200 {
                    return anyhow::Ok(Instant::now());
                }
                if Instant::now() > deadline {
                    bail!("never ready (last status {status})");
                }
            }
        });
        // A varying phase against the prober's retry period, so that the
        // rounds sample it instead of hitting the same point each time.
        tokio::time::sleep(Duration::from_millis(100) + jitter(Duration::from_millis(100))).await;
        let listening = Instant::now();
        let listener = TcpListener::bind(loopback(user_port)).await?;
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let ready = waiting.await.context("probe task")??;
        accept.abort();
        Ok(ready.saturating_duration_since(listening))
    }
    .await;
    proc.kill().await;
    result.map_err(|e: anyhow::Error| e.context(proc.log_tail()))
}

/// The binaries the activator cold start needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActivatorBins<'a> {
    pub(crate) activator: &'a Path,
    pub(crate) queue_proxy: &'a Path,
}

/// `rounds` activator cold starts against one activator process: for each,
/// the time from the pod's Endpoints entry turning ready (its queue-proxy
/// already answering ready) to the held request reaching the user
/// container. `Err` when the activator cannot be set up at all.
pub(crate) async fn activator_forward(
    bins: ActivatorBins<'_>,
    dir: &Path,
    rounds: usize,
) -> anyhow::Result<Vec<anyhow::Result<Duration>>> {
    let cluster = FakeCluster::start(dir, "activator-cold").await?;
    let (user_addr, mut arrivals, user) = recording_upstream().await?;
    let port = free_port()?;
    let addr = loopback(port);
    let mut proc = cluster.spawn_activator(bins.activator, port, dir, "activator-cold", &[])?;
    let setup = wait_listening(addr).await;
    let mut out = Vec::new();
    if setup.is_ok() {
        for round in 0..rounds {
            let result =
                activator_round(&cluster, bins, dir, addr, user_addr, &mut arrivals, round)
                    .await
                    .map_err(|e| e.context(proc.log_tail()));
            out.push(result);
        }
    }
    proc.kill().await;
    user.abort();
    setup.context("the activator did not start")?;
    Ok(out)
}

/// One activator cold start, on a fresh revision and a fresh pod.
async fn activator_round(
    cluster: &FakeCluster,
    bins: ActivatorBins<'_>,
    dir: &Path,
    addr: SocketAddr,
    user_addr: SocketAddr,
    arrivals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    round: usize,
) -> anyhow::Result<Duration> {
    let rev = format!("cold-{round:05}");
    let path = format!("/cold/{round}");
    cluster.revision(&rev, 0);
    cluster.endpoints(&rev, &[]);

    // The pod starts and its queue-proxy answers the kubelet's probe.
    let qp_port = free_port()?;
    let mut qp = QueueProxy {
        bin: bins.queue_proxy,
        cc: 0,
        bind: activator::POD_IP,
        port: qp_port,
        user_port: user_addr.port(),
        readiness_probe: None,
    }
    .spawn(dir, "activator-cold-queue-proxy")
    .await?;
    let pod = activator::pod_addr(qp_port);
    let result = async {
        wait_ready(pod, &queue_probe_headers(), Duration::from_secs(10)).await?;
        let mut held = hold(addr, &rev, &path).await?;
        while arrivals.try_recv().is_ok() {}

        let ready = Instant::now();
        cluster.endpoints(&rev, &[pod]);
        let deadline = ready + Duration::from_secs(5);
        let arrived = loop {
            let next = tokio::time::timeout_at(deadline, arrivals.recv())
                .await
                .context("the held request never reached the pod")?
                .context("the user container stopped")?;
            if next.0 == path {
                break next.1;
            }
        };
        let (status, _) = tokio::time::timeout_at(deadline, &mut held)
            .await
            .context("no answer to the held request")?
            .context("request task")??;
        if status != 200 {
            bail!("the held request got {status}");
        }
        Ok(arrived.saturating_duration_since(ready))
    }
    .await;
    qp.kill().await;
    result
}

pub(crate) type Pending = tokio::task::JoinHandle<anyhow::Result<(u16, u64)>>;

/// Sends `path` for revision `rev` until the activator holds it (no answer
/// within 100–200 ms); earlier answers (404 before the activator has seen
/// the revision, connection refused before it listens) are retried.
pub(crate) async fn hold(addr: SocketAddr, rev: &str, path: &str) -> anyhow::Result<Pending> {
    let headers = activator::routing_headers(rev)?;
    let mut last = String::new();
    for _ in 0..50 {
        let headers = headers.clone();
        let path = path.to_owned();
        let mut pending: Pending = tokio::spawn(async move {
            let mut conn = load::connect(addr).await?;
            load::get(&mut conn, HOST, &path, &headers).await
        });
        // A varying phase, as for the queue-proxy.
        let wait = Duration::from_millis(100) + jitter(Duration::from_millis(100));
        match tokio::time::timeout(wait, &mut pending).await {
            Err(_) => return Ok(pending),
            Ok(Ok(Ok((404, _)))) => last = "404".to_owned(),
            Ok(Ok(Ok((status, _)))) => bail!("answered {status} while the revision had no pod"),
            Ok(Ok(Err(e))) => last = format!("{e:#}"),
            Ok(Err(e)) => bail!("request task: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the activator never held a request for {rev}: {last}")
}

/// A user container on `127.0.0.1:<port>` that reports each request's path
/// and arrival time, and answers 200.
pub(crate) async fn recording_upstream() -> anyhow::Result<(
    SocketAddr,
    mpsc::UnboundedReceiver<(String, Instant)>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = TcpListener::bind(loopback(0)).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let _ = tx.send((req.uri().path().to_owned(), Instant::now()));
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n")))) }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, rx, accept))
}

/// Time from `kdp run`'s router being up with zero replicas to the first
/// response of the bundled app.
pub(crate) async fn local_mode(
    kdp: &Path,
    manifest: &Path,
    dir: &Path,
) -> anyhow::Result<Duration> {
    let port = free_port()?;
    let addr: SocketAddr = loopback(port);
    let mut cmd = Command::new(kdp);
    cmd.arg("run")
        .arg(manifest)
        .arg("--listen")
        .arg(addr.to_string());
    let proc = Managed::spawn("kdp-run", cmd, &dir.join("kdp-run.log"))?;
    let result = async {
        wait_listening(addr)
            .await
            .context("kdp run did not come up")?;
        let start = Instant::now();
        let mut conn = load::connect(addr).await?;
        let (status, len) = tokio::time::timeout(
            Duration::from_secs(10),
            load::get(&mut conn, HELLO_HOST, "/", &[]),
        )
        .await
        .context("no response within 10 s")??;
        let elapsed = start.elapsed();
        if status != 200 || len == 0 {
            bail!("first response: status {status}, {len} bytes");
        }
        Ok(elapsed)
    }
    .await;
    let result = result.map_err(|e: anyhow::Error| e.context(proc.log_tail()));
    proc.terminate(Duration::from_secs(5)).await;
    result
}

/// Waits until `addr` (the router of `kdp run`, the activator) accepts
/// connections.
pub(crate) async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("{addr} not listening");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A pseudo-random duration below `max`, from the clock's nanoseconds.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max_ns = u32::try_from(max.as_nanos()).unwrap_or(u32::MAX).max(1);
    Duration::from_nanos(u64::from(nanos.wrapping_mul(2_654_435_761) % max_ns))
}
