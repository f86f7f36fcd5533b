//! The activator's configuration, from the environment of its Deployment.
//!
//! Read once before any port opens; a missing or malformed variable is an
//! [`EnvError`] naming it and `main` exits 64. Names are Knative's; a few
//! `KDP_*` variables, absent in a cluster, let tests run activators on
//! loopback with an in-process autoscaler and short timers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kdp_core::env::{self, EnvError, Strings};

use crate::throttle::LoadBalancing;

/// This activator's pod name, sent in every `Stat`.
pub const ENV_POD_NAME: &str = "POD_NAME";
/// This activator's pod IP, matched against public Endpoints for subsetting.
pub const ENV_POD_IP: &str = "POD_IP";
/// Namespace of config maps, secrets and the autoscaler.
pub const ENV_SYSTEM_NAMESPACE: &str = "SYSTEM_NAMESPACE";
/// Upstream pool: idle connections in total.
pub const ENV_MAX_IDLE_PROXY_CONNS: &str = "MAX_IDLE_PROXY_CONNS";
/// Upstream pool: idle connections per pod.
pub const ENV_MAX_IDLE_PROXY_CONNS_PER_HOST: &str = "MAX_IDLE_PROXY_CONNS_PER_HOST";
/// Timeout of one pod-probing round.
pub const ENV_PROBE_TIMEOUT: &str = "PROBE_TIMEOUT";
/// Re-probe period while a pod is not yet healthy.
pub const ENV_PROBE_FREQUENCY: &str = "PROBE_FREQUENCY";
/// Name of the logging ConfigMap.
pub const ENV_CONFIG_LOGGING_NAME: &str = "CONFIG_LOGGING_NAME";
/// Name of the observability ConfigMap.
pub const ENV_CONFIG_OBSERVABILITY_NAME: &str = "CONFIG_OBSERVABILITY_NAME";
/// Cluster DNS domain.
pub const ENV_CLUSTER_DOMAIN: &str = "CLUSTER_DOMAIN";

/// pprof port (kdp serves 404 on every path there).
pub const ENV_PROFILING_PORT: &str = "PROFILING_PORT";
/// Oldest Kubernetes API server the activator starts against.
pub const ENV_KUBERNETES_MIN_VERSION: &str = "KUBERNETES_MIN_VERSION";
/// Prefix of the TLS server settings for 8112 (`ACTIVATOR_TLS_MIN_VERSION`, ...).
pub const TLS_ENV_PREFIX: &str = "ACTIVATOR";
/// TLS server: minimum version.
pub const ENV_ACTIVATOR_TLS_MIN_VERSION: &str = "ACTIVATOR_TLS_MIN_VERSION";
/// TLS server: maximum version.
pub const ENV_ACTIVATOR_TLS_MAX_VERSION: &str = "ACTIVATOR_TLS_MAX_VERSION";
/// TLS server: TLS 1.2 cipher suites.
pub const ENV_ACTIVATOR_TLS_CIPHER_SUITES: &str = "ACTIVATOR_TLS_CIPHER_SUITES";
/// TLS server: key-exchange groups.
pub const ENV_ACTIVATOR_TLS_CURVE_PREFERENCES: &str = "ACTIVATOR_TLS_CURVE_PREFERENCES";

/// Prometheus metrics port (used when `metrics-protocol: prometheus`).
pub const ENV_METRICS_PROMETHEUS_PORT: &str = "METRICS_PROMETHEUS_PORT";
/// kdp only: the autoscaler websocket URL (default `ws://autoscaler.<ns>.svc.<domain>:8080`).
pub const ENV_KDP_AUTOSCALER_URL: &str = "KDP_AUTOSCALER_URL";
/// kdp only: address every port binds (default all interfaces).
pub const ENV_KDP_BIND_ADDRESS: &str = "KDP_BIND_ADDRESS";
/// kdp only: the `http1` port (default 8012).
pub const ENV_KDP_HTTP1_PORT: &str = "KDP_HTTP1_PORT";
/// kdp only: the `h2c` port (default 8013).
pub const ENV_KDP_H2C_PORT: &str = "KDP_H2C_PORT";
/// kdp only: the `https` port (default 8112), opened with system-internal-tls.
pub const ENV_KDP_HTTPS_PORT: &str = "KDP_HTTPS_PORT";
/// kdp only: the drain sleep after SIGTERM (default 45s).
pub const ENV_KDP_DRAIN_TIMEOUT: &str = "KDP_DRAIN_TIMEOUT";
/// kdp only: requests held per revision before 503 (default 10000).
pub const ENV_KDP_MAX_QUEUED_PER_REVISION: &str = "KDP_MAX_QUEUED_PER_REVISION";

