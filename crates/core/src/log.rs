//! Process log setup: structured JSON lines on stderr, as Knative's zap logger writes.
//!
//! Levels are filtered per target with `tracing-subscriber`'s [`Targets`]
//! rather than its `EnvFilter`: the directives operators use (`info`,
//! `kdp_proxy=debug`) parse the same, and the binaries do without the regex
//! engine `EnvFilter` links in (a quarter of a megabyte of resident code in a
//! sidecar that idles at a few megabytes).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The variable that overrides the configured level.
pub const RUST_LOG: &str = "RUST_LOG";

/// Knative's level names (`debug`, `info`, `warn`, `error`; `dpanic`,
/// `panic` and `fatal` are `error`) as a `tracing` level; `None` for
/// anything else.
pub fn parse_level(level: &str) -> Option<LevelFilter> {
    match level.trim().to_ascii_lowercase().as_str() {
        "debug" => Some(LevelFilter::DEBUG),
        "info" => Some(LevelFilter::INFO),
        "warn" => Some(LevelFilter::WARN),
        "error" | "dpanic" | "panic" | "fatal" => Some(LevelFilter::ERROR),
        _ => None,
    }
}

/// Every target at `level` (unknown names mean `info`).
pub fn level_filter(level: &str) -> Targets {
    Targets::new().with_default(parse_level(level).unwrap_or(LevelFilter::INFO))
}

/// The filter `RUST_LOG` asks for: comma-separated `level` and
/// `target=level` directives. `Ok(None)` when unset; an unparsable value is
/// an error naming it, which callers log once logging is up.
pub fn filter_from_env() -> Result<Option<Targets>, String> {
    let Ok(value) = std::env::var(RUST_LOG) else {
        return Ok(None);
    };
    value
        .parse::<Targets>()
        .map(Some)
        .map_err(|e| format!("ignoring {RUST_LOG}={value:?}: {e}"))
}

/// Installs the global JSON subscriber at `level` (Knative's names, see
/// [`parse_level`]), unless `RUST_LOG` overrides it. Calling it twice is
/// harmless.
pub fn init(level: &str) {
    let (filter, bad_env) = filter_or(level);
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .finish();
    install(subscriber.with(filter), bad_env);
}

/// Installs a human-readable subscriber (for the `kdp` CLI).
pub fn init_pretty(level: &str) {
    let (filter, bad_env) = filter_or(level);
    let subscriber = tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .finish();
    install(subscriber.with(filter), bad_env);
}

/// `RUST_LOG`'s filter, or every target at `level`; plus the complaint
/// about a bad `RUST_LOG`, if any.
fn filter_or(level: &str) -> (Targets, Option<String>) {
    match filter_from_env() {
        Ok(Some(filter)) => (filter, None),
        Ok(None) => (level_filter(level), None),
        Err(complaint) => (level_filter(level), Some(complaint)),
    }
}

/// Makes `subscriber` the global one (and routes the `log` crate's records
/// to it), unless one is installed already.
fn install(subscriber: impl SubscriberInitExt, bad_env: Option<String>) {
    if subscriber.try_init().is_ok()
        && let Some(complaint) = bad_env
    {
        tracing::warn!("{complaint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_levels_map_to_tracing_levels() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level(" warn "), Some(LevelFilter::WARN));
        assert_eq!(parse_level("fatal"), Some(LevelFilter::ERROR));
        assert_eq!(parse_level("verbose"), None);
        // An unknown name logs at info rather than not at all.
        assert!(level_filter("verbose").would_enable("kdp_proxy", &tracing::Level::INFO));
        assert!(!level_filter("verbose").would_enable("kdp_proxy", &tracing::Level::DEBUG));
    }

    #[test]
    fn rust_log_directives_set_levels_per_target() {
        let filter: Targets = "warn,kdp_proxy=debug".parse().unwrap();
        assert!(filter.would_enable("kdp_proxy::forward", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("hyper", &tracing::Level::INFO));
        assert!(filter.would_enable("hyper", &tracing::Level::WARN));
    }
}
