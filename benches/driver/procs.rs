//! Child processes under test and what `/proc` says about them.
//!
//! CPU comes from `/proc/<pid>/stat` (`utime + stime`, in clock ticks of
//! `getconf CLK_TCK`, 100 on Linux), memory from `/proc/<pid>/status`
//! (`VmRSS` now, `VmHWM` peak). A target made of several processes (nginx's
//! master and workers) is the sum over the process and its children.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// A spawned process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) name: String,
    child: Child,
    pid: u32,
    /// Where its stdout and stderr go.
    pub(crate) log: PathBuf,
}

/// CPU and memory of one target at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// `utime + stime` over the process tree, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// `VmRSS` summed over the process tree, KiB.
    pub(crate) rss_kib: u64,
    /// `VmHWM` (peak RSS) summed over the process tree, KiB.
    pub(crate) hwm_kib: u64,
}

impl Managed {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("child exited at once")?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// How the process ended, if it has (then it cannot be measured):
    /// `exit status: 1`, `signal: 9 (SIGKILL)`.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// CPU and memory of the process and its direct children.
    pub(crate) fn usage(&self) -> io::Result<Usage> {
        let mut total = Usage::default();
        for pid in std::iter::once(self.pid).chain(children_of(self.pid)) {
            let one = usage_of(pid)?;
            total.cpu_ticks += one.cpu_ticks;
            total.rss_kib += one.rss_kib;
            total.hwm_kib += one.hwm_kib;
        }
        Ok(total)
    }

    /// SIGTERM (through `kill(1)`, as `unsafe` is forbidden), then SIGKILL
    /// after `grace`. Returns how it exited when it did within `grace`
    /// (`exit status: 0`), `None` when it had to be killed.
    pub(crate) async fn terminate(mut self, grace: Duration) -> Option<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Some(status.map_or_else(|e| e.to_string(), |s| s.to_string())),
            Err(_) => {
                self.kill().await;
                None
            }
        }
    }

    /// SIGKILL and reap. A process with children (nginx's master) gets a
    /// SIGTERM and 2 s to stop them first; children it leaves behind are
    /// killed too.
    pub(crate) async fn kill(&mut self) {
        let orphans = identify(&children_of(self.pid));
        if !orphans.is_empty() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status()
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        kill_all(&orphans);
    }

    /// The last lines of the log, on one line (notes are markdown list
    /// items), for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" ⏎ ")
    }
}

impl Drop for Managed {
    /// Also on early returns: no process of a run outlives the driver.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let orphans = identify(&children_of(self.pid));
            let _ = self.child.start_kill();
            kill_all(&orphans);
        }
    }
}

/// A process id with its start time (field 22 of `/proc/<pid>/stat`), so
/// that a recycled id is never mistaken for it.
type ProcId = (u32, u64);

fn identify(pids: &[u32]) -> Vec<ProcId> {
    pids.iter()
        .filter_map(|&pid| Some((pid, start_time(pid)?)))
        .collect()
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    after_comm(&stat).get(19)?.parse().ok()
}

/// SIGKILL (through `kill(1)`) to each of `procs` that is still the same
/// process: children of ours that outlived their parent.
fn kill_all(procs: &[ProcId]) {
    let alive: Vec<String> = procs
        .iter()
        .filter(|&&(pid, started)| start_time(pid) == Some(started))
        .map(|(pid, _)| pid.to_string())
        .collect();
    if alive.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(alive)
        .stderr(Stdio::null())
        .status();
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub(crate) fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The driver's own `MIMALLOC_*` variables, passed on to kdp's binaries
/// (whose environment is otherwise cleared) so that allocator options can be
/// compared: `MIMALLOC_PURGE_DELAY=0 scripts/bench.sh ...`.
pub(crate) fn allocator_env() -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("MIMALLOC_"))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// `utime + stime`, `VmRSS` and `VmHWM` of one process.
fn usage_of(pid: u32) -> io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields = after_comm(&stat);
    let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // Fields 14 and 15 of proc(5); `fields` starts at field 3 (state).
    let cpu_ticks = field(11) + field(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        cpu_ticks,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// The whitespace-separated fields after `(comm)`, which may contain spaces.
fn after_comm(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default()
}

/// Direct children of `pid`, found by scanning `/proc/*/stat` for the parent id.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| after_comm(&s).get(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Machine description for the report.
pub(crate) fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "kernel": kernel,
        "mem_mib": mem_kib / 1024,
    })
}
