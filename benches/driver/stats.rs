//! Per-run figures and their summaries over rounds.

use serde::Serialize;

use crate::load::LoadResult;

/// One target, one workload, one round.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunStats {
    pub(crate) round: usize,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Open loop: requests sent over 1 ms late because every connection was busy.
    pub(crate) late: u64,
    pub(crate) rps: f64,
    /// Response body throughput, MB/s (10^6 bytes).
    pub(crate) mb_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    /// CPU seconds the proxy used during the run (none for direct).
    pub(crate) cpu_s: Option<f64>,
    /// `cpu_s` per 100 000 answered requests.
    pub(crate) cpu_s_per_100k: Option<f64>,
    /// Of a target made of a front process and more (the activator in front
    /// of its queue-proxy): the front process's share of `cpu_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) front_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) front_cpu_s_per_100k: Option<f64>,
}

impl RunStats {
    pub(crate) fn new(round: usize, r: &LoadResult, cpu_s: Option<f64>) -> Self {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        // No answer, no latency: NaN, which the summaries leave out (an
        // empty histogram would say 0 µs).
        let q = |quantile: f64| {
            if r.ok == 0 {
                f64::NAN
            } else {
                r.latency.value_at_quantile(quantile) as f64 / 1000.0
            }
        };
        Self {
            round,
            ok: r.ok,
            failed: r.failed,
            late: r.late,
            rps: r.ok as f64 / secs,
            mb_s: r.bytes as f64 / secs / 1e6,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if r.ok == 0 {
                f64::NAN
            } else {
                r.latency.max() as f64 / 1000.0
            },
            cpu_s,
            cpu_s_per_100k: cpu_s
                .filter(|_| r.ok > 0)
                .map(|c| c * 100_000.0 / r.ok as f64),
            front_cpu_s: None,
            front_cpu_s_per_100k: None,
        }
    }

    /// Records the front process's CPU seconds during the run.
    pub(crate) fn set_front_cpu(&mut self, cpu_s: f64) {
        self.front_cpu_s = Some(cpu_s);
        self.front_cpu_s_per_100k = (self.ok > 0).then(|| cpu_s * 100_000.0 / self.ok as f64);
    }
}

/// Median and range of one figure over rounds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub(crate) struct Agg {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

impl Agg {
    /// `None` for no values (NaNs are dropped).
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        let odd = Agg::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(Agg::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Agg::of([]), None);
    }
}
