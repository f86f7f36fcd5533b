//! kdp's activator: a drop-in replacement for Knative Serving's activator.
//!
//! `main` reads [`Config`](env::Config) and calls [`start`]: the Kubernetes
//! version gate, `config-observability` and `config-network`, the
//! [`Listeners`], the caches (`cluster`), and then runs the [`App`] until
//! SIGTERM. Tests do the same in-process on loopback, through [`start`] or
//! [`App::build`] plus [`cluster::start`], against the fake API server of
//! `kdp-test-support`.
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
use kdp_proxy::serve::{ServeConfig, serve, serve_with};
use kdp_proxy::tls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub mod activate;
pub mod backends;
pub mod certs;
pub mod cluster;
pub mod env;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod network;
pub mod probe;
pub mod report;
pub mod request_log;
pub mod revision;
pub mod stack;
pub mod throttle;
pub mod timeout;
pub mod version;

use crate::certs::{ServingCert, UpstreamTrust};
use crate::env::Config;
use crate::network::NetworkConfig;
use crate::request_log::RequestLogSwitch;
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
    /// The `https` port (8112), when system-internal-tls is enabled.
    pub https: Option<TcpListener>,
    /// The profiling port (8008).
    pub profiling: Option<TcpListener>,
}

/// What startup learned from the cluster before the [`App`] is built.
#[derive(Debug, Default)]
pub struct Startup {
    /// `config-observability` at startup.
    pub observability: cluster::Observability,
    /// `config-network` (fixed for the process's life).
    pub network: NetworkConfig,
    /// Where `config-logging` changes go, when `main` installed the logger.
    pub log_level: Option<logging::LevelHandle>,
}

/// Why the activator could not start; `main` exits 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The API server is too old or did not answer `/version` in time.
    #[error("Timed out attempting to get k8s version")]
    Version(#[source] version::VersionError),
    /// `config-network` could not be read.
    #[error("Failed to fetch network config")]
    NetworkFetch(#[source] kdp_k8s::kube::Error),
    /// `config-network` holds a value the activator cannot use.
    #[error("Failed to construct network config")]
    NetworkInvalid(#[source] network::NetworkConfigError),
    /// system-internal-tls is on but `routing-serving-certs` is missing or unusable.
    #[error(
        "failed to get activator certificate, secret {namespace}/{name} was not found or is \
         invalid; enabling system-internal-tls requires the secret to be present and \
         populated with a valid certificate"
    )]
    Certificate {
        /// `SYSTEM_NAMESPACE`.
        namespace: String,
        /// The Secret's name.
        name: &'static str,
        /// What was wrong, when the Secret exists.
        #[source]
        source: Option<certs::CertError>,
    },
    /// A port could not be bound.
    #[error("cannot bind the {0} port")]
    Bind(&'static str, #[source] io::Error),
    /// The TLS server could not be configured.
    #[error("invalid TLS server configuration")]
    Tls(#[source] kdp_proxy::tls::Error),
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
    network: NetworkConfig,
    tls: Option<TlsState>,
    request_log: RequestLogSwitch,
    log_level: Option<logging::LevelHandle>,
}

/// The system-internal-TLS state shared with the cluster side.
#[derive(Clone, Debug)]
pub struct TlsState {
    /// The 8112 certificate, from `routing-serving-certs`.
    pub cert: Arc<ServingCert>,
    /// Trust towards queue-proxies.
    pub trust: Arc<UpstreamTrust>,
    acceptor: Option<TlsAcceptor>,
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
            https: None,
            profiling: None,
        })
    }
}

/// Everything `main` does once the environment is read: checks the API
/// server's version, reads `config-observability` (defaults if missing) and
/// `config-network` (required), binds every port the configuration asks for,
/// builds the [`App`] and waits for every cache; with system-internal-tls
/// the serving certificate must then be in place.
///
/// # Errors
/// [`StartupError`]: each is fatal, as in Knative.
pub async fn start(
    config: Config,
    client: kdp_k8s::kube::Client,
    log_level: Option<logging::LevelHandle>,
) -> Result<App, StartupError> {
    version::wait_for_minimum(
        &client,
        &config.kubernetes_min_version,
        version::CHECK_TIMEOUT,
    )
    .await
    .map_err(StartupError::Version)?;
    let observability = match cluster::observability(&client, &config).await {
        Ok(o) => o,
        Err(err) => {
            tracing::warn!(error = %kdp_core::ErrorChain(err.as_ref()), "cannot read config-observability; using defaults");
            cluster::Observability::default()
        }
    };
    let network = cluster::network(&client, &config.system_namespace).await?;
    let bind = |port: u16, name: &'static str| async move {
        TcpListener::bind(SocketAddr::new(config.bind, port))
            .await
            .map_err(|e| StartupError::Bind(name, e))
    };
    let mut listeners = Listeners {
        http1: bind(config.http1_port, "http1").await?,
        h2c: bind(config.h2c_port, "h2c").await?,
        metrics: None,
        https: None,
        profiling: Some(bind(config.profiling_port, "profiling").await?),
    };
    if network.system_internal_tls {
        listeners.https = Some(bind(config.https_port, "https").await?);
    }
    if let Some(addr) = observability.metrics {
        // As in Knative, a metrics port that cannot be bound costs the metrics only.
        match TcpListener::bind(addr).await {
            Ok(l) => listeners.metrics = Some(l),
            Err(err) => tracing::error!(error = %err, %addr, "cannot bind the metrics port"),
        }
    }
    let app = App::build_with(
        config,
        listeners,
        Startup {
            observability,
            network,
            log_level,
        },
    )?;
    cluster::start(client, app.cluster_targets()).await?;
    Ok(app)
}

