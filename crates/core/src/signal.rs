//! Process signals: the first SIGTERM or SIGINT starts a graceful drain.
//!
//! Both binaries await [`shutdown`] and then drain; Knative exits with code 1
//! on a second signal, which [`exit_on_second_signal`] arranges.

use tokio::signal::unix::{SignalKind, signal};

/// Which signal asked us to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, as sent by the kubelet.
    Term,
    /// SIGINT, as sent by Ctrl-C.
    Int,
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// # Errors
/// Fails only when the signal handlers cannot be installed.
pub async fn shutdown() -> std::io::Result<Signal> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => Signal::Term,
        _ = int.recv() => Signal::Int,
    })
}

/// Spawns a task that exits the process with code 1 on the next SIGTERM or SIGINT.
pub fn exit_on_second_signal() {
    tokio::spawn(async {
        if shutdown().await.is_ok() {
            tracing::warn!("second termination signal, exiting at once");
            #[expect(clippy::exit, reason = "Knative exits 1 on a second signal")]
            std::process::exit(1);
        }
    });
}
