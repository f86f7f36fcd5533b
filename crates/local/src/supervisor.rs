//! The process supervisor: one child process per replica.
//!
//! Sits at the far end of the local request path (router → activator core → queue-proxy core
//! → **user process**), in place of the kubelet and the container runtime. A [`Replica`] runs
//! a revision's command with the revision's env plus `PORT`, re-emits the child's output
//! prefixed with `[<revision>/<replica>]`, restarts it with exponential backoff when it exits
//! on its own, and on [`Replica::stop`] sends SIGTERM, then SIGKILL after the grace period.
//! Each child leads its own process group and signals go to the whole group, so grandchildren
//! (`sh -c 'app & ...'`) never outlive it. Lifecycle is reported as [`ProcessEvent`]s on a
//! channel; [`free_port`] and [`wait_listening`] help the caller wire the replica's port.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// First restart delay after a crash.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Largest restart delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A child that ran this long before exiting restarts with the initial delay again.
pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long [`Replica::stop`] waits after SIGTERM before SIGKILL, unless told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How often [`wait_listening`] tries to connect.
pub const LISTEN_POLL: Duration = Duration::from_millis(5);

/// What to run for one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    /// `<revision>/<replica>`: the output prefix and the name in events.
    pub label: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment on top of ours (see [`crate::revision::Revision::process_env`]).
    pub env: Vec<(String, String)>,
    /// The working directory, if not ours.
    pub working_dir: Option<PathBuf>,
}

/// When and how fast to restart a child that exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles on every further crash.
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
    /// A run at least this long resets the delay to `initial_backoff`.
    pub reset_after: Duration,
    /// Give up after this many restarts in a row; `None` = never.
    pub max_restarts: Option<u32>,
}

/// Where the child's output goes.
#[derive(Clone, Debug, Default)]
pub enum Output {
    /// Our stdout and stderr, each line prefixed with `[<label>] `.
    #[default]
    Terminal,
    /// A channel (tests, or a runtime that logs differently).
    Capture(mpsc::UnboundedSender<OutputLine>),
    /// Nowhere.
    Discard,
}

/// One line of a child's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    /// The replica.
    pub label: String,
    /// Which stream.
    pub stream: Stream,
    /// The line, without its newline; invalid UTF-8 is replaced.
    pub line: String,
}

/// A child's output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// A replica's lifecycle, as the supervisor reports it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessEvent {
    /// The process started (first start or a restart).
    Started {
        /// The replica.
        label: String,
        /// Its pid (also its process group).
        pid: u32,
    },
    /// The process exited on its own (a crash, or a clean exit nobody asked for).
    Exited {
        /// The replica.
        label: String,
        /// How it ended.
        status: ExitStatus,
        /// How long it ran.
        uptime: Duration,
    },
    /// A restart is scheduled.
    Restarting {
        /// The replica.
        label: String,
        /// 1 for the first restart in a row, 2 for the next, ...
        attempt: u32,
        /// The delay before it.
        backoff: Duration,
    },
    /// A restart could not spawn the program.
    SpawnFailed {
        /// The replica.
        label: String,
        /// Why.
        error: std::io::Error,
    },
    /// `max_restarts` was reached; the replica stays down.
    GaveUp {
        /// The replica.
        label: String,
        /// Restarts made.
        restarts: u32,
    },
    /// The process was stopped on request.
    Stopped {
        /// The replica.
        label: String,
        /// How it ended; `None` when it was not running.
        status: Option<ExitStatus>,
        /// Whether it needed SIGKILL after the grace period.
        killed: bool,
    },
}

/// A supervised replica. Dropping it kills the whole process group at once; prefer
/// [`Replica::stop`] for a graceful end.
#[derive(Debug)]
pub struct Replica {
    label: String,
    pid: Arc<AtomicU32>,
    stop: Option<oneshot::Sender<Duration>>,
    task: Option<JoinHandle<Option<ExitStatus>>>,
}

/// The port did not accept a connection in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("nothing listens on 127.0.0.1:{port} after {waited:?}")]
pub struct NotListening {
    /// The port.
    pub port: u16,
    /// How long we tried.
    pub waited: Duration,
}

/// Picks a free loopback port by binding `127.0.0.1:0` and releasing it.
///
/// # Errors
/// The bind fails (no loopback, descriptors exhausted).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `127.0.0.1:port` accepts a TCP connection, trying every [`LISTEN_POLL`].
///
/// # Errors
/// [`NotListening`] after `timeout`.
pub async fn wait_listening(port: u16, timeout: Duration) -> Result<(), NotListening> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let poll = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(LISTEN_POLL).await;
        }
    };
    tokio::time::timeout(timeout, poll)
        .await
        .map_err(|_| NotListening {
            port,
            waited: timeout,
        })
}

// === impl RestartPolicy ===

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            reset_after: DEFAULT_RESET_AFTER,
            max_restarts: None,
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `attempt` (1-based): doubling, capped.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

// === impl Replica ===

