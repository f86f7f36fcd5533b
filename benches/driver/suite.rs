//! One benchmark run: start the upstream and every target, run interleaved
//! rounds of every workload, then the cost and cold start figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::process::Command;
use tokio::time::Instant;

use crate::load::{self, LoadSpec, Mode};
use crate::procs::{self, Managed, Usage, free_port};
use crate::stats::{Agg, RunStats};
use crate::targets::{Binaries, HOST, Kind, Target, describe_failure, loopback, wait_ready};
use crate::{cold, held, report};

/// Command-line options of a suite run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) rounds: Option<usize>,
    pub(crate) bins: Binaries,
    pub(crate) manifest: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) cold: bool,
    /// `--targets`: the [`Kind::id`]s to run (direct always runs); all when `None`.
    pub(crate) targets: Option<Vec<String>>,
    /// `--cold-starts`: which scale-from-zero figures to measure (the cold
    /// starts `qp`, `activator`, `local`, and `held`, the activator's memory
    /// per held request); all when `None`.
    pub(crate) cold_starts: Option<Vec<String>>,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// A load shape run against every target.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) path: &'static str,
    pub(crate) connections: usize,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) max_requests: u64,
    /// Left out for `containerConcurrency > 0`, with the reason.
    pub(crate) skip_limited: Option<&'static str>,
}

/// Upper bound of requests in a closed-loop run.
const CLOSED_MAX_REQUESTS: u64 = 5_000_000;
/// Idle keep-alive connections held open for the memory figure.
pub(crate) const IDLE_CONNECTIONS: usize = 1000;

/// The workloads; durations are chosen so that a full run (4 rounds × 5
/// targets) stays under 5 minutes and a quick one (2 rounds) under 1 minute
/// on 2 cores, cold starts included.
fn workloads(quick: bool) -> Vec<Workload> {
    let secs =
        |full: f64, quick_s: f64| Duration::from_secs_f64(if quick { quick_s } else { full });
    let open = |rate: u64, duration: Duration| Workload {
        id: "",
        title: "",
        path: "/",
        connections: 8,
        mode: Mode::Open { rate },
        duration,
        max_requests: rate * duration.as_secs().max(1) * 2,
        skip_limited: None,
    };
    vec![
        Workload {
            id: "tiny_fixed_rate",
            title: "Tiny responses at 1000 rps (open loop, 8 connections)",
            ..open(1000, secs(2.5, 0.6))
        },
        Workload {
            id: "max_throughput",
            title: "Maximum throughput, tiny responses (closed loop, 32 connections)",
            connections: 32,
            mode: Mode::Closed,
            max_requests: CLOSED_MAX_REQUESTS,
            ..open(1, secs(2.0, 0.6))
        },
        Workload {
            id: "handler_100ms",
            title: "100 ms handler at 1000 rps (open loop, 200 connections)",
            path: "/sleep/100",
            connections: 200,
            skip_limited: Some(
                "containerConcurrency 10 caps one pod at 100 rps with a 100 ms handler \
                 (Knative scales out instead), so this shape is run with cc=0 only",
            ),
            ..open(1000, secs(2.5, 0.8))
        },
        Workload {
            id: "stream_64kb",
            title: "64 KiB streamed responses (closed loop, 8 connections)",
            path: "/stream/64",
            mode: Mode::Closed,
            max_requests: CLOSED_MAX_REQUESTS,
            ..open(1, secs(1.5, 0.5))
        },
    ]
}

