//! `kdp-bench`: the load benchmark of the kdp data plane (issue 5,
//! DESIGN.md §7).
//!
//! ```text
//! kdp-bench [--quick] [--rounds N] [--queue-proxy PATH] [--kdp PATH]
//!           [--activator PATH] [--nginx PATH | --no-nginx] [--manifest PATH]
//!           [--out DIR] [--targets LIST] [--cold-starts LIST | --no-cold-start]
//! kdp-bench load ADDR [--path P] [--host H] [--rate RPS] [--connections N]
//!           [--duration SECS] [--count N]
//! kdp-bench upstream --port PORT
//! ```
//!
//! The first form is the suite: it starts a test upstream (`kdp-bench
//! upstream`, its own process), the targets in front of it (direct, the
//! queue-proxy with containerConcurrency 0 and 10, the activator in front of
//! a queue-proxy, nginx when installed), runs interleaved rounds of every workload
//! against every target, measures each proxy's CPU and memory from `/proc`,
//! then the cold starts and the activator's memory per held request, and
//! writes `bench-results/kdp-bench-<time>.{json,md}` (and `latest.*`). The markdown goes to stdout, progress to stderr.
//! `--targets direct,qp0,qp10,activator,nginx` runs only some targets (direct,
//! the baseline, always runs); `--cold-starts qp,activator,local,held` only
//! some of the scale-from-zero figures (`held`: the activator's memory per
//! held request and its queue bound).
//! `load` is the bare load generator against any loopback address; without
//! `--rate` it runs closed loop. Binaries default to the siblings of this
//! executable (`target/release/`). See docs/benchmarks.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the report goes to stdout, progress to stderr"
)]

mod activator;
mod cold;
mod held;
mod load;
mod procs;
mod report;
mod stats;
mod suite;
mod targets;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::targets::Binaries;

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kdp-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some("upstream") => match parse_upstream(&args[1..]) {
            Ok(port) => runtime.block_on(upstream::serve(port)),
            Err(e) => return usage_error(&e),
        },
        Some("load") => match parse_load(&args[1..]) {
            Ok(spec) => runtime.block_on(run_load(spec)),
            Err(e) => return usage_error(&e),
        },
        _ => match parse_suite(&args) {
            Ok(opts) => runtime.block_on(run_suite(opts)),
            Err(e) => return usage_error(&e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage:
  kdp-bench [--quick] [--rounds N] [--queue-proxy PATH] [--kdp PATH] [--activator PATH]
            [--nginx PATH | --no-nginx] [--manifest PATH] [--out DIR]
            [--targets direct,qp0,qp10,activator,nginx]
            [--cold-starts qp,activator,local,held | --no-cold-start]
  kdp-bench load ADDR [--path P] [--host H] [--rate RPS] [--connections N]
            [--duration SECS] [--count N]
  kdp-bench upstream --port PORT"
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("kdp-bench: {e:#}\n\n{}", usage());
    ExitCode::from(EX_USAGE)
}

async fn run_suite(opts: suite::Options) -> anyhow::Result<()> {
    let out = opts.out.clone();
    let report = suite::run(opts).await?;
    let md = report::markdown(&report);
    let (json, md_path) = report::write(&report, &md, &out)?;
    println!("{md}");
    eprintln!(
        "kdp-bench: wrote {} and {}",
        json.display(),
        md_path.display()
    );
    Ok(())
}

async fn run_load(spec: load::LoadSpec) -> anyhow::Result<()> {
    let r = load::run(&spec).await?;
    let s = stats::RunStats::new(0, &r, None);
    println!(
        "{} ok, {} failed, {} late in {:.2} s: {:.0} rps, {:.1} MB/s; \
         latency p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        s.ok,
        s.failed,
        s.late,
        r.elapsed.as_secs_f64(),
        s.rps,
        s.mb_s,
        s.p50_us,
        s.p99_us,
        s.p999_us,
        s.max_us
    );
    Ok(())
}

/// Pops the value of `flag`.
fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> anyhow::Result<&'a str> {
    it.next()
        .map(String::as_str)
        .with_context(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> anyhow::Result<T> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?}: not a number"))
}

