//! The `kdp` binary end to end: the bundled app under the supervisor, and `kdp run` refusing
//! bad manifests before it opens any port.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns; a panic is the failure report"
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kdp_local::supervisor::{
    Output, ProcessSpec, Replica, RestartPolicy, free_port, wait_listening,
};

const KDP: &str = env!("CARGO_BIN_EXE_kdp");

async fn get(port: u16, host: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn bundled_hello_runs_under_the_supervisor() {
    let port = free_port().unwrap();
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = ProcessSpec {
        label: "helloworld-go-00001/1".into(),
        program: PathBuf::from(KDP),
        args: vec!["hello".into()],
        env: vec![
            ("PORT".into(), port.to_string()),
            ("TARGET".into(), "Go Sample v1".into()),
        ],
        working_dir: None,
    };
    let replica = Replica::spawn(spec, RestartPolicy::default(), Output::Discard, events).unwrap();
    wait_listening(port, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        get(port, "anything").await,
        (200, "Hello Go Sample v1!\n".to_owned())
    );
    let status = replica.stop(Duration::from_secs(5)).await.unwrap();
    assert!(
        status.success(),
        "kdp hello exits 0 on SIGTERM, got {status:?}"
    );
}

#[test]
fn run_refuses_a_bad_manifest_with_its_location() {
    let dir = std::env::temp_dir().join(format!("kdp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("split.yaml");
    std::fs::write(
        &file,
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  template:\n    spec:\n      containers:\n        - command: [kdp, hello]\n  traffic:\n    - latestRevision: true\n      percent: 90\n",
    )
    .unwrap();
    let out = Command::new(KDP)
        .arg("run")
        .arg("--listen")
        .arg("127.0.0.1:1")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("split.yaml: document 1: spec.traffic: traffic targets sum to 90, want 100"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_64() {
    let out = Command::new(KDP).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage:"));
    let out = Command::new(KDP).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kdp run [--listen ADDR]"));
}
