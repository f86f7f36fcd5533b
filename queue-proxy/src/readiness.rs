//! User-container readiness prober (spec §4.2–4.4).
//!
//! Sits behind the probe handler of the drainer stage: every kubelet or
//! activator health check that reaches it calls [`Prober::probe`], which runs
//! the probes decoded from `SERVING_READINESS_PROBE` against the user
//! container and hands back a plain `bool` (ready or not). Nothing is cached:
//! each call runs the probes anew, but concurrent callers share one in-flight
//! run. Probe failures never surface as errors; their text goes to stderr, as
//! Knative's queue-proxy writes it. The only error type is
//! [`ReadinessConfigError`], returned by [`parse_probes`] at startup.
//!
//! mirrors `pkg/queue/readiness/probe.go` and `pkg/queue/health/probe.go`.

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use kdp_core::ErrorChain;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

mod grpc;
mod http;
#[cfg(test)]
mod tests;

/// The User-Agent of every probe request: Knative never fills in a Kubernetes
/// version, so it is literally `kube-probe/` + `/`.
const USER_AGENT: &str = "kube-probe//";

/// Attempt timeout in aggressive mode.
const AGGRESSIVE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long an aggressive run keeps polling before it gives up.
const POLL_WINDOW: Duration = Duration::from_secs(10);
/// Rate of aggressive attempts. Knative polls every 50 ms, so a container
/// that starts listening just after an attempt waits up to 50 ms to be seen;
/// kdp polls every 5 ms (a refused loopback connect costs microseconds), so
/// cold starts learn of readiness within a few milliseconds. See
/// docs/compatibility.md.
const RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// Result alias for decoding the probe configuration.
pub type Result<T, E = ReadinessConfigError> = std::result::Result<T, E>;

/// A Kubernetes `core/v1.Probe`, as the controller encodes it into
/// `SERVING_READINESS_PROBE` (§4.3).
///
/// Only the fields the queue-proxy reads are modelled; unknown fields are
/// ignored. `null` and missing values decode to the zero value, as in Go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// `exec` handler; the queue-proxy cannot run it and always fails.
    #[serde(default)]
    pub exec: Option<ExecAction>,
    /// `httpGet` handler.
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    /// `tcpSocket` handler.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    /// `grpc` handler.
    #[serde(default)]
    pub grpc: Option<GrpcAction>,
    /// Ignored by the queue-proxy (kubelet applies it to the QP's own probe).
    #[serde(default, deserialize_with = "null_as_default")]
    pub initial_delay_seconds: i32,
    /// Attempt timeout in standard mode; `0` or less means no timeout.
    #[serde(default, deserialize_with = "null_as_default")]
    pub timeout_seconds: i32,
    /// `0` selects aggressive mode; anything else standard mode.
    #[serde(default, deserialize_with = "null_as_default")]
    pub period_seconds: i32,
    /// Consecutive successes needed in aggressive mode.
    #[serde(default, deserialize_with = "null_as_default")]
    pub success_threshold: i32,
    /// Ignored by the queue-proxy (kubelet applies it to the QP's own probe).
    #[serde(default, deserialize_with = "null_as_default")]
    pub failure_threshold: i32,
    /// Ignored by the queue-proxy.
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
}

/// `exec` probe handler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExecAction {
    /// Command line; never run by the queue-proxy.
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: Vec<String>,
}

/// `httpGet` probe handler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Request path, with or without a leading `/`; may carry a query.
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    /// Target port.
    #[serde(default, deserialize_with = "null_as_default")]
    pub port: IntOrString,
    /// Target host; empty means `127.0.0.1`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
    /// `HTTP` or `HTTPS` (case-insensitive); empty means `HTTP`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub scheme: String,
    /// Extra request headers, added after the User-Agent.
    #[serde(default, deserialize_with = "null_as_default")]
    pub http_headers: Vec<HttpHeader>,
}

/// One configured probe request header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HttpHeader {
    /// Header name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Header value.
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
}

/// `tcpSocket` probe handler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TcpSocketAction {
    /// Target port.
    #[serde(default, deserialize_with = "null_as_default")]
    pub port: IntOrString,
    /// Target host; empty means `127.0.0.1`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
}

/// `grpc` probe handler; the host is always `127.0.0.1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GrpcAction {
    /// Target port.
    #[serde(default, deserialize_with = "null_as_default")]
    pub port: i32,
    /// Service name sent in the health-check request; `None` means `""`.
    #[serde(default)]
    pub service: Option<String>,
}

/// Kubernetes `IntOrString`: a port given as a JSON number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A JSON number.
    Int(i32),
    /// A JSON string, such as `"8080"`.
    String(String),
}

