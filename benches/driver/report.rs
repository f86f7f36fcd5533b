//! The report: DESIGN.md §7 verdicts, the markdown tables, and the files in
//! `bench-results/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::held::Held;
use crate::stats::Agg;
use crate::suite::{Cost, Report, TargetResult};
use crate::targets::Kind;

/// One figure of DESIGN.md §7 against what this run measured.
#[derive(Debug, Serialize)]
pub(crate) struct DesignTarget {
    pub(crate) figure: String,
    pub(crate) target: String,
    pub(crate) measured: String,
    /// `None`: not measured in this run.
    pub(crate) met: Option<bool>,
}

fn result<'a>(report: &'a Report, workload: &str, target: &str) -> Option<&'a TargetResult> {
    report
        .workloads
        .iter()
        .find(|w| w.id == workload)?
        .results
        .iter()
        .find(|r| r.target == target)
}

fn cost<'a>(report: &'a Report, target: &str) -> Option<&'a Cost> {
    report.cost.iter().find(|c| c.target == target)
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// The verdict for every figure of DESIGN.md §7.
pub(crate) fn design_targets(report: &Report) -> Vec<DesignTarget> {
    let qp = |cc| Kind::QueueProxy { cc }.name();
    let nginx = Kind::Nginx.name();
    let mut out = Vec::new();
    let mut row = |figure: &str, target: &str, measured: String, met: Option<bool>| {
        out.push(DesignTarget {
            figure: figure.to_owned(),
            target: target.to_owned(),
            measured,
            met,
        });
    };

    for cc in [0, 10] {
        let figure =
            format!("queue-proxy (cc={cc}) added latency vs direct, p50 / p99, at 1000 rps");
        match result(report, "tiny_fixed_rate", &qp(cc))
            .and_then(|r| Some((r.added_p50_us?, r.added_p99_us?)))
        {
            Some((p50, p99)) => row(
                &figure,
                "≤ 50 µs / ≤ 250 µs",
                format!("{} / {}", signed_us(p50.median), signed_us(p99.median)),
                Some(p50.median <= 50.0 && p99.median <= 250.0),
            ),
            None => row(
                &figure,
                "≤ 50 µs / ≤ 250 µs",
                "not measured".to_owned(),
                None,
            ),
        }
    }

    let cpu = |target: &str| {
        result(report, "max_throughput", target)
            .and_then(|r| r.cpu_s_per_100k)
            .map(|a| a.median)
    };
    let figure = "queue-proxy CPU per proxied request (max throughput, cc=0)";
    match (cpu(&qp(0)), cpu(&nginx)) {
        (Some(q), Some(n)) => row(
            figure,
            "below nginx as a reverse proxy",
            format!("{q:.2} vs nginx {n:.2} CPU s / 100k requests"),
            Some(q < n),
        ),
        (Some(q), None) => row(
            figure,
            "below nginx as a reverse proxy",
            format!("{q:.2} CPU s / 100k requests; nginx not measured"),
            None,
        ),
        _ => row(
            figure,
            "below nginx as a reverse proxy",
            "not measured".to_owned(),
            None,
        ),
    }
    row(
        "queue-proxy CPU per proxied request",
        "at most a third of Knative's Go queue-proxy",
        "not measured (no Go queue-proxy binary in this run)".to_owned(),
        None,
    );

    let mem = |f: fn(&Cost) -> Option<u64>, limit_mb: f64| -> (String, Option<bool>) {
        let values: Vec<(u32, f64)> = [0, 10]
            .into_iter()
            .filter_map(|cc| Some((cc, mb(f(cost(report, &qp(cc))?)?))))
            .collect();
        if values.is_empty() {
            return ("not measured".to_owned(), None);
        }
        let text = values
            .iter()
            .map(|(cc, v)| format!("cc={cc}: {v:.1} MB"))
            .collect::<Vec<_>>()
            .join(", ");
        (text, Some(values.iter().all(|(_, v)| *v <= limit_mb)))
    };
    let (text, met) = mem(|c| Some(c.rss_idle_kib), 5.0);
    row("queue-proxy resident memory, idle", "≤ 5 MB", text, met);
    let (text, met) = mem(|c| c.rss_idle_conns_kib, 20.0);
    row(
        "queue-proxy resident memory, 1000 open connections",
        "≤ 20 MB",
        text,
        met,
    );

    activator_rows(report, &mut row);

    for (id, figure, target, limit) in [
        (
            "queue_proxy_ready",
            "cold start: queue-proxy sees the user container ready",
            "within 10 ms of it listening",
            10.0,
        ),
        (
            "activator_forward",
            "cold start: activator forwards a held request",
            "within 10 ms of the queue-proxy answering ready",
            10.0,
        ),
        (
            "local_first_response",
            "local mode, hello-world from zero replicas",
            "first response within 100 ms",
            100.0,
        ),
    ] {
        let measured = report.cold_start.iter().find(|c| c.id == id);
        match measured.and_then(|c| c.ms) {
            Some(ms) => row(
                figure,
                target,
                format!("{:.1} ms (median of {})", ms.median, ms.n),
                Some(ms.median <= limit),
            ),
            None => row(
                figure,
                target,
                measured
                    .and_then(|c| c.note.clone())
                    .unwrap_or_else(|| "not measured".to_owned()),
                None,
            ),
        }
    }
    out
}

