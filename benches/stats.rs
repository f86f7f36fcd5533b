//! Stats micro-benchmarks: the per-request accounting both binaries do
//! (`kdp_stats`), the queue-proxy's 1 s window and the `Stat` protobufs.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p kdp-benches --bench stats
//! ```
//!
//! Cases: `stats/request_in_out` (one request through the shared,
//! mutex-guarded accumulator), `stats/report_window` (closing a 1 s window),
//! `stats/encode_stat` (the queue-proxy's `Stat` on `:9090/metrics`),
//! `stats/encode_wire_messages` (an activator websocket frame for 100
//! revisions) and `stats/reporter_tick_100_revisions` (the activator
//! reporter's 1 s tick with 100 live revisions).

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kdp_stats::{
    ConcurrencyReporter, RequestStats, RevisionKey, SharedRequestStats, Stat, WireStatMessage,
    WireStatMessages,
};
use prost::Message as _;
use tokio::time::Instant;

fn sample_stat(pod: &str) -> Stat {
    Stat {
        pod_name: pod.to_owned(),
        average_concurrent_requests: 3.25,
        average_proxied_concurrent_requests: 1.5,
        request_count: 39.0,
        proxied_request_count: 12.0,
        process_uptime: 1234.5,
        timestamp: 0,
    }
}

fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    let t0 = Instant::now();

    let shared = SharedRequestStats::new(t0);
    let mut nanos = 0_u64;
    group.bench_function("request_in_out", |b| {
        b.iter(|| {
            nanos += 2;
            shared.request_in(t0 + Duration::from_nanos(nanos), false);
            shared.request_out(t0 + Duration::from_nanos(nanos + 1), false);
        });
    });

    let mut window = RequestStats::new(t0);
    let mut second = 0_u64;
    group.bench_function("report_window", |b| {
        b.iter(|| {
            second += 1;
            let now = t0 + Duration::from_secs(second);
            window.request_in(now, true);
            black_box(window.report(now + Duration::from_millis(500)))
        });
    });

    let stat = sample_stat("hello-00001-deployment-5d8f9c7b4-x2x9z");
    group.bench_function("encode_stat", |b| {
        b.iter(|| black_box(stat.encode_to_vec()));
    });

    let frame = WireStatMessages {
        messages: (0..100)
            .map(|i| {
                WireStatMessage::new(
                    "default",
                    format!("service-{i}-00001"),
                    sample_stat("activator-7c9f8d6b5-abcde"),
                )
            })
            .collect(),
    };
    group.bench_function("encode_wire_messages", |b| {
        b.iter(|| black_box(frame.to_bytes()));
    });

    let mut reporter = ConcurrencyReporter::<RevisionKey>::new();
    let keys: Vec<RevisionKey> = (0..100)
        .map(|i| RevisionKey::new("default", format!("service-{i}-00001")))
        .collect();
    for key in &keys {
        // One request stays in flight, so every revision stays live.
        let _poke = reporter.request_in(key, t0);
    }
    let mut tick = 0_u64;
    group.bench_function("reporter_tick_100_revisions", |b| {
        b.iter(|| {
            tick += 1;
            black_box(reporter.tick(t0 + Duration::from_secs(tick)))
        });
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
    targets = stats
}
criterion_main!(benches);
