//! `kdp run` end to end: the real binary on manifests in a temporary folder, checked over HTTP
//! on loopback (and `/proc` for child processes). Autoscaling tests shorten the KPA windows
//! through `config-autoscaler` (stable window and scale-to-zero grace of 6 s).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns; a panic is the failure report"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kdp_local::status::{STATUS_PATH, StatusReport};
use kdp_local::supervisor::free_port;
use tokio::time::{Instant, sleep};

const KDP: &str = env!("CARGO_BIN_EXE_kdp");

/// Short KPA windows, so scale-to-zero happens within seconds.
const SHORT_WINDOWS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-autoscaler
  namespace: knative-serving
data:
  stable-window: \"6s\"
  scale-to-zero-grace-period: \"6s\"
";

const TAG_HEADER_ON: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-features
  namespace: knative-serving
data:
  tag-header-based-routing: Enabled
";

/// A Service running the bundled app.
fn service(name: &str, target: &str, cc: u32, annotations: &[(&str, &str)]) -> String {
    let mut annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("        {k}: \"{v}\"\n"))
        .collect();
    if !annotations.is_empty() {
        annotations = format!("    metadata:\n      annotations:\n{annotations}");
    }
    format!(
        "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
{annotations}    spec:
      containerConcurrency: {cc}
      containers:
        - command: [\"kdp\", \"hello\"]
          env:
            - name: TARGET
              value: \"{target}\"
"
    )
}