/// The rows for "activator, revision with ready pods: the same overhead
/// targets as the queue-proxy", from the activator measured alone.
fn activator_rows(report: &Report, row: &mut impl FnMut(&str, &str, String, Option<bool>)) {
    let name = Kind::Activator.name();
    let skipped = report
        .targets
        .iter()
        .find(|t| t.name == name && !t.ran)
        .map(|t| t.note.clone().unwrap_or_default());
    let unmeasured = |why: &Option<String>| match why {
        Some(why) => format!("not measured ({name} skipped: {why})"),
        None => "not measured".to_owned(),
    };
    let figure = "activator added latency over the queue-proxy (cc=0), p50 / p99, at 1000 rps";
    match result(report, "tiny_fixed_rate", &name)
        .and_then(|r| Some((r.added_over_qp_p50_us?, r.added_over_qp_p99_us?)))
    {
        Some((p50, p99)) => row(
            figure,
            "≤ 50 µs / ≤ 250 µs",
            format!("{} / {}", signed_us(p50.median), signed_us(p99.median)),
            Some(p50.median <= 50.0 && p99.median <= 250.0),
        ),
        None => row(figure, "≤ 50 µs / ≤ 250 µs", unmeasured(&skipped), None),
    }

    let figure = "activator CPU per proxied request (max throughput, activator alone)";
    let own = result(report, "max_throughput", &name).and_then(|r| r.front_cpu_s_per_100k);
    let nginx =
        result(report, "max_throughput", &Kind::Nginx.name()).and_then(|r| r.cpu_s_per_100k);
    match (own, nginx) {
        (Some(a), Some(n)) => row(
            figure,
            "below nginx as a reverse proxy",
            format!(
                "{:.2} vs nginx {:.2} CPU s / 100k requests",
                a.median, n.median
            ),
            Some(a.median < n.median),
        ),
        (Some(a), None) => row(
            figure,
            "below nginx as a reverse proxy",
            format!("{:.2} CPU s / 100k requests; nginx not measured", a.median),
            None,
        ),
        _ => row(
            figure,
            "below nginx as a reverse proxy",
            unmeasured(&skipped),
            None,
        ),
    }

    let alone = report
        .cost
        .iter()
        .find(|c| c.part_of.as_deref() == Some(&*name));
    for (figure, limit_mb, value) in [
        (
            "activator resident memory, idle",
            5.0,
            alone.map(|c| c.rss_idle_kib),
        ),
        (
            "activator resident memory, 1000 open connections",
            20.0,
            alone.and_then(|c| c.rss_idle_conns_kib),
        ),
    ] {
        let target = format!("≤ {limit_mb:.0} MB");
        match value {
            Some(kib) => row(
                figure,
                &target,
                format!("{:.1} MB", mb(kib)),
                Some(mb(kib) <= limit_mb),
            ),
            None => row(figure, &target, unmeasured(&skipped), None),
        }
    }
    held_row(&report.held_requests, row);
}

