//! The queue-proxy binary: configuration, then the [`App`], then drain.

use kdp_core::env::{EX_USAGE, Env};
use kdp_queue_proxy::env::Config;
use kdp_queue_proxy::{App, Listeners};

/// mimalloc (see [`kdp_core::memory`]): cheaper allocation on the request
/// path, and memory freed after a burst goes back to the OS.
#[global_allocator]
static GLOBAL: kdp_core::memory::Allocator = kdp_core::memory::Allocator;

fn main() {
    let config = match Config::from_env(&Env) {
        Ok(config) => config,
        Err(err) => {
            eprint_line(&err.to_string());
            std::process::exit(i32::from(EX_USAGE));
        }
    };
    // The probe JSON is configuration too: refuse it before any port opens.
    if let Err(err) = kdp_queue_proxy::readiness::parse_probes(
        &config.readiness_probe,
        config.multi_container_probes,
    ) {
        let err = kdp_queue_proxy::BuildError::ReadinessProbe(err);
        eprint_line(&kdp_core::ErrorChain(&err).to_string());
        std::process::exit(i32::from(EX_USAGE));
    }
    kdp_core::log::init(&config.log_level);
    kdp_proxy::tls::install_default_provider();
    let runtime = match kdp_core::runtime::build(config.worker_threads) {
        Ok(rt) => rt,
        Err(err) => {
            eprint_line(&format!("cannot start the runtime: {err}"));
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        tokio::spawn(kdp_core::memory::reclaim_every(
            kdp_core::memory::RECLAIM_PERIOD,
        ));
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(error = %err, "Failed to bring up queue-proxy, shutting down.");
                return 1;
            }
        };
        let app = match App::build(config, listeners) {
            Ok(app) => app,
            Err(err) => {
                eprint_line(&kdp_core::ErrorChain(&err).to_string());
                return i32::from(EX_USAGE);
            }
        };
        app.run(async {
            if let Err(err) = kdp_core::signal::shutdown().await {
                tracing::error!(error = %err, "cannot install signal handlers");
            }
            kdp_core::signal::exit_on_second_signal();
        })
        .await;
        0
    });
    std::process::exit(code);
}

fn eprint_line(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "queue-proxy: {msg}");
}
