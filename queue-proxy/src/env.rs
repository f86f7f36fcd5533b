//! Configuration from the environment Knative's controller injects.
//!
//! Read once at startup, before any port opens; a missing or malformed
//! variable is an [`EnvError`] naming it, and `main` exits 64. Names are
//! Knative's (`ENV_*` constants). A few `KDP_*` variables, absent in a
//! cluster, let tests run several queue-proxies on one machine.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use kdp_core::env::{self, EnvError, Strings};
use kdp_proxy::tls::TlsSettings;
use serde::Deserialize;

/// Breaker capacity; `< 1` means unlimited.
pub const ENV_CONTAINER_CONCURRENCY: &str = "CONTAINER_CONCURRENCY";
/// Main (HTTP/1.1 + h2c) port.
pub const ENV_QUEUE_SERVING_PORT: &str = "QUEUE_SERVING_PORT";
/// TLS main port, served when the certificate files exist.
pub const ENV_QUEUE_SERVING_TLS_PORT: &str = "QUEUE_SERVING_TLS_PORT";
/// The user container's port on 127.0.0.1.
pub const ENV_USER_PORT: &str = "USER_PORT";
/// Maximum request duration, seconds.
pub const ENV_REVISION_TIMEOUT_SECONDS: &str = "REVISION_TIMEOUT_SECONDS";
/// Time-to-first-byte limit, seconds (0 = off).
pub const ENV_REVISION_RESPONSE_START_TIMEOUT_SECONDS: &str =
    "REVISION_RESPONSE_START_TIMEOUT_SECONDS";
/// Longest gap between response writes, seconds (0 = off).
pub const ENV_REVISION_IDLE_TIMEOUT_SECONDS: &str = "REVISION_IDLE_TIMEOUT_SECONDS";
/// JSON of the user container's readiness probe(s).
pub const ENV_SERVING_READINESS_PROBE: &str = "SERVING_READINESS_PROBE";
/// Full-duplex HTTP/1 (always on in kdp; parsed for validation).
pub const ENV_ENABLE_HTTP_FULL_DUPLEX: &str = "ENABLE_HTTP_FULL_DUPLEX";
/// HTTP readiness probes try h2c first.
pub const ENV_ENABLE_HTTP2_AUTO_DETECTION: &str = "ENABLE_HTTP2_AUTO_DETECTION";
/// `SERVING_READINESS_PROBE` is an array.
pub const ENV_ENABLE_MULTI_CONTAINER_PROBES: &str = "ENABLE_MULTI_CONTAINER_PROBES";
/// zap logger config JSON (only its level is honoured).
pub const ENV_SERVING_LOGGING_CONFIG: &str = "SERVING_LOGGING_CONFIG";
/// Log level override.
pub const ENV_SERVING_LOGGING_LEVEL: &str = "SERVING_LOGGING_LEVEL";
/// Revision namespace.
pub const ENV_SERVING_NAMESPACE: &str = "SERVING_NAMESPACE";
/// Knative Service name (may be empty).
pub const ENV_SERVING_SERVICE: &str = "SERVING_SERVICE";
/// Configuration name.
pub const ENV_SERVING_CONFIGURATION: &str = "SERVING_CONFIGURATION";
/// Revision name.
pub const ENV_SERVING_REVISION: &str = "SERVING_REVISION";
/// Pod name, reported in every `Stat`.
pub const ENV_SERVING_POD: &str = "SERVING_POD";
/// Pod IP (request log `.Revision.PodIP`).
pub const ENV_SERVING_POD_IP: &str = "SERVING_POD_IP";
/// config-observability as JSON.
pub const ENV_OBSERVABILITY_CONFIG: &str = "OBSERVABILITY_CONFIG";
/// User-metrics Prometheus port override.
pub const ENV_METRICS_PROMETHEUS_PORT: &str = "METRICS_PROMETHEUS_PORT";