/// `SERVING_READINESS_PROBE` could not be decoded; the queue-proxy exits 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadinessConfigError {
    /// The value is not a probe object (or, with multi-container probing, an
    /// array of them).
    #[error("failed to decode SERVING_READINESS_PROBE")]
    Decode(#[source] serde_json::Error),
}

/// Runs the user-container readiness probes. Cheap to clone; clones share
/// the in-flight run and the aggressive-mode success counters.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    probes: Vec<ProbeState>,
    autodetect_http2: bool,
    timing: Timing,
    out: Output,
    /// Receiver of the run in flight, if any; concurrent callers subscribe to it.
    in_flight: Mutex<Option<watch::Receiver<Option<bool>>>>,
}

struct ProbeState {
    spec: ProbeSpec,
    /// Consecutive successful aggressive attempts. Persists across runs, so
    /// once the threshold was reached a later run needs one success only.
    streak: AtomicU32,
}

/// Aggressive-mode timing; tests shorten it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) poll_window: Duration,
    pub(crate) retry_interval: Duration,
    pub(crate) attempt_timeout: Duration,
}

/// Where failure lines go.
#[derive(Clone)]
pub(crate) enum Output {
    Stderr,
    #[cfg(test)]
    Capture(Arc<Mutex<Vec<String>>>),
}

