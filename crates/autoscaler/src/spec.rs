//! Derived per-revision parameters (activator spec §8.3).
//!
//! Third stage: [`Config`] and [`RevisionAnnotations`] (plus the revision's
//! `containerConcurrency` and whether it is routable) resolve into the
//! [`DeciderSpec`] the [`crate::Decider`] runs on and the [`KpaParams`] the
//! [`crate::reconciler`] applies. Resolution cannot fail: the inputs are
//! already validated or treated as absent. Mirrors Knative's
//! `MakeDecider`, `ResolveMetricTarget`, `MakeMetric` and `ScaleBounds`.

use std::time::Duration;

use crate::annotations::RevisionAnnotations;
use crate::config::{
    BUCKET_SIZE, Config, DEFAULT_PROGRESS_DEADLINE, TARGET_MIN, WINDOW_MAX, WINDOW_MIN,
};

/// Extra wait past the progress deadline before giving up on activation.
pub const ACTIVATION_TIMEOUT_BUFFER: Duration = Duration::from_secs(30);

/// The metric a revision scales on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScalingMetric {
    /// In-flight requests per pod (the KPA default).
    #[default]
    Concurrency,
    /// Requests per second per pod.
    Rps,
}

/// How a metric window is averaged (§8.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AggregationAlgorithm {
    /// Plain average over the window (or the part of it since data started).
    #[default]
    Linear,
    /// Exponentially decaying weights, newest bucket first.
    WeightedExponential,
}

/// Everything the decider needs for one revision (Knative's `DeciderSpec`
/// plus the metric windows).
#[derive(Clone, Debug, PartialEq)]
pub struct DeciderSpec {
    /// Metric to scale on.
    pub metric: ScalingMetric,
    /// Per-pod value to aim for: `max(0.01, total × utilisation)`.
    pub target_value: f64,
    /// Per-pod capacity (`total` in §8.3).
    pub total_value: f64,
    /// Target burst capacity (−1 = activator always in path).
    pub target_burst_capacity: f64,
    /// Requests one activator can take.
    pub activator_capacity: f64,
    /// Panic when the panic-window demand reaches this multiple of ready pods.
    pub panic_threshold: f64,
    /// Largest scale-up factor per decision.
    pub max_scale_up_rate: f64,
    /// Largest scale-down divisor per decision.
    pub max_scale_down_rate: f64,
    /// Stable window.
    pub stable_window: Duration,
    /// Panic window (whole seconds, at least 1 s).
    pub panic_window: Duration,
    /// Scale-down delay (0 = none).
    pub scale_down_delay: Duration,
    /// Initial scale.
    pub initial_scale: u32,
    /// Minimum non-zero scale (0 or 1 = no effect).
    pub activation_scale: u32,
    /// Whether the revision is routable (scale-down limits and delays apply).
    pub reachable: bool,
    /// Bucket averaging.
    pub aggregation: AggregationAlgorithm,
    /// Whether pods are scraped (TBC ≠ −1). Then an empty stable window means
    /// "no data yet"; without scraping, activator stats are the only input
    /// and an empty window reads as 0.
    pub scrape_pods: bool,
}

/// What the KPA reconciler needs for one revision (§8.6).
#[derive(Clone, Debug, PartialEq)]
pub struct KpaParams {
    /// Lower bound (forced to 0 when unreachable).
    pub min_scale: u32,
    /// Upper bound (0 = unbounded).
    pub max_scale: u32,
    /// Initial scale.
    pub initial_scale: u32,
    /// Whether the revision is routable.
    pub reachable: bool,
    /// `enable-scale-to-zero`.
    pub enable_scale_to_zero: bool,
    /// Stable window: how long a PA stays active at zero demand.
    pub stable_window: Duration,
    /// `scale-to-zero-grace-period`.
    pub scale_to_zero_grace_period: Duration,
    /// Last-pod retention (0 when unreachable).
    pub scale_to_zero_pod_retention: Duration,
    /// Give up activating after this long: progress deadline + 30 s.
    pub activation_timeout: Duration,
    /// Target burst capacity (−1 = the activator is known to be in path).
    pub target_burst_capacity: f64,
}

// === impl ScalingMetric ===

impl ScalingMetric {
    /// Parses the `metric` annotation value.
    pub fn from_annotation(value: &str) -> Option<Self> {
        match value {
            "concurrency" => Some(Self::Concurrency),
            "rps" => Some(Self::Rps),
            _ => None,
        }
    }
}

// === impl AggregationAlgorithm ===

impl AggregationAlgorithm {
    /// Parses the `metric-aggregation-algorithm` annotation value.
    pub fn from_annotation(value: &str) -> Option<Self> {
        match value {
            "linear" => Some(Self::Linear),
            "weighted-exponential" | "weightedExponential" => Some(Self::WeightedExponential),
            _ => None,
        }
    }
}

