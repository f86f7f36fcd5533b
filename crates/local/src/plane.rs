//! The local data plane: router, activator, replicas behind queue-proxies, and the KPA.
//!
//! Request flow: the router resolves `Host` (and the tag header) to a revision through the
//! model's [`RouteTable`](crate::route::RouteTable) and then acts as the activator: it counts
//! the request in its concurrency reporter (the first request to an idle revision *pokes* the
//! autoscaler), holds it (bounded, like the activator's queue) until a ready replica has room
//! under `containerConcurrency`, and forwards it with `K-Proxy-Request: activator` to that
//! replica's in-process queue-proxy, which forwards to the user's process on `$PORT`.
//! Unknown hosts get 404, except [`STATUS_PATH`], which answers the [`StatusReport`] on any
//! host that is not a Service's.
//!
//! Autoscaling is Knative's KPA from `kdp-autoscaler`, one per revision (`autoscale`):
//! every second the router's own concurrency (as the activator's stat) and every ready
//! replica's queue-proxy `Stat` are recorded (the queue-proxy counts the router's requests as
//! proxied, so the decider subtracts them, exactly as in a cluster); every 2 s, or at once on a
//! poke, the decider and the PodAutoscaler reconciler decide the replica count, and replicas
//! are started or drained and stopped. New revisions start at their initial scale; revisions
//! that lose their traffic become unreachable and scale to zero; revisions removed from the
//! model are drained and stopped at once. Lifecycle lines go to tracing target `kdp`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use kdp_autoscaler::Timestamp;
use kdp_proxy::body::{BoxBody, Guarded};
use kdp_proxy::forward::Forward;
use kdp_proxy::pool::{PoolConfig, Target, Upstream};
use kdp_proxy::respond::{error_response, http_error};
use kdp_stats::{ConcurrencyReporter, Stat};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::model::Model;
use crate::revision::{Revision, RevisionKey};
use crate::status::{Condition, STATUS_PATH, StatusReport};
use crate::supervisor::ProcessEvent;

mod autoscale;
mod replica;

pub use replica::StartError;

use autoscale::{Kpa, Step};
use replica::Running;

/// Requests held per revision while no replica has room (the activator's default).
pub const MAX_HELD_PER_REVISION: usize = 10_000;
/// How often stats are recorded (Knative's metric bucket and scrape period).
pub const STATS_PERIOD: Duration = Duration::from_secs(1);
/// How often the KPA runs for each revision (Knative's scaler tick).
pub const SCALER_TICK: Duration = kdp_autoscaler::config::TICK_INTERVAL;
/// How long shutdown waits for in-flight and held requests before stopping the replicas.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a replica may take to become ready (Knative's default progress deadline).
pub const READY_LIMIT: Duration = kdp_autoscaler::config::DEFAULT_PROGRESS_DEADLINE;
/// The pod name on the router's (activator's) stats.
const ACTIVATOR_POD: &str = "activator";

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
    /// The activator's per-revision concurrency accounting.
    reporter: Mutex<ConcurrencyReporter<RevisionKey>>,
}

/// One revision's replicas and autoscaler.
#[derive(Debug)]
struct RevisionPlane {
    revision: Arc<Revision>,
    /// Replicas that passed their readiness probe and take requests.
    ready: watch::Sender<Vec<Arc<Running>>>,
    /// Woken when a replica gets room or the ready set changes.
    capacity: Notify,
    held: AtomicUsize,
    /// Every replica that runs (ready or starting); the lock serialises scaling.
    replicas: tokio::sync::Mutex<Vec<Arc<Running>>>,
    /// `replicas.len()`, readable without the async lock.
    replica_count: AtomicUsize,
    next_index: AtomicUsize,
    kpa: Mutex<Kpa>,
    /// Removed from the model: no new replicas.
    retired: AtomicBool,
    /// Some replica was ready at some point.
    ever_ready: AtomicBool,
    /// Why replicas cannot run, until one becomes ready.
    failure: Mutex<Option<String>>,
}