/// kdp only: address to bind every port on (default: all interfaces).
pub const ENV_KDP_BIND_ADDRESS: &str = "KDP_BIND_ADDRESS";
/// kdp only: admin port (default 8022).
pub const ENV_KDP_ADMIN_PORT: &str = "KDP_ADMIN_PORT";
/// kdp only: autoscaler metrics port (default 9090).
pub const ENV_KDP_METRICS_PORT: &str = "KDP_METRICS_PORT";
/// kdp only: drain quiet period as a Go duration (default 30s).
pub const ENV_KDP_DRAIN_QUIET_PERIOD: &str = "KDP_DRAIN_QUIET_PERIOD";
/// kdp only: folder holding `tls.crt` and `tls.key` (default `/var/lib/knative/certs`).
pub const ENV_KDP_CERT_DIR: &str = "KDP_CERT_DIR";
/// kdp only: Go's `ReadHeaderTimeout` on every port, as a Go duration
/// (default 60s, Knative's value): time from accept to a complete request head.
pub const ENV_KDP_HEADER_READ_TIMEOUT: &str = "KDP_HEADER_READ_TIMEOUT";

/// Knative's admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 8022;
/// Knative's autoscaler metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// Knative's user metrics port.
pub const DEFAULT_USER_METRICS_PORT: u16 = 9091;
/// Where Knative mounts the serving certificate.
pub const DEFAULT_CERT_DIR: &str = "/var/lib/knative/certs";

/// Everything the queue-proxy reads at startup.
#[derive(Clone, Debug)]
pub struct Config {
    /// Concurrent requests allowed to the user container; 0 = unlimited.
    pub container_concurrency: usize,
    /// Address every listener binds.
    pub bind: IpAddr,
    /// Main port.
    pub serving_port: u16,
    /// TLS port.
    pub tls_port: u16,
    /// User container port on 127.0.0.1.
    pub user_port: u16,
    /// Admin port (`/drain`, `/wait-for-drain`).
    pub admin_port: u16,
    /// Autoscaler metrics port (protobuf `Stat`).
    pub metrics_port: u16,
    /// User metrics port (Prometheus, when enabled).
    pub user_metrics_port: u16,
    /// Revision timeout.
    pub revision_timeout: Duration,
    /// Response-start timeout.
    pub response_start_timeout: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// `SERVING_READINESS_PROBE` as given (empty = always ready).
    pub readiness_probe: String,
    /// Readiness probe JSON is an array.
    pub multi_container_probes: bool,
    /// HTTP probes try h2c first.
    pub http2_auto_detection: bool,
    /// Log level.
    pub log_level: String,
    /// Identity of the revision and pod.
    pub revision: RevisionIdentity,
    /// config-observability.
    pub observability: Observability,
    /// Drain quiet period.
    pub drain_quiet_period: Duration,
    /// Time from accept to a complete request head, on every port.
    pub header_read_timeout: Duration,
    /// Folder of `tls.crt`/`tls.key`.
    pub cert_dir: PathBuf,
    /// TLS versions, suites and curves from `QUEUE_PROXY_TLS_*`.
    pub tls: TlsSettings,
    /// Runtime worker threads (`KDP_WORKER_THREADS`).
    pub worker_threads: usize,
}

/// Who this queue-proxy serves (logs, request log, `Stat.pod_name`).
#[derive(Clone, Debug, Default)]
pub struct RevisionIdentity {
    /// Namespace.
    pub namespace: String,
    /// Service (may be empty).
    pub service: String,
    /// Configuration.
    pub configuration: String,
    /// Revision.
    pub revision: String,
    /// Pod name.
    pub pod: String,
    /// Pod IP.
    pub pod_ip: String,
}

/// The parts of `OBSERVABILITY_CONFIG` the queue-proxy acts on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Observability {
    /// Request metrics export.
    pub request_metrics: Exporter,
    /// Tracing export (parsed and validated; kdp exports no spans yet).
    pub tracing: Exporter,
    /// Request log on.
    pub enable_request_log: bool,
    /// Request log template (`None` = Knative's default).
    pub request_log_template: Option<String>,
    /// Log probe requests too.
    pub enable_probe_request_log: bool,
}

/// An exporter section of `OBSERVABILITY_CONFIG`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Exporter {
    /// `none`, `prometheus`, `grpc`, `http/protobuf` (or `stdout` for tracing).
    pub protocol: String,
    /// `host:port` or URL.
    pub endpoint: String,
}

// === impl Config ===