/// DESIGN.md §7's "activator memory per held request: ≤ 4 KB, bounded in
/// total" (KB = 1000 bytes, as MB elsewhere in the report).
fn held_row(h: &Held, row: &mut impl FnMut(&str, &str, String, Option<bool>)) {
    let figure = "activator memory per held request";
    let target = "≤ 4 KB, bounded in total";
    let Some(per) = h.bytes_per_request else {
        let why = h.note.as_deref().unwrap_or("failed, see below");
        row(figure, target, format!("not measured ({why})"), None);
        return;
    };
    let mut text = format!(
        "{:.2} KB ({} held: VmRSS +{:.1} MB)",
        per / 1e3,
        h.requests,
        mb(h.rss_after_kib.saturating_sub(h.rss_before_kib))
    );
    match (&h.bound, h.growth_past_bound()) {
        (Some(b), Some((_, second))) => {
            let _ = write!(
                text,
                "; past a bound of {}: {} of {} got 503 (max {}), VmRSS {:+.0} KB over the last {}",
                b.max_queued,
                b.extra_503,
                b.extra,
                b.reject_max_ms
                    .map_or_else(|| "—".to_owned(), |ms| format!("{ms:.1} ms")),
                second / 1e3,
                b.second_wave,
            );
        }
        _ => text.push_str("; bound not measured"),
    }
    let met = h.bounded().map(|bounded| bounded && per <= 4000.0);
    row(figure, target, text, met);
}

/// The whole report as markdown.
pub(crate) fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let _ = writeln!(md, "# kdp benchmarks\n");
    let _ = writeln!(
        md,
        "{} · {} mode, {} interleaved rounds, {:.0} s · {} × {} · {} MiB RAM · Linux {}\n",
        report.started,
        report.mode,
        report.rounds,
        report.duration_s,
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_mib"],
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(md, "Command: `{}`\n", report.command);
    let _ = writeln!(
        md,
        "Medians over rounds, (min–max) in brackets. *Added* is the target minus direct in the \
         same round; ratios are taken per round, then the median. Everything runs on loopback \
         on this machine: the load generator, the upstream and the proxy share its cores.\n"
    );

    let _ = writeln!(md, "## DESIGN.md §7 targets\n");
    let _ = writeln!(
        md,
        "| figure | target | measured | verdict |\n|---|---|---|---|"
    );
    for t in &report.design_targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {verdict} |",
            t.figure, t.target, t.measured
        );
    }

    for w in &report.workloads {
        let _ = writeln!(md, "\n## {}\n", w.title);
        let _ = writeln!(md, "{:.1} s per run.\n", w.duration_s);
        match w.id {
            "tiny_fixed_rate" | "handler_100ms" => {
                let _ = writeln!(
                    md,
                    "| target | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | p99 × nginx | failed |\n\
                     |---|---|---|---|---|---|---|---|---|"
                );
                for r in &w.results {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.target,
                        lat(r.p50_us),
                        lat(r.p99_us),
                        lat(r.p999_us),
                        added(r.added_p50_us),
                        added(r.added_p99_us),
                        added(r.added_p999_us),
                        ratio(r.p99_vs_nginx),
                        failed(r),
                    );
                }
                activator_alone_latency(&mut md, &w.results);
            }
            "max_throughput" => {
                let _ = writeln!(
                    md,
                    "| target | rps | × direct | × nginx | p50 | p99 | CPU s / 100k req | failed |\n\
                     |---|---|---|---|---|---|---|---|"
                );
                for r in &w.results {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.target,
                        num(r.rps, 0),
                        ratio(r.rps_vs_direct),
                        ratio(r.rps_vs_nginx),
                        lat(r.p50_us),
                        lat(r.p99_us),
                        num(r.cpu_s_per_100k, 2),
                        failed(r),
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    md,
                    "| target | rps | MB/s | × direct | × nginx | p50 | p99 | failed |\n\
                     |---|---|---|---|---|---|---|---|"
                );
                for r in &w.results {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.target,
                        num(r.rps, 0),
                        num(r.mb_s, 0),
                        ratio(r.rps_vs_direct),
                        ratio(r.rps_vs_nginx),
                        lat(r.p50_us),
                        lat(r.p99_us),
                        failed(r),
                    );
                }
            }
        }
    }

    let _ = writeln!(md, "\n## Cost per proxy\n");
    let _ = writeln!(
        md,
        "`activator alone` is the activator process of `activator+queue-proxy` by itself \
         (that target's figures are the sum of both processes).\n"
    );
    let _ = writeln!(
        md,
        "CPU from `/proc/<pid>/stat` (utime + stime of the whole process tree) during each run, \
         per 100k answered requests; memory from `/proc/<pid>/status`.\n"
    );
    let _ = writeln!(
        md,
        "| target | CPU s / 100k @ 1000 rps | CPU s / 100k @ max | CPU × nginx @ max | RSS idle | RSS after load | peak RSS (VmHWM) | RSS with {} idle connections |\n\
         |---|---|---|---|---|---|---|---|",
        crate::suite::IDLE_CONNECTIONS
    );
    for c in &report.cost {
        let of = c.part_of.as_deref().unwrap_or(&c.target);
        let alone = c.part_of.is_some();
        let cpu_at = |id: &str| {
            let r = result(report, id, of)?;
            if alone {
                r.front_cpu_s_per_100k
            } else {
                r.cpu_s_per_100k
            }
        };
        let cpu_vs_nginx = result(report, "max_throughput", of).and_then(|r| {
            if alone {
                r.front_cpu_vs_nginx
            } else {
                r.cpu_vs_nginx
            }
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} MB | {:.1} MB | {:.1} MB | {} |",
            c.target,
            num(cpu_at("tiny_fixed_rate"), 2),
            num(cpu_at("max_throughput"), 2),
            ratio(cpu_vs_nginx),
            mb(c.rss_idle_kib),
            mb(c.rss_after_load_kib),
            mb(c.peak_hwm_kib),
            c.rss_idle_conns_kib
                .map_or_else(|| "—".to_owned(), |k| format!("{:.1} MB", mb(k))),
        );
    }

    held_section(&mut md, &report.held_requests);

    let _ = writeln!(md, "\n## Cold start\n");
    let _ = writeln!(
        md,
        "| figure | median | min–max | runs |\n|---|---|---|---|"
    );
    for c in &report.cold_start {
        match c.ms {
            Some(ms) => {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} ms | {:.1}–{:.1} ms | {} |",
                    c.title, ms.median, ms.min, ms.max, ms.n
                );
            }
            None => {
                let note = c.note.as_deref().unwrap_or("failed, see notes");
                let _ = writeln!(md, "| {} | — | {note} | 0 |", c.title);
            }
        }
    }

    let skipped: Vec<_> = report.targets.iter().filter(|t| !t.ran).collect();
    if !skipped.is_empty() || !report.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for t in skipped {
            let _ = writeln!(
                md,
                "- {} skipped: {}",
                t.name,
                t.note.as_deref().unwrap_or("")
            );
        }
        for n in &report.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// Writes `kdp-bench-<time>.{json,md}` and `latest.{json,md}` into `dir`.
