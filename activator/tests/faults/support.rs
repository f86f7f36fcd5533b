//! In-process queue-proxies as the activator's pods, and helpers shared by
//! the fault tests, on top of the common activator harness.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub(crate) use crate::harness::*;
pub(crate) use kdp_test_support::client::*;

/// Tests that measure process-wide resources (memory) take this exclusively;
/// every other test takes it shared.
pub(crate) static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A queue-proxy in front of `user_port`, as one of the activator's pods.
pub(crate) struct Pod {
    pub(crate) addr: SocketAddr,
    pub(crate) stats: kdp_queue_proxy::stats::Stats,
    _stop: oneshot::Sender<()>,
}

impl Pod {
    pub(crate) async fn start(user_port: u16, cc: usize) -> Self {
        let env: HashMap<String, String> = [
            ("CONTAINER_CONCURRENCY", cc.to_string()),
            ("QUEUE_SERVING_PORT", "1".into()),
            ("QUEUE_SERVING_TLS_PORT", "8112".into()),
            ("USER_PORT", user_port.to_string()),
            ("REVISION_TIMEOUT_SECONDS", "300".into()),
            ("SERVING_LOGGING_CONFIG", String::new()),
            ("SERVING_LOGGING_LEVEL", "info".into()),
            ("SERVING_NAMESPACE", "default".into()),
            ("SERVING_CONFIGURATION", "hello".into()),
            ("SERVING_REVISION", "hello-00001".into()),
            ("SERVING_POD", "hello-00001-pod".into()),
            ("SERVING_POD_IP", "127.0.0.1".into()),
            ("KDP_BIND_ADDRESS", "127.0.0.1".into()),
            ("KDP_DRAIN_QUIET_PERIOD", "100ms".into()),
            ("KDP_CERT_DIR", "/nonexistent/kdp-test-certs".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = kdp_queue_proxy::env::Config::from_env(&env).unwrap();
        let listeners = kdp_queue_proxy::Listeners {
            main: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            user_metrics: None,
            tls: None,
        };
        let app = kdp_queue_proxy::App::build(config, listeners).unwrap();
        let addr = app.main_addr().unwrap();
        let stats = app.stats().clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stats,
            _stop: tx,
        }
    }
}

/// This process's resident set size, in bytes, from /proc/self/status.
pub(crate) fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
