//! The systems under test, all in front of the same upstream.
//!
//! A target is an address to load, the headers every request to it carries,
//! and, for a proxy, the processes to measure. Adding one (Knative's Go
//! queue-proxy) means a [`Kind`] variant, a `start_*` function and a line in
//! [`Kind::all`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use http::{HeaderName, HeaderValue};
use tokio::process::Command;
use tokio::time::Instant;

use crate::activator::{self, FakeCluster};
use crate::load;
use crate::procs::{Managed, free_port};

/// `Host` of every benchmark request.
pub(crate) const HOST: &str = "bench.default.example.com";

/// The kinds of target, in the order of every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Straight to the upstream: the baseline.
    Direct,
    /// kdp's queue-proxy with this `containerConcurrency`.
    QueueProxy { cc: u32 },
    /// kdp's activator in front of a queue-proxy (both cc=0), the revision
    /// having one ready pod.
    Activator,
    /// nginx as a keep-alive reverse proxy.
    Nginx,
}

/// A started target.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) addr: SocketAddr,
    /// Sent with every request (the activator's routing headers).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// The proxy process(es) whose cost is measured; none for direct.
    pub(crate) procs: Vec<Managed>,
    /// With several processes: the name under which the first one is also
    /// measured alone (the activator, in front of its queue-proxy).
    pub(crate) front: Option<&'static str>,
    /// What the processes need from the driver (the activator's fake API
    /// server and autoscaler); dropped with the target.
    pub(crate) cluster: Option<FakeCluster>,
}

/// Paths of the binaries under test.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    pub(crate) queue_proxy: PathBuf,
    pub(crate) kdp: PathBuf,
    pub(crate) activator: PathBuf,
    pub(crate) nginx: Option<PathBuf>,
}

impl Kind {
    /// Every target of a run.
    pub(crate) fn all() -> [Self; 5] {
        [
            Self::Direct,
            Self::QueueProxy { cc: 0 },
            Self::QueueProxy { cc: 10 },
            Self::Activator,
            Self::Nginx,
        ]
    }

    /// The name `--targets` selects it by.
    pub(crate) fn id(self) -> String {
        match self {
            Self::Direct => "direct".to_owned(),
            Self::QueueProxy { cc } => format!("qp{cc}"),
            Self::Activator => "activator".to_owned(),
            Self::Nginx => "nginx".to_owned(),
        }
    }

    /// Short name used in tables and JSON.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Direct => "direct".to_owned(),
            Self::QueueProxy { cc } => format!("queue-proxy cc={cc}"),
            Self::Activator => "activator+queue-proxy".to_owned(),
            Self::Nginx => "nginx".to_owned(),
        }
    }

    /// Starts the target in front of `upstream`, or says why it is skipped.
    pub(crate) async fn start(
        self,
        bins: &Binaries,
        upstream: SocketAddr,
        dir: &Path,
    ) -> Result<Target, String> {
        let started = match self {
            Self::Direct => Ok(Target::new(self, upstream, Vec::new())),
            Self::QueueProxy { cc } => {
                if !bins.queue_proxy.is_file() {
                    return Err(format!(
                        "{} not found; build it with `cargo build --release -p kdp-queue-proxy`",
                        bins.queue_proxy.display()
                    ));
                }
                let port = free_port().map_err(|e| e.to_string())?;
                let qp = QueueProxy {
                    bin: &bins.queue_proxy,
                    cc,
                    bind: Ipv4Addr::LOCALHOST,
                    port,
                    user_port: upstream.port(),
                    readiness_probe: None,
                };
                qp.spawn(dir, &self.name().replace([' ', '='], "-"))
                    .await
                    .map(|proc| Target::new(self, loopback(port), vec![proc]))
            }
            Self::Activator => {
                for (bin, pkg) in [
                    (&bins.activator, "kdp-activator"),
                    (&bins.queue_proxy, "kdp-queue-proxy"),
                ] {
                    if !bin.is_file() {
                        return Err(format!(
                            "{} not found; build it with `cargo build --release -p {pkg}`",
                            bin.display()
                        ));
                    }
                }
                if !activator::pod_ip_usable() {
                    return Err(format!(
                        "cannot bind {}: the pod needs a loopback address of its own",
                        activator::POD_IP
                    ));
                }
                start_activator(bins, upstream, dir).await
            }
            Self::Nginx => {
                let Some(nginx) = &bins.nginx else {
                    return Err(
                        "nginx is not on PATH; install it with `apt-get install -y nginx` \
                         (or pass --nginx PATH)"
                            .to_owned(),
                    );
                };
                start_nginx(nginx, upstream, dir).await
            }
        };
        let target = started.map_err(|e| format!("{e:#}"))?;
        wait_ready(target.addr, &target.headers, Duration::from_secs(10))
            .await
            .map_err(|e| describe_failure(&target, &e))?;
        Ok(target)
    }
}

// === impl Target ===

impl Target {
    fn new(kind: Kind, addr: SocketAddr, procs: Vec<Managed>) -> Self {
        Self {
            kind,
            addr,
            headers: Vec::new(),
            procs,
            front: None,
            cluster: None,
        }
    }
}

/// Revision name of the activator target.
const ACTIVATOR_REVISION: &str = "bench-00001";

