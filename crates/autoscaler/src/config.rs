//! The `config-autoscaler` ConfigMap (activator spec §8.1).
//!
//! First stage of the autoscaler: the ConfigMap's `data` map is parsed into a
//! validated [`Config`], which [`crate::spec`] combines with revision
//! annotations. Absent keys take the `DEFAULT_*` values; a value that does not
//! parse, or a combination that fails Knative's validation, is a
//! [`ConfigError`] naming the key. Syntax follows Go: `strconv.ParseFloat`,
//! `ParseInt(s, 10, 32)`, `ParseBool` and `time.ParseDuration` (via
//! `kdp-core`), with no trimming. Mirrors `pkg/autoscaler/config/config.go`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use kdp_core::env::{parse_go_bool, parse_go_duration};

/// Default `container-concurrency-target-percentage` (as a fraction).
pub const DEFAULT_CONTAINER_CONCURRENCY_TARGET_FRACTION: f64 = 0.7;
/// Default `container-concurrency-target-default`.
pub const DEFAULT_CONTAINER_CONCURRENCY_TARGET: f64 = 100.0;
/// Target utilisation for metrics other than concurrency (no config key).
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// Default `requests-per-second-target-default`.
pub const DEFAULT_RPS_TARGET: f64 = 200.0;
/// Default `target-burst-capacity`.
pub const DEFAULT_TARGET_BURST_CAPACITY: f64 = 211.0;
/// Default `stable-window`.
pub const DEFAULT_STABLE_WINDOW: Duration = Duration::from_secs(60);
/// Default `panic-window-percentage`.
pub const DEFAULT_PANIC_WINDOW_PERCENTAGE: f64 = 10.0;
/// Default `panic-threshold-percentage`.
pub const DEFAULT_PANIC_THRESHOLD_PERCENTAGE: f64 = 200.0;
/// Default `max-scale-up-rate`.
pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Default `max-scale-down-rate`.
pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// Default `scale-to-zero-grace-period`.
pub const DEFAULT_SCALE_TO_ZERO_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default `activator-capacity`.
pub const DEFAULT_ACTIVATOR_CAPACITY: f64 = 100.0;
/// Default `initial-scale`.
pub const DEFAULT_INITIAL_SCALE: u32 = 1;
/// The KPA class, default `pod-autoscaler-class`.
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// The smallest target any metric may resolve to.
pub const TARGET_MIN: f64 = 0.01;
/// Smallest stable window.
pub const WINDOW_MIN: Duration = Duration::from_secs(6);
/// Largest stable window.
pub const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Metric bucket width.
pub const BUCKET_SIZE: Duration = Duration::from_secs(1);
/// How often the scaler runs per revision (absent pokes).
pub const TICK_INTERVAL: Duration = Duration::from_secs(2);
/// Minimum number of activators put in a revision's path.
pub const MIN_ACTIVATORS: u32 = 2;
/// `progress-deadline` of `config-deployment`, used when no annotation is set.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// `config-autoscaler`, parsed and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `enable-scale-to-zero`.
    pub enable_scale_to_zero: bool,
    /// `container-concurrency-target-percentage`, as a fraction in (0, 1].
    pub container_concurrency_target_fraction: f64,
    /// `container-concurrency-target-default`.
    pub container_concurrency_target_default: f64,
    /// Utilisation for the RPS metric (not configurable; annotation only).
    pub target_utilization: f64,
    /// `requests-per-second-target-default`.
    pub rps_target_default: f64,
    /// `target-burst-capacity`: ≥ 0, or −1 for "activator always in path".
    pub target_burst_capacity: f64,
    /// `activator-capacity`.
    pub activator_capacity: f64,
    /// `allow-zero-initial-scale`.
    pub allow_zero_initial_scale: bool,
    /// `initial-scale`.
    pub initial_scale: u32,
    /// `min-scale` (0 = no lower bound).
    pub min_scale: u32,
    /// `max-scale` (0 = unbounded).
    pub max_scale: u32,
    /// `max-scale-limit` (0 = no limit).
    pub max_scale_limit: u32,
    /// `max-scale-up-rate`.
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate`.
    pub max_scale_down_rate: f64,
    /// `stable-window`.
    pub stable_window: Duration,
    /// `panic-window-percentage`.
    pub panic_window_percentage: f64,
    /// `panic-threshold-percentage`.
    pub panic_threshold_percentage: f64,
    /// `scale-to-zero-grace-period`.
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period`.
    pub scale_to_zero_pod_retention_period: Duration,
    /// `scale-down-delay`.
    pub scale_down_delay: Duration,
    /// `pod-autoscaler-class`.
    pub pod_autoscaler_class: String,
}