impl Config {
    /// Reads and validates the whole configuration.
    ///
    /// # Errors
    /// The first missing or invalid variable.
    pub fn from_env(e: &dyn Strings) -> Result<Self, EnvError> {
        let cc = env::required_int(e, ENV_CONTAINER_CONCURRENCY)?;
        let port = |var: &str| -> Result<u16, EnvError> {
            let v = env::required(e, var)?;
            env::parse_port(&v).map_err(|reason| EnvError::invalid(var, &v, reason))
        };
        let seconds = |var: &str| -> Result<Option<Duration>, EnvError> {
            let n = env::int_or(e, var, 0)?;
            u64::try_from(n)
                .map(|s| (s > 0).then(|| Duration::from_secs(s)))
                .map_err(|_| EnvError::invalid(var, &n.to_string(), "must not be negative"))
        };
        let timeout = env::required_int(e, ENV_REVISION_TIMEOUT_SECONDS)?;
        let revision_timeout = u64::try_from(timeout)
            .map(Duration::from_secs)
            .map_err(|_| {
                EnvError::invalid(
                    ENV_REVISION_TIMEOUT_SECONDS,
                    &timeout.to_string(),
                    "must not be negative",
                )
            })?;
        // Validated for parity with Knative, which refuses a malformed value.
        env::bool_or(e, ENV_ENABLE_HTTP_FULL_DUPLEX, false)?;
        env::required(e, ENV_SERVING_LOGGING_CONFIG)?;
        let bind = match env::optional(e, ENV_KDP_BIND_ADDRESS)? {
            None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Some(v) => v
                .parse()
                .map_err(|_| EnvError::invalid(ENV_KDP_BIND_ADDRESS, &v, "not an IP address"))?,
        };
        let observability = match env::optional(e, ENV_OBSERVABILITY_CONFIG)? {
            None => Observability::default(),
            Some(json) => Observability::parse(&json)
                .map_err(|reason| EnvError::invalid(ENV_OBSERVABILITY_CONFIG, &json, reason))?,
        };
        Ok(Self {
            container_concurrency: usize::try_from(cc.max(0)).unwrap_or(usize::MAX),
            bind,
            serving_port: port(ENV_QUEUE_SERVING_PORT)?,
            tls_port: port(ENV_QUEUE_SERVING_TLS_PORT)?,
            user_port: port(ENV_USER_PORT)?,
            admin_port: env::port_or(e, ENV_KDP_ADMIN_PORT, DEFAULT_ADMIN_PORT)?,
            metrics_port: env::port_or(e, ENV_KDP_METRICS_PORT, DEFAULT_METRICS_PORT)?,
            user_metrics_port: env::port_or(
                e,
                ENV_METRICS_PROMETHEUS_PORT,
                DEFAULT_USER_METRICS_PORT,
            )?,
            revision_timeout,
            response_start_timeout: seconds(ENV_REVISION_RESPONSE_START_TIMEOUT_SECONDS)?,
            idle_timeout: seconds(ENV_REVISION_IDLE_TIMEOUT_SECONDS)?,
            readiness_probe: e.get(ENV_SERVING_READINESS_PROBE)?.unwrap_or_default(),
            multi_container_probes: env::bool_or(e, ENV_ENABLE_MULTI_CONTAINER_PROBES, false)?,
            http2_auto_detection: env::bool_or(e, ENV_ENABLE_HTTP2_AUTO_DETECTION, false)?,
            log_level: env::required(e, ENV_SERVING_LOGGING_LEVEL)?,
            revision: RevisionIdentity {
                namespace: env::required(e, ENV_SERVING_NAMESPACE)?,
                service: e.get(ENV_SERVING_SERVICE)?.unwrap_or_default(),
                configuration: env::required(e, ENV_SERVING_CONFIGURATION)?,
                revision: env::required(e, ENV_SERVING_REVISION)?,
                pod: env::required(e, ENV_SERVING_POD)?,
                pod_ip: env::required(e, ENV_SERVING_POD_IP)?,
            },
            observability,
            drain_quiet_period: env::duration_or(
                e,
                ENV_KDP_DRAIN_QUIET_PERIOD,
                kdp_core::drain::DEFAULT_QUIET_PERIOD,
            )?,
            header_read_timeout: env::duration_or(
                e,
                ENV_KDP_HEADER_READ_TIMEOUT,
                kdp_proxy::serve::HEADER_READ_TIMEOUT,
            )?,
            cert_dir: env::optional(e, ENV_KDP_CERT_DIR)?
                .map_or_else(|| PathBuf::from(DEFAULT_CERT_DIR), PathBuf::from),
            tls: TlsSettings::from_env(e, "QUEUE_PROXY")?,
            worker_threads: kdp_core::runtime::worker_threads(e)?,
        })
    }
}

// === impl Observability ===

