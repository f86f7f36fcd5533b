//! Effective local configuration from Knative's ConfigMaps.
//!
//! Sits between [`crate::manifest`] (which reads the ConfigMaps) and [`crate::model`] (which
//! names hosts, applies revision defaults and hands the autoscaler settings to the runtime).
//! Reads `config-domain` (which domain a Service's URL uses), `config-features`
//! (`tag-header-based-routing`), `config-defaults` (revision timeouts and concurrency) and passes
//! `config-autoscaler`'s data through untouched once the KPA's parser accepted it (the runtime
//! parses it again per revision).
//! Bad values are [`ConfigError`]s naming the ConfigMap, the key and the value.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::manifest::{ConfigMap, ConfigMapName};

/// The domain used when `config-domain` is absent or empty and `--domain` is not given.
pub const DEFAULT_DOMAIN: &str = "example.com";
/// The domain of cluster-local names (`<svc>.<ns>.svc.cluster.local`).
pub const CLUSTER_LOCAL_DOMAIN: &str = "svc.cluster.local";
/// The Service label that keeps a Service cluster-local in Knative.
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";
/// config-defaults `revision-timeout-seconds` default.
pub const DEFAULT_REVISION_TIMEOUT_SECONDS: u64 = 300;
/// config-defaults `max-revision-timeout-seconds` default.
pub const DEFAULT_MAX_REVISION_TIMEOUT_SECONDS: u64 = 600;
/// config-defaults `container-concurrency` default (0 = unlimited).
pub const DEFAULT_CONTAINER_CONCURRENCY: u64 = 0;
/// config-defaults `container-concurrency-max-limit` default.
pub const DEFAULT_CONTAINER_CONCURRENCY_MAX_LIMIT: u64 = 1000;

/// `Result` alias for configuration.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The local mode's configuration, as the ConfigMaps in the input and the CLI set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalConfig {
    /// config-domain, or the `--domain` override.
    pub domain: DomainConfig,
    /// config-features.
    pub features: Features,
    /// config-defaults.
    pub defaults: Defaults,
    /// config-autoscaler's `data`, untouched, for the KPA to parse.
    pub autoscaler: BTreeMap<String, String>,
}

/// config-domain: domains and the label selectors that pick them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// Domain to label selector; an empty selector matches every Service.
    pub domains: BTreeMap<String, BTreeMap<String, String>>,
}

/// config-features, as far as routing is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `tag-header-based-routing: Enabled`: the `Knative-Serving-Tag` header picks a tag.
    pub tag_header_based_routing: bool,
}

/// config-defaults: what a revision gets when its template leaves a field out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// `revision-timeout-seconds`.
    pub revision_timeout_seconds: u64,
    /// `max-revision-timeout-seconds`: the largest `timeoutSeconds` allowed.
    pub max_revision_timeout_seconds: u64,
    /// `revision-response-start-timeout-seconds`; `None` = the revision timeout.
    pub revision_response_start_timeout_seconds: Option<u64>,
    /// `revision-idle-timeout-seconds`; 0 = none.
    pub revision_idle_timeout_seconds: u64,
    /// `container-concurrency`.
    pub container_concurrency: u64,
    /// `container-concurrency-max-limit`: the largest `containerConcurrency` allowed.
    pub container_concurrency_max_limit: u64,
}

/// A ConfigMap value the local mode cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{config_map}: {key}: {message}")]
pub struct ConfigError {
    /// The ConfigMap.
    pub config_map: ConfigMapName,
    /// The key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSelector {
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

// === impl LocalConfig ===

impl LocalConfig {
    /// Applies one ConfigMap, replacing what an earlier one of the same name set.
    ///
    /// # Errors
    /// A value that does not parse or is out of range; `self` is unchanged then.
    pub fn apply(&mut self, map: &ConfigMap) -> Result<()> {
        match map.name {
            ConfigMapName::Domain => self.domain = DomainConfig::from_data(&map.data)?,
            ConfigMapName::Features => self.features = Features::from_data(&map.data),
            ConfigMapName::Defaults => self.defaults = Defaults::from_data(&map.data)?,
            ConfigMapName::Autoscaler => {
                // Refuse bad values at load time, with the key, rather than in the KPA later.
                kdp_autoscaler::Config::from_map(&map.data).map_err(|e| ConfigError {
                    config_map: map.name,
                    key: e.key().to_owned(),
                    message: e.to_string(),
                })?;
                self.autoscaler.clone_from(&map.data);
            }
        }
        Ok(())
    }

    /// Builds the configuration from the ConfigMaps found in the input; a later ConfigMap of the
    /// same name replaces an earlier one, as a re-apply does. `domain_override` is `--domain`.
    ///
    /// # Errors
    /// A value that does not parse or is out of range.
    pub fn from_config_maps<'a>(
        maps: impl IntoIterator<Item = &'a ConfigMap>,
        domain_override: Option<&str>,
    ) -> Result<Self> {
        let mut config = Self::default();
        for map in maps {
            config.apply(map)?;
        }
        if let Some(domain) = domain_override {
            config.domain = DomainConfig::single(domain);
        }
        Ok(config)
    }
}