/// kdp only: pod choice, `least-loaded` (default) or `knative` (first
/// available / round robin / random choice of two, as Knative picks by cc).
pub const ENV_KDP_LOAD_BALANCING: &str = "KDP_LOAD_BALANCING";
/// kdp only: Go's `ReadHeaderTimeout` on the serving ports, as a Go duration
/// (default 60s): time from accept to a complete request head.
pub const ENV_KDP_HEADER_READ_TIMEOUT: &str = "KDP_HEADER_READ_TIMEOUT";
/// kdp only: bytes all held requests may use together (default 256 MiB).
pub const ENV_KDP_HELD_BYTES_BUDGET: &str = "KDP_HELD_BYTES_BUDGET";
/// Default budget for held requests: about 100k requests at ~2.5 KiB each.
pub const DEFAULT_HELD_BYTES_BUDGET: usize = 256 << 20;

/// Knative's `PROBE_TIMEOUT` default.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Knative's `PROBE_FREQUENCY` default.
pub const DEFAULT_PROBE_FREQUENCY: Duration = Duration::from_millis(200);
/// Knative's `DefaultDrainTimeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(45);
/// Held requests per revision (kdp's bound; Knative's is effectively unbounded).
pub const DEFAULT_MAX_QUEUED_PER_REVISION: usize = 10_000;

/// Everything the activator reads at startup.
#[derive(Clone, Debug)]
pub struct Config {
    /// `POD_NAME`.
    pub pod_name: String,
    /// `POD_IP`.
    pub pod_ip: String,
    /// `SYSTEM_NAMESPACE`.
    pub system_namespace: String,
    /// Idle upstream connections in total.
    pub max_idle_conns: usize,
    /// Idle upstream connections per pod.
    pub max_idle_conns_per_host: usize,
    /// One probing round's timeout.
    pub probe_timeout: Duration,
    /// Re-probe period.
    pub probe_frequency: Duration,
    /// Logging ConfigMap name.
    pub config_logging_name: String,
    /// Observability ConfigMap name.
    pub config_observability_name: String,
    /// Cluster domain (`cluster.local` unless resolv.conf or `CLUSTER_DOMAIN` say otherwise).
    pub cluster_domain: String,
    /// Autoscaler websocket URL.
    pub autoscaler_url: String,
    /// Bind address.
    pub bind: IpAddr,
    /// `http1` port.
    pub http1_port: u16,
    /// `h2c` port.
    pub h2c_port: u16,
    /// `https` port (served with system-internal-tls).
    pub https_port: u16,
    /// Profiling port (`PROFILING_PORT`).
    pub profiling_port: u16,
    /// TLS server settings for the `https` port (`ACTIVATOR_TLS_*`).
    pub tls: kdp_proxy::tls::TlsSettings,
    /// Oldest API server version accepted (`KUBERNETES_MIN_VERSION`).
    pub kubernetes_min_version: crate::version::Version,
    /// Drain sleep.
    pub drain_timeout: Duration,
    /// Requests held per revision.
    pub max_queued_per_revision: usize,
    /// Runtime threads (`KDP_WORKER_THREADS`, default: the CPUs the
    /// container may use, see [`kdp_core::runtime::available_cores`]).
    pub worker_threads: usize,
    /// Prometheus metrics port.
    pub metrics_port: u16,
    /// Bytes all held requests may use together.
    pub held_bytes_budget: usize,
    /// How pods are chosen.
    pub load_balancing: LoadBalancing,
    /// Time from accept to a complete request head.
    pub header_read_timeout: Duration,
}

// === impl Config ===

