//! Per-revision autoscaling annotations (activator spec §8.2).
//!
//! Second stage: a revision's (PodAutoscaler's) annotations are read into
//! [`RevisionAnnotations`], whose fields override [`crate::Config`] values
//! in [`crate::spec`]. Each setting has a list of keys, canonical first,
//! then legacy camelCase alternates; the first key *present* wins. A value
//! that does not parse makes the setting absent, without falling back to the
//! next key, as Knative's `kmap.KeyPriority` does. Range checks are the
//! admission webhook's job in Knative and are not repeated here, except that
//! negative counts and durations are treated as unparsable.

use std::collections::BTreeMap;
use std::time::Duration;

use kdp_core::env::parse_go_duration;

use crate::spec::{AggregationAlgorithm, ScalingMetric};

/// `autoscaling.knative.dev/class`.
pub const CLASS: &[&str] = &["autoscaling.knative.dev/class"];
/// `autoscaling.knative.dev/metric`.
pub const METRIC: &[&str] = &["autoscaling.knative.dev/metric"];
/// `autoscaling.knative.dev/target`.
pub const TARGET: &[&str] = &["autoscaling.knative.dev/target"];
/// `autoscaling.knative.dev/target-utilization-percentage`.
pub const TARGET_UTILIZATION_PERCENTAGE: &[&str] = &[
    "autoscaling.knative.dev/target-utilization-percentage",
    "autoscaling.knative.dev/targetUtilizationPercentage",
];
/// `autoscaling.knative.dev/target-burst-capacity`.
pub const TARGET_BURST_CAPACITY: &[&str] = &[
    "autoscaling.knative.dev/target-burst-capacity",
    "autoscaling.knative.dev/targetBurstCapacity",
];
/// `autoscaling.knative.dev/window`.
pub const WINDOW: &[&str] = &["autoscaling.knative.dev/window"];
/// `autoscaling.knative.dev/panic-window-percentage`.
pub const PANIC_WINDOW_PERCENTAGE: &[&str] = &[
    "autoscaling.knative.dev/panic-window-percentage",
    "autoscaling.knative.dev/panicWindowPercentage",
];
/// `autoscaling.knative.dev/panic-threshold-percentage`.
pub const PANIC_THRESHOLD_PERCENTAGE: &[&str] = &[
    "autoscaling.knative.dev/panic-threshold-percentage",
    "autoscaling.knative.dev/panicThresholdPercentage",
];
/// `autoscaling.knative.dev/min-scale`.
pub const MIN_SCALE: &[&str] = &[
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/minScale",
];
/// `autoscaling.knative.dev/max-scale`.
pub const MAX_SCALE: &[&str] = &[
    "autoscaling.knative.dev/max-scale",
    "autoscaling.knative.dev/maxScale",
];
/// `autoscaling.knative.dev/initial-scale`.
pub const INITIAL_SCALE: &[&str] = &[
    "autoscaling.knative.dev/initial-scale",
    "autoscaling.knative.dev/initialScale",
];
/// `autoscaling.knative.dev/activation-scale`.
pub const ACTIVATION_SCALE: &[&str] = &["autoscaling.knative.dev/activation-scale"];
/// `autoscaling.knative.dev/scale-down-delay`.
pub const SCALE_DOWN_DELAY: &[&str] = &[
    "autoscaling.knative.dev/scale-down-delay",
    "autoscaling.knative.dev/scaleDownDelay",
];
/// `autoscaling.knative.dev/scale-to-zero-pod-retention-period`.
pub const SCALE_TO_ZERO_POD_RETENTION_PERIOD: &[&str] = &[
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
    "autoscaling.knative.dev/scaleToZeroPodRetentionPeriod",
];
/// `autoscaling.knative.dev/metric-aggregation-algorithm`.
pub const METRIC_AGGREGATION_ALGORITHM: &[&str] = &[
    "autoscaling.knative.dev/metric-aggregation-algorithm",
    "autoscaling.knative.dev/metricAggregationAlgorithm",
];
/// `serving.knative.dev/progress-deadline`.
pub const PROGRESS_DEADLINE: &[&str] = &["serving.knative.dev/progress-deadline"];

/// The autoscaling settings a revision overrides; `None` = not set (or not
/// parsable).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevisionAnnotations {
    /// Autoscaler class (`kpa.autoscaling.knative.dev` when absent).
    pub class: Option<String>,
    /// Scaling metric (`concurrency` or `rps`; other values read as absent).
    pub metric: Option<ScalingMetric>,
    /// Per-pod target value.
    pub target: Option<f64>,
    /// Target utilisation, in percent.
    pub target_utilization_percentage: Option<f64>,
    /// Target burst capacity.
    pub target_burst_capacity: Option<f64>,
    /// Stable window.
    pub window: Option<Duration>,
    /// Panic window as a percentage of the stable window.
    pub panic_window_percentage: Option<f64>,
    /// Panic threshold, in percent.
    pub panic_threshold_percentage: Option<f64>,
    /// Lower scale bound.
    pub min_scale: Option<u32>,
    /// Upper scale bound (0 = unbounded).
    pub max_scale: Option<u32>,
    /// Scale at creation.
    pub initial_scale: Option<u32>,
    /// Minimum non-zero scale.
    pub activation_scale: Option<u32>,
    /// Scale-down delay.
    pub scale_down_delay: Option<Duration>,
    /// Minimum time the last pod is kept.
    pub scale_to_zero_pod_retention_period: Option<Duration>,
    /// Metric aggregation algorithm.
    pub metric_aggregation_algorithm: Option<AggregationAlgorithm>,
    /// Deployment progress deadline (bounds activation).
    pub progress_deadline: Option<Duration>,
}