// === impl DomainConfig ===

impl Default for DomainConfig {
    fn default() -> Self {
        Self::single(DEFAULT_DOMAIN)
    }
}

impl DomainConfig {
    /// One domain for every Service.
    #[must_use]
    pub fn single(domain: &str) -> Self {
        Self {
            domains: BTreeMap::from([(domain.to_owned(), BTreeMap::new())]),
        }
    }

    /// Parses config-domain's `data`: each key a domain, each value empty or
    /// `selector: {label: value}`. `_example` is Knative's documentation key and is skipped.
    ///
    /// # Errors
    /// A selector that is not `selector:` followed by a map of labels.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self> {
        let mut domains = BTreeMap::new();
        for (domain, value) in data {
            if domain == "_example" {
                continue;
            }
            let selector: DomainSelector = if value.trim().is_empty() {
                DomainSelector::default()
            } else {
                serde_yaml::from_str(value).map_err(|err| ConfigError {
                    config_map: ConfigMapName::Domain,
                    key: domain.clone(),
                    message: format!("expected empty or `selector: {{label: value}}`: {err}"),
                })?
            };
            domains.insert(domain.clone(), selector.selector);
        }
        if domains.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self { domains })
    }

    /// The domain for a Service with these labels.
    ///
    /// Mirrors Knative's `LookupDomainForLabels`: the matching selector with the most labels
    /// wins, ties go to the alphabetically first domain; a Service labelled
    /// `networking.knative.dev/visibility: cluster-local` only gets its cluster-local name. When
    /// no selector matches, Knative would leave the Service without a domain; we fall back to
    /// the cluster-local domain so it stays reachable.
    #[must_use]
    pub fn domain_for(&self, labels: &BTreeMap<String, String>) -> &str {
        if labels.get(VISIBILITY_LABEL).map(String::as_str) == Some("cluster-local") {
            return CLUSTER_LOCAL_DOMAIN;
        }
        let mut best: Option<(&str, usize)> = None;
        for (domain, selector) in &self.domains {
            let matches = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            // BTreeMap iterates domains in order, so a strictly greater count keeps ties first.
            if matches && best.is_none_or(|(_, n)| selector.len() > n) {
                best = Some((domain, selector.len()));
            }
        }
        best.map_or(CLUSTER_LOCAL_DOMAIN, |(domain, _)| domain)
    }
}

// === impl Features ===

impl Features {
    /// Parses config-features' `data`; Knative compares flag values case-insensitively and
    /// treats anything but `enabled` as off.
    #[must_use]
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let enabled = |key: &str| {
            data.get(key)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled"))
        };
        Self {
            tag_header_based_routing: enabled("tag-header-based-routing"),
        }
    }
}

// === impl Defaults ===

impl Default for Defaults {
    fn default() -> Self {
        Self {
            revision_timeout_seconds: DEFAULT_REVISION_TIMEOUT_SECONDS,
            max_revision_timeout_seconds: DEFAULT_MAX_REVISION_TIMEOUT_SECONDS,
            revision_response_start_timeout_seconds: None,
            revision_idle_timeout_seconds: 0,
            container_concurrency: DEFAULT_CONTAINER_CONCURRENCY,
            container_concurrency_max_limit: DEFAULT_CONTAINER_CONCURRENCY_MAX_LIMIT,
        }
    }
}