/// Everything a run produced; serialized as the JSON report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) started_unix: u64,
    pub(crate) started: String,
    pub(crate) mode: &'static str,
    pub(crate) command: String,
    pub(crate) machine: serde_json::Value,
    pub(crate) rounds: usize,
    pub(crate) targets: Vec<TargetStatus>,
    pub(crate) workloads: Vec<WorkloadReport>,
    pub(crate) cost: Vec<Cost>,
    pub(crate) cold_start: Vec<ColdStart>,
    /// The activator's memory per held request and its queue bound.
    pub(crate) held_requests: held::Held,
    pub(crate) design_targets: Vec<report::DesignTarget>,
    pub(crate) notes: Vec<String>,
    pub(crate) duration_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct TargetStatus {
    pub(crate) name: String,
    pub(crate) ran: bool,
    pub(crate) note: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkloadReport {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) duration_s: f64,
    pub(crate) results: Vec<TargetResult>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TargetResult {
    pub(crate) target: String,
    pub(crate) runs: Vec<RunStats>,
    pub(crate) rps: Option<Agg>,
    pub(crate) mb_s: Option<Agg>,
    pub(crate) p50_us: Option<Agg>,
    pub(crate) p99_us: Option<Agg>,
    pub(crate) p999_us: Option<Agg>,
    /// Latency minus direct's in the same round.
    pub(crate) added_p50_us: Option<Agg>,
    pub(crate) added_p99_us: Option<Agg>,
    pub(crate) added_p999_us: Option<Agg>,
    /// Per-round ratios against direct and nginx.
    pub(crate) rps_vs_direct: Option<Agg>,
    pub(crate) rps_vs_nginx: Option<Agg>,
    pub(crate) p99_vs_nginx: Option<Agg>,
    pub(crate) cpu_s_per_100k: Option<Agg>,
    pub(crate) cpu_vs_nginx: Option<Agg>,
    /// The front process alone (the activator of `activator+queue-proxy`).
    pub(crate) front_cpu_s_per_100k: Option<Agg>,
    pub(crate) front_cpu_vs_nginx: Option<Agg>,
    /// `activator+queue-proxy` minus `queue-proxy cc=0` in the same round:
    /// what the activator adds.
    pub(crate) added_over_qp_p50_us: Option<Agg>,
    pub(crate) added_over_qp_p99_us: Option<Agg>,
    pub(crate) failed: u64,
    pub(crate) total: u64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Cost {
    pub(crate) target: String,
    /// For a process measured alone, the target it is part of.
    pub(crate) part_of: Option<String>,
    pub(crate) rss_idle_kib: u64,
    pub(crate) rss_after_load_kib: u64,
    pub(crate) peak_hwm_kib: u64,
    pub(crate) rss_idle_conns_kib: Option<u64>,
    pub(crate) idle_conns: usize,
    pub(crate) note: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ColdStart {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) ms: Option<Agg>,
    pub(crate) runs_ms: Vec<f64>,
    pub(crate) note: Option<String>,
}

/// Runs the suite and writes the report; returns it.
pub(crate) async fn run(opts: Options) -> anyhow::Result<Report> {
    let began = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = std::env::temp_dir().join(format!("kdp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ticks = procs::clock_ticks() as f64;
    let rounds = opts.rounds.unwrap_or(if opts.quick { 2 } else { 4 }).max(1);
    let workloads = workloads(opts.quick);
    let mut notes = Vec::new();
    let pause = Duration::from_millis(if opts.quick { 50 } else { 100 });

    let (mut upstream, upstream_addr) = start_upstream(&dir).await?;
    eprintln!("kdp-bench: upstream on {upstream_addr}");

    let mut targets = Vec::new();
    let mut statuses = Vec::new();
    for kind in Kind::all() {
        if let Some(ids) = &opts.targets
            && kind != Kind::Direct
            && !ids.contains(&kind.id())
        {
            statuses.push(TargetStatus {
                name: kind.name(),
                ran: false,
                note: Some("not selected (--targets)".to_owned()),
            });
            continue;
        }
        match kind.start(&opts.bins, upstream_addr, &dir).await {
            Ok(t) => {
                eprintln!("kdp-bench: {} on {}", kind.name(), t.addr);
                statuses.push(TargetStatus {
                    name: kind.name(),
                    ran: true,
                    note: None,
                });
                targets.push(t);
            }
            Err(why) => {
                eprintln!("kdp-bench: skipping {}: {why}", kind.name());
                statuses.push(TargetStatus {
                    name: kind.name(),
                    ran: false,
                    note: Some(why),
                });
            }
        }
    }

    // Idle memory, settled, before any load beyond the readiness check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One row per proxy, plus one per front process measured alone.
    let measured: Vec<(&Target, bool)> = targets
        .iter()
        .filter(|t| !t.procs.is_empty())
        .flat_map(|t| std::iter::once((t, false)).chain(t.front.is_some().then_some((t, true))))
        .collect();
    let mut costs: Vec<Cost> = measured
        .iter()
        .map(|&(t, front)| Cost {
            target: cost_name(t, front),
            part_of: front.then(|| t.kind.name()),
            rss_idle_kib: usage_of(t, front).rss_kib,
            ..Cost::default()
        })
        .collect();

    // Warm-up, unrecorded.
    for t in &targets {
        let spec = spec_for(&workloads[1], t, Duration::from_millis(300));
        if let Err(e) = load::run(&spec).await {
            notes.push(format!("warm-up of {} failed: {e:#}", t.kind.name()));
        }
    }

    // Interleaved rounds: every target once per workload per round.
    let mut runs: Vec<Vec<Vec<RunStats>>> = vec![vec![Vec::new(); targets.len()]; workloads.len()];
    for round in 0..rounds {
        eprintln!("kdp-bench: round {}/{rounds}", round + 1);
        for (wi, w) in workloads.iter().enumerate() {
            for (ti, t) in targets.iter().enumerate() {
                if let (Some(why), Kind::QueueProxy { cc }) = (w.skip_limited, t.kind)
                    && cc > 0
                {
                    if round == 0 {
                        notes.push(format!("{}: {} skipped: {why}", w.id, t.kind.name()));
                    }
                    continue;
                }
                let spec = spec_for(w, t, w.duration);
                let before = (usage(t), usage_of(t, true));
                let result = load::run(&spec).await;
                let after = (usage(t), usage_of(t, true));
                let secs =
                    |a: Usage, b: Usage| a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / ticks;
                match result {
                    Ok(r) => {
                        let cpu = (!t.procs.is_empty()).then(|| secs(after.0, before.0));
                        let mut stats = RunStats::new(round, &r, cpu);
                        if t.front.is_some() {
                            stats.set_front_cpu(secs(after.1, before.1));
                        }
                        runs[wi][ti].push(stats);
                    }
                    Err(e) => notes.push(format!(
                        "round {round}, {}, {}: {}",
                        w.id,
                        t.kind.name(),
                        describe_failure(t, &e)
                    )),
                }
                // Let sockets and the proxies settle between runs.
                tokio::time::sleep(pause).await;
            }
        }
    }

    // Memory after load, then with idle keep-alive connections open.
    for t in targets.iter().filter(|t| !t.procs.is_empty()) {
        let rows: Vec<(usize, bool)> = measured
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| std::ptr::eq(*m, t))
            .map(|(i, &(_, front))| (i, front))
            .collect();
        for &(i, front) in &rows {
            costs[i].rss_after_load_kib = usage_of(t, front).rss_kib;
            costs[i].idle_conns = IDLE_CONNECTIONS;
        }
        match load::open_idle(t.addr, HOST, &t.headers, IDLE_CONNECTIONS).await {
            Ok(conns) => {
                // Idle for a while, as a pod's connections sit between
                // requests (kdp parks an HTTP/1 connection after a quiet
                // second). A pod is never silent meanwhile: kubelet probes,
                // the autoscaler scrapes every second. A request every
                // 500 ms on one more connection stands in for those.
                if let Ok(mut side) = load::connect(t.addr).await {
                    for _ in 0..6 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let _ = load::get(&mut side, HOST, "/", &t.headers).await;
                    }
                }
                for &(i, front) in &rows {
                    costs[i].rss_idle_conns_kib = Some(usage_of(t, front).rss_kib);
                }
                drop(conns);
            }
            Err(e) => {
                for &(i, _) in &rows {
                    costs[i].note = Some(format!("{IDLE_CONNECTIONS} idle connections: {e:#}"));
                }
            }
        }
        for &(i, front) in &rows {
            costs[i].peak_hwm_kib = usage_of(t, front).hwm_kib;
        }
    }
    for t in &mut targets {
        for p in &mut t.procs {
            if let Some(status) = p.exit_status() {
                notes.push(format!(
                    "{} exited during the run ({status}): {}",
                    p.name,
                    p.log_tail()
                ));
            }
            p.kill().await;
        }
        // The activator's fake API server and autoscaler, once it is gone.
        drop(t.cluster.take());
    }
    if let Some(status) = upstream.exit_status() {
        notes.push(format!(
            "the upstream exited during the run ({status}): {}",
            upstream.log_tail()
        ));
    }
    upstream.kill().await;

    let cold_start = if opts.cold {
        cold_starts(&opts, &dir, &mut notes).await
    } else {
        Vec::new()
    };
    let held_requests = held_requests(&opts, &dir).await;

    let names: Vec<String> = targets.iter().map(|t| t.kind.name()).collect();
    let workloads = workloads
        .iter()
        .zip(runs)
        .map(|(w, runs)| summarize(w, &names, runs))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = Report {
        started_unix,
        started: report::iso8601(started_unix),
        mode: if opts.quick { "quick" } else { "full" },
        command: opts.command.clone(),
        machine: procs::machine(),
        rounds,
        targets: statuses,
        workloads,
        cost: costs,
        cold_start,
        held_requests,
        design_targets: Vec::new(),
        notes,
        duration_s: began.elapsed().as_secs_f64(),
    };
    report.design_targets = report::design_targets(&report);
    Ok(report)
}

fn spec_for(w: &Workload, t: &Target, duration: Duration) -> LoadSpec {
    LoadSpec {
        addr: t.addr,
        host: HOST.to_owned(),
        path: w.path.to_owned(),
        headers: t.headers.clone(),
        connections: w.connections,
        mode: w.mode,
        duration,
        max_requests: w.max_requests,
    }
}

/// The sum over a target's processes; zero for direct or when unreadable.
fn usage(t: &Target) -> Usage {
    let mut total = Usage::default();
    for p in &t.procs {
        if let Ok(u) = p.usage() {
            total.cpu_ticks += u.cpu_ticks;
            total.rss_kib += u.rss_kib;
            total.hwm_kib += u.hwm_kib;
        }
    }
    total
}

/// The front process alone (`front`), or all of the target's processes.
fn usage_of(t: &Target, front: bool) -> Usage {
    if !front {
        return usage(t);
    }
    match (t.front, t.procs.first()) {
        (Some(_), Some(p)) => p.usage().unwrap_or_default(),
        _ => Usage::default(),
    }
}

/// The cost table's name for a target or its front process.
fn cost_name(t: &Target, front: bool) -> String {
    match t.front {
        Some(name) if front => format!("{name} alone"),
        _ => t.kind.name(),
    }
}

/// Starts `kdp-bench upstream` and waits until it answers.
async fn start_upstream(dir: &Path) -> anyhow::Result<(Managed, SocketAddr)> {
    let port = free_port()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["upstream", "--port", &port.to_string()]);
    let proc = Managed::spawn("upstream", cmd, &dir.join("upstream.log"))?;
    let addr = loopback(port);
    wait_ready(addr, &[], Duration::from_secs(10)).await?;
    Ok((proc, addr))
}

/// The activator's memory per held request and what it does past its
/// queue bound (`held` of `--cold-starts`).
async fn held_requests(opts: &Options, dir: &Path) -> held::Held {
    let selected = opts.cold
        && opts
            .cold_starts
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == "held"));
    let missing = [&opts.bins.activator, &opts.bins.queue_proxy]
        .into_iter()
        .find(|p| !p.is_file());
    if !selected {
        return held::Held::skipped("not selected (--cold-starts)".to_owned());
    }
    if let Some(path) = missing {
        return held::Held::skipped(format!("{} not found", path.display()));
    }
    if !crate::activator::pod_ip_usable() {
        return held::Held::skipped(format!("cannot bind {}", crate::activator::POD_IP));
    }
    eprintln!("kdp-bench: activator memory per held request");
    let bins = cold::ActivatorBins {
        activator: &opts.bins.activator,
        queue_proxy: &opts.bins.queue_proxy,
    };
    held::measure(bins, dir, held::Sizes::new(opts.quick)).await
}