pub(crate) fn write(report: &Report, md: &str, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let stamp = report.started.replace([':', '-'], "");
    let json = serde_json::to_string_pretty(report)?;
    let json_path = dir.join(format!("kdp-bench-{stamp}.json"));
    let md_path = dir.join(format!("kdp-bench-{stamp}.md"));
    std::fs::write(&json_path, &json)?;
    std::fs::write(&md_path, md)?;
    std::fs::write(dir.join("latest.json"), &json)?;
    std::fs::write(dir.join("latest.md"), md)?;
    Ok((json_path, md_path))
}

/// `2025-01-31T12:34:56Z` for a Unix time.
pub(crate) fn iso8601(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The activator's held requests: memory per request, the bound.
fn held_section(md: &mut String, h: &Held) {
    let _ = writeln!(md, "\n## Activator: held requests\n");
    let Some(per) = h.bytes_per_request else {
        let _ = writeln!(
            md,
            "Not measured: {}.",
            h.note.as_deref().unwrap_or("failed")
        );
        return;
    };
    let _ = writeln!(
        md,
        "A revision without a ready pod; each request on a keep-alive connection of its own, \
         held by the activator (`kn_revision_request_queued`). VmRSS of the activator process \
         with 1 request held, then with {} more.\n",
        h.requests
    );
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let queued = |q: Option<u64>| q.map_or_else(|| "?".to_owned(), |q| q.to_string());
    let _ = writeln!(
        md,
        "| memory per held request | **{per:.0} bytes** ({:.2} KB) |",
        per / 1e3
    );
    let _ = writeln!(
        md,
        "| VmRSS with 1 held / {} held (reported queued: {}) | {:.1} MB / {:.1} MB |",
        h.requests + 1,
        queued(h.queued_reported),
        mb(h.rss_before_kib),
        mb(h.rss_after_kib),
    );
    let _ = writeln!(
        md,
        "| released when the pod turned ready | {} of {} answered 200, the last after {} |",
        h.released_ok,
        h.requests + 1,
        h.release_ms
            .map_or_else(|| "—".to_owned(), |ms| format!("{ms:.0} ms")),
    );
    if let (Some(b), Some((growth, second))) = (&h.bound, h.growth_past_bound()) {
        let ms = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1} ms"));
        let _ = writeln!(
            md,
            "| `KDP_MAX_QUEUED_PER_REVISION={}`: held (reported queued) | {} |",
            b.max_queued,
            queued(b.queued_at_bound),
        );
        let other = if b.extra_other.is_empty() {
            String::new()
        } else {
            format!("; others: {}", b.extra_other.join(", "))
        };
        let _ = writeln!(
            md,
            "| {} more requests past the bound | {} answered 503, p50 {}, max {}{other}; queued after: {} |",
            b.extra,
            b.extra_503,
            ms(b.reject_p50_ms),
            ms(b.reject_max_ms),
            queued(b.queued_after_extra),
        );
        let _ = writeln!(
            md,
            "| VmRSS at the bound / after the first {} past it / after all | \
             {:.1} MB / {:.1} MB / {:.1} MB ({:+.0} KB in all, {:+.0} KB over the last {}) |",
            b.extra - b.second_wave,
            mb(b.rss_at_bound_kib),
            mb(b.rss_after_first_wave_kib),
            mb(b.rss_after_extra_kib),
            growth / 1e3,
            second / 1e3,
            b.second_wave,
        );
        let _ = writeln!(
            md,
            "| queued once the held clients went away | {} |",
            queued(b.queued_after_close)
        );
    }
    if let Some(clean) = h.clean_shutdown {
        let _ = writeln!(
            md,
            "| activators exit 0 within 5 s of SIGTERM | {} |",
            if clean { "yes" } else { "**no**" }
        );
    }
    if let Some(note) = &h.note {
        let _ = writeln!(md, "\n{note}");
    }
}