fn parse_suite(args: &[String]) -> anyhow::Result<suite::Options> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let mut opts = suite::Options {
        quick: false,
        rounds: None,
        bins: Binaries {
            queue_proxy: exe_dir.join("queue-proxy"),
            kdp: exe_dir.join("kdp"),
            activator: exe_dir.join("activator"),
            nginx: targets::which("nginx"),
        },
        manifest: PathBuf::from("deploy/local/hello-world.yaml"),
        out: PathBuf::from("bench-results"),
        cold: true,
        targets: None,
        cold_starts: None,
        command: std::iter::once("kdp-bench".to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--rounds" => opts.rounds = Some(number(value(&mut it, arg)?, arg)?),
            "--queue-proxy" => opts.bins.queue_proxy = value(&mut it, arg)?.into(),
            "--kdp" => opts.bins.kdp = value(&mut it, arg)?.into(),
            "--activator" => opts.bins.activator = value(&mut it, arg)?.into(),
            "--nginx" => opts.bins.nginx = Some(value(&mut it, arg)?.into()),
            "--no-nginx" => opts.bins.nginx = None,
            "--manifest" => opts.manifest = value(&mut it, arg)?.into(),
            "--out" => opts.out = value(&mut it, arg)?.into(),
            "--no-cold-start" => opts.cold = false,
            "--targets" => {
                let all = targets::Kind::all().map(targets::Kind::id);
                opts.targets = Some(list(value(&mut it, arg)?, arg, &all)?);
            }
            "--cold-starts" => {
                let all = ["qp", "activator", "local", "held"].map(str::to_owned);
                opts.cold_starts = Some(list(value(&mut it, arg)?, arg, &all)?);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(opts)
}

/// A comma-separated list of names from `known`.
fn list(s: &str, flag: &str, known: &[String]) -> anyhow::Result<Vec<String>> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            if known.iter().any(|k| k == n) {
                Ok(n.to_owned())
            } else {
                bail!("{flag}: unknown name {n:?} (known: {})", known.join(","))
            }
        })
        .collect()
}

fn parse_upstream(args: &[String]) -> anyhow::Result<u16> {
    match args {
        [flag, port] if flag == "--port" => number(port, flag),
        _ => bail!("upstream needs --port PORT"),
    }
}

fn parse_load(args: &[String]) -> anyhow::Result<load::LoadSpec> {
    let mut it = args.iter();
    let addr: SocketAddr = number(value(&mut it, "load")?, "ADDR")?;
    if !addr.ip().is_loopback() {
        bail!("{addr}: the load generator only targets loopback addresses");
    }
    let mut spec = load::LoadSpec {
        addr,
        host: targets::HOST.to_owned(),
        path: "/".to_owned(),
        headers: Vec::new(),
        connections: 8,
        mode: load::Mode::Closed,
        duration: Duration::from_secs(5),
        max_requests: 10_000_000,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--path" => spec.path = value(&mut it, arg)?.to_owned(),
            "--host" => spec.host = value(&mut it, arg)?.to_owned(),
            "--rate" => {
                spec.mode = load::Mode::Open {
                    rate: number(value(&mut it, arg)?, arg)?,
                };
            }
            "--connections" => {
                spec.connections = number::<usize>(value(&mut it, arg)?, arg)?.max(1)
            }
            "--duration" => {
                let secs: f64 = number(value(&mut it, arg)?, arg)?;
                spec.duration =
                    Duration::try_from_secs_f64(secs.clamp(0.0, 3600.0)).context("--duration")?;
            }
            "--count" => spec.max_requests = number(value(&mut it, arg)?, arg)?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(spec)
}