async fn cold_starts(opts: &Options, dir: &Path, notes: &mut Vec<String>) -> Vec<ColdStart> {
    let (qp_rounds, activator_rounds, local_rounds) =
        if opts.quick { (3, 3, 2) } else { (10, 10, 5) };
    let selected = |id: &str| {
        opts.cold_starts
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == id))
    };
    let not_selected = || Some("not selected (--cold-starts)".to_owned());
    let mut out = Vec::new();

    let mut entry = ColdStart {
        id: "queue_proxy_ready",
        title: "queue-proxy: user container listening → probe answers ready",
        ms: None,
        runs_ms: Vec::new(),
        note: None,
    };
    if !selected("qp") {
        entry.note = not_selected();
    } else if opts.bins.queue_proxy.is_file() {
        for _ in 0..qp_rounds {
            match cold::queue_proxy(&opts.bins.queue_proxy, dir).await {
                Ok(d) => entry.runs_ms.push(d.as_secs_f64() * 1e3),
                Err(e) => notes.push(format!("queue-proxy cold start: {e:#}")),
            }
        }
    } else {
        entry.note = Some(format!("{} not found", opts.bins.queue_proxy.display()));
    }
    entry.ms = Agg::of(entry.runs_ms.iter().copied());
    out.push(entry);

    let mut entry = ColdStart {
        id: "activator_forward",
        title: "activator: pod's Endpoints ready (queue-proxy answering ready) → held request reaches the pod",
        ms: None,
        runs_ms: Vec::new(),
        note: None,
    };
    let missing = [&opts.bins.activator, &opts.bins.queue_proxy]
        .into_iter()
        .find(|p| !p.is_file());
    if !selected("activator") {
        entry.note = not_selected();
    } else if let Some(path) = missing {
        entry.note = Some(format!("{} not found", path.display()));
    } else if !crate::activator::pod_ip_usable() {
        entry.note = Some(format!("cannot bind {}", crate::activator::POD_IP));
    } else {
        let bins = cold::ActivatorBins {
            activator: &opts.bins.activator,
            queue_proxy: &opts.bins.queue_proxy,
        };
        match cold::activator_forward(bins, dir, activator_rounds).await {
            Ok(rounds) => {
                for r in rounds {
                    match r {
                        Ok(d) => entry.runs_ms.push(d.as_secs_f64() * 1e3),
                        Err(e) => notes.push(format!("activator cold start: {e:#}")),
                    }
                }
            }
            Err(e) => entry.note = Some(format!("{e:#}")),
        }
    }
    entry.ms = Agg::of(entry.runs_ms.iter().copied());
    out.push(entry);

    let mut entry = ColdStart {
        id: "local_first_response",
        title: "local mode: `kdp run` with zero replicas → first response",
        ms: None,
        runs_ms: Vec::new(),
        note: None,
    };
    if !selected("local") {
        entry.note = not_selected();
    } else if !opts.bins.kdp.is_file() {
        entry.note = Some(format!("{} not found", opts.bins.kdp.display()));
    } else if !opts.manifest.is_file() {
        entry.note = Some(format!("{} not found", opts.manifest.display()));
    } else {
        for _ in 0..local_rounds {
            match cold::local_mode(&opts.bins.kdp, &opts.manifest, dir).await {
                Ok(d) => entry.runs_ms.push(d.as_secs_f64() * 1e3),
                Err(e) => notes.push(format!("local mode cold start: {e:#}")),
            }
        }
    }
    entry.ms = Agg::of(entry.runs_ms.iter().copied());
    out.push(entry);
    out
}

