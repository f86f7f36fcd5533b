//! The local data plane: router, hold-until-ready, replicas behind queue-proxies.
//!
//! Request flow: the router resolves `Host` (and the tag header) to a
//! revision through the model's [`RouteTable`](crate::route::RouteTable);
//! while that revision has no ready replica the request is held (bounded,
//! like the activator's queue) and the revision is scaled from zero; then it
//! goes to the least-loaded ready replica's in-process queue-proxy, which
//! forwards to the user's process on `$PORT`. A scaler loop per revision
//! adds replicas when concurrency exceeds the revision's target and removes
//! idle ones, down to zero after the scale-to-zero grace period.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use kdp_proxy::body::BoxBody;
use kdp_proxy::forward::Forward;
use kdp_proxy::pool::{PoolConfig, Target, Upstream};
use kdp_proxy::respond::{error_response, http_error, raw};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::model::Model;
use crate::revision::{Revision, RevisionKey};
use crate::supervisor::{self, Output, ProcessEvent, ProcessSpec, Replica, RestartPolicy};

/// Requests held per revision while it has no ready replica (the activator's default).
pub const MAX_HELD_PER_REVISION: usize = 10_000;
/// Knative's default scale-to-zero grace period.
pub const DEFAULT_SCALE_TO_ZERO_GRACE: Duration = Duration::from_secs(30);
/// How often the scaler looks at each revision (the KPA's tick).
pub const SCALER_TICK: Duration = Duration::from_secs(2);

/// The running local plane.
#[derive(Clone, Debug)]
pub struct Plane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: watch::Receiver<Arc<Model>>,
    revisions: Mutex<HashMap<RevisionKey, Arc<RevisionPlane>>>,
    forward: Forward,
    events: tokio::sync::mpsc::UnboundedSender<ProcessEvent>,
    grace: Duration,
}

#[derive(Debug)]
struct RevisionPlane {
    revision: Arc<Revision>,
    ready: watch::Sender<Vec<Arc<Running>>>,
    in_flight: AtomicUsize,
    held: AtomicUsize,
    last_active: Mutex<Instant>,
    replicas: tokio::sync::Mutex<Vec<Arc<Running>>>,
    next_index: AtomicUsize,
}

