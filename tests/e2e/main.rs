//! End-to-end tests on a real Kubernetes cluster with Knative Serving and
//! kdp's overlay installed (docs/install.md).
//!
//! Every test is `#[ignore]`d and also does nothing unless `KUBECONFIG` is
//! set, so `cargo test` never touches a cluster. Run them with:
//!
//! ```sh
//! export KUBECONFIG=~/.kube/config
//! export KDP_E2E_GATEWAY=127.0.0.1:8080   # optional, see below
//! export KDP_E2E_OVERLAY=full              # or queue-proxy-only
//! cargo test -p kdp-tests --test e2e -- --ignored --test-threads=1
//! ```
//!
//! They drive the cluster with `kubectl` and send requests with `curl`, both
//! of which must be on `PATH`. Requests go to `KDP_E2E_GATEWAY` (`host:port`
//! of the ingress, for instance a `kubectl port-forward` of Kourier's
//! service) with the Service's host name in `Host`; without it they go to
//! the Service's URL as Knative reports it (which needs working DNS, e.g.
//! Knative's `sslip.io` default domain). Each test works in its own
//! namespace `kdp-e2e-<test>-<pid>` and deletes it at the end, also on
//! failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::{Command, Output};
use std::time::Duration;

use tokio::time::Instant;

/// The sample every Knative guide deploys; answers `Hello <TARGET>!`.
const HELLO_IMAGE: &str = "ghcr.io/knative/helloworld-go:latest";

/// Knative's own queue-proxy image, which the overlay must have replaced.
const KNATIVE_QUEUE_IMAGE: &str = "gcr.io/knative-releases/knative.dev/serving/cmd/queue";

/// Knative's own activator image.
const KNATIVE_ACTIVATOR_IMAGE: &str = "gcr.io/knative-releases/knative.dev/serving/cmd/activator";

/// A cluster to test against, when `KUBECONFIG` is set.
fn cluster() -> Option<()> {
    std::env::var_os("KUBECONFIG").map(|_| ())
}