// === impl DeciderSpec ===

impl DeciderSpec {
    /// Resolves the decider parameters for a revision with the given
    /// `containerConcurrency` (0 = unlimited).
    ///
    /// ```
    /// use kdp_autoscaler::{Config, DeciderSpec, RevisionAnnotations};
    ///
    /// let spec = DeciderSpec::resolve(&Config::default(), &RevisionAnnotations::default(), 10, true);
    /// assert_eq!(spec.target_value, 7.0);
    /// assert_eq!(spec.panic_window.as_secs(), 6);
    /// ```
    pub fn resolve(
        config: &Config,
        annotations: &RevisionAnnotations,
        container_concurrency: u32,
        reachable: bool,
    ) -> Self {
        let metric = annotations.metric.unwrap_or_default();
        let cc = f64::from(container_concurrency);
        let (mut total, mut utilization) = match metric {
            ScalingMetric::Rps => (config.rps_target_default, config.target_utilization),
            ScalingMetric::Concurrency if container_concurrency == 0 => (
                config.container_concurrency_target_default,
                config.container_concurrency_target_fraction,
            ),
            ScalingMetric::Concurrency => (cc, config.container_concurrency_target_fraction),
        };
        if let Some(target) = annotations.target {
            // Never aim above what containerConcurrency lets a pod take.
            total = match metric {
                ScalingMetric::Concurrency if container_concurrency != 0 => target.min(cc),
                _ => target,
            };
        }
        if let Some(percentage) = annotations.target_utilization_percentage {
            utilization = percentage / 100.0;
        }
        let stable_window = stable_window(config, annotations);
        let panic_percentage = annotations
            .panic_window_percentage
            .unwrap_or(config.panic_window_percentage);
        let target_burst_capacity = annotations
            .target_burst_capacity
            .unwrap_or(config.target_burst_capacity);
        Self {
            metric,
            target_value: (total * utilization).max(TARGET_MIN),
            total_value: total,
            target_burst_capacity,
            activator_capacity: config.activator_capacity,
            panic_threshold: annotations
                .panic_threshold_percentage
                .unwrap_or(config.panic_threshold_percentage)
                / 100.0,
            max_scale_up_rate: config.max_scale_up_rate,
            max_scale_down_rate: config.max_scale_down_rate,
            stable_window,
            panic_window: panic_window(stable_window, panic_percentage),
            scale_down_delay: annotations
                .scale_down_delay
                .unwrap_or(config.scale_down_delay),
            initial_scale: initial_scale(config, annotations),
            activation_scale: annotations.activation_scale.unwrap_or(0),
            reachable,
            aggregation: annotations.metric_aggregation_algorithm.unwrap_or_default(),
            scrape_pods: target_burst_capacity != -1.0,
        }
    }
}

// === impl KpaParams ===

impl KpaParams {
    /// Resolves the reconciler parameters for a revision.
    pub fn resolve(config: &Config, annotations: &RevisionAnnotations, reachable: bool) -> Self {
        let progress_deadline = annotations
            .progress_deadline
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
        Self {
            min_scale: if reachable {
                annotations.min_scale.unwrap_or(config.min_scale)
            } else {
                0
            },
            max_scale: annotations.max_scale.unwrap_or(config.max_scale),
            initial_scale: initial_scale(config, annotations),
            reachable,
            enable_scale_to_zero: config.enable_scale_to_zero,
            stable_window: stable_window(config, annotations),
            scale_to_zero_grace_period: config.scale_to_zero_grace_period,
            scale_to_zero_pod_retention: if reachable {
                annotations
                    .scale_to_zero_pod_retention_period
                    .unwrap_or(config.scale_to_zero_pod_retention_period)
            } else {
                Duration::ZERO
            },
            activation_timeout: progress_deadline.saturating_add(ACTIVATION_TIMEOUT_BUFFER),
            target_burst_capacity: annotations
                .target_burst_capacity
                .unwrap_or(config.target_burst_capacity),
        }
    }
}

/// The annotation when set and allowed (0 only with `allow-zero-initial-scale`),
/// else the config value.
fn initial_scale(config: &Config, annotations: &RevisionAnnotations) -> u32 {
    match annotations.initial_scale {
        Some(0) if !config.allow_zero_initial_scale => config.initial_scale,
        Some(n) => n,
        None => config.initial_scale,
    }
}

/// The `window` annotation, else the config value. Knative's webhook
/// rejects annotation windows outside [6 s, 1 h]; without a webhook we clamp
/// them, which also bounds the bucket memory.
fn stable_window(config: &Config, annotations: &RevisionAnnotations) -> Duration {
    annotations
        .window
        .map_or(config.stable_window, |w| w.clamp(WINDOW_MIN, WINDOW_MAX))
}