/// A `config-autoscaler` value that does not parse or does not validate.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid config-autoscaler key {key} = {value:?}: {reason}")]
pub struct ConfigError {
    key: &'static str,
    value: String,
    reason: String,
}

/// Result alias for this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Self {
            enable_scale_to_zero: true,
            container_concurrency_target_fraction: DEFAULT_CONTAINER_CONCURRENCY_TARGET_FRACTION,
            container_concurrency_target_default: DEFAULT_CONTAINER_CONCURRENCY_TARGET,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            rps_target_default: DEFAULT_RPS_TARGET,
            target_burst_capacity: DEFAULT_TARGET_BURST_CAPACITY,
            activator_capacity: DEFAULT_ACTIVATOR_CAPACITY,
            allow_zero_initial_scale: false,
            initial_scale: DEFAULT_INITIAL_SCALE,
            min_scale: 0,
            max_scale: 0,
            max_scale_limit: 0,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            stable_window: DEFAULT_STABLE_WINDOW,
            panic_window_percentage: DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            scale_to_zero_grace_period: DEFAULT_SCALE_TO_ZERO_GRACE_PERIOD,
            scale_to_zero_pod_retention_period: Duration::ZERO,
            scale_down_delay: Duration::ZERO,
            pod_autoscaler_class: KPA_CLASS.to_owned(),
        }
    }
}

impl Config {
    /// Parses and validates ConfigMap `data`; unknown keys are ignored.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kdp_autoscaler::Config;
    ///
    /// let data = BTreeMap::from([("container-concurrency-target-percentage".to_owned(), "80".to_owned())]);
    /// let config = Config::from_map(&data).unwrap();
    /// assert_eq!(config.container_concurrency_target_fraction, 0.8);
    ///
    /// let bad = BTreeMap::from([("max-scale-up-rate".to_owned(), "1".to_owned())]);
    /// assert_eq!(Config::from_map(&bad).unwrap_err().key(), "max-scale-up-rate");
    /// ```
    pub fn from_map(data: &BTreeMap<String, String>) -> Result<Self> {
        let mut c = Self::default();
        let p = Parser(data);
        if let Some(v) = data.get("pod-autoscaler-class") {
            c.pod_autoscaler_class = v.trim().to_owned();
        }
        p.bool("enable-scale-to-zero", &mut c.enable_scale_to_zero)?;
        p.bool("allow-zero-initial-scale", &mut c.allow_zero_initial_scale)?;
        p.float("max-scale-up-rate", &mut c.max_scale_up_rate)?;
        p.float("max-scale-down-rate", &mut c.max_scale_down_rate)?;
        p.float(
            "container-concurrency-target-percentage",
            &mut c.container_concurrency_target_fraction,
        )?;
        p.float(
            "container-concurrency-target-default",
            &mut c.container_concurrency_target_default,
        )?;
        p.float(
            "requests-per-second-target-default",
            &mut c.rps_target_default,
        )?;
        p.float("target-burst-capacity", &mut c.target_burst_capacity)?;
        p.float("panic-window-percentage", &mut c.panic_window_percentage)?;
        p.float("activator-capacity", &mut c.activator_capacity)?;
        p.float(
            "panic-threshold-percentage",
            &mut c.panic_threshold_percentage,
        )?;
        p.count("initial-scale", &mut c.initial_scale)?;
        p.count("min-scale", &mut c.min_scale)?;
        p.count("max-scale", &mut c.max_scale)?;
        p.count("max-scale-limit", &mut c.max_scale_limit)?;
        p.duration("stable-window", &mut c.stable_window)?;
        p.duration("scale-down-delay", &mut c.scale_down_delay)?;
        p.duration(
            "scale-to-zero-grace-period",
            &mut c.scale_to_zero_grace_period,
        )?;
        p.duration(
            "scale-to-zero-pod-retention-period",
            &mut c.scale_to_zero_pod_retention_period,
        )?;

        // Values above 1 are percentages; (0, 1] is the legacy fraction form.
        if c.container_concurrency_target_fraction > 1.0 {
            c.container_concurrency_target_fraction /= 100.0;
        }
        c.validate()?;
        Ok(c)
    }