/// Medians, ranges and per-round comparisons for one workload.
fn summarize(w: &Workload, names: &[String], runs: Vec<Vec<RunStats>>) -> WorkloadReport {
    let find = |name: &str| names.iter().position(|n| n == name);
    let direct = find(&Kind::Direct.name()).map(|i| runs[i].clone());
    let nginx = find(&Kind::Nginx.name()).map(|i| runs[i].clone());
    let qp0 = find(&Kind::QueueProxy { cc: 0 }.name()).map(|i| runs[i].clone());
    let same_round = |base: &Option<Vec<RunStats>>, round: usize| -> Option<RunStats> {
        base.as_ref()?.iter().find(|r| r.round == round).cloned()
    };
    let results = names
        .iter()
        .zip(runs)
        .filter(|(_, runs)| !runs.is_empty())
        .map(|(name, runs)| {
            let pick = |f: fn(&RunStats) -> f64| Agg::of(runs.iter().map(f));
            let paired = |base: &Option<Vec<RunStats>>, f: &dyn Fn(&RunStats, &RunStats) -> f64| {
                Agg::of(
                    runs.iter()
                        .filter_map(|r| same_round(base, r.round).map(|b| f(r, &b))),
                )
            };
            let is_direct = *name == Kind::Direct.name();
            let is_nginx = *name == Kind::Nginx.name();
            let is_activator = *name == Kind::Activator.name();
            let not_self = |cond: bool, a: Option<Agg>| if cond { None } else { a };
            TargetResult {
                target: name.clone(),
                rps: pick(|r| r.rps),
                mb_s: pick(|r| r.mb_s),
                p50_us: pick(|r| r.p50_us),
                p99_us: pick(|r| r.p99_us),
                p999_us: pick(|r| r.p999_us),
                added_p50_us: not_self(is_direct, paired(&direct, &|r, b| r.p50_us - b.p50_us)),
                added_p99_us: not_self(is_direct, paired(&direct, &|r, b| r.p99_us - b.p99_us)),
                added_p999_us: not_self(is_direct, paired(&direct, &|r, b| r.p999_us - b.p999_us)),
                rps_vs_direct: not_self(is_direct, paired(&direct, &|r, b| r.rps / b.rps)),
                rps_vs_nginx: not_self(is_nginx, paired(&nginx, &|r, b| r.rps / b.rps)),
                p99_vs_nginx: not_self(is_nginx, paired(&nginx, &|r, b| r.p99_us / b.p99_us)),
                cpu_s_per_100k: Agg::of(runs.iter().filter_map(|r| r.cpu_s_per_100k)),
                cpu_vs_nginx: not_self(
                    is_nginx,
                    Agg::of(runs.iter().filter_map(|r| {
                        let b = same_round(&nginx, r.round)?;
                        Some(r.cpu_s_per_100k? / b.cpu_s_per_100k?)
                    })),
                ),
                front_cpu_s_per_100k: Agg::of(runs.iter().filter_map(|r| r.front_cpu_s_per_100k)),
                front_cpu_vs_nginx: Agg::of(runs.iter().filter_map(|r| {
                    let b = same_round(&nginx, r.round)?;
                    Some(r.front_cpu_s_per_100k? / b.cpu_s_per_100k?)
                })),
                added_over_qp_p50_us: is_activator
                    .then(|| paired(&qp0, &|r, b| r.p50_us - b.p50_us))
                    .flatten(),
                added_over_qp_p99_us: is_activator
                    .then(|| paired(&qp0, &|r, b| r.p99_us - b.p99_us))
                    .flatten(),
                failed: runs.iter().map(|r| r.failed).sum(),
                total: runs.iter().map(|r| r.failed + r.ok).sum(),
                runs,
            }
        })
        .collect();
    WorkloadReport {
        id: w.id,
        title: w.title,
        duration_s: w.duration.as_secs_f64(),
        results,
    }
}
