//! kdp's activator: a drop-in replacement for Knative Serving's activator.
//!
//! `main` reads [`Config`](env::Config), binds the [`Listeners`], connects to
//! the Kubernetes API (`cluster`), waits for the caches, and runs the
//! [`App`] until SIGTERM; tests do the same in-process on loopback, feeding
//! the revision cache and the throttler directly or through the fake API
//! server of `kdp-test-support`.
//!
//! Request flow (see `stack.rs`): accept → probes → revision → reporter →
//! timeouts → throttle (hold until a pod has room) → forward to the pod.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kdp_proxy::forward::Forward;
use kdp_proxy::pool::{PoolConfig, Target, Upstream};
use kdp_proxy::serve::{ServeConfig, serve};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub mod activate;
pub mod backends;
pub mod cluster;
pub mod env;
pub mod metrics;
pub mod probe;
pub mod report;
pub mod revision;
pub mod stack;
pub mod throttle;
pub mod timeout;

use crate::env::Config;
use crate::revision::RevisionCache;
use crate::throttle::{ThrottleConfig, Throttler};

/// Stat frames buffered towards the autoscaler before new ones are dropped.
pub const FRAME_BUFFER: usize = 64;

/// The bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// The `http1` port (8012).
    pub http1: TcpListener,
    /// The `h2c` port (8013).
    pub h2c: TcpListener,
    /// The Prometheus metrics port, when `metrics-protocol: prometheus`.
    pub metrics: Option<TcpListener>,
}

/// A built activator, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    listeners: Listeners,
    revisions: Arc<RevisionCache>,
    throttler: Arc<Throttler>,
    upstream: Upstream,
    draining: Arc<AtomicBool>,
    autoscaler: watch::Receiver<bool>,
    metrics: Arc<metrics::Metrics>,
    stack: stack::ServingStack,
    background: Vec<tokio::task::JoinHandle<()>>,
}

// === impl Listeners ===

impl Listeners {
    /// Binds both serving ports.
    ///
    /// # Errors
    /// A port that cannot be bound.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        Ok(Self {
            http1: TcpListener::bind(SocketAddr::new(config.bind, config.http1_port)).await?,
            h2c: TcpListener::bind(SocketAddr::new(config.bind, config.h2c_port)).await?,
            metrics: None,
        })
    }
}

// === impl App ===

impl App {
    /// Builds the activator and starts its background tasks (autoscaler
    /// connection, stat ticker). Must be called within a tokio runtime.
    pub fn build(
        config: Config,
        listeners: Listeners,
        observability: cluster::Observability,
    ) -> Self {
        let upstream = Upstream::new(&PoolConfig {
            target: Target::FromUri,
            max_idle_per_host: config.max_idle_conns_per_host,
        });
        let throttler = Arc::new(Throttler::new(ThrottleConfig {
            max_queued: config.max_queued_per_revision,
            load_balancing: config.load_balancing,
        }));
        let revisions = Arc::new(RevisionCache::default());
        let draining = Arc::new(AtomicBool::new(false));
        let (frames_tx, frames_rx) = mpsc::channel(FRAME_BUFFER);
        let (connected_tx, connected_rx) = watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::new());
        let reporter = report::Reporter::new(config.pod_name.clone(), frames_tx, metrics.clone());
        let background = vec![
            tokio::spawn(report::connect_loop(
                config.autoscaler_url.clone(),
                frames_rx,
                connected_tx,
                metrics.clone(),
            )),
            tokio::spawn(reporter.clone().run()),
        ];
        let stack = stack::build(stack::Parts {
            health: probe::Health::new(draining.clone(), connected_rx.clone()),
            revisions: revisions.clone(),
            cluster_domain: config.cluster_domain.clone(),
            reporter,
            activate: activate::Activate::new(
                throttler.clone(),
                Forward::new(upstream.clone(), Target::FromUri),
                config.held_bytes_budget,
            ),
            request_log: observability.request_log,
        });
        Self {
            config,
            listeners,
            revisions,
            throttler,
            upstream,
            draining,
            autoscaler: connected_rx,
            metrics,
            stack,
            background,
        }
    }

    /// The revision cache (tests fill it directly).
    pub fn revisions(&self) -> &Arc<RevisionCache> {
        &self.revisions
    }

    /// The throttler (tests feed backends directly).
    pub fn throttler(&self) -> &Arc<Throttler> {
        &self.throttler
    }

    /// The `http1` port's address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn http1_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.http1.local_addr()
    }

    /// The `h2c` port's address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn h2c_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.h2c.local_addr()
    }

    /// The metrics port's address, when serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Resolves when the autoscaler connection is up.
    pub async fn autoscaler_connected(&self) {
        let mut rx = self.autoscaler.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// The cluster-side targets for [`cluster::start`].
    pub fn cluster_targets(&self) -> cluster::Targets {
        cluster::Targets {
            revisions: self.revisions.clone(),
            throttler: self.throttler.clone(),
            upstream: self.upstream.clone(),
            probe_timeout: self.config.probe_timeout,
            probe_frequency: self.config.probe_frequency,
            pod_ip: self.config.pod_ip.clone(),
            system_namespace: self.config.system_namespace.clone(),
        }
    }

    /// Serves until `terminate` resolves; then health checks fail at once,
    /// the drain timeout passes with traffic still served, and the servers
    /// stop after their in-flight requests finish.
    pub async fn run(self, terminate: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(serve(
            self.listeners.http1,
            self.stack.clone(),
            serve_config("http1", &self.config),
            stopped(),
        ));
        servers.spawn(serve(
            self.listeners.h2c,
            self.stack,
            serve_config("h2c", &self.config),
            stopped(),
        ));
        if let Some(listener) = self.listeners.metrics {
            let svc = metrics_service(self.metrics, self.throttler, self.revisions);
            servers.spawn(serve(
                listener,
                svc,
                serve_config("metrics", &self.config).http1_only(),
                stopped(),
            ));
        }
        tracing::info!(pod = %self.config.pod_name, "activator serving");
        terminate.await;
        self.draining.store(true, Ordering::Release);
        tracing::info!(drain = ?self.config.drain_timeout, "received termination signal; draining");
        tokio::time::sleep(self.config.drain_timeout).await;
        let _ = stop_tx.send(true);
        while servers.join_next().await.is_some() {}
        for task in self.background {
            task.abort();
        }
        tracing::info!("activator stopped");
    }
}

/// Knative's server settings for the port `name`, with the configured
/// header read timeout.
fn serve_config(name: &'static str, config: &Config) -> ServeConfig {
    let mut serve = ServeConfig::new(name);
    serve.header_read_timeout = config.header_read_timeout;
    serve
}

/// The metrics port: `GET /metrics` renders Prometheus text; other paths 404.
fn metrics_service(
    metrics: Arc<metrics::Metrics>,
    throttler: Arc<Throttler>,
    revisions: Arc<RevisionCache>,
) -> impl tower::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<kdp_proxy::body::BoxBody>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<
        Result<http::Response<kdp_proxy::body::BoxBody>, std::convert::Infallible>,
    >,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let rsp = if req.uri().path() == "/metrics" {
            let text = metrics.render(&throttler, revisions.as_ref());
            let mut rsp = http::Response::new(kdp_proxy::body::full(text));
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            rsp
        } else {
            kdp_proxy::respond::http_error(http::StatusCode::NOT_FOUND, "404 page not found")
        };
        std::future::ready(Ok(rsp))
    })
}