/// The activator in front of a queue-proxy on [`activator::POD_IP`], in front
/// of `upstream`. Revision and queue-proxy both have containerConcurrency 0,
/// so the activator's own cost is the difference to `queue-proxy cc=0`.
async fn start_activator(
    bins: &Binaries,
    upstream: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Target> {
    let cluster = FakeCluster::start(dir, "activator").await?;
    let qp_port = free_port()?;
    let qp = QueueProxy {
        bin: &bins.queue_proxy,
        cc: 0,
        bind: activator::POD_IP,
        port: qp_port,
        user_port: upstream.port(),
        readiness_probe: None,
    }
    .spawn(dir, "activator-queue-proxy")
    .await?;
    let pod = activator::pod_addr(qp_port);
    wait_ready(pod, &queue_probe_headers(), Duration::from_secs(10)).await?;
    cluster.revision(ACTIVATOR_REVISION, 0);
    cluster.endpoints(ACTIVATOR_REVISION, &[pod]);
    let port = free_port()?;
    let activator = cluster.spawn_activator(&bins.activator, port, dir, "activator", &[])?;
    Ok(Target {
        kind: Kind::Activator,
        addr: loopback(port),
        headers: activator::routing_headers(ACTIVATOR_REVISION)?,
        // The activator first: measured alone as well.
        procs: vec![activator, qp],
        front: Some("activator"),
        cluster: Some(cluster),
    })
}

/// How to start one queue-proxy.
#[derive(Debug)]
pub(crate) struct QueueProxy<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) cc: u32,
    /// The pod IP: every port binds it.
    pub(crate) bind: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) user_port: u16,
    /// `SERVING_READINESS_PROBE`; none means always ready.
    pub(crate) readiness_probe: Option<String>,
}

impl QueueProxy<'_> {
    /// Spawns it on loopback; its log goes to `dir/<name>.log`.
    pub(crate) async fn spawn(&self, dir: &Path, name: &str) -> anyhow::Result<Managed> {
        let port = |p: u16| p.to_string();
        let mut cmd = Command::new(self.bin);
        cmd.env_clear()
            .envs(crate::procs::allocator_env())
            .env("CONTAINER_CONCURRENCY", self.cc.to_string())
            .env("QUEUE_SERVING_PORT", port(self.port))
            .env("QUEUE_SERVING_TLS_PORT", port(free_port()?))
            .env("USER_PORT", port(self.user_port))
            .env("REVISION_TIMEOUT_SECONDS", "300")
            .env("SERVING_LOGGING_CONFIG", "")
            .env("SERVING_LOGGING_LEVEL", "")
            .env("SERVING_NAMESPACE", "default")
            .env("SERVING_CONFIGURATION", "bench")
            .env("SERVING_REVISION", "bench-00001")
            .env("SERVING_POD", "bench-00001-deployment-0")
            .env("SERVING_POD_IP", self.bind.to_string())
            .env("KDP_BIND_ADDRESS", self.bind.to_string())
            .env("KDP_ADMIN_PORT", port(free_port()?))
            .env("KDP_METRICS_PORT", port(free_port()?))
            .env("KDP_DRAIN_QUIET_PERIOD", "0s")
            .env("KDP_CERT_DIR", dir.join("no-certs"));
        if let Some(probe) = &self.readiness_probe {
            cmd.env("SERVING_READINESS_PROBE", probe);
        }
        Managed::spawn(name, cmd, &dir.join(format!("{name}.log")))
    }
}

/// The kubelet's readiness probe of the queue-proxy.
pub(crate) fn queue_probe_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            http::header::USER_AGENT,
            HeaderValue::from_static("kube-probe/1.30"),
        ),
        (
            HeaderName::from_static("k-network-probe"),
            HeaderValue::from_static("queue"),
        ),
    ]
}

async fn start_nginx(bin: &Path, upstream: SocketAddr, dir: &Path) -> anyhow::Result<Target> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let port = free_port()?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&prefix, port, upstream))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let proc = Managed::spawn("nginx", cmd, &dir.join("nginx.log"))?;
    Ok(Target::new(Kind::Nginx, loopback(port), vec![proc]))
}

/// A reverse proxy as one would deploy it in front of a pod: keep-alive to
/// the upstream, no access log, responses streamed (`proxy_buffering off`,
/// as the queue-proxy streams).
fn nginx_conf(prefix: &Path, port: u16, upstream: SocketAddr) -> String {
    let p = prefix.display();
    format!(
        "worker_processes auto;
worker_rlimit_nofile 16384;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    upstream app {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Polls `GET /` on `addr` with `headers` until it answers 200.
pub(crate) async fn wait_ready(
    addr: SocketAddr,
    headers: &[(HeaderName, HeaderValue)],
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let mut conn = load::connect(addr).await?;
            load::get(&mut conn, HOST, "/", headers).await
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok((200, _))) => return Ok(()),
            Ok(Ok((status, _))) => last = format!("status {status}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timed out".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{addr} not ready within {limit:?}: {last}")
}

/// Finds `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Context for a failed target: its name and last log lines.
pub(crate) fn describe_failure(target: &Target, err: &anyhow::Error) -> String {
    let tails: Vec<String> = target
        .procs
        .iter()
        .map(|p| format!("{}: {}", p.name, p.log_tail()))
        .collect();
    format!("{err:#} {}", tails.join("; "))
}