/// A revision's readiness for status conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Readiness {
    /// Some replica was ready.
    Ready,
    /// No replica was ready yet.
    Waiting,
    /// Replicas cannot run, and why.
    Failed(String),
}

/// The router's count of a request for the activator stats; dropped when the response ends.
struct Reported {
    inner: Arc<Inner>,
    key: RevisionKey,
}

/// A request's place on a replica; dropped when the response ends.
struct Claim {
    rev: Arc<RevisionPlane>,
    replica: Arc<Running>,
}

/// Decrements a counter on drop.
struct Counted<'a>(&'a AtomicUsize);

// === impl Plane ===

impl Plane {
    /// A plane serving `model` (updates arrive through the channel).
    pub fn new(model: watch::Receiver<Arc<Model>>) -> Self {
        let upstream = Upstream::new(&PoolConfig {
            target: Target::FromUri,
            max_idle_per_host: 100,
        });
        Self {
            inner: Arc::new(Inner {
                model,
                revisions: Mutex::default(),
                forward: Forward::new(upstream, Target::FromUri),
                reporter: Mutex::new(ConcurrencyReporter::new()),
            }),
        }
    }

    /// Serves the router on `listener` until `shutdown` resolves, drains (at most
    /// [`DRAIN_LIMIT`]), then stops every replica.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let plane = self.clone();
        let svc = tower::service_fn(move |req: Request<Incoming>| {
            let plane = plane.clone();
            async move { Ok::<_, Infallible>(plane.handle(req).await) }
        });
        let background = [
            tokio::spawn(self.clone().follow_model()),
            tokio::spawn(self.clone().stats_loop()),
            tokio::spawn(self.clone().scale_loop()),
        ];
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = kdp_proxy::serve::serve(
            listener,
            svc,
            kdp_proxy::serve::ServeConfig::new("router"),
            async {
                let _ = stop_rx.await;
            },
        );
        tokio::pin!(serving);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut serving => {}
            () = &mut shutdown => {
                let _ = stop_tx.send(());
                if tokio::time::timeout(DRAIN_LIMIT, &mut serving).await.is_err() {
                    tracing::warn!(target: "kdp", "requests still in flight after {DRAIN_LIMIT:?}; stopping anyway");
                }
            }
        }
        for task in background {
            task.abort();
        }
        self.stop_all().await;
    }

    /// Ready replicas of a revision.
    pub fn ready_replicas(&self, key: &RevisionKey) -> usize {
        self.lock().get(key).map_or(0, |r| r.ready.borrow().len())
    }

    /// The status report: the model with live replica counts and conditions.
    pub fn status(&self) -> StatusReport {
        let model = self.inner.model.borrow().clone();
        let mut report = StatusReport::from_model(&model);
        let planes = self.lock();
        for (s, service) in report.services.iter_mut().zip(&model.services) {
            let plane = |name: &str| {
                planes.get(&RevisionKey {
                    namespace: s.namespace.clone(),
                    name: name.to_owned(),
                })
            };
            for r in &mut s.revisions {
                if let Some(rev) = plane(&r.name) {
                    r.ready_replicas = to_u32(rev.ready.borrow().len());
                    r.desired_replicas = to_u32(rev.replica_count.load(Ordering::Acquire));
                }
            }
            let readiness = |name: &str| match plane(name) {
                Some(rev) => rev.readiness(),
                None => Readiness::Waiting,
            };
            let configuration = readiness(&service.latest_created.name);
            let routes = service
                .traffic
                .iter()
                .filter(|t| t.percent > 0 || t.tag.is_some())
                .map(|t| readiness(&t.revision.name))
                .fold(Readiness::Ready, Readiness::and);
            s.conditions = vec![
                configuration.clone().and(routes.clone()).condition("Ready"),
                configuration.condition("ConfigurationsReady"),
                routes.condition("RoutesReady"),
            ];
        }
        report
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
            Err(_) if req.uri().path() == STATUS_PATH && req.method() == Method::GET => {
                return self.status_response();
            }
            Err(no_route) => return http_error(StatusCode::NOT_FOUND, &no_route.to_string()),
        };
        let Some(revision) = model.revisions.get(&key) else {
            return http_error(StatusCode::NOT_FOUND, &format!("revision {key} not found"));
        };
        let rev = self.plane_for(&model, revision);
        let reported = self.request_in(&rev);
        let claim = match self.acquire(&rev).await {
            Ok(claim) => claim,
            Err(rsp) => return rsp,
        };

        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string);
        let Ok(uri) = format!("http://{}{path}", claim.replica.queue_proxy).parse::<Uri>() else {
            return http_error(StatusCode::BAD_REQUEST, "invalid request target");
        };
        if parts.version == http::Version::HTTP_2
            && !parts.headers.contains_key(header::HOST)
            && let Ok(h) = HeaderValue::try_from(host)
        {
            parts.headers.insert(header::HOST, h);
        }
        // The queue-proxy counts these as proxied and the decider subtracts them: the router
        // already reported them as the activator.
        parts.headers.insert(
            &kdp_core::header::K_PROXY_REQUEST,
            HeaderValue::from_static(kdp_core::header::PROXY_REQUEST_ACTIVATOR),
        );
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        match self
            .inner
            .forward
            .forward(Request::from_parts(parts, body))
            .await
        {
            Ok(rsp) => {
                let (parts, body) = rsp.into_parts();
                Response::from_parts(parts, Guarded::boxed(body, (reported, claim)))
            }
            Err(err) => error_response(err.as_ref(), None),
        }
    }

    fn status_response(&self) -> Response<BoxBody> {
        match serde_json::to_vec(&self.status()) {
            Ok(json) => {
                let mut rsp = Response::new(kdp_proxy::body::full(json));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                rsp
            }
            Err(err) => http_error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        }
    }

    /// Counts the request in the activator stats; the first one to an idle revision pokes the
    /// autoscaler.
    fn request_in(&self, rev: &Arc<RevisionPlane>) -> Reported {
        let key = rev.revision.key.clone();
        let poke = self.reporter().request_in(&key, Instant::now());
        if let Some(poke) = poke {
            let scale_now = rev.kpa().record(now(), &poke.to_stat(ACTIVATOR_POD));
            if scale_now || rev.replica_count.load(Ordering::Acquire) == 0 {
                self.spawn_scale(rev);
            }
        }
        Reported {
            inner: self.inner.clone(),
            key,
        }
    }

    /// A place on a ready replica with room, waiting (bounded) while there is none.
    async fn acquire(&self, rev: &Arc<RevisionPlane>) -> Result<Claim, Response<BoxBody>> {
        if let Some(replica) = rev.try_claim() {
            return Ok(Claim {
                rev: rev.clone(),
                replica,
            });
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
        let _held = Counted(&rev.held);
        let wait = async {
            loop {
                let notified = rev.capacity.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if rev.retired.load(Ordering::Acquire) {
                    return None;
                }
                if let Some(replica) = rev.try_claim() {
                    return Some(replica);
                }
                notified.await;
            }
        };
        match tokio::time::timeout(rev.revision.timeout, wait).await {
            Ok(Some(replica)) => Ok(Claim {
                rev: rev.clone(),
                replica,
            }),
            Ok(None) => Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("revision {} was removed", rev.revision.key),
            )),
            Err(_) => Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "context deadline exceeded",
            )),
        }
    }

    /// The plane of `revision`, created (and started at its initial scale) if new.
    fn plane_for(&self, model: &Model, revision: &Arc<Revision>) -> Arc<RevisionPlane> {
        let mut planes = self.lock();
        if let Some(rev) = planes.get(&revision.key) {
            return rev.clone();
        }
        // Only routed revisions get here before the model is synced.
        let rev = RevisionPlane::new(revision.clone(), autoscaler_config(model), true);
        planes.insert(revision.key.clone(), rev.clone());
        drop(planes);
        self.spawn_initial(&rev);
        rev
    }

    /// Applies every model the watcher sends.
    async fn follow_model(self) {
        let mut models = self.inner.model.clone();
        loop {
            let model = models.borrow_and_update().clone();
            self.sync(&model);
            if models.changed().await.is_err() {
                return;
            }
        }
    }

    /// Creates planes for new revisions, updates reachability and config, retires removed ones.
    fn sync(&self, model: &Model) {
        let config = autoscaler_config(model);
        let routed: HashSet<&RevisionKey> = model.routed_revisions().map(|r| &r.key).collect();
        let mut created = Vec::new();
        let mut removed = Vec::new();
        {
            let mut planes = self.lock();
            for (key, revision) in &model.revisions {
                let reachable = routed.contains(key);
                match planes.get(key) {
                    Some(rev) => {
                        let mut kpa = rev.kpa();
                        if kpa.reachable() && !reachable {
                            tracing::info!(target: "kdp", "revision {}: no longer routed; scales to zero when idle", key.name);
                        }
                        kpa.reconfigure(&config, reachable);
                    }
                    None => {
                        let rev = RevisionPlane::new(revision.clone(), config.clone(), reachable);
                        planes.insert(key.clone(), rev.clone());
                        created.push(rev);
                    }
                }
            }
            planes.retain(|key, rev| {
                let keep = model.revisions.contains_key(key);
                if !keep {
                    removed.push(rev.clone());
                }
                keep
            });
        }
        for rev in &created {
            self.spawn_initial(rev);
        }
        for rev in removed {
            tokio::spawn(retire(rev));
        }
    }

    /// Starts a new revision's initial scale, as Knative creates its Deployment.
    fn spawn_initial(&self, rev: &Arc<RevisionPlane>) {
        let plane = self.clone();
        let rev = rev.clone();
        tokio::spawn(async move {
            let mut replicas = rev.replicas.lock().await;
            let initial = rev.kpa().initial_scale();
            if !replicas.is_empty() || initial == 0 || rev.retired.load(Ordering::Acquire) {
                return;
            }
            tracing::info!(target: "kdp", "revision {}: scaled from 0 to {initial} (initial scale)", rev.revision.key.name);
            plane.resize(&rev, &mut replicas, to_usize(initial)).await;
        });
    }

    /// Records the activator's and every ready queue-proxy's stats each second.
    async fn stats_loop(self) {
        let mut tick = tokio::time::interval(STATS_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let activator: HashMap<_, _> =
                self.reporter().tick(Instant::now()).into_iter().collect();
            let at = now();
            for rev in self.planes() {
                let mut stats = vec![activator.get(&rev.revision.key).map_or_else(
                    || Stat {
                        pod_name: ACTIVATOR_POD.to_owned(),
                        ..Stat::default()
                    },
                    |s| s.to_stat(ACTIVATOR_POD),
                )];
                stats.extend(rev.ready.borrow().iter().map(|r| r.stats.snapshot()));
                let mut poked = false;
                {
                    let mut kpa = rev.kpa();
                    for stat in &stats {
                        poked |= kpa.record(at, stat);
                    }
                }
                if poked {
                    self.spawn_scale(&rev);
                }
            }
        }
    }

    /// Runs the KPA for every revision every [`SCALER_TICK`].
    async fn scale_loop(self) {
        let mut tick = tokio::time::interval(SCALER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for rev in self.planes() {
                self.scale(&rev).await;
            }
        }
    }

    fn spawn_scale(&self, rev: &Arc<RevisionPlane>) {
        let plane = self.clone();
        let rev = rev.clone();
        tokio::spawn(async move { plane.scale(&rev).await });
    }

    /// One KPA run for `rev`, then start or stop replicas to match.
    async fn scale(&self, rev: &Arc<RevisionPlane>) {
        let mut replicas = rev.replicas.lock().await;
        if rev.retired.load(Ordering::Acquire) {
            return;
        }
        let ready = to_u32(rev.ready.borrow().len());
        let step = rev.kpa().step(now(), ready);
        let Some(want) = step.want.filter(|_| step.apply).map(to_usize) else {
            return;
        };
        let current = replicas.len();
        if want == current {
            return;
        }
        let waiting = if current == 0 && rev.held.load(Ordering::Acquire) > 0 {
            "requests waiting, "
        } else {
            ""
        };
        tracing::info!(
            target: "kdp",
            "revision {}: scaled from {current} to {want} ({waiting}{})",
            rev.revision.key.name,
            explain(&step, want)
        );
        self.resize(rev, &mut replicas, want).await;
    }

    /// Starts or drains replicas until `want` run.
    async fn resize(
        &self,
        rev: &Arc<RevisionPlane>,
        replicas: &mut Vec<Arc<Running>>,
        want: usize,
    ) {
        while replicas.len() < want {
            match self.start_replica(rev).await {
                Ok(running) => replicas.push(running),
                Err(error) => {
                    tracing::error!(target: "kdp", "revision {}: {}", rev.revision.key.name, kdp_core::ErrorChain(&error));
                    *lock(&rev.failure) = Some(kdp_core::ErrorChain(&error).to_string());
                    break;
                }
            }
        }
        if replicas.len() > want {
            // Replicas that are not ready yet go first, then the newest.
            let ready = rev.ready.borrow().clone();
            let is_ready = |r: &Arc<Running>| ready.iter().any(|x| Arc::ptr_eq(x, r));
            replicas.sort_by_key(|r| (!is_ready(r), r.label.len(), r.label.clone()));
            for victim in replicas.split_off(want) {
                rev.stop_routing(&victim);
                tokio::spawn(drain_and_stop(victim, rev.revision.timeout));
            }
            // Keep the oldest first for the next scale-down.
            replicas.sort_by_key(|r| (r.label.len(), r.label.clone()));
        }
        rev.replica_count.store(replicas.len(), Ordering::Release);
    }

    async fn start_replica(&self, rev: &Arc<RevisionPlane>) -> Result<Arc<Running>, StartError> {
        let index = rev.next_index.fetch_add(1, Ordering::AcqRel) + 1;
        let (events_tx, events) = mpsc::unbounded_channel();
        let running = replica::spawn(&rev.revision, index, events_tx).await?;
        tokio::spawn(watch_replica(rev.clone(), running.clone(), events));
        Ok(running)
    }

    /// Stops every replica of every revision (after the router drained).
    async fn stop_all(&self) {
        let planes: Vec<_> = self.lock().drain().map(|(_, r)| r).collect();
        let mut stops = Vec::new();
        for rev in planes {
            rev.retired.store(true, Ordering::Release);
            for replica in rev.replicas.lock().await.drain(..) {
                rev.stop_routing(&replica);
                stops.push(tokio::spawn(drain_and_stop(replica, Duration::ZERO)));
            }
            rev.capacity.notify_waiters();
        }
        for stop in stops {
            let _ = stop.await;
        }
    }

    fn planes(&self) -> Vec<Arc<RevisionPlane>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RevisionKey, Arc<RevisionPlane>>> {
        lock(&self.inner.revisions)
    }

    fn reporter(&self) -> MutexGuard<'_, ConcurrencyReporter<RevisionKey>> {
        lock(&self.inner.reporter)
    }
}

