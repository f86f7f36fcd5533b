//! KPA micro-benchmarks: the autoscaler's decision step
//! (`kdp_autoscaler::Decider::scale`) over full metric windows.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p kdp-benches --bench kpa
//! ```
//!
//! Cases: `kpa/decide` (default `config-autoscaler`, containerConcurrency
//! 10, a 60 s stable window and 6 s panic window filled with one stat per
//! second from each of 10 pods) and `kpa/record` (adding one pod's stat).

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kdp_autoscaler::{Config, Decider, DeciderSpec, RevisionAnnotations, Timestamp};
use kdp_stats::Stat;

const PODS: u32 = 10;

fn stat(pod: u32, second: u64) -> Stat {
    Stat {
        pod_name: format!("hello-00001-deployment-{pod}"),
        average_concurrent_requests: 6.0 + f64::from(pod % 3),
        average_proxied_concurrent_requests: 0.5,
        request_count: 40.0 + f64::from(pod),
        proxied_request_count: 2.0,
        process_uptime: 100.0 + f64::from(u32::try_from(second).unwrap_or(0)),
        timestamp: 0,
    }
}

fn kpa(c: &mut Criterion) {
    let spec = DeciderSpec::resolve(
        &Config::default(),
        &RevisionAnnotations::default(),
        10,
        true,
    );
    let start = Timestamp::from_unix_secs(1_700_000_000);
    let window = spec.stable_window.as_secs();
    let mut decider = Decider::new(spec, PODS, start);
    for second in 0..window {
        for pod in 0..PODS {
            decider.record(start + Duration::from_secs(second), &stat(pod, second));
        }
    }
    let now = start + Duration::from_secs(window);
    let mut group = c.benchmark_group("kpa");
    group.bench_function("decide", |b| {
        b.iter(|| black_box(decider.scale(now, PODS)));
    });
    let sample = stat(3, window);
    group.bench_function("record", |b| {
        b.iter(|| black_box(decider.record(now, &sample)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default so that the whole `cargo bench` stays near two
    // minutes; criterion's command-line flags override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = kpa
}
criterion_main!(benches);