/// Under a latency table: what the activator adds on its own.
fn activator_alone_latency(md: &mut String, results: &[TargetResult]) {
    let Some(r) = results.iter().find(|r| r.target == Kind::Activator.name()) else {
        return;
    };
    if r.added_over_qp_p50_us.is_none() {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe activator alone ({} minus queue-proxy cc=0 in the same round): \
         p50 {}, p99 {}.",
        r.target,
        added(r.added_over_qp_p50_us),
        added(r.added_over_qp_p99_us),
    );
}

/// A latency figure with a unit chosen by its median.
fn lat(a: Option<Agg>) -> String {
    a.map_or_else(|| "—".to_owned(), |a| fmt_range(a, false))
}

/// An added latency, signed.
fn added(a: Option<Agg>) -> String {
    a.map_or_else(|| "—".to_owned(), |a| fmt_range(a, true))
}

fn fmt_range(a: Agg, signed: bool) -> String {
    let (div, unit, prec) = match a.median.abs() {
        m if m < 10.0 => (1.0, "µs", 1),
        m if m < 1000.0 => (1.0, "µs", 0),
        m if m < 1e6 => (1e3, "ms", 2),
        _ => (1e6, "s", 2),
    };
    let f = |v: f64| {
        if signed {
            format!("{:+.prec$}", v / div)
        } else {
            format!("{:.prec$}", v / div)
        }
    };
    format!("{} {unit} ({}–{})", f(a.median), f(a.min), f(a.max))
}

fn signed_us(v: f64) -> String {
    format!("{v:+.0} µs")
}

fn ratio(a: Option<Agg>) -> String {
    a.map_or_else(
        || "—".to_owned(),
        |a| format!("{:.2}× ({:.2}–{:.2})", a.median, a.min, a.max),
    )
}

fn num(a: Option<Agg>, prec: usize) -> String {
    a.map_or_else(
        || "—".to_owned(),
        |a| format!("{:.prec$} ({:.prec$}–{:.prec$})", a.median, a.min, a.max),
    )
}

fn failed(r: &TargetResult) -> String {
    if r.failed == 0 {
        "0".to_owned()
    } else {
        format!("{} of {}", r.failed, r.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_of_known_times() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