impl Defaults {
    /// Parses config-defaults' `data`; unknown keys (`container-name-template`, resource
    /// defaults, ...) mean nothing locally and are ignored.
    ///
    /// # Errors
    /// A value that is not a non-negative integer, or a default above its maximum.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self> {
        let mut d = Self::default();
        let int = |key: &str| -> Result<Option<u64>> {
            data.get(key)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| ConfigError {
                        config_map: ConfigMapName::Defaults,
                        key: key.to_owned(),
                        message: format!("{v:?} is not a non-negative integer"),
                    })
                })
                .transpose()
        };
        if let Some(v) = int("revision-timeout-seconds")? {
            d.revision_timeout_seconds = v;
        }
        if let Some(v) = int("max-revision-timeout-seconds")? {
            d.max_revision_timeout_seconds = v;
        }
        d.revision_response_start_timeout_seconds = int("revision-response-start-timeout-seconds")?;
        if let Some(v) = int("revision-idle-timeout-seconds")? {
            d.revision_idle_timeout_seconds = v;
        }
        if let Some(v) = int("container-concurrency")? {
            d.container_concurrency = v;
        }
        if let Some(v) = int("container-concurrency-max-limit")? {
            d.container_concurrency_max_limit = v;
        }
        let above = |key: &str, value: u64, max_key: &str, max: u64| {
            (value > max).then(|| ConfigError {
                config_map: ConfigMapName::Defaults,
                key: key.to_owned(),
                message: format!("{value} is above {max_key} ({max})"),
            })
        };
        if let Some(err) = above(
            "revision-timeout-seconds",
            d.revision_timeout_seconds,
            "max-revision-timeout-seconds",
            d.max_revision_timeout_seconds,
        )
        .or_else(|| {
            above(
                "container-concurrency",
                d.container_concurrency,
                "container-concurrency-max-limit",
                d.container_concurrency_max_limit,
            )
        }) {
            return Err(err);
        }
        if d.revision_timeout_seconds == 0 {
            return Err(ConfigError {
                config_map: ConfigMapName::Defaults,
                key: "revision-timeout-seconds".into(),
                message: "must be positive".into(),
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdp_test_support::string_map as data;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        data(pairs)
    }

    #[test]
    fn default_domain_is_example_com() {
        let config = LocalConfig::from_config_maps([], None).unwrap();
        assert_eq!(config.domain.domain_for(&labels(&[])), "example.com");
        assert!(!config.features.tag_header_based_routing);
        assert_eq!(config.defaults.revision_timeout_seconds, 300);
        assert_eq!(config.defaults.max_revision_timeout_seconds, 600);
        assert_eq!(config.defaults.container_concurrency, 0);
    }

    #[test]
    fn domain_selectors_pick_the_most_specific_match() {
        let d = DomainConfig::from_data(&data(&[
            ("_example", "ignored: [\n"),
            ("naturelr.cc", ""),
            ("nonprofit.org", "selector:\n  app: nonprofit\n"),
            ("team.org", "selector:\n  app: nonprofit\n  team: a\n"),
        ]))
        .unwrap();
        assert_eq!(d.domain_for(&labels(&[])), "naturelr.cc");
        assert_eq!(
            d.domain_for(&labels(&[("app", "nonprofit")])),
            "nonprofit.org"
        );
        assert_eq!(
            d.domain_for(&labels(&[("app", "nonprofit"), ("team", "a")])),
            "team.org"
        );
        assert_eq!(
            d.domain_for(&labels(&[(VISIBILITY_LABEL, "cluster-local")])),
            CLUSTER_LOCAL_DOMAIN
        );
    }

    #[test]
    fn domain_without_default_falls_back_to_cluster_local() {
        let d = DomainConfig::from_data(&data(&[("a.org", "selector:\n  app: a\n")])).unwrap();
        assert_eq!(d.domain_for(&labels(&[])), CLUSTER_LOCAL_DOMAIN);
        let err = DomainConfig::from_data(&data(&[("a.org", "app: a")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config-domain: a.org: expected"),
            "{err}"
        );
    }

    #[test]
    fn cli_domain_overrides_config_domain() {
        let cm = ConfigMap {
            name: ConfigMapName::Domain,
            data: data(&[("naturelr.cc", "")]),
        };
        let config = LocalConfig::from_config_maps([&cm], Some("localhost")).unwrap();
        assert_eq!(config.domain.domain_for(&labels(&[])), "localhost");
    }

    #[test]
    fn tag_header_flag_is_case_insensitive() {
        for (v, want) in [
            ("Enabled", true),
            ("enabled", true),
            ("Disabled", false),
            ("Allowed", false),
        ] {
            let f = Features::from_data(&data(&[("tag-header-based-routing", v)]));
            assert_eq!(f.tag_header_based_routing, want, "{v}");
        }
    }

    #[test]
    fn defaults_parse_and_validate() {
        let d = Defaults::from_data(&data(&[
            ("revision-timeout-seconds", "30"),
            ("container-concurrency", "4"),
            ("container-name-template", "user-container"),
        ]))
        .unwrap();
        assert_eq!(
            (d.revision_timeout_seconds, d.container_concurrency),
            (30, 4)
        );
        let err = Defaults::from_data(&data(&[("revision-timeout-seconds", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config-defaults: revision-timeout-seconds: \"x\" is not a non-negative integer"
        );
        let err = Defaults::from_data(&data(&[("revision-timeout-seconds", "700")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("above max-revision-timeout-seconds (600)"),
            "{err}"
        );
    }

    #[test]
    fn autoscaler_data_passes_through() {
        let cm = ConfigMap {
            name: ConfigMapName::Autoscaler,
            data: data(&[("stable-window", "6s"), ("enable-scale-to-zero", "true")]),
        };
        let config = LocalConfig::from_config_maps([&cm], None).unwrap();
        assert_eq!(config.autoscaler, cm.data);
    }

    #[test]
    fn bad_autoscaler_values_are_refused_with_the_key() {
        let cm = ConfigMap {
            name: ConfigMapName::Autoscaler,
            data: data(&[("stable-window", "2s")]),
        };
        let err = LocalConfig::from_config_maps([&cm], None).unwrap_err();
        assert_eq!(err.key, "stable-window");
    }
}
