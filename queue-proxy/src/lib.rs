//! kdp's queue-proxy: a drop-in replacement for Knative Serving's sidecar.
//!
//! `main` reads [`Config`](env::Config) from the environment, binds the
//! [`Listeners`], builds the [`App`] and runs it until SIGTERM, then drains.
//! Tests and the local mode do the same in-process on port 0.
//!
//! Request flow on the serving port (see `stack.rs` and
//! `docs/request-lifecycle-queue-proxy.md`): accept → request log → probes
//! and drain → timeouts → forwarded shim → stats → breaker → user container.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kdp_core::drain::Drainer;
use kdp_proxy::breaker::{Breaker, BreakerParams};
use kdp_proxy::forward::Forward;
use kdp_proxy::pool::{PoolConfig, Target, Upstream};
use kdp_proxy::serve::{ServeConfig, serve, serve_with};
use kdp_proxy::timeout::Timeouts;
use kdp_proxy::tls::{self, TlsAcceptor};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod admin;
pub mod env;
pub mod forwarded;
pub mod handler;
pub mod metrics;
pub mod probe;
pub mod readiness;
pub mod stack;
pub mod stats;

use crate::env::Config;

/// How long shutdown waits for websockets and other tunnels (Knative: 60 s).
pub const TUNNEL_DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// The bound sockets, one per port.
#[derive(Debug)]
pub struct Listeners {
    /// Main serving port.
    pub main: TcpListener,
    /// Admin port.
    pub admin: TcpListener,
    /// Autoscaler metrics port.
    pub metrics: TcpListener,
    /// User metrics port, when Prometheus request metrics are on.
    pub user_metrics: Option<TcpListener>,
    /// TLS serving port, when the certificate files exist.
    pub tls: Option<TlsListener>,
}

/// The TLS serving port and its handshake settings.
#[derive(Debug)]
pub struct TlsListener {
    /// The bound port.
    pub listener: TcpListener,
    /// Handshakes with the hot-reloaded certificate.
    pub acceptor: TlsAcceptor,
}

/// A built queue-proxy, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    listeners: Listeners,
    drainer: Drainer,
    terminating: Arc<AtomicBool>,
    stats: stats::Stats,
    metrics: Option<metrics::AppMetrics>,
    forward: Forward,
    stack: stack::ServingStack,
}

/// A configuration problem found while building (after env parsing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `SERVING_READINESS_PROBE` does not decode.
    #[error("environment variable SERVING_READINESS_PROBE is invalid")]
    ReadinessProbe(#[source] readiness::ReadinessConfigError),
}

// === impl Listeners ===

impl Listeners {
    /// Binds every port of `config` on its bind address. The TLS port is
    /// opened only when both certificate files exist (as in Knative); the
    /// certificate is then loaded and re-read every 60 s.
    ///
    /// # Errors
    /// A port that cannot be bound, or a certificate that cannot be loaded.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let at = |port| SocketAddr::new(config.bind, port);
        let tls = match tls_acceptor(config).await? {
            Some(acceptor) => Some(TlsListener {
                listener: TcpListener::bind(at(config.tls_port)).await?,
                acceptor,
            }),
            None => None,
        };
        Ok(Self {
            tls,
            main: TcpListener::bind(at(config.serving_port)).await?,
            admin: TcpListener::bind(at(config.admin_port)).await?,
            metrics: TcpListener::bind(at(config.metrics_port)).await?,
            user_metrics: if config.observability.prometheus_request_metrics() {
                Some(TcpListener::bind(at(config.user_metrics_port)).await?)
            } else {
                None
            },
        })
    }
}

/// The TLS acceptor for `config`, or `None` when the certificate files are absent.
///
/// # Errors
/// A stat error other than "not found", or a certificate that does not load.
pub async fn tls_acceptor(config: &Config) -> io::Result<Option<TlsAcceptor>> {
    if !tls::cert_files_exist(&config.cert_dir)? {
        return Ok(None);
    }
    tls::install_default_provider();
    let cert = tls::ReloadingCert::load(&config.cert_dir)
        .await
        .map_err(io::Error::other)?;
    cert.spawn_reloader(tls::DEFAULT_RELOAD_INTERVAL);
    let acceptor = TlsAcceptor::new(&config.tls, cert).map_err(io::Error::other)?;
    Ok(Some(acceptor))
}

// === impl App ===