impl Observability {
    /// Parses `OBSERVABILITY_CONFIG`, refusing what makes Knative's setup fail.
    ///
    /// # Errors
    /// Invalid JSON, or an unknown protocol.
    pub fn parse(json: &str) -> Result<Self, String> {
        let obs: Self = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
        for (what, exporter, allowed) in [
            (
                "requestMetrics",
                &obs.request_metrics,
                &["", "none", "prometheus", "grpc", "http/protobuf"][..],
            ),
            (
                "tracing",
                &obs.tracing,
                &["", "none", "grpc", "http/protobuf", "stdout"][..],
            ),
        ] {
            if !allowed.contains(&exporter.protocol.as_str()) {
                return Err(format!("unknown {what} protocol {:?}", exporter.protocol));
            }
        }
        Ok(obs)
    }

    /// True when request metrics are served as Prometheus text.
    pub fn prometheus_request_metrics(&self) -> bool {
        self.request_metrics.protocol == "prometheus"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn base_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (ENV_CONTAINER_CONCURRENCY, "10"),
            (ENV_QUEUE_SERVING_PORT, "8012"),
            (ENV_QUEUE_SERVING_TLS_PORT, "8112"),
            (ENV_USER_PORT, "8080"),
            (ENV_REVISION_TIMEOUT_SECONDS, "300"),
            (ENV_SERVING_LOGGING_CONFIG, ""),
            (ENV_SERVING_LOGGING_LEVEL, ""),
            (ENV_SERVING_NAMESPACE, "default"),
            (ENV_SERVING_CONFIGURATION, "hello"),
            (ENV_SERVING_REVISION, "hello-00001"),
            (ENV_SERVING_POD, "hello-00001-deployment-abc"),
            (ENV_SERVING_POD_IP, "10.0.0.5"),
        ])
    }

    #[test]
    fn parses_knative_env() {
        let cfg = Config::from_env(&base_env()).unwrap();
        assert_eq!(cfg.container_concurrency, 10);
        assert_eq!(cfg.serving_port, 8012);
        assert_eq!(cfg.revision_timeout, Duration::from_secs(300));
        assert_eq!(cfg.response_start_timeout, None);
        assert_eq!(cfg.admin_port, 8022);
        assert_eq!(cfg.metrics_port, 9090);
        assert_eq!(cfg.revision.pod, "hello-00001-deployment-abc");
        assert!(!cfg.observability.enable_request_log);
    }

    #[test]
    fn every_required_variable_is_named_when_missing() {
        for var in base_env().keys() {
            let mut env = base_env();
            env.remove(var);
            let err = Config::from_env(&env).unwrap_err();
            assert_eq!(err.var(), *var);
        }
    }

    #[test]
    fn malformed_values_are_named() {
        for (var, bad) in [
            (ENV_CONTAINER_CONCURRENCY, "ten"),
            (ENV_QUEUE_SERVING_PORT, "http"),
            (ENV_USER_PORT, "70000"),
            (ENV_REVISION_TIMEOUT_SECONDS, "-1"),
            (ENV_REVISION_IDLE_TIMEOUT_SECONDS, ""),
            (ENV_ENABLE_MULTI_CONTAINER_PROBES, "yes"),
            (ENV_OBSERVABILITY_CONFIG, "{not json"),
            (ENV_KDP_DRAIN_QUIET_PERIOD, "30"),
        ] {
            let mut env = base_env();
            env.insert(var, bad);
            let err = Config::from_env(&env).unwrap_err();
            assert_eq!(err.var(), var, "{err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn go_syntax_and_negative_concurrency() {
        let mut env = base_env();
        env.insert(ENV_CONTAINER_CONCURRENCY, "0x10");
        assert_eq!(Config::from_env(&env).unwrap().container_concurrency, 16);
        env.insert(ENV_CONTAINER_CONCURRENCY, "-1");
        assert_eq!(Config::from_env(&env).unwrap().container_concurrency, 0);
    }

    #[test]
    fn observability_protocols() {
        let obs = Observability::parse(
            r#"{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{"protocol":"prometheus"},"enableRequestLog":true}"#,
        )
        .unwrap();
        assert!(obs.prometheus_request_metrics());
        assert!(obs.enable_request_log);
        assert!(
            Observability::parse(r#"{"requestMetrics":{"protocol":"carrier-pigeon"}}"#).is_err()
        );
    }
}