/// Why one probe attempt (or one run of a probe) failed. Its text is what the
/// queue-proxy writes to stderr.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("exec probe not supported")]
    Exec,
    #[error("no probe found")]
    NoHandler,
    #[error("context deadline exceeded")]
    PollTimeout,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    #[error("dial tcp {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls handshake with {addr}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tls server name {0:?}")]
    TlsServerName(String),
    #[error("unsupported probe scheme {0:?}")]
    UnsupportedScheme(String),
    #[error("h2c is not possible over https")]
    H2cOverTls,
    #[error("invalid probe url {0:?}")]
    InvalidUrl(String),
    #[error("invalid probe header {0:?}")]
    InvalidHeader(String),
    #[error("http request failed")]
    Http(#[source] hyper::Error),
    #[error("stopped after 10 redirects")]
    TooManyRedirects,
    #[error("HTTP probe did not respond Ready, got status code: {0}")]
    NotReady(u16),
    #[error("grpc health check answered HTTP status {0}")]
    GrpcHttpStatus(u16),
    #[error("rpc error: code = {code} desc = {message}")]
    GrpcStatus { code: &'static str, message: String },
    #[error("malformed grpc health response: {0}")]
    GrpcMalformed(&'static str),
    #[error("service unhealthy (responded with {0:?})")]
    NotServing(&'static str),
}

/// An attempt's time budget: a deadline plus the timeout it came from (for
/// the error text).
#[derive(Debug, Clone, Copy)]
struct Budget {
    deadline: Instant,
    timeout: Duration,
}

/// The handler of one probe, picked in Knative's order.
#[derive(Debug, Clone, Copy)]
enum Handler<'a> {
    Http(&'a HttpGetAction),
    Tcp(&'a TcpSocketAction),
    Grpc(&'a GrpcAction),
}

/// Decodes `SERVING_READINESS_PROBE` (§4.3).
///
/// An empty value means no probe: the user container is always ready. Without
/// multi-container probing the value is one probe object (`null` decodes to a
/// probe without a handler, which never succeeds); with it, an array whose
/// `null` elements (a serving container without a probe) are skipped.
///
/// ```
/// use kdp_queue_proxy::readiness::parse_probes;
/// let probes = parse_probes(r#"{"tcpSocket":{"port":"8080","host":"127.0.0.1"}}"#, false)?;
/// assert_eq!(probes.len(), 1);
/// assert!(parse_probes(r#""wrongProbeObject""#, false).is_err());
/// # Ok::<(), kdp_queue_proxy::readiness::ReadinessConfigError>(())
/// ```
pub fn parse_probes(json: &str, multi_container: bool) -> Result<Vec<ProbeSpec>> {
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(ReadinessConfigError::Decode)?;
    let probes = if multi_container {
        match value {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(values) => values
                .into_iter()
                .filter_map(|value| decode_probe(value).transpose())
                .collect::<Result<_, _>>()
                .map_err(ReadinessConfigError::Decode)?,
            _ => return Err(ReadinessConfigError::Decode(expected("an array of probes"))),
        }
    } else {
        vec![
            decode_probe(value)
                .map_err(ReadinessConfigError::Decode)?
                .unwrap_or_default(),
        ]
    };
    Ok(probes)
}

/// One probe object, or `None` for `null`. Serde would also accept a struct
/// written as a JSON array; Go does not, so neither do we.
fn decode_probe(value: serde_json::Value) -> Result<Option<ProbeSpec>, serde_json::Error> {
    match value {
        serde_json::Value::Null => Ok(None),
        value @ serde_json::Value::Object(_) => serde_json::from_value(value).map(Some),
        _ => Err(expected("a probe object")),
    }
}

fn expected(what: &str) -> serde_json::Error {
    serde::de::Error::custom(format_args!("expected {what}"))
}

/// Decodes `null` as the type's default, as Go's `encoding/json` leaves the
/// zero value in place.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `host:port`, bracketing IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `host:port` (IPv6 literals may be bracketed).
async fn connect(host: &str, port: u16) -> Result<TcpStream, ProbeError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    TcpStream::connect((bare, port))
        .await
        .map_err(|source| ProbeError::Connect {
            addr: join_host_port(host, port),
            source,
        })
}

/// Runs `fut` within `budget` (no limit when `None`).
async fn within<T>(
    budget: Option<Budget>,
    fut: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match budget {
        None => fut.await,
        Some(budget) => tokio::time::timeout_at(budget.deadline, fut)
            .await
            .unwrap_or_else(|_elapsed| Err(ProbeError::Timeout(budget.timeout))),
    }
}

// === impl IntOrString ===

impl Default for IntOrString {
    fn default() -> Self {
        Self::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(port) => write!(f, "{port}"),
            Self::String(port) => f.write_str(port),
        }
    }
}

impl IntOrString {
    /// The port number; named ports are not resolved.
    fn port(&self) -> Result<u16, ProbeError> {
        let port = match self {
            Self::Int(port) => u16::try_from(*port).ok(),
            Self::String(port) => port.parse::<u16>().ok(),
        };
        port.filter(|port| *port != 0)
            .ok_or_else(|| ProbeError::InvalidPort(self.to_string()))
    }
}

// === impl ProbeSpec ===

impl ProbeSpec {
    /// The first configured handler in Knative's order: httpGet, tcpSocket,
    /// grpc, exec (always fails), none (fails).
    fn handler(&self) -> Result<Handler<'_>, ProbeError> {
        if let Some(action) = &self.http_get {
            Ok(Handler::Http(action))
        } else if let Some(action) = &self.tcp_socket {
            Ok(Handler::Tcp(action))
        } else if let Some(action) = &self.grpc {
            Ok(Handler::Grpc(action))
        } else if self.exec.is_some() {
            Err(ProbeError::Exec)
        } else {
            Err(ProbeError::NoHandler)
        }
    }

    fn is_aggressive(&self) -> bool {
        self.period_seconds == 0
    }

    /// Standard-mode attempt timeout; like Go's zero `Client.Timeout`, `0`
    /// means none.
    fn standard_timeout(&self) -> Option<Duration> {
        u64::try_from(self.timeout_seconds)
            .ok()
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs)
    }
}

// === impl Prober ===

impl Prober {
    /// Creates a prober for `probes` (from [`parse_probes`]). With
    /// `autodetect_http2` (`ENABLE_HTTP2_AUTO_DETECTION`), HTTP probes try
    /// h2c first and fall back to HTTP/1.1.
    pub fn new(probes: Vec<ProbeSpec>, autodetect_http2: bool) -> Self {
        Self::with_options(probes, autodetect_http2, Timing::default(), Output::Stderr)
    }

    pub(crate) fn with_options(
        probes: Vec<ProbeSpec>,
        autodetect_http2: bool,
        timing: Timing,
        out: Output,
    ) -> Self {
        let probes = probes
            .into_iter()
            .map(|spec| ProbeState {
                spec,
                streak: AtomicU32::new(0),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                probes,
                autodetect_http2,
                timing,
                out,
                in_flight: Mutex::new(None),
            }),
        }
    }

    /// True when no probe is configured (the container is always ready).
    pub fn is_empty(&self) -> bool {
        self.inner.probes.is_empty()
    }

    /// Runs every probe concurrently and reports whether all succeeded.
    ///
    /// Callers arriving while a run is in flight wait for it and share its
    /// result; the first call after it completes starts a fresh run. The run
    /// is a spawned task, so it finishes even if every caller goes away. In
    /// aggressive mode a run may take up to 10 s.
    pub async fn probe(&self) -> bool {
        if self.inner.probes.is_empty() {
            return true;
        }
        let mut rx = {
            let mut slot = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *slot = Some(rx.clone());
                    let inner = Arc::clone(&self.inner);
                    tokio::spawn(async move {
                        // Clears the slot even if the run panics, so later
                        // calls start a new run instead of a dead channel.
                        let guard = ClearInFlight(Arc::clone(&inner));
                        let ready = inner.run().await;
                        drop(guard);
                        // No receiver left is fine: nobody waits any more.
                        let _ = tx.send(Some(ready));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(result) => result.unwrap_or(false),
            Err(_closed) => false,
        }
    }
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("probes", &self.inner.probes.len())
            .field("autodetect_http2", &self.inner.autodetect_http2)
            .finish_non_exhaustive()
    }
}

struct ClearInFlight(Arc<Inner>);

impl Drop for ClearInFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

// === impl Inner ===

impl Inner {
    /// One run: all probes concurrently; like Go's errgroup it waits for all
    /// of them and reports the first error to complete.
    async fn run(&self) -> bool {
        let mut pending: FuturesUnordered<_> = self
            .probes
            .iter()
            .map(|probe| self.run_probe(probe))
            .collect();
        let mut first_err = None;
        while let Some(result) = pending.next().await {
            if let Err(err) = result {
                first_err.get_or_insert(err);
            }
        }
        match first_err {
            None => true,
            Some(err) => {
                self.out.line(&ErrorChain(&err).to_string());
                false
            }
        }
    }

    async fn run_probe(&self, probe: &ProbeState) -> Result<(), ProbeError> {
        let handler = probe.spec.handler()?;
        if probe.spec.is_aggressive() {
            self.poll(probe, handler).await
        } else {
            self.attempt(handler, probe.spec.standard_timeout()).await
        }
    }

    /// Aggressive mode: attempt now and then at a fixed rate until the
    /// consecutive-success counter reaches the threshold or the window ends.
    async fn poll(&self, probe: &ProbeState, handler: Handler<'_>) -> Result<(), ProbeError> {
        let start = Instant::now();
        let deadline = start + self.timing.poll_window;
        let mut ticker = tokio::time::interval_at(
            start + self.timing.retry_interval,
            self.timing.retry_interval,
        );
        // Like Go's ticker: a slow attempt is followed at once by the next,
        // then the original schedule resumes.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let threshold = i64::from(probe.spec.success_threshold);
        let mut failures: u64 = 0;
        let mut last_err = None;
        loop {
            match self
                .attempt(handler, Some(self.timing.attempt_timeout))
                .await
            {
                Ok(()) => {
                    let streak = probe
                        .streak
                        .fetch_add(1, Ordering::Relaxed)
                        .saturating_add(1);
                    if i64::from(streak) >= threshold {
                        return Ok(());
                    }
                }
                Err(err) => {
                    probe.streak.store(0, Ordering::Relaxed);
                    failures += 1;
                    last_err = Some(err);
                }
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => break,
                _ = ticker.tick() => {}
            }
        }
        if let Some(err) = last_err {
            self.out.line(&format!(
                "aggressive probe error (failed {failures} times): {}",
                ErrorChain(&err)
            ));
        }
        Err(ProbeError::PollTimeout)
    }

    /// One attempt of one handler.
    async fn attempt(
        &self,
        handler: Handler<'_>,
        timeout: Option<Duration>,
    ) -> Result<(), ProbeError> {
        match handler {
            Handler::Http(action) => http::probe(action, self.autodetect_http2, timeout).await,
            Handler::Tcp(action) => {
                let budget = Budget::start(timeout);
                within(budget, tcp_probe(action)).await
            }
            Handler::Grpc(action) => grpc::probe(action, timeout).await,
        }
    }
}

/// Connects and closes at once.
async fn tcp_probe(action: &TcpSocketAction) -> Result<(), ProbeError> {
    let port = action.port.port()?;
    let host = if action.host.is_empty() {
        "127.0.0.1"
    } else {
        action.host.as_str()
    };
    connect(host, port).await.map(drop)
}

// === impl Budget ===

impl Budget {
    fn start(timeout: Option<Duration>) -> Option<Self> {
        timeout.map(|timeout| Self {
            deadline: Instant::now() + timeout,
            timeout,
        })
    }
}

// === impl Timing ===

impl Default for Timing {
    fn default() -> Self {
        Self {
            poll_window: POLL_WINDOW,
            retry_interval: RETRY_INTERVAL,
            attempt_timeout: AGGRESSIVE_ATTEMPT_TIMEOUT,
        }
    }
}

// === impl Output ===

impl Output {
    /// Writes one line; stderr write errors are ignored (nowhere to report them).
    fn line(&self, line: &str) {
        match self {
            Self::Stderr => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            #[cfg(test)]
            Self::Capture(lines) => lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.to_owned()),
        }
    }
}
