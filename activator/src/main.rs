//! The activator binary: configuration, Kubernetes caches, then the [`App`].

use std::process::ExitCode;

use kdp_activator::env::Config;
use kdp_activator::{App, Listeners, cluster};
use kdp_core::env::{EX_USAGE, Env};

fn main() -> ExitCode {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    let config = match Config::from_env(&Env, resolv.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprint_line(&err.to_string());
            return ExitCode::from(EX_USAGE);
        }
    };
    kdp_core::log::init("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprint_line(&format!("cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let client = match kdp_k8s::kube::Client::try_default().await {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %kdp_core::ErrorChain(&err), "cannot build a Kubernetes client");
                return ExitCode::FAILURE;
            }
        };
        let mut listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(error = %err, "cannot bind the serving ports");
                return ExitCode::FAILURE;
            }
        };
        let observability = match cluster::observability(&client, &config).await {
            Ok(o) => o,
            Err(err) => {
                tracing::warn!(error = %kdp_core::ErrorChain(err.as_ref()), "cannot read config-observability; using defaults");
                cluster::Observability::default()
            }
        };
        if let Some(addr) = observability.metrics {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => listeners.metrics = Some(l),
                Err(err) => tracing::error!(error = %err, %addr, "cannot bind the metrics port"),
            }
        }
        let app = App::build(config, listeners, observability);
        cluster::start(client, app.cluster_targets()).await;
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