#[allow(
    clippy::disallowed_methods,
    reason = "these tests are synchronous: they shell out to kubectl and curl"
)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs kubectl and returns stdout; panics with stderr on failure.
fn kubectl(args: &[&str]) -> String {
    let out = run(Command::new("kubectl").args(args));
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kubectl with `stdin` as input (for `apply -f -`).
fn kubectl_apply(namespace: &str, manifest: &str) {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .args(["apply", "-n", namespace, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` every second until it returns `Some`, or panics after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        pause(Duration::from_secs(1));
    }
}

/// A namespace that is deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn new(test: &str) -> Self {
        let name = format!("kdp-e2e-{test}-{}", std::process::id());
        kubectl(&["create", "namespace", &name]);
        Self(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(Command::new("kubectl").args(["delete", "namespace", &self.0, "--wait=false"]));
    }
}

/// Applies a Knative Service and waits until it is Ready; returns its URL.
fn deploy(ns: &Namespace, manifest: &str, name: &str) -> String {
    kubectl_apply(&ns.0, manifest);
    kubectl(&[
        "wait",
        "-n",
        &ns.0,
        &format!("ksvc/{name}"),
        "--for=condition=Ready",
        "--timeout=300s",
    ]);
    kubectl(&[
        "get",
        "-n",
        &ns.0,
        &format!("ksvc/{name}"),
        "-o",
        "jsonpath={.status.url}",
    ])
}

/// One GET to a Knative Service URL; (status, body). Status 0 = no answer.
fn request(url: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"]);
    match std::env::var("KDP_E2E_GATEWAY") {
        Ok(gateway) if !gateway.is_empty() => {
            let host = url
                .split_once("://")
                .map_or(url, |(_, rest)| rest)
                .trim_end_matches('/');
            cmd.args([
                "-H",
                &format!("Host: {host}"),
                &format!("http://{gateway}/"),
            ]);
        }
        _ => {
            cmd.arg(url);
        }
    }
    let out = run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn running_pods(ns: &Namespace, revision: &str) -> usize {
    kubectl(&[
        "get",
        "pods",
        "-n",
        &ns.0,
        "-l",
        &format!("serving.knative.dev/revision={revision}"),
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count()
}

fn hello(name: &str, target: &str, extra_annotations: &str) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      name: {name}-{target}
      annotations:
{extra_annotations}        autoscaling.knative.dev/window: "6s"
    spec:
      containers:
        - image: {HELLO_IMAGE}
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "{target}"
"#
    )
}

#[test]
#[ignore = "needs KUBECONFIG and a cluster with Knative and kdp's overlay"]
fn overlay_is_installed() {
    if cluster().is_none() {
        return;
    }
    let qp = kubectl(&[
        "get",
        "configmap",
        "config-deployment",
        "-n",
        "knative-serving",
        "-o",
        "jsonpath={.data.queue-sidecar-image}",
    ]);
    assert!(
        !qp.starts_with(KNATIVE_QUEUE_IMAGE),
        "queue-sidecar-image is still Knative's: {qp}"
    );
    kubectl(&[
        "rollout",
        "status",
        "deployment/activator",
        "-n",
        "knative-serving",
        "--timeout=300s",
    ]);
    let activator = kubectl(&[
        "get",
        "deployment",
        "activator",
        "-n",
        "knative-serving",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    // KDP_E2E_OVERLAY says which overlay was applied (default `full`).
    let overlay = std::env::var("KDP_E2E_OVERLAY").unwrap_or_else(|_| "full".to_owned());
    match overlay.as_str() {
        "full" => assert!(
            !activator.starts_with(KNATIVE_ACTIVATOR_IMAGE),
            "the activator is still Knative's: {activator}"
        ),
        "queue-proxy-only" => assert!(
            activator.starts_with(KNATIVE_ACTIVATOR_IMAGE),
            "queue-proxy-only must keep Knative's activator: {activator}"
        ),
        other => panic!("KDP_E2E_OVERLAY={other}: expected full or queue-proxy-only"),
    }
}

#[test]
#[ignore = "needs KUBECONFIG and a cluster with Knative and kdp's overlay"]
fn scale_from_zero() {
    if cluster().is_none() {
        return;
    }
    let ns = Namespace::new("zero");
    let url = deploy(&ns, &hello("hello", "zero", ""), "hello");
    let revision = "hello-zero";
    // The pod runs kdp's queue-proxy, as config-deployment says.
    let qp_image = kubectl(&[
        "get",
        "configmap",
        "config-deployment",
        "-n",
        "knative-serving",
        "-o",
        "jsonpath={.data.queue-sidecar-image}",
    ]);
    let images = kubectl(&[
        "get",
        "pods",
        "-n",
        &ns.0,
        "-l",
        &format!("serving.knative.dev/revision={revision}"),
        "-o",
        "jsonpath={.items[*].spec.containers[*].image}",
    ]);
    assert!(images.contains(qp_image.trim()), "{images}");
    // Knative scales an idle revision to zero (stable window 6 s here, plus
    // the scale-to-zero grace period, 30 s by default).
    eventually(
        "the revision scales to zero",
        Duration::from_secs(300),
        || (running_pods(&ns, revision) == 0).then_some(()),
    );
    // The first request is held by the activator until a pod is ready.
    let start = Instant::now();
    let (status, body) = request(&url);
    let cold = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "Hello zero!");
    assert!(running_pods(&ns, revision) >= 1);
    assert!(cold < Duration::from_secs(60), "cold start took {cold:?}");
}

#[test]
#[ignore = "needs KUBECONFIG and a cluster with Knative and kdp's overlay"]
fn traffic_split_50_50() {
    if cluster().is_none() {
        return;
    }
    let ns = Namespace::new("split");
    let keep_warm = "        autoscaling.knative.dev/min-scale: \"1\"\n";
    deploy(&ns, &hello("split", "one", keep_warm), "split");
    deploy(&ns, &hello("split", "two", keep_warm), "split");
    let url = deploy(
        &ns,
        &format!(
            "{}  traffic:\n    - revisionName: split-one\n      percent: 50\n    - revisionName: split-two\n      percent: 50\n",
            hello("split", "two", keep_warm)
        ),
        "split",
    );
    let (mut one, mut two) = (0_u32, 0_u32);
    for _ in 0..200 {
        let (status, body) = request(&url);
        assert_eq!(status, 200, "{body}");
        match body.trim() {
            "Hello one!" => one += 1,
            "Hello two!" => two += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    // 200 draws of a fair coin: below 60 of either is a 5-sigma event.
    assert!(one >= 60 && two >= 60, "one={one} two={two}");
}

#[test]
#[ignore = "needs KUBECONFIG and a cluster with Knative and kdp's overlay"]
fn drain_loses_no_request() {
    if cluster().is_none() {
        return;
    }
    let ns = Namespace::new("drain");
    let keep_warm = "        autoscaling.knative.dev/min-scale: \"1\"\n";
    let url = deploy(&ns, &hello("drain", "drain", keep_warm), "drain");
    let revision = "drain-drain";
    // Steady traffic from two clients while the only pod is deleted: its
    // queue-proxy fails readiness, keeps serving through the quiet period,
    // and the replacement pod takes over. Every request must succeed.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut failures = Vec::new();
                let mut sent = 0_u32;
                while start.elapsed() < Duration::from_secs(75) {
                    let (status, body) = request(&url);
                    sent += 1;
                    if status != 200 {
                        failures.push(format!("{status} {body}"));
                    }
                }
                (sent, failures)
            })
        })
        .collect();
    pause(Duration::from_secs(5));
    kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.0,
        "-l",
        &format!("serving.knative.dev/revision={revision}"),
        "--wait=false",
    ]);
    let mut total = 0;
    for client in clients {
        let (sent, failures) = client.join().expect("client thread");
        total += sent;
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    assert!(total > 20, "only {total} requests were sent");
    assert!(running_pods(&ns, revision) >= 1);
}