impl App {
    /// Builds the queue-proxy over bound listeners.
    ///
    /// # Errors
    /// Configuration that only fails when used (the readiness probe JSON).
    pub fn build(config: Config, listeners: Listeners) -> Result<Self, BuildError> {
        let probes =
            readiness::parse_probes(&config.readiness_probe, config.multi_container_probes)
                .map_err(BuildError::ReadinessProbe)?;
        let prober = readiness::Prober::new(probes, config.http2_auto_detection);
        let drainer = Drainer::new(config.drain_quiet_period);
        let cc = config.container_concurrency;
        let upstream = Upstream::new(&PoolConfig {
            target: Target::Fixed(SocketAddr::from(([127, 0, 0, 1], config.user_port))),
            max_idle_per_host: if cc == 0 { 1000 } else { cc },
        });
        let forward = Forward::new(
            upstream,
            Target::Fixed(SocketAddr::from(([127, 0, 0, 1], config.user_port))),
        );
        let breaker = (cc > 0).then(|| {
            tracing::info!(
                queue_depth = 10 * cc,
                max_concurrency = cc,
                "Queue container is starting with BreakerParams"
            );
            Breaker::new(BreakerParams {
                queue_depth: 10 * cc,
                max_concurrency: cc,
                initial_capacity: cc,
            })
        });
        let stats = stats::Stats::new(&config.revision);
        let metrics = config
            .observability
            .prometheus_request_metrics()
            .then(|| metrics::AppMetrics::new(&config.revision));
        let request_log = request_logger(&config);
        let handler =
            handler::Handler::new(forward.clone(), breaker, stats.clone(), metrics.clone());
        let stack = stack::build(stack::Parts {
            drainer: drainer.clone(),
            prober,
            timeouts: Timeouts {
                total: config.revision_timeout,
                response_start: config.response_start_timeout,
                idle: config.idle_timeout,
                message: "request timeout",
            },
            request_log,
            revision: kdp_proxy::request_log::RevisionInfo {
                name: config.revision.revision.clone(),
                namespace: config.revision.namespace.clone(),
                service: config.revision.service.clone(),
                configuration: config.revision.configuration.clone(),
                pod_name: config.revision.pod.clone(),
                pod_ip: config.revision.pod_ip.clone(),
            },
            handler,
        });
        Ok(Self {
            config,
            listeners,
            drainer,
            terminating: Arc::default(),
            stats,
            metrics,
            forward,
            stack,
        })
    }

    /// The main port's address (useful with port 0).
    pub fn main_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.main.local_addr()
    }

    /// The admin port's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.admin.local_addr()
    }

    /// The autoscaler metrics port's address.
    pub fn metrics_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.metrics.local_addr()
    }

    /// The TLS port's address, when serving TLS.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .tls
            .as_ref()
            .and_then(|t| t.listener.local_addr().ok())
    }

    /// The user metrics port's address, when enabled.
    pub fn user_metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .user_metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The stats recorder (the local mode's autoscaler reads it directly).
    pub fn stats(&self) -> &stats::Stats {
        &self.stats
    }

    /// Serves until `terminate` resolves, then drains as Knative does: probes
    /// fail at once, the quiet period runs until no request arrived for its
    /// whole length, servers stop accepting and finish in-flight requests,
    /// and open tunnels get up to [`TUNNEL_DRAIN_LIMIT`].
    pub async fn run(self, terminate: impl Future<Output = ()>) {
        let Self {
            config,
            listeners,
            drainer,
            terminating,
            stats,
            metrics,
            forward,
            stack,
        } = self;
        tracing::info!(
            revision = %config.revision.revision,
            namespace = %config.revision.namespace,
            pod = %config.revision.pod,
            "Starting queue-proxy"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let reporter = tokio::spawn(stats.clone().report_every(stats::REPORTING_PERIOD));

        let admin = admin::Admin::new(drainer.clone(), terminating.clone());
        let admin_svc = tower::service_fn(move |req| admin.clone().call(req));
        let metrics_stats = stats.clone();
        let metrics_svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(admin::metrics_response(
                &req,
                &metrics_stats,
            )))
        });
        let mut servers = tokio::task::JoinSet::new();
        if let Some(TlsListener { listener, acceptor }) = listeners.tls {
            servers.spawn(serve_with(
                listener,
                acceptor,
                stack.clone(),
                serve_config("tls", &config),
                stopped(),
            ));
        }
        servers.spawn(serve(
            listeners.main,
            stack,
            serve_config("main", &config),
            stopped(),
        ));
        servers.spawn(serve(
            listeners.admin,
            admin_svc,
            serve_config("admin", &config).http1_only(),
            stopped(),
        ));
        servers.spawn(serve(
            listeners.metrics,
            metrics_svc,
            serve_config("metrics", &config).http1_only(),
            stopped(),
        ));
        if let (Some(listener), Some(metrics)) = (listeners.user_metrics, metrics) {
            let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(
                    admin::user_metrics_response(&req, &metrics),
                ))
            });
            servers.spawn(serve(
                listener,
                svc,
                serve_config("user-metrics", &config).http1_only(),
                stopped(),
            ));
        }

        terminate.await;
        terminating.store(true, Ordering::Release);
        tracing::info!(
            quiet_period = ?config.drain_quiet_period,
            "Received TERM signal, attempting to gracefully shutdown servers."
        );
        drainer.drain().await;
        let _ = stop_tx.send(true);
        while servers.join_next().await.is_some() {}
        if !forward.tunnels().wait_idle(TUNNEL_DRAIN_LIMIT).await {
            tracing::warn!("Hijack connection drain failed");
        }
        reporter.abort();
        tracing::info!("Shutdown complete, exiting...");
    }
}

/// Knative's server settings for the port `name`, with the configured
/// header read timeout.
fn serve_config(name: &'static str, config: &Config) -> ServeConfig {
    let mut serve = ServeConfig::new(name);
    serve.header_read_timeout = config.header_read_timeout;
    serve
}

/// The request logger `OBSERVABILITY_CONFIG` asks for, or `None`.
fn request_logger(config: &Config) -> Option<kdp_proxy::request_log::RequestLogger> {
    use kdp_proxy::request_log::{DEFAULT_TEMPLATE, RequestLogger};
    let obs = &config.observability;
    if !obs.enable_request_log {
        return None;
    }
    let template = obs
        .request_log_template
        .as_deref()
        .unwrap_or(DEFAULT_TEMPLATE);
    match RequestLogger::new(true, template) {
        Ok(logger) => Some(logger.with_probe_logging(obs.enable_probe_request_log)),
        Err(error) => {
            tracing::error!(error = %kdp_core::ErrorChain(&error), "request logging disabled");
            None
        }
    }
}
