//! Breaker micro-benchmarks: the queue-proxy's and activator's concurrency
//! breaker (`kdp_proxy::breaker`), the one lock every proxied request takes.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p kdp-benches --bench breaker
//! ```
//!
//! Cases: `breaker/acquire_uncontended` (async acquire + release with free
//! slots), `breaker/try_acquire` (the activator pod tracker's non-blocking
//! reserve + release) and `breaker/acquire_contended/N` (N tasks on a
//! 2-worker runtime sharing a breaker with 10 slots, so most acquisitions
//! wait; time per acquisition).

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kdp_proxy::breaker::{Breaker, BreakerParams};
use tokio::time::Instant;

/// The queue-proxy's breaker for `containerConcurrency: 10`.
fn queue_proxy_breaker() -> Breaker {
    Breaker::new(BreakerParams {
        queue_depth: 100,
        max_concurrency: 10,
        initial_capacity: 10,
    })
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let b = queue_proxy_breaker();
    group.bench_function("acquire_uncontended", |bench| {
        bench.to_async(&rt).iter(|| async {
            let permit = b.acquire().await;
            black_box(&permit);
        });
    });

    group.bench_function("try_acquire", |bench| {
        bench.iter(|| black_box(b.try_acquire()));
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for tasks in [16_u64, 100] {
        group.bench_with_input(
            BenchmarkId::new("acquire_contended", tasks),
            &tasks,
            |bench, &tasks| {
                bench
                    .to_async(&rt)
                    .iter_custom(|iters| contended(queue_proxy_breaker(), tasks, iters));
            },
        );
    }
    group.finish();
}

/// `tasks` tasks share `iters` acquisitions; each holds its permit across
/// one yield so that the others have to queue. Returns the wall time.
async fn contended(breaker: Breaker, tasks: u64, iters: u64) -> Duration {
    let per_task = iters.div_ceil(tasks);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let permit = breaker.acquire().await.expect("queue holds every task");
                    tokio::task::yield_now().await;
                    drop(permit);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("bench task");
    }
    start.elapsed()
}

criterion_group! {
    name = benches;
    // Short by default so that the whole `cargo bench` stays near two
    // minutes; criterion's command-line flags override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = breaker
}
criterion_main!(benches);