// === impl RevisionPlane ===

impl RevisionPlane {
    fn new(revision: Arc<Revision>, config: kdp_autoscaler::Config, reachable: bool) -> Arc<Self> {
        let kpa = Kpa::new(config, &revision, reachable, now());
        Arc::new(Self {
            revision,
            ready: watch::channel(Vec::new()).0,
            capacity: Notify::new(),
            held: AtomicUsize::new(0),
            replicas: tokio::sync::Mutex::default(),
            replica_count: AtomicUsize::new(0),
            next_index: AtomicUsize::new(0),
            kpa: Mutex::new(kpa),
            retired: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            failure: Mutex::new(None),
        })
    }

    /// Takes a place on the least-loaded ready replica that has room under
    /// `containerConcurrency` (any ready replica when it is 0), like the activator's throttler.
    fn try_claim(&self) -> Option<Arc<Running>> {
        let cc = self.revision.container_concurrency;
        let ready = self.ready.borrow();
        let mut candidates: Vec<&Arc<Running>> = ready.iter().collect();
        candidates.sort_by_key(|r| r.in_flight.load(Ordering::Acquire));
        for replica in candidates {
            let before = replica.in_flight.fetch_add(1, Ordering::AcqRel);
            if cc == 0 || (before as u64) < cc {
                return Some(replica.clone());
            }
            replica.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        None
    }

    /// Marks the replica as stopping and takes it out of the ready set for good.
    fn stop_routing(&self, replica: &Arc<Running>) {
        // Set before taking the ready lock, so `become_ready` cannot add it back.
        replica.stopping.store(true, Ordering::Release);
        self.set_ready(|ready| ready.retain(|x| !Arc::ptr_eq(x, replica)));
    }

    /// Changes the ready set and wakes held requests.
    fn set_ready(&self, change: impl FnOnce(&mut Vec<Arc<Running>>)) {
        self.ready.send_modify(change);
        self.capacity.notify_waiters();
    }

    fn kpa(&self) -> MutexGuard<'_, Kpa> {
        lock(&self.kpa)
    }