    /// Knative's cross-field validation, in Knative's order.
    fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &'static str, value: &dyn Display, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::new(key, value, reason))
            }
        };
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let whole_seconds = |d: Duration| d.subsec_nanos() == 0;

        check(
            !self.scale_to_zero_grace_period.is_zero(),
            "scale-to-zero-grace-period",
            &secs(self.scale_to_zero_grace_period),
            "must be positive",
        )?;
        check(
            whole_seconds(self.scale_down_delay),
            "scale-down-delay",
            &secs(self.scale_down_delay),
            "must be specified with at most second precision",
        )?;
        check(
            self.target_burst_capacity >= 0.0 || self.target_burst_capacity == -1.0,
            "target-burst-capacity",
            &self.target_burst_capacity,
            "must be either non-negative or -1 (for unlimited)",
        )?;
        let fraction = self.container_concurrency_target_fraction;
        check(
            fraction > 0.0 && fraction <= 1.0,
            "container-concurrency-target-percentage",
            &fraction,
            "is outside of valid range of (0, 100]",
        )?;
        check(
            fraction * self.container_concurrency_target_default >= TARGET_MIN,
            "container-concurrency-target-default",
            &self.container_concurrency_target_default,
            "yields a target concurrency below 0.01 with container-concurrency-target-percentage",
        )?;
        check(
            self.rps_target_default >= TARGET_MIN,
            "requests-per-second-target-default",
            &self.rps_target_default,
            "must be at least 0.01",
        )?;
        check(
            self.activator_capacity >= 1.0,
            "activator-capacity",
            &self.activator_capacity,
            "must be at least 1",
        )?;
        check(
            self.max_scale_up_rate > 1.0,
            "max-scale-up-rate",
            &self.max_scale_up_rate,
            "must be greater than 1.0",
        )?;
        check(
            self.max_scale_down_rate > 1.0,
            "max-scale-down-rate",
            &self.max_scale_down_rate,
            "must be greater than 1.0",
        )?;
        check(
            (WINDOW_MIN..=WINDOW_MAX).contains(&self.stable_window),
            "stable-window",
            &secs(self.stable_window),
            "must be in [6s; 1h] range",
        )?;
        check(
            whole_seconds(self.stable_window),
            "stable-window",
            &secs(self.stable_window),
            "must be specified with at most second precision",
        )?;
        check(
            (1.0..=100.0).contains(&self.panic_window_percentage),
            "panic-window-percentage",
            &self.panic_window_percentage,
            "must be in [1, 100] interval",
        )?;
        check(
            self.initial_scale > 0 || self.allow_zero_initial_scale,
            "initial-scale",
            &self.initial_scale,
            "must be at least 1 when allow-zero-initial-scale is false",
        )?;
        let min_max_scale = u32::from(self.max_scale_limit > 0);
        check(
            self.max_scale >= min_max_scale
                && (self.max_scale_limit == 0 || self.max_scale <= self.max_scale_limit),
            "max-scale",
            &self.max_scale,
            &format!(
                "must be in [{min_max_scale}, max-scale-limit({})] range",
                self.max_scale_limit
            ),
        )?;
        check(
            self.max_scale == 0 || self.min_scale <= self.max_scale,
            "min-scale",
            &self.min_scale,
            &format!("must be less than max-scale ({})", self.max_scale),
        )
    }
}

// === impl ConfigError ===

impl ConfigError {
    fn new(key: &'static str, value: &dyn Display, reason: impl Display) -> Self {
        Self {
            key,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The offending ConfigMap key.
    pub fn key(&self) -> &'static str {
        self.key
    }
}

/// Typed lookups that leave the default in place when a key is absent.
struct Parser<'a>(&'a BTreeMap<String, String>);

