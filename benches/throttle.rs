//! Throttler micro-benchmarks: the activator's per-request pod choice
//! (`kdp_activator::throttle`), with 1, 10 and 100 ready pods.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p kdp-benches --bench throttle
//! ```
//!
//! One iteration is what a request with a known revision does on the fast
//! path: look the revision up in the [`Throttler`] registry,
//! `try_acquire` (revision capacity check, then the load-balancing policy
//! picks a pod and reserves a slot on it), then drop the lease (release, and
//! the dispatch check for waiters). Every pod has `containerConcurrency`
//! 10 and half of the revision's capacity is already leased out, unevenly
//! (even-numbered pods carry 4 requests, odd-numbered ones 5), so the policy
//! compares loads rather than seeing identical idle pods.
//!
//! Cases: `throttle/pick_least_loaded/N` (kdp's default policy: scan for
//! the least-loaded pods, random tie-break) and `throttle/pick_knative/N`
//! (`KDP_LOAD_BALANCING=knative`: round robin for cc 10), N = 1, 10, 100.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use kdp_activator::throttle::{
    Backends, Lease, LoadBalancing, Protocol, RevisionKey, ThrottleConfig, Throttler,
};

/// `containerConcurrency` of the benchmarked revision.
const CC: usize = 10;

/// A registry with one revision of `pods` healthy pods, and the leases that
/// load them (kept alive for the whole benchmark).
fn loaded(mode: LoadBalancing, pods: usize) -> (Throttler, RevisionKey, Vec<Lease>) {
    let throttler = Throttler::new(ThrottleConfig {
        load_balancing: mode,
        ..ThrottleConfig::default()
    });
    let key = RevisionKey::new("default", "hello-00001");
    // Other revisions in the registry, as on a shared activator.
    for i in 0..50 {
        throttler.upsert_revision(
            RevisionKey::new("default", format!("other-{i}-00001")),
            CC,
            Protocol::Http1,
        );
    }
    throttler.upsert_revision(key.clone(), CC, Protocol::Http1);
    let healthy = (0..pods)
        .map(|i| format!("10.244.{}.{}:8012", i / 200, i % 200 + 2))
        .collect();
    throttler.update_backends(&key, Backends::Pods { healthy });
    // Five leases per pod, then give one back on every even-numbered pod.
    let mut leases: Vec<Lease> = (0..pods * CC / 2)
        .map(|_| acquire(&throttler, &key))
        .collect();
    let mut dests: Vec<String> = leases.iter().map(|l| l.dest().to_owned()).collect();
    dests.sort_unstable();
    dests.dedup();
    for dest in dests.iter().step_by(2) {
        if let Some(i) = leases.iter().position(|l| l.dest() == dest) {
            drop(leases.swap_remove(i));
        }
    }
    (throttler, key, leases)
}

/// A lease, which the fast path hands out without waiting.
fn acquire(throttler: &Throttler, key: &RevisionKey) -> Lease {
    throttler
        .try_acquire(key)
        .now_or_never()
        .expect("a pod has room, so the lease is ready at once")
        .expect("the revision is known")
}

fn throttle(c: &mut Criterion) {
    let mut group = c.benchmark_group("throttle");
    for (name, mode) in [
        ("pick_least_loaded", LoadBalancing::LeastLoaded),
        ("pick_knative", LoadBalancing::Knative),
    ] {
        for pods in [1_usize, 10, 100] {
            let (throttler, key, _held) = loaded(mode, pods);
            group.bench_with_input(BenchmarkId::new(name, pods), &pods, |b, _| {
                b.iter(|| {
                    let lease = acquire(&throttler, &key);
                    black_box(lease.dest().len());
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default so that the whole `cargo bench` stays near two
    // minutes; criterion's command-line flags override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = throttle
}
criterion_main!(benches);
