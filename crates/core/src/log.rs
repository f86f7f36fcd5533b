//! Process log setup: structured JSON lines on stderr, as Knative's zap logger writes.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber at `level` (`debug`, `info`, `warn`,
/// `error`; Knative's `dpanic`, `panic` and `fatal` map to `error`), unless
/// `RUST_LOG` overrides it. Calling it twice is harmless.
pub fn init(level: &str) {
    let level = match level.trim().to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs a human-readable subscriber (for the `kdp` CLI).
pub fn init_pretty(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