impl Config {
    /// Reads and validates the configuration; `resolv_conf` is the content of
    /// `/etc/resolv.conf` when readable.
    ///
    /// # Errors
    /// The first missing or invalid variable.
    pub fn from_env(e: &dyn Strings, resolv_conf: Option<&str>) -> Result<Self, EnvError> {
        let nonempty = |var: &str| -> Result<String, EnvError> {
            env::optional(e, var)?.ok_or_else(|| EnvError::Missing {
                var: var.to_owned(),
            })
        };
        let count = |var: &str, default: usize| -> Result<usize, EnvError> {
            let n = env::int_or(e, var, i64::try_from(default).unwrap_or(i64::MAX))?;
            usize::try_from(n)
                .map_err(|_| EnvError::invalid(var, &n.to_string(), "must not be negative"))
        };
        let system_namespace = nonempty(ENV_SYSTEM_NAMESPACE)?;
        let cluster_domain = cluster_domain(env::optional(e, ENV_CLUSTER_DOMAIN)?, resolv_conf);
        let autoscaler_url = env::optional(e, ENV_KDP_AUTOSCALER_URL)?.unwrap_or_else(|| {
            format!("ws://autoscaler.{system_namespace}.svc.{cluster_domain}:8080")
        });
        let bind = match env::optional(e, ENV_KDP_BIND_ADDRESS)? {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(v) => v
                .parse()
                .map_err(|_| EnvError::invalid(ENV_KDP_BIND_ADDRESS, &v, "not an IP address"))?,
        };
        Ok(Self {
            pod_name: nonempty(ENV_POD_NAME)?,
            pod_ip: nonempty(ENV_POD_IP)?,
            max_idle_conns: count(ENV_MAX_IDLE_PROXY_CONNS, 1000)?,
            max_idle_conns_per_host: count(ENV_MAX_IDLE_PROXY_CONNS_PER_HOST, 100)?,
            probe_timeout: env::duration_or(e, ENV_PROBE_TIMEOUT, DEFAULT_PROBE_TIMEOUT)?,
            probe_frequency: env::duration_or(e, ENV_PROBE_FREQUENCY, DEFAULT_PROBE_FREQUENCY)?,
            config_logging_name: env::optional(e, ENV_CONFIG_LOGGING_NAME)?
                .unwrap_or_else(|| "config-logging".to_owned()),
            config_observability_name: env::optional(e, ENV_CONFIG_OBSERVABILITY_NAME)?
                .unwrap_or_else(|| "config-observability".to_owned()),
            cluster_domain,
            autoscaler_url,
            bind,
            http1_port: port_or(e, ENV_KDP_HTTP1_PORT, 8012)?,
            h2c_port: port_or(e, ENV_KDP_H2C_PORT, 8013)?,
            https_port: port_or(e, ENV_KDP_HTTPS_PORT, 8112)?,
            profiling_port: port_or(e, ENV_PROFILING_PORT, 8008)?,
            tls: kdp_proxy::tls::TlsSettings::from_env(e, TLS_ENV_PREFIX)?,
            kubernetes_min_version: {
                let v = env::optional(e, ENV_KUBERNETES_MIN_VERSION)?
                    .unwrap_or_else(|| crate::version::DEFAULT_MIN_VERSION.to_owned());
                crate::version::Version::parse(&v)
                    .map_err(|reason| EnvError::invalid(ENV_KUBERNETES_MIN_VERSION, &v, reason))?
            },
            drain_timeout: env::duration_or(e, ENV_KDP_DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT)?,
            max_queued_per_revision: count(
                ENV_KDP_MAX_QUEUED_PER_REVISION,
                DEFAULT_MAX_QUEUED_PER_REVISION,
            )?,
            worker_threads: kdp_core::runtime::worker_threads_or(
                e,
                kdp_core::runtime::available_cores(),
            )?,
            metrics_port: env::port_or(e, ENV_METRICS_PROMETHEUS_PORT, 9090)?,
            held_bytes_budget: count(ENV_KDP_HELD_BYTES_BUDGET, DEFAULT_HELD_BYTES_BUDGET)?,
            header_read_timeout: env::duration_or(
                e,
                ENV_KDP_HEADER_READ_TIMEOUT,
                kdp_proxy::serve::HEADER_READ_TIMEOUT,
            )?,
            load_balancing: match env::optional(e, ENV_KDP_LOAD_BALANCING)?.as_deref() {
                None | Some("least-loaded") => LoadBalancing::LeastLoaded,
                Some("knative") => LoadBalancing::Knative,
                Some(other) => {
                    return Err(EnvError::invalid(
                        ENV_KDP_LOAD_BALANCING,
                        other,
                        "use least-loaded or knative",
                    ));
                }
            },
            system_namespace,
        })
    }
}

