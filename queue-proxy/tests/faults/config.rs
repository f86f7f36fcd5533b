//! Bad configuration (DESIGN §8, issue 6 item 5): every required variable
//! missing, and malformed values, make the binary exit 64 naming the variable
//! (and the value) before any port opens.

use std::process::Output;
use std::time::Duration;

use crate::support::*;

const REQUIRED: [&str; 12] = [
    "CONTAINER_CONCURRENCY",
    "QUEUE_SERVING_PORT",
    "QUEUE_SERVING_TLS_PORT",
    "USER_PORT",
    "REVISION_TIMEOUT_SECONDS",
    "SERVING_LOGGING_CONFIG",
    "SERVING_LOGGING_LEVEL",
    "SERVING_NAMESPACE",
    "SERVING_CONFIGURATION",
    "SERVING_REVISION",
    "SERVING_POD",
    "SERVING_POD_IP",
];

/// Runs the binary with the default env (free ports), minus `remove`, plus
/// `set`; a binary that accepts the configuration is killed after 5 s.
async fn run(remove: &[&str], set: &[(&str, &str)]) -> Output {
    let mut env = env(8080);
    for port in ["QUEUE_SERVING_PORT", "KDP_ADMIN_PORT", "KDP_METRICS_PORT"] {
        env.insert(port.to_owned(), closed_port().to_string());
    }
    for k in remove {
        env.remove(*k);
    }
    for (k, v) in set {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_queue-proxy"))
        .env_clear()
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("accepted {set:?} without {remove:?}"))
        .unwrap()
}

fn assert_usage(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{needles:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in {stderr:?}");
    }
}

#[tokio::test]
async fn every_required_variable_missing_exits_64_naming_it() {
    let _shared = EXCLUSIVE.read().await;
    futures_util::future::join_all(REQUIRED.map(|var| async move {
        assert_usage(&run(&[var], &[]).await, &[var]);
    }))
    .await;
}

#[tokio::test]
async fn malformed_values_exit_64_naming_variable_and_value() {
    let _shared = EXCLUSIVE.read().await;
    let cases = [
        ("CONTAINER_CONCURRENCY", "lots"),
        ("QUEUE_SERVING_PORT", "http"),
        ("QUEUE_SERVING_TLS_PORT", "-1"),
        ("USER_PORT", "70000"),
        ("REVISION_TIMEOUT_SECONDS", "5m"),
        ("REVISION_TIMEOUT_SECONDS", "-3"),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "soon"),
        ("REVISION_IDLE_TIMEOUT_SECONDS", "-1"),
        ("ENABLE_HTTP_FULL_DUPLEX", "yes please"),
        ("ENABLE_MULTI_CONTAINER_PROBES", "maybe"),
        ("ENABLE_HTTP2_AUTO_DETECTION", "2"),
        ("OBSERVABILITY_CONFIG", "{not json"),
        (
            "OBSERVABILITY_CONFIG",
            r#"{"requestMetrics":{"protocol":"pigeon"}}"#,
        ),
        ("KDP_BIND_ADDRESS", "localhost"),
        ("KDP_ADMIN_PORT", "eighty"),
        ("KDP_DRAIN_QUIET_PERIOD", "30"),
        ("KDP_HEADER_READ_TIMEOUT", "60"),
        ("METRICS_PROMETHEUS_PORT", "99999"),
        ("QUEUE_PROXY_TLS_MIN_VERSION", "1.1"),
    ];
    futures_util::future::join_all(cases.map(|(var, bad)| async move {
        // The value is quoted in the message; its first word is enough.
        let word = bad
            .split(|c: char| !c.is_alphanumeric())
            .find(|w| !w.is_empty());
        assert_usage(&run(&[], &[(var, bad)]).await, &[var, word.unwrap_or(bad)]);
    }))
    .await;
}

/// A bad readiness probe is refused with a clear message, before any port is
/// bound: with the serving port already taken, the answer is still 64 (a
/// bind failure would be 1).
#[tokio::test]
async fn invalid_readiness_probe_is_a_clear_error_before_binding() {
    let _shared = EXCLUSIVE.read().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cases = [
        ("\"wrongProbeObject\"", "expected a probe object"),
        ("{", "EOF"),
        (r#"{"httpGet":{"port":true}}"#, "IntOrString"),
        (r#"{"tcpSocket":{"port":8080}} x"#, "trailing characters"),
        (
            r#"[{"tcpSocket":{"port":8080}}]"#,
            "expected a probe object",
        ),
    ];
    for (json, reason) in cases {
        let out = run(
            &[],
            &[
                ("SERVING_READINESS_PROBE", json),
                ("QUEUE_SERVING_PORT", &port),
            ],
        )
        .await;
        assert_usage(&out, &["SERVING_READINESS_PROBE", reason]);
    }
    drop(taken);
}
