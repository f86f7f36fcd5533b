//! Process logs whose level follows `config-logging`.
//!
//! Beside the request path. `main` installs the JSON subscriber (the format
//! of `kdp_core::log`) behind a reloadable filter; the cluster side calls
//! [`LevelHandle::apply`] with every version of `config-logging`, so a
//! change of `loglevel.activator` takes effect without a restart, as in
//! Knative. `RUST_LOG`, when set, wins and stays fixed.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// The `config-logging` key of the activator's level.
pub const KEY_LEVEL: &str = "loglevel.activator";
/// The `config-logging` key of the zap configuration (its `level` is the default).
pub const KEY_ZAP_CONFIG: &str = "zap-logger-config";

/// Changes the process log level.
#[derive(Clone)]
pub struct LevelHandle {
    reload: reload::Handle<Targets, Registry>,
    /// `RUST_LOG` is set: levels from the ConfigMap are ignored.
    fixed: bool,
}

/// Installs the global subscriber at `level`, unless one is installed already
/// (then `None`). `RUST_LOG` overrides the level (an unparsable one is
/// logged and ignored).
pub fn init(level: &str) -> Option<LevelHandle> {
    let (from_env, bad_env) = match kdp_core::log::filter_from_env() {
        Ok(filter) => (filter, None),
        Err(complaint) => (None, Some(complaint)),
    };
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| kdp_core::log::level_filter(tracing_level(level)));
    let (filter, reload) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()?;
    if let Some(complaint) = bad_env {
        tracing::warn!("{complaint}");
    }
    Some(LevelHandle { reload, fixed })
}

/// Knative's level names as `tracing` levels (`dpanic`, `panic` and
/// `fatal` are `error`); `None` for anything else.
pub fn parse_level(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_lowercase().as_str() {
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" => Some("warn"),
        "error" | "dpanic" | "panic" | "fatal" => Some("error"),
        _ => None,
    }
}

fn tracing_level(level: &str) -> &'static str {
    parse_level(level).unwrap_or("info")
}

/// The level `config-logging`'s `data` asks for: `loglevel.activator`, else
/// the `level` of `zap-logger-config`, else `info`.
///
/// # Errors
/// An unknown level name or a zap configuration that is not JSON; Knative
/// keeps the previous level then.
pub fn level_from_config(
    data: &std::collections::BTreeMap<String, String>,
) -> Result<&'static str, String> {
    if let Some(level) = data.get(KEY_LEVEL) {
        return parse_level(level).ok_or_else(|| format!("invalid {KEY_LEVEL} {level:?}"));
    }
    let zap = data.get(KEY_ZAP_CONFIG).map_or("", String::as_str);
    if zap.trim().is_empty() {
        return Ok("info");
    }
    let json: serde_json::Value =
        serde_json::from_str(zap).map_err(|e| format!("invalid {KEY_ZAP_CONFIG}: {e}"))?;
    match json.get("level").and_then(serde_json::Value::as_str) {
        None => Ok("info"),
        Some(level) => parse_level(level).ok_or_else(|| format!("invalid zap level {level:?}")),
    }
}

// === impl LevelHandle ===

impl LevelHandle {
    /// Applies `config-logging`'s `data`; a bad value is logged and the
    /// previous level stays.
    pub fn apply(&self, data: &std::collections::BTreeMap<String, String>) {
        if self.fixed {
            return;
        }
        match level_from_config(data) {
            Ok(level) => {
                if let Err(error) = self.reload.reload(kdp_core::log::level_filter(level)) {
                    tracing::warn!(%error, "cannot change the log level");
                } else {
                    tracing::info!(level, "log level updated");
                }
            }
            Err(error) => tracing::error!(
                %error,
                "Failed to parse the logging configmap. Previous config map will be used."
            ),
        }
    }
}

impl std::fmt::Debug for LevelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelHandle")
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdp_test_support::string_map as data;

    #[test]
    fn level_comes_from_loglevel_then_zap_config() {
        assert_eq!(level_from_config(&data(&[])), Ok("info"));
        assert_eq!(
            level_from_config(&data(&[(KEY_LEVEL, "debug")])),
            Ok("debug")
        );
        assert_eq!(
            level_from_config(&data(&[(KEY_LEVEL, "fatal")])),
            Ok("error")
        );
        assert_eq!(
            level_from_config(&data(&[(KEY_ZAP_CONFIG, r#"{"level": "warn"}"#)])),
            Ok("warn")
        );
        assert_eq!(
            level_from_config(&data(&[
                (KEY_ZAP_CONFIG, r#"{"level": "warn"}"#),
                (KEY_LEVEL, "debug")
            ])),
            Ok("debug")
        );
        assert!(level_from_config(&data(&[(KEY_LEVEL, "loud")])).is_err());
        assert!(level_from_config(&data(&[(KEY_ZAP_CONFIG, "{not json")])).is_err());
    }
}
