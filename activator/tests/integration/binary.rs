//! The `activator` binary against the fake API server (through a
//! kubeconfig): fatal startup errors, and ConfigMap changes taking effect
//! without a restart (request log on stdout, log level on stderr).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdp_test_support::{ActivatorEnv, ActivatorPorts, FakeApiServer, FakeAutoscaler};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{REV, private_endpoints, revision, send, send_to};

/// A kubeconfig pointing at `api`, in a file removed on drop.
struct Kubeconfig(std::path::PathBuf);

impl Kubeconfig {
    fn new(api: &FakeApiServer) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "kdp-activator-kubeconfig-{}-{n}.yaml",
            std::process::id()
        ));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            api.url()
        );
        std::fs::write(&path, yaml).unwrap();
        Self(path)
    }
}

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running activator process with its output collected line by line.
struct Process {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _kubeconfig: Kubeconfig,
}

impl Process {
    fn spawn(api: &FakeApiServer, autoscaler: &FakeAutoscaler) -> Self {
        let kubeconfig = Kubeconfig::new(api);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activator"))
            .env_clear()
            .env("KUBECONFIG", &kubeconfig.0)
            .envs(
                ActivatorEnv {
                    pod_name: "activator-abc".into(),
                    autoscaler_url: autoscaler.url(),
                    drain_timeout: "0s".into(),
                    ports: Some(ActivatorPorts {
                        http1: 0,
                        h2c: 0,
                        metrics: None,
                    }),
                }
                .vars(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let collect = |pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
            _kubeconfig: kubeconfig,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The address the process says server `name` listens on.
    async fn addr(&self, name: &str) -> SocketAddr {
        for _ in 0..500 {
            let found = self.stderr().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                // The address is logged in debug form, `Some(ip:port)`.
                let addr = v["addr"].as_str()?;
                let addr = addr
                    .strip_prefix("Some(")
                    .and_then(|a| a.strip_suffix(')'))?;
                (v["message"] == "listening" && v["server"] == name)
                    .then(|| addr.parse().ok())
                    .flatten()
            });
            if let Some(addr) = found {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no listening line for {name}: {:#?}", self.stderr());
    }
}

fn config_map(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "knative-serving"}, "data": data})
}

#[tokio::test]
async fn missing_config_network_exits_nonzero_with_a_clear_message() {
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    let mut p = Process::spawn(&api, &autoscaler);
    let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // Give the collectors the last lines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = p.stderr().join("\n");
    assert!(
        stderr.contains("Failed to fetch network config"),
        "{stderr}"
    );
    assert!(stderr.contains("config-network"), "{stderr}");
}

#[tokio::test]
async fn request_log_and_log_level_follow_their_config_maps() {
    let api = FakeApiServer::start().await;
    let autoscaler = FakeAutoscaler::start().await;
    // Pods Kubernetes calls ready are used without a probe, so requests to a
    // closed port answer 502 at once: enough to produce request log lines.
    api.apply(config_map(
        "config-network",
        json!({"mesh-compatibility-mode": "disabled"}),
    ));
    api.apply(config_map(
        "config-observability",
        json!({"logging.enable-request-log": "true",
               "logging.request-log-template": "first {{.Request.URL}} {{.Response.Code}}"}),
    ));
    let closed_port = kdp_test_support::raw::closed_port();
    api.apply(revision("hello-00001", 0, 300));
    api.apply(private_endpoints(
        "hello-00001",
        &[SocketAddr::from(([127, 0, 0, 1], closed_port))],
    ));
    let p = Process::spawn(&api, &autoscaler);
    let http1 = p.addr("http1").await;
    let profiling = p.addr("profiling").await;
    let got = send_to(profiling, "/debug/pprof/", &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, "404 page not found\n")
    );

    let logged = |prefix: &'static str| {
        let p = &p;
        async move {
            for _ in 0..250 {
                assert_eq!(send(http1, &REV).await.status, 502);
                if p.stdout().iter().any(|l| l.starts_with(prefix)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no {prefix:?} line in {:#?}", p.stdout());
        }
    };
    logged("first /path?x=1 502").await;
    // A new template takes effect without a restart.
    api.apply(config_map(
        "config-observability",
        json!({"logging.enable-request-log": "true",
               "logging.request-log-template": "second {{.Response.Code}}"}),
    ));
    logged("second 502").await;
    // A template that does not parse is refused; the previous one stays.
    api.apply(config_map(
        "config-observability",
        json!({"logging.enable-request-log": "true",
               "logging.request-log-template": "{{range .}}"}),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = p.stdout().len();
    send(http1, &REV).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        p.stdout()[before..]
            .iter()
            .any(|l| l.starts_with("second 502"))
    );
    // Disabled: no more lines.
    api.apply(config_map(
        "config-observability",
        json!({"logging.enable-request-log": "false"}),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = p.stdout().len();
    send(http1, &REV).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.stdout().len(), before, "{:#?}", p.stdout());

    // The level follows loglevel.activator: debug lines appear after the change.
    let debug_lines = || {
        p.stderr()
            .iter()
            .filter(|l| l.contains(r#""level":"DEBUG""#))
            .count()
    };
    assert_eq!(debug_lines(), 0, "info by default");
    api.apply(config_map(
        "config-logging",
        json!({"loglevel.activator": "debug"}),
    ));
    for _ in 0..250 {
        send(http1, &REV).await;
        if debug_lines() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no debug line after loglevel.activator: debug");
}