/// `stable × percentage / 100`, rounded to whole seconds, at least one bucket.
fn panic_window(stable: Duration, percentage: f64) -> Duration {
    let secs = (stable.as_secs_f64() * percentage / 100.0).round();
    Duration::try_from_secs_f64(secs)
        .unwrap_or(BUCKET_SIZE)
        .max(BUCKET_SIZE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> RevisionAnnotations {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
            .collect();
        RevisionAnnotations::parse(&map)
    }

    fn spec(pairs: &[(&str, &str)], cc: u32) -> DeciderSpec {
        DeciderSpec::resolve(&Config::default(), &annotations(pairs), cc, true)
    }

    #[test]
    fn default_targets() {
        // §8.3: cc 0 → 70; cc 10 → 7; rps → 140.
        let s = spec(&[], 0);
        assert_eq!((s.target_value, s.total_value), (70.0, 100.0));
        let s = spec(&[], 10);
        assert_eq!((s.target_value, s.total_value), (7.0, 10.0));
        let s = spec(&[("metric", "rps")], 0);
        assert_eq!(s.metric, ScalingMetric::Rps);
        assert_eq!((s.target_value, s.total_value), (140.0, 200.0));
    }

    #[test]
    fn target_annotation_is_capped_by_container_concurrency() {
        assert_eq!(spec(&[("target", "50")], 10).total_value, 10.0);
        assert_eq!(spec(&[("target", "5")], 10).total_value, 5.0);
        assert_eq!(spec(&[("target", "50")], 0).total_value, 50.0);
        assert_eq!(
            spec(&[("target", "50"), ("metric", "rps")], 10).total_value,
            50.0
        );
        let s = spec(
            &[("target", "10"), ("target-utilization-percentage", "50")],
            0,
        );
        assert_eq!(s.target_value, 5.0);
        assert_eq!(spec(&[("target", "0.001")], 0).target_value, TARGET_MIN);
    }

    #[test]
    fn windows_and_thresholds() {
        let s = spec(&[], 0);
        assert_eq!(s.stable_window, Duration::from_secs(60));
        assert_eq!(s.panic_window, Duration::from_secs(6));
        assert_eq!(s.panic_threshold, 2.0);
        assert_eq!(s.target_burst_capacity, 211.0);
        assert!(s.scrape_pods);
        assert_eq!(s.aggregation, AggregationAlgorithm::Linear);

        assert_eq!(spec(&[("window", "1s")], 0).stable_window, WINDOW_MIN);
        assert_eq!(spec(&[("window", "100h")], 0).stable_window, WINDOW_MAX);
        let s = spec(&[("window", "7s"), ("panic-window-percentage", "10")], 0);
        assert_eq!(
            s.panic_window,
            Duration::from_secs(1),
            "0.7 s rounds to 1 s"
        );
        let s = spec(&[("window", "6s"), ("panic-window-percentage", "1")], 0);
        assert_eq!(
            s.panic_window,
            Duration::from_secs(1),
            "at least one bucket"
        );
        let s = spec(&[("window", "25s"), ("panic-window-percentage", "10")], 0);
        assert_eq!(
            s.panic_window,
            Duration::from_secs(3),
            "2.5 s rounds half up"
        );
        let s = spec(
            &[
                ("target-burst-capacity", "-1"),
                ("panic-threshold-percentage", "150"),
            ],
            0,
        );
        assert!(!s.scrape_pods);
        assert_eq!(s.panic_threshold, 1.5);
    }

    #[test]
    fn initial_scale_zero_needs_permission() {
        assert_eq!(spec(&[("initial-scale", "0")], 0).initial_scale, 1);
        assert_eq!(spec(&[("initial-scale", "3")], 0).initial_scale, 3);
        let config = Config {
            allow_zero_initial_scale: true,
            ..Config::default()
        };
        let a = annotations(&[("initial-scale", "0")]);
        assert_eq!(DeciderSpec::resolve(&config, &a, 0, true).initial_scale, 0);
    }

    #[test]
    fn kpa_params_drop_min_and_retention_when_unreachable() {
        let a = annotations(&[
            ("min-scale", "2"),
            ("max-scale", "5"),
            ("scale-to-zero-pod-retention-period", "1m"),
        ]);
        let p = KpaParams::resolve(&Config::default(), &a, true);
        assert_eq!((p.min_scale, p.max_scale), (2, 5));
        assert_eq!(p.scale_to_zero_pod_retention, Duration::from_secs(60));
        assert_eq!(p.activation_timeout, Duration::from_secs(630));
        let p = KpaParams::resolve(&Config::default(), &a, false);
        assert_eq!((p.min_scale, p.max_scale), (0, 5));
        assert_eq!(p.scale_to_zero_pod_retention, Duration::ZERO);
    }
}