    fn readiness(&self) -> Readiness {
        if let Some(reason) = lock(&self.failure).clone() {
            Readiness::Failed(reason)
        } else if self.ever_ready.load(Ordering::Acquire) {
            Readiness::Ready
        } else {
            Readiness::Waiting
        }
    }
}

// === impl Readiness ===

impl Readiness {
    fn and(self, other: Self) -> Self {
        match (self, other) {
            (f @ Self::Failed(_), _) | (_, f @ Self::Failed(_)) => f,
            (Self::Waiting, _) | (_, Self::Waiting) => Self::Waiting,
            (Self::Ready, Self::Ready) => Self::Ready,
        }
    }

    fn condition(self, kind: &str) -> Condition {
        let (status, reason) = match self {
            Self::Ready => ("True", None),
            Self::Waiting => ("Unknown", Some("Deploying".to_owned())),
            Self::Failed(reason) => ("False", Some(reason)),
        };
        Condition {
            kind: kind.to_owned(),
            status: status.to_owned(),
            reason,
        }
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        lock(&self.inner.reporter).request_out(&self.key, Instant::now());
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.rev.capacity.notify_one();
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Follows one replica's process events: readiness after every (re)start, out of the ready set
/// on exit, and lifecycle lines.
async fn watch_replica(
    rev: Arc<RevisionPlane>,
    running: Arc<Running>,
    mut events: mpsc::UnboundedReceiver<ProcessEvent>,
) {
    let name = &rev.revision.key.name;
    let label = &running.label;
    let mut last_exit = String::new();
    while let Some(event) = events.recv().await {
        match event {
            ProcessEvent::Started { pid, .. } => {
                tracing::debug!(target: "kdp", "replica {label} started (pid {pid})");
                tokio::spawn(become_ready(rev.clone(), running.clone()));
            }
            ProcessEvent::Exited { status, .. } => {
                rev.set_ready(|ready| ready.retain(|x| !Arc::ptr_eq(x, &running)));
                last_exit = replica::describe_exit(&status);
            }
            ProcessEvent::Restarting { backoff, .. } => {
                tracing::warn!(target: "kdp", "replica {label} crashed ({last_exit}), restarting in {backoff:?}");
            }
            ProcessEvent::SpawnFailed { error, .. } => {
                tracing::warn!(target: "kdp", "replica {label} cannot restart: {error}");
            }
            ProcessEvent::GaveUp { restarts, .. } => {
                tracing::error!(target: "kdp", "replica {label} crashed ({last_exit}) {restarts} times in a row; giving up");
                *lock(&rev.failure) =
                    Some(format!("revision {name}: replica {label} keeps crashing"));
            }
            ProcessEvent::Stopped { .. } => {
                tracing::debug!(target: "kdp", "replica {label} stopped");
            }
        }
    }
}

/// Adds the replica to the ready set once its queue-proxy says the process is ready.
async fn become_ready(rev: Arc<RevisionPlane>, running: Arc<Running>) {
    let started = Instant::now();
    if !replica::wait_ready(&running, READY_LIMIT).await {
        return;
    }
    let mut first = false;
    let mut added = false;
    rev.set_ready(|ready| {
        // Checked under the ready lock: see `stop_routing`.
        if !running.stopping.load(Ordering::Acquire)
            && !ready.iter().any(|x| Arc::ptr_eq(x, &running))
        {
            added = true;
            first = ready.is_empty();
            ready.push(running.clone());
        }
    });
    if !added {
        return;
    }
    *lock(&rev.failure) = None;
    rev.ever_ready.store(true, Ordering::Release);
    let took = started.elapsed().as_millis();
    if first {
        tracing::info!(target: "kdp", "revision {} ready (replica {} ready in {took} ms)", rev.revision.key.name, running.label);
    } else {
        tracing::debug!(target: "kdp", "replica {} ready in {took} ms", running.label);
    }
}

/// Waits (up to `limit`) for the replica's in-flight requests, then stops it.
async fn drain_and_stop(replica: Arc<Running>, limit: Duration) {
    replica.stopping.store(true, Ordering::Release);
    let start = Instant::now();
    while replica.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replica.shutdown().await;
}

/// A revision left the model: drain and stop its replicas, release its held requests.
async fn retire(rev: Arc<RevisionPlane>) {
    let mut replicas = rev.replicas.lock().await;
    rev.retired.store(true, Ordering::Release);
    let count = replicas.len();
    let stops: Vec<_> = replicas
        .drain(..)
        .map(|r| {
            rev.stop_routing(&r);
            tokio::spawn(drain_and_stop(r, rev.revision.timeout))
        })
        .collect();
    // Held requests see `retired` and give up.
    rev.capacity.notify_waiters();
    rev.replica_count.store(0, Ordering::Release);
    drop(replicas);
    if count > 0 {
        tracing::info!(target: "kdp", "revision {}: removed; stopping {count} replica(s)", rev.revision.key.name);
    }
    for stop in stops {
        let _ = stop.await;
    }
}

/// Why the KPA chose `want`, for the lifecycle line.
fn explain(step: &Step, want: usize) -> String {
    if want == 0 {
        return "no traffic for the stable window and the scale-to-zero grace period".to_owned();
    }
    let panic = if step.panicking { ", panic mode" } else { "" };
    format!(
        "stable concurrency {:.1}, target {:.1}{panic}",
        step.stable, step.target
    )
}

/// The model's `config-autoscaler`, already validated when the model was built.
fn autoscaler_config(model: &Model) -> kdp_autoscaler::Config {
    kdp_autoscaler::Config::from_map(&model.config.autoscaler).unwrap_or_else(|error| {
        tracing::warn!(target: "kdp", "{error}; using the defaults");
        kdp_autoscaler::Config::default()
    })
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
