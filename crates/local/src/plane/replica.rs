//! One replica: the user's process behind an in-process queue-proxy core.
//!
//! Last stage of the local request path. [`spawn`] picks a free port for the process (its
//! `PORT`), builds a [`kdp_queue_proxy::App`] on loopback ports with the environment Knative
//! would inject (containerConcurrency, timeouts, the readiness probe aimed at that port) and
//! starts the process under the [`supervisor`]. The router forwards to the queue-proxy's main
//! port and reads its stats directly; [`wait_ready`] asks the queue-proxy the activator's probe
//! until the process is ready. [`Running::shutdown`] stops both. Starting fails with a
//! [`StartError`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::revision::Revision;
use crate::supervisor::{self, Output, ProcessEvent, ProcessSpec, Replica, RestartPolicy};

/// How often [`wait_ready`] probes during the first [`FAST_PROBING`].
const FAST_PROBE: Duration = Duration::from_millis(5);
/// How long [`wait_ready`] probes fast before slowing down.
const FAST_PROBING: Duration = Duration::from_secs(2);
/// The probe interval after that.
const SLOW_PROBE: Duration = Duration::from_millis(100);

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The queue-proxy configuration was refused.
    #[error("queue-proxy configuration for {0} is invalid")]
    Config(String, #[source] kdp_core::env::EnvError),
    /// The readiness probe could not be encoded or decoded.
    #[error("readiness probe of {0} is invalid")]
    Probe(String, #[source] kdp_queue_proxy::BuildError),
    /// The process or a socket failed.
    #[error("cannot start {0}")]
    Io(String, #[source] std::io::Error),
}

/// A started replica.
#[derive(Debug)]
pub(super) struct Running {
    /// `<revision>/<index>`.
    pub(super) label: String,
    /// The queue-proxy's main port.
    pub(super) queue_proxy: SocketAddr,
    /// The queue-proxy's stats (its `Stat` snapshot of the last second).
    pub(super) stats: kdp_queue_proxy::stats::Stats,
    /// Requests the router has sent here and not finished.
    pub(super) in_flight: AtomicUsize,
    /// Set once the replica is being stopped: it must not become ready again.
    pub(super) stopping: AtomicBool,
    process: Mutex<Option<Replica>>,
    stop_queue_proxy: Mutex<Option<oneshot::Sender<()>>>,
}

// === impl Running ===

impl Running {
    /// Stops the queue-proxy (which drains) and the process (SIGTERM, then SIGKILL after the
    /// supervisor's grace period).
    pub(super) async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(tx) = lock(&self.stop_queue_proxy).take() {
            let _ = tx.send(());
        }
        let process = lock(&self.process).take();
        if let Some(process) = process {
            process.stop(supervisor::DEFAULT_GRACE).await;
        }
    }
}

/// Starts replica number `index` of `revision`; its process events go to `events`.
pub(super) async fn spawn(
    r: &Revision,
    index: usize,
    events: mpsc::UnboundedSender<ProcessEvent>,
) -> Result<Arc<Running>, StartError> {
    let label = format!("{}/{index}", r.key.name);
    let io = |e| StartError::Io(label.clone(), e);
    let port = supervisor::free_port().map_err(io)?;
    let env: HashMap<String, String> = [
        ("CONTAINER_CONCURRENCY", r.container_concurrency.to_string()),
        ("QUEUE_SERVING_PORT", "8012".to_owned()),
        ("QUEUE_SERVING_TLS_PORT", "8112".to_owned()),
        ("USER_PORT", port.to_string()),
        ("REVISION_TIMEOUT_SECONDS", r.timeout.as_secs().to_string()),
        (
            "REVISION_RESPONSE_START_TIMEOUT_SECONDS",
            r.response_start_timeout
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ),
        (
            "REVISION_IDLE_TIMEOUT_SECONDS",
            r.idle_timeout.map_or(0, |d| d.as_secs()).to_string(),
        ),
        ("SERVING_READINESS_PROBE", readiness_json(r, port)),
        ("SERVING_LOGGING_CONFIG", String::new()),
        ("SERVING_LOGGING_LEVEL", String::new()),
        ("SERVING_NAMESPACE", r.key.namespace.clone()),
        ("SERVING_SERVICE", r.service.clone()),
        ("SERVING_CONFIGURATION", r.service.clone()),
        ("SERVING_REVISION", r.key.name.clone()),
        ("SERVING_POD", label.clone()),
        ("SERVING_POD_IP", "127.0.0.1".to_owned()),
        // Locally nothing has to notice the pod going away, so do not wait before draining.
        ("KDP_DRAIN_QUIET_PERIOD", "0s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = kdp_queue_proxy::env::Config::from_env(&env)
        .map_err(|e| StartError::Config(label.clone(), e))?;
    let bind = || async { TcpListener::bind("127.0.0.1:0").await };
    let listeners = kdp_queue_proxy::Listeners {
        main: bind().await.map_err(io)?,
        admin: bind().await.map_err(io)?,
        metrics: bind().await.map_err(io)?,
        user_metrics: None,
        tls: None,
    };
    let app = kdp_queue_proxy::App::build(config, listeners)
        .map_err(|e| StartError::Probe(label.clone(), e))?;
    let queue_proxy = app.main_addr().map_err(io)?;
    let stats = app.stats().clone();
    let process = Replica::spawn(
        ProcessSpec {
            label: label.clone(),
            program: r.program.clone(),
            args: r.args.clone(),
            env: r.process_env(port),
            working_dir: Some(r.working_dir.clone()),
        },
        RestartPolicy::default(),
        Output::Terminal,
        events,
    )
    .map_err(io)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(app.run(async {
        let _ = stop_rx.await;
    }));
    Ok(Arc::new(Running {
        label,
        queue_proxy,
        stats,
        in_flight: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        process: Mutex::new(Some(process)),
        stop_queue_proxy: Mutex::new(Some(stop_tx)),
    }))
}

/// Asks the queue-proxy, as the activator does (`K-Network-Probe: queue`), until it answers
/// 200: the process passed its readiness probe. False after `limit` or once the replica stops.
pub(super) async fn wait_ready(replica: &Running, limit: Duration) -> bool {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let start = Instant::now();
    while start.elapsed() < limit && !replica.stopping.load(Ordering::Acquire) {
        let req = Request::get(format!("http://{}/healthz", replica.queue_proxy))
            .header(header::USER_AGENT, kdp_core::header::UA_ACTIVATOR_PROBE)
            .header(
                &kdp_core::header::K_NETWORK_PROBE,
                kdp_core::header::PROBE_QUEUE,
            )
            .body(http_body_util::Empty::new());
        if let Ok(req) = req
            && let Ok(rsp) = client.request(req).await
            && rsp.status() == StatusCode::OK
        {
            return true;
        }
        let pause = if start.elapsed() < FAST_PROBING {
            FAST_PROBE
        } else {
            SLOW_PROBE
        };
        tokio::time::sleep(pause).await;
    }
    false
}

/// `exit 1` or `signal 9`, for lifecycle lines.
pub(super) fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The user's readiness probe aimed at the replica's port, or Knative's default TCP probe.
fn readiness_json(r: &Revision, port: u16) -> String {
    let mut probe = r
        .readiness_probe
        .clone()
        .unwrap_or_else(|| serde_json::json!({ "tcpSocket": {}, "successThreshold": 1 }));
    if let Some(obj) = probe.as_object_mut() {
        for kind in ["httpGet", "tcpSocket", "grpc"] {
            if let Some(h) = obj.get_mut(kind).and_then(|h| h.as_object_mut()) {
                h.insert("port".to_owned(), port.into());
                if kind != "grpc" {
                    h.insert("host".to_owned(), "127.0.0.1".into());
                }
            }
        }
        // The queue-proxy cannot exec in the user's container; a TCP probe is the closest.
        if obj.contains_key("exec") {
            obj.remove("exec");
            obj.insert(
                "tcpSocket".to_owned(),
                serde_json::json!({ "port": port, "host": "127.0.0.1" }),
            );
        }
    }
    probe.to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