/// A running `kdp run`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Kdp {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Kdp {
    /// Writes `files` into a fresh folder and runs `kdp run` on it until its router answers.
    async fn start(name: &str, files: &[(&str, String)]) -> Self {
        let dir = std::env::temp_dir().join(format!("kdp-run-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        for (file, text) in files {
            write_atomically(&dir.join("manifests").join(file), text);
        }
        let port = free_port().unwrap();
        let log = std::fs::File::create(dir.join("kdp.log")).unwrap();
        let child = Command::new(KDP)
            .arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir.join("manifests"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let kdp = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kdp.try_status().await.is_none() {
            assert!(Instant::now() < deadline, "kdp run did not start");
            sleep(Duration::from_millis(20)).await;
        }
        kdp
    }

    fn manifest(&self, file: &str) -> PathBuf {
        self.dir.join("manifests").join(file)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn get(&self, host: &str, path: &str) -> (u16, String) {
        self.try_get(host, path, &[]).await.unwrap()
    }

    async fn try_get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        request(self.port, host, path, headers).await
    }

    async fn try_status(&self) -> Option<StatusReport> {
        let host = format!("127.0.0.1:{}", self.port);
        match self.try_get(&host, STATUS_PATH, &[]).await {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// `(ready, desired)` replicas of each revision.
    async fn replicas(&self) -> HashMap<String, (u32, u32)> {
        let report = self.try_status().await.unwrap();
        report
            .services
            .iter()
            .flat_map(|s| &s.revisions)
            .map(|r| (r.name.clone(), (r.ready_replicas, r.desired_replicas)))
            .collect()
    }

    /// Waits up to `limit` for `check` on the replica counts.
    async fn wait_replicas(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&HashMap<String, (u32, u32)>) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let replicas = self.replicas().await;
            if check(&replicas) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}: {replicas:?}\n{}",
                self.log()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kdp status` (the CLI) against this instance.
    async fn status_cli(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(KDP)
            .arg("status")
            .arg("--server")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// SIGTERM, then the exit status (within `limit`).
    async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.pid(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "kdp did not exit after SIGTERM");
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kdp.log")).unwrap_or_default()
    }
}

impl Drop for Kdp {
    #[expect(
        clippy::disallowed_methods,
        reason = "Drop cannot await; a short blocking wait for the child is fine in a test"
    )]
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.pid(), rustix::process::Signal::TERM);
            for _ in 0..200 {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One GET on a fresh connection: `(status, body)`, or why it failed.
async fn request(
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let _ = rustix::process::kill_process(pid, signal);
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Live processes whose parent is `pid`, from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces, so split after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        if fields.first().is_some_and(|s| *s != "Z")
            && fields.get(1) == Some(&pid.to_string().as_str())
        {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn traffic_split() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/traffic-split.yaml"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_hosts_splits_tags_and_reports_status() {
    let kdp = Kdp::start(
        "split",
        &[
            ("features.yaml", TAG_HEADER_ON.to_owned()),
            ("split.yaml", traffic_split()),
            ("other.yaml", service("other", "other", 0, &[])),
        ],
    )
    .await;
    let split = "helloworld-go.default.example.com";
    assert_eq!(
        kdp.get("other.default.example.com", "/").await,
        (200, "Hello other!\n".to_owned())
    );
    let (code, body) = kdp.get("nope.default.example.com", "/").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        kdp.get("v1-helloworld-go.default.example.com", "/").await,
        (200, "Hello World v1!\n".to_owned())
    );
    assert_eq!(
        kdp.get("v2-helloworld-go.default.example.com", "/").await,
        (200, "Hello World v2!\n".to_owned())
    );
    assert_eq!(
        kdp.get("latest-helloworld-go.default.example.com", "/")
            .await,
        (200, "Hello World v2!\n".to_owned())
    );

    // 20/80: 400 requests give 80 ± 8 (one standard deviation) to v1; allow ±30.
    let mut v1 = 0;
    for _ in 0..400 {
        match kdp.get(split, "/").await {
            (200, body) if body == "Hello World v1!\n" => v1 += 1,
            (200, body) if body == "Hello World v2!\n" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!((50..=110).contains(&v1), "{v1} of 400 went to v1");

    // config-features enables the tag header: it overrides the split.
    for _ in 0..20 {
        let answer = kdp
            .try_get(split, "/", &[("Knative-Serving-Tag", "v1")])
            .await
            .unwrap();
        assert_eq!(answer, (200, "Hello World v1!\n".to_owned()));
    }

    let report = kdp.try_status().await.unwrap();
    let s = report
        .services
        .iter()
        .find(|s| s.name == "helloworld-go")
        .unwrap();
    let shares: Vec<_> = s
        .revisions
        .iter()
        .map(|r| (r.name.as_str(), r.percent, r.ready_replicas >= 1))
        .collect();
    assert_eq!(
        shares,
        [
            ("helloworld-go-v2", 80, true),
            ("helloworld-go-v1", 20, true)
        ]
    );
    assert!(s.conditions.iter().all(|c| c.status == "True"), "{s:?}");
    let text = kdp.status_cli(&[]).await;
    assert!(text.contains("Name:       helloworld-go\n"), "{text}");
    assert!(
        text.contains("   20%  #v1 helloworld-go-v1 [1]\n"),
        "{text}"
    );
    assert!(text.contains("  ++ Ready"), "{text}");
    let json: StatusReport = serde_json::from_str(&kdp.status_cli(&["-o", "json"]).await).unwrap();
    assert_eq!(json.services.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_header_is_ignored_unless_enabled() {
    let kdp = Kdp::start("noheader", &[("split.yaml", traffic_split())]).await;
    let mut seen = HashMap::new();
    for _ in 0..60 {
        let (code, body) = kdp
            .try_get(
                "helloworld-go.default.example.com",
                "/",
                &[("Knative-Serving-Tag", "v1")],
            )
            .await
            .unwrap();
        assert_eq!(code, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    // With the header honoured every answer would be v1; 60 answers all from v1 at 20 % is
    // a 1e-42 chance.
    assert!(seen.contains_key("Hello World v2!\n"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_switches_revisions_without_failed_requests() {
    let kdp = Kdp::start(
        "edit",
        &[
            ("config.yaml", SHORT_WINDOWS.to_owned()),
            ("hello.yaml", service("hello", "v1", 0, &[])),
        ],
    )
    .await;
    let host = "hello.default.example.com";
    assert_eq!(kdp.get(host, "/").await, (200, "Hello v1!\n".to_owned()));

    // Two clients loop while the file is edited; every answer must be 200 from v1 or v2.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kdp = std::sync::Arc::new(kdp);
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (kdp, stop) = (kdp.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    answers.push(kdp.try_get(host, "/", &[]).await);
                }
                answers
            })
        })
        .collect();
    sleep(Duration::from_millis(300)).await;
    write_atomically(&kdp.manifest("hello.yaml"), &service("hello", "v2", 0, &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if kdp.get(host, "/").await.1 == "Hello v2!\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no v2 after the edit\n{}",
            kdp.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let mut bodies: Vec<String> = Vec::new();
    for answer in &answers {
        match answer {
            Ok((200, body)) if body == "Hello v1!\n" || body == "Hello v2!\n" => {
                if bodies.last() != Some(body) {
                    bodies.push(body.clone());
                }
            }
            other => panic!("failed request during the switch: {other:?}\n{}", kdp.log()),
        }
    }
    assert!(answers.len() > 20, "only {} requests", answers.len());
    assert!(bodies.contains(&"Hello v1!\n".to_owned()), "{bodies:?}");
    assert!(bodies.contains(&"Hello v2!\n".to_owned()), "{bodies:?}");

    // The old revision is no longer routed and scales to zero after the windows.
    let report = kdp.try_status().await.unwrap();
    let percents: Vec<_> = report.services[0]
        .revisions
        .iter()
        .map(|r| (r.name.as_str(), r.percent))
        .collect();
    assert_eq!(percents, [("hello-00002", 100), ("hello-00001", 0)]);
    kdp.wait_replicas(Duration::from_secs(30), "old revision at zero", |r| {
        r.get("hello-00001") == Some(&(0, 0))
    })
    .await;
    let log = kdp.log();
    assert!(
        log.contains("revision default/hello-00002 created"),
        "{log}"
    );
    assert!(
        log.contains("traffic of default/hello changed: 100% hello-00002 (latest)"),
        "{log}"
    );
    assert!(
        log.contains("revision hello-00001: scaled from 1 to 0"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_to_zero_after_the_grace_period_then_cold_starts() {
    let kdp = Kdp::start(
        "zero",
        &[
            ("config.yaml", SHORT_WINDOWS.to_owned()),
            ("hello.yaml", service("hello", "zero", 0, &[])),
        ],
    )
    .await;
    let host = "hello.default.example.com";
    assert_eq!(kdp.get(host, "/").await, (200, "Hello zero!\n".to_owned()));
    assert_eq!(children(kdp.pid()).len(), 1, "one replica process");

    let idle = Instant::now();
    kdp.wait_replicas(Duration::from_secs(30), "scale to zero", |r| {
        r.get("hello-00001") == Some(&(0, 0))
    })
    .await;
    // Not before the stable window (6 s) has seen no traffic.
    assert!(
        idle.elapsed() >= Duration::from_secs(5),
        "{:?}",
        idle.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !children(kdp.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "replica processes left after scale to zero"
        );
        sleep(Duration::from_millis(50)).await;
    }

    let cold = Instant::now();
    assert_eq!(kdp.get(host, "/").await, (200, "Hello zero!\n".to_owned()));
    let took = cold.elapsed();
    assert!(took < Duration::from_secs(5), "cold start took {took:?}");
    assert_eq!(kdp.replicas().await["hello-00001"].0, 1);
    assert!(kdp.log().contains("revision hello-00001 ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_out_under_concurrency_with_cc_1() {
    let kdp = Kdp::start(
        "out",
        &[(
            "slow.yaml",
            service(
                "slow",
                "slow",
                1,
                &[("autoscaling.knative.dev/max-scale", "4")],
            ),
        )],
    )
    .await;
    let kdp = std::sync::Arc::new(kdp);
    let host = "slow.default.example.com";
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let kdp = kdp.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..4 {
                    codes.push(kdp.try_get(host, "/?sleep=1000", &[]).await.map(|a| a.0));
                }
                codes
            })
        })
        .collect();
    kdp.wait_replicas(Duration::from_secs(10), "scale out", |r| {
        r.get("slow-00001").is_some_and(|(ready, _)| *ready >= 2)
    })
    .await;
    for client in clients {
        for code in client.await.unwrap() {
            assert_eq!(code, Ok(200));
        }
    }
    let replicas = kdp.replicas().await["slow-00001"];
    assert!(replicas.1 <= 4, "max-scale 4: {replicas:?}");
    assert!(kdp.log().contains("revision slow-00001: scaled from 1 to"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_stops_every_child_and_exits_0() {
    let mut kdp = Kdp::start("term", &[("hello.yaml", service("hello", "bye", 0, &[]))]).await;
    let host = "hello.default.example.com";
    assert_eq!(kdp.get(host, "/").await.0, 200);
    let replicas = children(kdp.pid());
    assert!(!replicas.is_empty());
    // A slow request in flight when the signal arrives still gets its answer.
    let in_flight = tokio::spawn(request(kdp.port, host, "/?sleep=1000", &[]));
    sleep(Duration::from_millis(200)).await;
    let status = kdp.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", kdp.log());
    assert_eq!(
        in_flight.await.unwrap(),
        Ok((200, "Hello bye!\n".to_owned()))
    );
    for pid in replicas {
        assert!(!alive(pid), "replica {pid} outlived kdp");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_a_helpful_404() {
    let kdp = Kdp::start("404", &[("hello.yaml", service("hello", "x", 0, &[]))]).await;
    let (code, body) = kdp.get("elsewhere.example.org", "/").await;
    assert_eq!(code, 404);
    assert!(body.contains("hello.default.example.com"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_replica_is_restarted_and_reported() {
    let crash = "\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: crash
spec:
  template:
    spec:
      containers:
        - command: [\"sh\", \"-c\", \"exit 3\"]
";
    let mut kdp = Kdp::start("crash", &[("crash.yaml", crash.to_owned())]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kdp
        .log()
        .contains("replica crash-00001/1 crashed (exit 3), restarting in")
    {
        assert!(Instant::now() < deadline, "no crash line\n{}", kdp.log());
        sleep(Duration::from_millis(50)).await;
    }
    let report = kdp.try_status().await.unwrap();
    let ready = &report.services[0].conditions[0];
    assert_eq!(
        (ready.kind.as_str(), ready.status.as_str()),
        ("Ready", "Unknown")
    );
    assert_eq!(kdp.terminate(Duration::from_secs(15)).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_service_has_its_replicas_stopped() {
    let kdp = Kdp::start(
        "remove",
        &[
            ("a.yaml", service("a", "a", 0, &[])),
            ("b.yaml", service("b", "b", 0, &[])),
        ],
    )
    .await;
    assert_eq!(kdp.get("a.default.example.com", "/").await.0, 200);
    assert_eq!(kdp.get("b.default.example.com", "/").await.0, 200);
    assert_eq!(children(kdp.pid()).len(), 2);
    std::fs::remove_file(kdp.manifest("b.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while children(kdp.pid()).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "b's replica still runs\n{}",
            kdp.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kdp.get("b.default.example.com", "/").await.0, 404);
    assert_eq!(kdp.get("a.default.example.com", "/").await.0, 200);
    assert!(
        kdp.log()
            .contains("revision b-00001: removed; stopping 1 replica(s)")
    );
}