impl Replica {
    /// Starts the process and supervises it on the current tokio runtime.
    ///
    /// # Errors
    /// The first spawn fails (program not found, not executable, bad working directory). Later
    /// spawn failures are [`ProcessEvent::SpawnFailed`] and retried with backoff.
    pub fn spawn(
        spec: ProcessSpec,
        policy: RestartPolicy,
        output: Output,
        events: mpsc::UnboundedSender<ProcessEvent>,
    ) -> std::io::Result<Self> {
        let child = start(&spec, &output)?;
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let _ = events.send(ProcessEvent::Started {
            label: spec.label.clone(),
            pid: pid.load(Ordering::SeqCst),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let label = spec.label.clone();
        let run = Supervise {
            spec,
            policy,
            output,
            events,
            pid: Arc::clone(&pid),
        };
        let task = tokio::spawn(run.run(child, stop_rx));
        Ok(Self {
            label,
            pid,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The replica's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The running process's pid, `None` between a crash and its restart.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Stops the replica: SIGTERM to its process group, SIGKILL after `grace`, and waits for
    /// the exit. Returns how the process ended (`None` if it was not running).
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        let task = self.task.take()?;
        task.await.ok().flatten()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            kill_group(self.pid.load(Ordering::SeqCst), Signal::KILL);
            task.abort();
        }
    }
}

struct Supervise {
    spec: ProcessSpec,
    policy: RestartPolicy,
    output: Output,
    events: mpsc::UnboundedSender<ProcessEvent>,
    pid: Arc<AtomicU32>,
}

impl Supervise {
    async fn run(
        self,
        mut child: Child,
        mut stop: oneshot::Receiver<Duration>,
    ) -> Option<ExitStatus> {
        let label = &self.spec.label;
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let status = tokio::select! {
                status = child.wait() => status,
                grace = &mut stop => {
                    // A dropped sender means the Replica was dropped: no grace.
                    let grace = grace.unwrap_or(Duration::ZERO);
                    let (status, killed) = self.terminate(&mut child, grace).await;
                    let _ = self.events.send(ProcessEvent::Stopped { label: label.clone(), status, killed });
                    return status;
                }
            };
            let pid = self.pid.swap(0, Ordering::SeqCst);
            // The leader is gone; like a container, take its group down with it.
            kill_group(pid, Signal::KILL);
            if let Ok(status) = status {
                let uptime = started.elapsed();
                let _ = self.events.send(ProcessEvent::Exited {
                    label: label.clone(),
                    status,
                    uptime,
                });
                if uptime >= self.policy.reset_after {
                    attempt = 0;
                }
            }
            // Restart, retrying failed spawns, until stopped or out of attempts.
            loop {
                if self.policy.max_restarts.is_some_and(|max| attempt >= max) {
                    let _ = self.events.send(ProcessEvent::GaveUp {
                        label: label.clone(),
                        restarts: attempt,
                    });
                    // Nothing runs; wait for the stop (or the drop) to report it.
                    let _ = (&mut stop).await;
                    let _ = self.events.send(ProcessEvent::Stopped {
                        label: label.clone(),
                        status: None,
                        killed: false,
                    });
                    return None;
                }
                attempt += 1;
                let backoff = self.policy.backoff(attempt);
                let _ = self.events.send(ProcessEvent::Restarting {
                    label: label.clone(),
                    attempt,
                    backoff,
                });
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => {
                        let _ = self.events.send(ProcessEvent::Stopped { label: label.clone(), status: None, killed: false });
                        return None;
                    }
                }
                match start(&self.spec, &self.output) {
                    Ok(next) => {
                        child = next;
                        let pid = child.id().unwrap_or(0);
                        self.pid.store(pid, Ordering::SeqCst);
                        let _ = self.events.send(ProcessEvent::Started {
                            label: label.clone(),
                            pid,
                        });
                        break;
                    }
                    Err(error) => {
                        let _ = self.events.send(ProcessEvent::SpawnFailed {
                            label: label.clone(),
                            error,
                        });
                    }
                }
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns the exit status and whether SIGKILL
    /// was needed.
    async fn terminate(&self, child: &mut Child, grace: Duration) -> (Option<ExitStatus>, bool) {
        let pid = self.pid.load(Ordering::SeqCst);
        kill_group(pid, Signal::TERM);
        let (status, killed) = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => (status.ok(), false),
            Err(_) => {
                kill_group(pid, Signal::KILL);
                (child.wait().await.ok(), true)
            }
        };
        // Grandchildren that ignored SIGTERM must not outlive the replica.
        kill_group(pid, Signal::KILL);
        self.pid.store(0, Ordering::SeqCst);
        (status, killed)
    }
}

/// Spawns the child in its own process group with piped output.
fn start(spec: &ProcessSpec, output: &Output) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let piped = !matches!(output, Output::Discard);
    let pipe = || if piped { Stdio::piped() } else { Stdio::null() };
    cmd.stdout(pipe()).stderr(pipe());
    let mut child = cmd.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(
            out,
            spec.label.clone(),
            Stream::Stdout,
            output.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(
            err,
            spec.label.clone(),
            Stream::Stderr,
            output.clone(),
        ));
    }
    Ok(child)
}

/// Copies a child's stream line by line to `output`.
async fn pump(stream: impl AsyncRead + Unpin, label: String, which: Stream, output: Output) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        match &output {
            Output::Terminal => {
                // Whole lines under the lock, so replicas' output never interleaves mid-line.
                let _ = match which {
                    Stream::Stdout => writeln!(std::io::stdout().lock(), "[{label}] {line}"),
                    Stream::Stderr => writeln!(std::io::stderr().lock(), "[{label}] {line}"),
                };
            }
            Output::Capture(tx) => {
                let sent = tx.send(OutputLine {
                    label: label.clone(),
                    stream: which,
                    line: line.to_owned(),
                });
                if sent.is_err() {
                    return;
                }
            }
            Output::Discard => return,
        }
    }
}

/// Signals a process group; pid 0 (nothing running) and pid 1 are never signalled, and a group
/// that is already gone is not an error.
fn kill_group(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .and_then(Pid::from_raw)
    else {
        return;
    };
    let _ = kill_process_group(pid, signal);
}

#[cfg(test)]
mod tests;
