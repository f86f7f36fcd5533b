//! Bad configuration (DESIGN §8, issue 6 item 5): each required variable
//! missing, and malformed values, make the activator exit 64 naming the
//! variable before any port opens or the cluster is contacted.

use std::process::Output;
use std::time::Duration;

use crate::support::EXCLUSIVE;

const REQUIRED: [&str; 3] = ["POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"];

async fn run(remove: &[&str], set: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_activator"));
    cmd.env_clear();
    for (k, v) in [
        ("POD_NAME", "activator-abc"),
        ("POD_IP", "127.0.0.1"),
        ("SYSTEM_NAMESPACE", "knative-serving"),
    ] {
        if !remove.contains(&k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(set.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
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
async fn every_required_variable_missing_or_empty_exits_64_naming_it() {
    let _shared = EXCLUSIVE.read().await;
    futures_util::future::join_all(REQUIRED.map(|var| async move {
        assert_usage(&run(&[var], &[]).await, &[var]);
        assert_usage(&run(&[], &[(var, "")]).await, &[var]);
    }))
    .await;
}

#[tokio::test]
async fn malformed_values_exit_64_naming_the_variable() {
    let _shared = EXCLUSIVE.read().await;
    let cases = [
        ("PROBE_TIMEOUT", "300"),
        ("PROBE_FREQUENCY", "fast"),
        ("MAX_IDLE_PROXY_CONNS", "-1"),
        ("MAX_IDLE_PROXY_CONNS_PER_HOST", "many"),
        ("METRICS_PROMETHEUS_PORT", "70000"),
        ("KDP_BIND_ADDRESS", "localhost"),
        ("KDP_HTTP1_PORT", "http"),
        ("KDP_H2C_PORT", "-5"),
        ("KDP_DRAIN_TIMEOUT", "45"),
        ("KDP_MAX_QUEUED_PER_REVISION", "-1"),
        ("KDP_HELD_BYTES_BUDGET", "lots"),
        ("KDP_HEADER_READ_TIMEOUT", "1 minute"),
    ];
    futures_util::future::join_all(cases.map(|(var, bad)| async move {
        assert_usage(&run(&[], &[(var, bad)]).await, &[var]);
    }))
    .await;
}
