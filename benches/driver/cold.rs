//! Cold start figures.
//!
//! * Queue-proxy: the queue-proxy runs with Knative's default readiness
//!   probe (`tcpSocket` on the user port, `periodSeconds: 0`, so it polls
//!   aggressively) and a kubelet probe is already waiting on it; the clock
//!   starts when the driver binds the user port and stops when that probe
//!   answers 200.
//! * Local mode: `kdp run` on the bundled hello-world manifest; once its
//!   router accepts connections (no replica yet), the clock starts, and it
//!   stops at the first complete `Hello World!` response.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;

use crate::load;
use crate::procs::{Managed, free_port};
use crate::targets::{HOST, QueueProxy, loopback, queue_probe_headers};

/// `Host` of the bundled app in `deploy/local/hello-world.yaml`.
pub(crate) const HELLO_HOST: &str = "helloworld-go.default.example.com";

/// Time from the user container listening to the queue-proxy answering ready.
pub(crate) async fn queue_proxy(bin: &Path, dir: &Path) -> anyhow::Result<Duration> {
    let user_port = free_port()?;
    let port = free_port()?;
    let qp = QueueProxy {
        bin,
        cc: 0,
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

/// Waits until the router of `kdp run` accepts connections.
async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("router not listening");
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