/// A listening port; unlike Knative-injected ports, 0 (an ephemeral port,
/// for tests) is accepted.
fn port_or(e: &dyn Strings, var: &str, default: u16) -> Result<u16, EnvError> {
    match env::optional(e, var)? {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| EnvError::invalid(var, &v, "not a port number between 0 and 65535")),
    }
}

/// Knative's rule: with a readable resolv.conf, `CLUSTER_DOMAIN` when set,
/// else the rest of the first `search` entry starting with `svc.`, else
/// `cluster.local`; without one, always `cluster.local`.
fn cluster_domain(from_env: Option<String>, resolv_conf: Option<&str>) -> String {
    const DEFAULT: &str = "cluster.local";
    let Some(resolv) = resolv_conf else {
        return DEFAULT.to_owned();
    };
    if let Some(domain) = from_env {
        return domain;
    }
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(str::split_whitespace)
        .find_map(|entry| entry.strip_prefix("svc."))
        .map_or_else(
            || DEFAULT.to_owned(),
            |d| d.trim_end_matches('.').to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (ENV_POD_NAME, "activator-abc"),
            (ENV_POD_IP, "10.0.0.9"),
            (ENV_SYSTEM_NAMESPACE, "knative-serving"),
        ])
    }

    #[test]
    fn defaults_match_knative() {
        let cfg = Config::from_env(&base(), None).unwrap();
        assert_eq!(cfg.probe_timeout, Duration::from_millis(300));
        assert_eq!(cfg.probe_frequency, Duration::from_millis(200));
        assert_eq!(cfg.max_idle_conns, 1000);
        assert_eq!(cfg.max_idle_conns_per_host, 100);
        assert_eq!(
            cfg.autoscaler_url,
            "ws://autoscaler.knative-serving.svc.cluster.local:8080"
        );
        assert_eq!((cfg.http1_port, cfg.h2c_port), (8012, 8013));
        assert_eq!((cfg.https_port, cfg.profiling_port), (8112, 8008));
        assert_eq!(cfg.tls, kdp_proxy::tls::TlsSettings::default());
        assert_eq!(cfg.kubernetes_min_version.to_string(), "1.34.0");
        // One runtime thread per CPU the container may use.
        assert_eq!(cfg.worker_threads, kdp_core::runtime::available_cores());
    }

    #[test]
    fn required_and_malformed_are_named() {
        for var in [ENV_POD_NAME, ENV_POD_IP, ENV_SYSTEM_NAMESPACE] {
            let mut e = base();
            e.remove(var);
            assert_eq!(Config::from_env(&e, None).unwrap_err().var(), var);
        }
        for (var, bad) in [
            (ENV_PROBE_TIMEOUT, "300"),
            (ENV_PROBE_FREQUENCY, "fast"),
            (ENV_MAX_IDLE_PROXY_CONNS, "-1"),
            (ENV_KDP_BIND_ADDRESS, "localhost"),
            (ENV_KDP_LOAD_BALANCING, "random"),
            (ENV_KDP_HTTPS_PORT, "70000"),
            (ENV_PROFILING_PORT, "pprof"),
            (ENV_KUBERNETES_MIN_VERSION, "1.34"),
            (ENV_ACTIVATOR_TLS_MIN_VERSION, "1.1"),
            (ENV_ACTIVATOR_TLS_CIPHER_SUITES, "TLS_FOO"),
            (kdp_core::runtime::ENV_KDP_WORKER_THREADS, "0"),
        ] {
            let mut e = base();
            e.insert(var, bad);
            let err = Config::from_env(&e, None).unwrap_err();
            assert_eq!(err.var(), var, "{err}");
        }
    }

    #[test]
    fn cluster_domain_rules() {
        let resolv =
            "nameserver 10.96.0.10\nsearch default.svc.example.org svc.example.org example.org\n";
        assert_eq!(cluster_domain(None, Some(resolv)), "example.org");
        assert_eq!(
            cluster_domain(Some("env.local".into()), Some(resolv)),
            "env.local"
        );
        assert_eq!(
            cluster_domain(Some("env.local".into()), None),
            "cluster.local",
            "Knative's quirk"
        );
        assert_eq!(
            cluster_domain(None, Some("nameserver 1.1.1.1\n")),
            "cluster.local"
        );
    }
}