// === impl App ===

impl App {
    /// Builds the activator with `config-network`'s defaults; see
    /// [`build_with`](Self::build_with).
    pub fn build(
        config: Config,
        listeners: Listeners,
        observability: cluster::Observability,
    ) -> Self {
        let startup = Startup {
            observability,
            ..Startup::default()
        };
        Self::assemble(config, listeners, startup, None)
    }

    /// Builds the activator and starts its background tasks (autoscaler
    /// connection, stat ticker). Must be called within a tokio runtime.
    ///
    /// # Errors
    /// With system-internal-tls, `ACTIVATOR_TLS_*` that rustls refuses.
    pub fn build_with(
        config: Config,
        listeners: Listeners,
        startup: Startup,
    ) -> Result<Self, StartupError> {
        let tls = if startup.network.system_internal_tls {
            let cert = ServingCert::new();
            let acceptor = match listeners.https {
                Some(_) => Some(
                    TlsAcceptor::new(&config.tls, cert.clone())
                        .map_err(StartupError::Tls)?
                        .with_handshake_timeout(config.header_read_timeout),
                ),
                None => None,
            };
            Some(TlsState {
                cert,
                trust: UpstreamTrust::new(),
                acceptor,
            })
        } else {
            None
        };
        Ok(Self::assemble(config, listeners, startup, tls))
    }

    fn assemble(
        config: Config,
        listeners: Listeners,
        startup: Startup,
        tls: Option<TlsState>,
    ) -> Self {
        let Startup {
            observability,
            network,
            log_level,
        } = startup;
        let request_log = RequestLogSwitch::new(observability.request_log);
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
            )
            .with_passthrough_lb(network.mesh_pod_addressability)
            .with_upstream_tls(tls.as_ref().map(|t| t.trust.clone())),
            request_log: request_log.clone(),
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
            network,
            tls,
            request_log,
            log_level,
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

    /// The `https` port's address, when serving TLS.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .https
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The profiling port's address, when bound.
    pub fn profiling_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .profiling
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// `config-network` as read at startup.
    pub fn network(&self) -> NetworkConfig {
        self.network
    }

    /// The system-internal-TLS state, when enabled.
    pub fn tls(&self) -> Option<&TlsState> {
        self.tls.as_ref()
    }

    /// Whether requests are being logged right now.
    pub fn request_log_enabled(&self) -> bool {
        self.request_log.is_enabled()
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
            network: self.network,
            tls: self.tls.as_ref().map(|t| cluster::TlsTargets {
                cert: t.cert.clone(),
                trust: t.trust.clone(),
            }),
            request_log: self.request_log.clone(),
            log_level: self.log_level.clone(),
            config_logging_name: self.config.config_logging_name.clone(),
            config_observability_name: self.config.config_observability_name.clone(),
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
            self.stack.clone(),
            serve_config("h2c", &self.config),
            stopped(),
        ));
        if let (Some(listener), Some(acceptor)) =
            (self.listeners.https, self.tls.and_then(|t| t.acceptor))
        {
            servers.spawn(serve_with(
                listener,
                acceptor,
                self.stack,
                serve_config("https", &self.config),
                stopped(),
            ));
        }
        if let Some(listener) = self.listeners.profiling {
            servers.spawn(serve(
                listener,
                tower::service_fn(not_found),
                serve_config("profiling", &self.config).http1_only(),
                stopped(),
            ));
        }
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

/// The profiling port: kdp has no pprof, so every path is 404, as Knative's
/// answers with `runtime-profiling: disabled`.
fn not_found(
    _: http::Request<hyper::body::Incoming>,
) -> std::future::Ready<Result<http::Response<kdp_proxy::body::BoxBody>, std::convert::Infallible>>
{
    std::future::ready(Ok(kdp_proxy::respond::http_error(
        http::StatusCode::NOT_FOUND,
        "404 page not found",
    )))
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