#[derive(Debug)]
struct Running {
    label: String,
    queue_proxy: SocketAddr,
    in_flight: AtomicUsize,
    process: Mutex<Option<Replica>>,
    stop_qp: Mutex<Option<oneshot::Sender<()>>>,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
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

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Plane ===

impl Plane {
    /// A plane serving `model` (updates arrive through the channel).
    pub fn new(model: watch::Receiver<Arc<Model>>, grace: Duration) -> Self {
        let upstream = Upstream::new(&PoolConfig {
            target: Target::FromUri,
            max_idle_per_host: 100,
        });
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                tracing::info!(?event, "process");
            }
        });
        Self {
            inner: Arc::new(Inner {
                model,
                revisions: Mutex::default(),
                forward: Forward::new(upstream, Target::FromUri),
                events,
                grace,
            }),
        }
    }

    /// Serves the router on `listener` until `shutdown` resolves, then stops every replica.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let plane = self.clone();
        let svc = tower::service_fn(move |req: Request<Incoming>| {
            let plane = plane.clone();
            async move { Ok::<_, Infallible>(plane.handle(req).await) }
        });
        let scaler = tokio::spawn(self.clone().scale_loop());
        kdp_proxy::serve::serve(
            listener,
            svc,
            kdp_proxy::serve::ServeConfig::new("router"),
            shutdown,
        )
        .await;
        scaler.abort();
        self.stop_all().await;
    }

    /// Ready replicas of a revision (for status).
    pub fn ready_replicas(&self, key: &RevisionKey) -> usize {
        self.lock().get(key).map_or(0, |r| r.ready.borrow().len())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(ToString::to_string))
            .unwrap_or_default();
        let model = self.inner.model.borrow().clone();
        let tag = req
            .headers()
            .get(&kdp_core::header::KNATIVE_SERVING_TAG)
            .and_then(|v| v.to_str().ok());
        let key = match model.routes.route(&host, tag, &mut rand::rng()) {
            Ok(m) => m.revision.clone(),
            Err(no_route) => return http_error(StatusCode::NOT_FOUND, &no_route.to_string()),
        };
        let Some(revision) = model.revisions.get(&key).cloned() else {
            return http_error(StatusCode::NOT_FOUND, &format!("revision {key} not found"));
        };
        let rev = self.revision(revision);
        rev.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(&rev.in_flight);
        *rev.last_active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();

        let replica = match self.wait_ready(&rev).await {
            Ok(r) => r,
            Err(rsp) => return rsp,
        };
        replica.in_flight.fetch_add(1, Ordering::AcqRel);
        let _replica_in_flight = InFlight(&replica.in_flight);
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string);
        let Ok(uri) = format!("http://{}{path}", replica.queue_proxy).parse::<Uri>() else {
            return http_error(StatusCode::BAD_REQUEST, "invalid request target");
        };
        if parts.version == http::Version::HTTP_2
            && !parts.headers.contains_key(header::HOST)
            && let Ok(h) = HeaderValue::try_from(host)
        {
            parts.headers.insert(header::HOST, h);
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        match self
            .inner
            .forward
            .forward(Request::from_parts(parts, body))
            .await
        {
            Ok(rsp) => rsp,
            Err(err) => error_response(err.as_ref(), None),
        }
    }

    /// Holds the request until the revision has a ready replica (starting one if none runs).
    async fn wait_ready(
        &self,
        rev: &Arc<RevisionPlane>,
    ) -> Result<Arc<Running>, Response<BoxBody>> {
        if let Some(r) = rev.pick() {
            return Ok(r);
        }
        if rev.held.fetch_add(1, Ordering::AcqRel) >= MAX_HELD_PER_REVISION {
            rev.held.fetch_sub(1, Ordering::AcqRel);
            let mut rsp = http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "pending request queue full",
            );
            rsp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(rsp);
        }
        let _held = InFlight(&rev.held);
        self.ensure_at_least_one(rev);
        let mut rx = rev.ready.subscribe();
        let wait = rx.wait_for(|ready| !ready.is_empty());
        match tokio::time::timeout(rev.revision.timeout, wait).await {
            Ok(Ok(_)) => rev
                .pick()
                .ok_or_else(|| raw(StatusCode::SERVICE_UNAVAILABLE, "")),
            _ => Err(raw(
                StatusCode::GATEWAY_TIMEOUT,
                "activator request timeout",
            )),
        }
    }

    fn ensure_at_least_one(&self, rev: &Arc<RevisionPlane>) {
        let plane = self.clone();
        let rev = rev.clone();
        tokio::spawn(async move {
            let mut replicas = rev.replicas.lock().await;
            if replicas.is_empty() {
                tracing::info!(revision = %rev.revision.key, "scaling from 0 to 1 (request waiting)");
                plane.start_replica(&rev, &mut replicas).await;
            }
        });
    }

    async fn start_replica(&self, rev: &Arc<RevisionPlane>, replicas: &mut Vec<Arc<Running>>) {
        match self.spawn_replica(rev).await {
            Ok(running) => {
                replicas.push(running.clone());
                let rev = rev.clone();
                tokio::spawn(async move {
                    if wait_queue_proxy_ready(running.queue_proxy, rev.revision.timeout).await {
                        tracing::info!(replica = %running.label, "ready");
                        rev.ready.send_modify(|r| r.push(running));
                    }
                });
            }
            Err(error) => {
                tracing::error!(error = %kdp_core::ErrorChain(&error), "replica failed to start")
            }
        }
    }

    async fn spawn_replica(&self, rev: &RevisionPlane) -> Result<Arc<Running>, StartError> {
        let r = &rev.revision;
        let index = rev.next_index.fetch_add(1, Ordering::AcqRel) + 1;
        let label = format!("{}/{index}", r.key.name);
        let io = |e| StartError::Io(label.clone(), e);
        let port = supervisor::free_port().map_err(io)?;
        let probe = readiness_json(r, port);
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
            ("SERVING_READINESS_PROBE", probe),
            ("SERVING_LOGGING_CONFIG", String::new()),
            ("SERVING_LOGGING_LEVEL", String::new()),
            ("SERVING_NAMESPACE", r.key.namespace.clone()),
            ("SERVING_SERVICE", r.service.clone()),
            ("SERVING_CONFIGURATION", r.service.clone()),
            ("SERVING_REVISION", r.key.name.clone()),
            ("SERVING_POD", label.clone()),
            ("SERVING_POD_IP", "127.0.0.1".to_owned()),
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
            self.inner.events.clone(),
        )
        .map_err(io)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(app.run(async {
            let _ = stop_rx.await;
        }));
        Ok(Arc::new(Running {
            label,
            queue_proxy,
            in_flight: AtomicUsize::new(0),
            process: Mutex::new(Some(process)),
            stop_qp: Mutex::new(Some(stop_tx)),
        }))
    }

    async fn scale_loop(self) {
        let mut tick = tokio::time::interval(SCALER_TICK);
        loop {
            tick.tick().await;
            let revisions: Vec<_> = self.lock().values().cloned().collect();
            for rev in revisions {
                self.scale(&rev).await;
            }
        }
    }

    /// One scaling decision: enough replicas for the observed concurrency at
    /// the revision's target, within min/max scale; zero once idle for the grace period.
    async fn scale(&self, rev: &Arc<RevisionPlane>) {
        let r = &rev.revision;
        let ann = |k: &str, alt: &str| {
            r.annotations
                .get(&format!("autoscaling.knative.dev/{k}"))
                .or_else(|| r.annotations.get(&format!("autoscaling.knative.dev/{alt}")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let min = ann("min-scale", "minScale").unwrap_or(0.0).max(0.0);
        let max = ann("max-scale", "maxScale").unwrap_or(0.0).max(0.0);
        let total = match (ann("target", "target"), r.container_concurrency) {
            (Some(t), 0) => t,
            (Some(t), cc) => t.min(cc as f64),
            (None, 0) => 100.0,
            (None, cc) => cc as f64,
        };
        let utilization = ann(
            "target-utilization-percentage",
            "targetUtilizationPercentage",
        )
        .unwrap_or(70.0)
            / 100.0;
        let target = (total * utilization).max(0.01);
        let concurrency = rev.in_flight.load(Ordering::Acquire) as f64;
        let idle_for = rev
            .last_active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed();
        let mut desired = (concurrency / target).ceil();
        if desired == 0.0 && idle_for < self.inner.grace {
            desired = 1.0;
        }
        desired = desired.max(min);
        if max > 0.0 {
            desired = desired.min(max);
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "desired is a small non-negative whole number"
        )]
        let desired = desired as usize;
        let mut replicas = rev.replicas.lock().await;
        let current = replicas.len();
        if desired > current {
            tracing::info!(revision = %r.key, from = current, to = desired, concurrency, target, "scaling up");
            for _ in current..desired {
                self.start_replica(rev, &mut replicas).await;
            }
        } else if desired < current && rev.held.load(Ordering::Acquire) == 0 {
            tracing::info!(revision = %r.key, from = current, to = desired, idle_secs = idle_for.as_secs(), "scaling down");
            while replicas.len() > desired {
                let Some(victim) = replicas.pop() else { break };
                rev.ready
                    .send_modify(|ready| ready.retain(|x| !Arc::ptr_eq(x, &victim)));
                tokio::spawn(stop_replica(victim));
            }
        }
    }

    async fn stop_all(&self) {
        let revisions: Vec<_> = self.lock().drain().map(|(_, r)| r).collect();
        let mut stops = Vec::new();
        for rev in revisions {
            rev.ready.send_replace(Vec::new());
            for replica in rev.replicas.lock().await.drain(..) {
                stops.push(tokio::spawn(stop_replica(replica)));
            }
        }
        for stop in stops {
            let _ = stop.await;
        }
    }

    fn revision(&self, revision: Arc<Revision>) -> Arc<RevisionPlane> {
        let mut map = self.lock();
        map.entry(revision.key.clone())
            .or_insert_with(|| {
                Arc::new(RevisionPlane {
                    revision,
                    ready: watch::channel(Vec::new()).0,
                    in_flight: AtomicUsize::new(0),
                    held: AtomicUsize::new(0),
                    last_active: Mutex::new(Instant::now()),
                    replicas: tokio::sync::Mutex::default(),
                    next_index: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RevisionKey, Arc<RevisionPlane>>> {
        self.inner
            .revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RevisionPlane {
    /// The ready replica with the fewest requests in flight.
    fn pick(&self) -> Option<Arc<Running>> {
        self.ready
            .borrow()
            .iter()
            .min_by_key(|r| r.in_flight.load(Ordering::Acquire))
            .cloned()
    }
}

async fn stop_replica(replica: Arc<Running>) {
    if let Some(tx) = replica
        .stop_qp
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        let _ = tx.send(());
    }
    let process = replica
        .process
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(process) = process {
        process.stop(supervisor::DEFAULT_GRACE).await;
        tracing::info!(replica = %replica.label, "stopped");
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

/// Asks the queue-proxy, as the activator does, until it answers `queue`.
async fn wait_queue_proxy_ready(addr: SocketAddr, limit: Duration) -> bool {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let req = Request::get(format!("http://{addr}/healthz"))
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
