//! The activator binary: configuration, then [`kdp_activator::start`] and
//! the [`App`](kdp_activator::App) until SIGTERM.

use std::process::ExitCode;

use kdp_activator::env::Config;
use kdp_core::env::{EX_USAGE, Env};

/// mimalloc (see [`kdp_core::memory`]): cheaper allocation on the request
/// path, and memory freed after a burst goes back to the OS.
#[global_allocator]
static GLOBAL: kdp_core::memory::Allocator = kdp_core::memory::Allocator;

fn main() -> ExitCode {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    let config = match Config::from_env(&Env, resolv.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprint_line(&err.to_string());
            return ExitCode::from(EX_USAGE);
        }
    };
    let log_level = kdp_activator::logging::init("info");
    kdp_proxy::tls::install_default_provider();
    let runtime = match kdp_core::runtime::build(config.worker_threads) {
        Ok(rt) => rt,
        Err(err) => {
            eprint_line(&format!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        tokio::spawn(kdp_core::memory::reclaim_every(
            kdp_core::memory::RECLAIM_PERIOD,
        ));
        let client = match kdp_k8s::kube::Client::try_default().await {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %kdp_core::ErrorChain(&err), "cannot build a Kubernetes client");
                return ExitCode::FAILURE;
            }
        };
        let app = match kdp_activator::start(config, client, log_level).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(error = %kdp_core::ErrorChain(&err), "activator cannot start");
                eprint_line(&kdp_core::ErrorChain(&err).to_string());
                return ExitCode::FAILURE;
            }
        };
        app.run(async {
            if let Err(err) = kdp_core::signal::shutdown().await {
                tracing::error!(error = %err, "cannot install signal handlers");
            }
            kdp_core::signal::exit_on_second_signal();
        })
        .await;
        ExitCode::SUCCESS
    })
}

fn eprint_line(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "activator: {msg}");
}