// === impl RevisionAnnotations ===

impl RevisionAnnotations {
    /// Reads every autoscaling setting from `annotations`.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kdp_autoscaler::RevisionAnnotations;
    ///
    /// let a = BTreeMap::from([("autoscaling.knative.dev/minScale".to_owned(), "2".to_owned())]);
    /// assert_eq!(RevisionAnnotations::parse(&a).min_scale, Some(2));
    /// ```
    pub fn parse(annotations: &BTreeMap<String, String>) -> Self {
        let get = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| annotations.get(*k).map(String::as_str))
        };
        let float = |keys: &[&str]| get(keys).and_then(|v| v.parse::<f64>().ok());
        let count = |keys: &[&str]| {
            get(keys)
                .and_then(|v| v.parse::<i32>().ok())
                .and_then(|n| u32::try_from(n).ok())
        };
        let duration = |keys: &[&str]| get(keys).and_then(|v| parse_go_duration(v).ok());
        Self {
            class: get(CLASS).map(str::to_owned),
            metric: get(METRIC).and_then(ScalingMetric::from_annotation),
            target: float(TARGET),
            target_utilization_percentage: float(TARGET_UTILIZATION_PERCENTAGE),
            target_burst_capacity: float(TARGET_BURST_CAPACITY),
            window: duration(WINDOW),
            panic_window_percentage: float(PANIC_WINDOW_PERCENTAGE),
            panic_threshold_percentage: float(PANIC_THRESHOLD_PERCENTAGE),
            min_scale: count(MIN_SCALE),
            max_scale: count(MAX_SCALE),
            initial_scale: count(INITIAL_SCALE),
            activation_scale: count(ACTIVATION_SCALE),
            scale_down_delay: duration(SCALE_DOWN_DELAY),
            scale_to_zero_pod_retention_period: duration(SCALE_TO_ZERO_POD_RETENTION_PERIOD),
            metric_aggregation_algorithm: get(METRIC_AGGREGATION_ALGORITHM)
                .and_then(AggregationAlgorithm::from_annotation),
            progress_deadline: duration(PROGRESS_DEADLINE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> RevisionAnnotations {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
            .collect();
        RevisionAnnotations::parse(&map)
    }

    #[test]
    fn nothing_set() {
        assert_eq!(parse(&[]), RevisionAnnotations::default());
    }

    #[test]
    fn canonical_key_wins_over_alternate() {
        let a = parse(&[("min-scale", "3"), ("minScale", "5")]);
        assert_eq!(a.min_scale, Some(3));
        let a = parse(&[("maxScale", "5")]);
        assert_eq!(a.max_scale, Some(5));
    }

    #[test]
    fn unparsable_value_is_absent_without_fallback() {
        let a = parse(&[("min-scale", "three"), ("minScale", "5")]);
        assert_eq!(a.min_scale, None);
        assert_eq!(parse(&[("initial-scale", "-1")]).initial_scale, None);
        assert_eq!(parse(&[("window", "60")]).window, None);
        assert_eq!(parse(&[("metric", "cpu")]).metric, None);
    }

    #[test]
    fn every_setting_parses() {
        let mut map: BTreeMap<String, String> = [
            ("class", "kpa.autoscaling.knative.dev"),
            ("metric", "rps"),
            ("target", "50.5"),
            ("targetUtilizationPercentage", "80"),
            ("targetBurstCapacity", "-1"),
            ("window", "2m"),
            ("panicWindowPercentage", "20"),
            ("panicThresholdPercentage", "150"),
            ("initialScale", "0"),
            ("activation-scale", "3"),
            ("scaleDownDelay", "30s"),
            ("scaleToZeroPodRetentionPeriod", "1m"),
            ("metricAggregationAlgorithm", "weightedExponential"),
        ]
        .iter()
        .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
        .collect();
        map.insert(
            "serving.knative.dev/progress-deadline".to_owned(),
            "90s".to_owned(),
        );
        let a = RevisionAnnotations::parse(&map);
        assert_eq!(a.class.as_deref(), Some("kpa.autoscaling.knative.dev"));
        assert_eq!(a.metric, Some(ScalingMetric::Rps));
        assert_eq!(a.target, Some(50.5));
        assert_eq!(a.target_utilization_percentage, Some(80.0));
        assert_eq!(a.target_burst_capacity, Some(-1.0));
        assert_eq!(a.window, Some(Duration::from_secs(120)));
        assert_eq!(a.panic_window_percentage, Some(20.0));
        assert_eq!(a.panic_threshold_percentage, Some(150.0));
        assert_eq!(a.initial_scale, Some(0));
        assert_eq!(a.activation_scale, Some(3));
        assert_eq!(a.scale_down_delay, Some(Duration::from_secs(30)));
        assert_eq!(
            a.scale_to_zero_pod_retention_period,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            a.metric_aggregation_algorithm,
            Some(AggregationAlgorithm::WeightedExponential)
        );
        assert_eq!(a.progress_deadline, Some(Duration::from_secs(90)));
    }
}