impl Parser<'_> {
    fn parse<T>(
        &self,
        key: &'static str,
        target: &mut T,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<()> {
        if let Some(raw) = self.0.get(key) {
            *target = parse(raw).map_err(|reason| ConfigError::new(key, raw, reason))?;
        }
        Ok(())
    }

    fn bool(&self, key: &'static str, target: &mut bool) -> Result<()> {
        self.parse(key, target, parse_go_bool)
    }

    fn float(&self, key: &'static str, target: &mut f64) -> Result<()> {
        self.parse(key, target, |s| {
            s.parse::<f64>().map_err(|_| "not a number".to_owned())
        })
    }

    /// An `int32` that must also be non-negative.
    fn count(&self, key: &'static str, target: &mut u32) -> Result<()> {
        self.parse(key, target, |s| {
            let n = s
                .parse::<i32>()
                .map_err(|_| "not a 32-bit integer".to_owned())?;
            u32::try_from(n).map_err(|_| "must be at least 0".to_owned())
        })
    }

    fn duration(&self, key: &'static str, target: &mut Duration) -> Result<()> {
        self.parse(key, target, parse_go_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_map_gives_defaults() {
        let c = Config::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.container_concurrency_target_fraction, 0.7);
        assert_eq!(c.container_concurrency_target_default, 100.0);
        assert_eq!(c.rps_target_default, 200.0);
        assert_eq!(c.target_burst_capacity, 211.0);
        assert_eq!(c.stable_window, Duration::from_secs(60));
        assert_eq!(c.scale_to_zero_grace_period, Duration::from_secs(30));
        assert_eq!(c.initial_scale, 1);
        assert!(c.enable_scale_to_zero);
        assert_eq!(c.pod_autoscaler_class, KPA_CLASS);
    }

    #[test]
    fn every_key_parses() {
        let c = Config::from_map(&map(&[
            ("enable-scale-to-zero", "false"),
            ("allow-zero-initial-scale", "true"),
            ("initial-scale", "0"),
            ("container-concurrency-target-percentage", "0.5"),
            ("container-concurrency-target-default", "10"),
            ("requests-per-second-target-default", "150"),
            ("target-burst-capacity", "-1"),
            ("stable-window", "5m"),
            ("panic-window-percentage", "20"),
            ("panic-threshold-percentage", "300"),
            ("max-scale-up-rate", "3.5"),
            ("max-scale-down-rate", "4"),
            ("scale-to-zero-grace-period", "10s"),
            ("scale-to-zero-pod-retention-period", "1m30s"),
            ("scale-down-delay", "15s"),
            ("activator-capacity", "50"),
            ("min-scale", "2"),
            ("max-scale", "10"),
            ("max-scale-limit", "20"),
            ("pod-autoscaler-class", "hpa.autoscaling.knative.dev"),
        ]))
        .unwrap();
        assert!(!c.enable_scale_to_zero);
        assert_eq!(c.initial_scale, 0);
        assert_eq!(
            c.container_concurrency_target_fraction, 0.5,
            "legacy fraction"
        );
        assert_eq!(c.target_burst_capacity, -1.0);
        assert_eq!(c.stable_window, Duration::from_secs(300));
        assert_eq!(
            c.scale_to_zero_pod_retention_period,
            Duration::from_secs(90)
        );
        assert_eq!(c.scale_down_delay, Duration::from_secs(15));
        assert_eq!((c.min_scale, c.max_scale, c.max_scale_limit), (2, 10, 20));
        assert_eq!(c.max_scale_up_rate, 3.5);
        assert_eq!(c.pod_autoscaler_class, "hpa.autoscaling.knative.dev");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("max-scale-up-rate", "fast")], "max-scale-up-rate"),
            (&[("enable-scale-to-zero", "yes")], "enable-scale-to-zero"),
            (&[("stable-window", "60")], "stable-window"),
            (&[("min-scale", "-1")], "min-scale"),
            (&[("initial-scale", "2147483648")], "initial-scale"),
            (
                &[("scale-to-zero-grace-period", "0s")],
                "scale-to-zero-grace-period",
            ),
            (&[("scale-down-delay", "1.5s")], "scale-down-delay"),
            (&[("target-burst-capacity", "-2")], "target-burst-capacity"),
            (
                &[("container-concurrency-target-percentage", "101")],
                "container-concurrency-target-percentage",
            ),
            (
                &[("container-concurrency-target-percentage", "0")],
                "container-concurrency-target-percentage",
            ),
            (
                &[("container-concurrency-target-default", "0.001")],
                "container-concurrency-target-default",
            ),
            (
                &[("requests-per-second-target-default", "0")],
                "requests-per-second-target-default",
            ),
            (&[("activator-capacity", "0.5")], "activator-capacity"),
            (&[("max-scale-up-rate", "1")], "max-scale-up-rate"),
            (&[("max-scale-down-rate", "1.0")], "max-scale-down-rate"),
            (&[("stable-window", "5s")], "stable-window"),
            (&[("stable-window", "2h")], "stable-window"),
            (&[("stable-window", "6500ms")], "stable-window"),
            (
                &[("panic-window-percentage", "0.5")],
                "panic-window-percentage",
            ),
            (
                &[("panic-window-percentage", "101")],
                "panic-window-percentage",
            ),
            (&[("initial-scale", "0")], "initial-scale"),
            (&[("max-scale-limit", "5")], "max-scale"),
            (&[("max-scale-limit", "5"), ("max-scale", "6")], "max-scale"),
            (&[("min-scale", "3"), ("max-scale", "2")], "min-scale"),
        ];
        for (pairs, key) in cases {
            let err = Config::from_map(&map(pairs)).unwrap_err();
            assert_eq!(err.key(), *key, "{pairs:?}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn percentage_above_one_is_divided() {
        let c =
            Config::from_map(&map(&[("container-concurrency-target-percentage", "100")])).unwrap();
        assert_eq!(c.container_concurrency_target_fraction, 1.0);
    }
}
