use std::collections::BTreeSet;
use std::time::Duration;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use tokio::time::Instant;

use super::*;
use crate::throttle::{DEFAULT_MAX_QUEUED, LoadBalancing};

const MAX: usize = REVISION_MAX_CONCURRENCY;

fn key() -> RevisionKey {
    RevisionKey::new("test-namespace", "test-revision")
}

fn throttler_with(
    cc: usize,
    load_balancing: LoadBalancing,
    max_queued: usize,
) -> RevisionThrottler {
    let config = ThrottleConfig {
        load_balancing,
        max_queued,
    };
    RevisionThrottler::new(key(), cc, Protocol::Http1, &config)
}

/// kdp's default policy.
fn throttler(cc: usize) -> RevisionThrottler {
    throttler_with(cc, LoadBalancing::LeastLoaded, DEFAULT_MAX_QUEUED)
}

/// Knative's policies.
fn knative(cc: usize) -> RevisionThrottler {
    throttler_with(cc, LoadBalancing::Knative, DEFAULT_MAX_QUEUED)
}

fn pods(dests: &[&str]) -> Backends {
    Backends::Pods {
        healthy: dests.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// `n` pod dests that sort in numeric order.
fn pod_dests(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.0.{:02}:8012", i + 10))
        .collect()
}

fn activators(count: usize, index: usize) -> Activators {
    Activators {
        count,
        index: Some(index),
    }
}

fn poll(acquire: &mut Acquire) -> Poll<Result<Lease>> {
    Pin::new(acquire).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// The lease of a request that must be granted right away.
#[track_caller]
fn granted(mut acquire: Acquire) -> Lease {
    match poll(&mut acquire) {
        Poll::Ready(Ok(lease)) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// A request that must wait.
#[track_caller]
fn waiting(throttler: &RevisionThrottler) -> Acquire {
    let mut acquire = throttler.try_acquire();
    assert!(poll(&mut acquire).is_pending(), "expected to wait");
    acquire
}

fn dests(leases: &[Lease]) -> BTreeSet<&str> {
    leases.iter().map(Lease::dest).collect()
}

// === capacity (§3.3, item 91) ===

#[test]
fn capacity_without_trackers_uses_backends() {
    // (cc, activators, backends) -> capacity, for the B-based formula.
    let table = [
        ((10, 0, 1), 10),
        ((10, 0, 10), 100),
        ((10, 0, 100), 1000),
        ((10, 5, 10), 20),
        ((10, 200, 10), 1),
        ((10, 200, 0), 0),
        // cc 0: the infinite breaker, closed (0) or open.
        ((0, 0, 0), 0),
        ((0, 0, 1), MAX),
        ((0, 0, 10), MAX),
        ((0, 200, 0), 0),
        ((0, 200, 1), MAX),
    ];
    for ((cc, activators, backends), want) in table {
        assert_eq!(
            capacity(cc, backends, 0, activators),
            want,
            "cc {cc}, {activators} activators, {backends} backends"
        );
    }
}

#[test]
fn capacity_one_tracker_without_backends() {
    assert_eq!(capacity(10, 0, 1, 1), 10);
}

#[test]
fn capacity_with_pod_trackers() {
    // (cc, pods, activators, index) -> (capacity, assigned pods)
    let table = [
        ((10, 2, 1, 0), (20, 2)),
        ((10, 2, 2, 0), (10, 1)),
        ((10, 3, 2, 0), (20, 2)),
        ((10, 3, 2, 1), (10, 1)),
        ((1, 5, 2, 0), (3, 3)),
        ((1, 5, 2, 1), (2, 2)),
        // cc 0: every pod, breaker open.
        ((0, 3, 2, 1), (MAX, 3)),
    ];
    for ((cc, n, count, index), (want_capacity, want_assigned)) in table {
        let t = throttler(cc);
        t.update_activators(activators(count, index));
        t.update_backends(Backends::Pods {
            healthy: pod_dests(n),
        });
        let case = format!("cc {cc}, {n} pods, {count} activators, index {index}");
        assert_eq!(t.capacity(), want_capacity, "{case}");
        assert_eq!(t.assigned_dests().len(), want_assigned, "{case}");
    }
}

#[test]
fn capacity_clamps_to_revision_max() {
    assert_eq!(capacity(0, MAX + 1, MAX + 1, 0), MAX);
    assert_eq!(capacity(10, MAX, MAX, 1), MAX);
    assert_eq!(capacity(usize::MAX, 2, 0, 1), MAX);
}

#[test]
fn capacity_via_cluster_ip() {
    let t = throttler(10);
    t.update_activators(activators(5, 3));
    t.update_backends(Backends::ClusterIp {
        dest: "10.96.0.1:80".into(),
        ready_pods: 10,
    });
    assert_eq!(t.capacity(), 20);
    assert!(t.assigned_dests().is_empty());
}

#[test]
fn no_backends_means_no_capacity() {
    let t = throttler(10);
    assert_eq!(t.capacity(), 0);
    t.update_backends(pods(&[]));
    assert_eq!(t.capacity(), 0);
    t.update_backends(Backends::ClusterIp {
        dest: "10.96.0.1:80".into(),
        ready_pods: 0,
    });
    assert_eq!(t.capacity(), 0);
}

// Item 97.
#[test]
fn pod_assignment_cc_42_six_pods_four_activators() {
    let t = throttler(42);
    t.update_activators(activators(4, 0));
    t.update_backends(pods(&["ip5", "ip3", "ip0", "ip1", "ip4", "ip2"]));
    assert_eq!(t.assigned_dests(), ["ip0", "ip4"]);
    assert_eq!(t.capacity(), 84);
    t.update_backends(Backends::None);
    assert_eq!(t.capacity(), 0);
    assert!(t.assigned_dests().is_empty());
}

// Item 98.
#[test]
fn cc_0_assigns_every_pod() {
    let t = throttler(0);
    t.update_activators(activators(4, 1));
    t.update_backends(pods(&["ip0", "ip1", "ip2"]));
    assert_eq!(t.assigned_dests(), ["ip0", "ip1", "ip2"]);
    assert!(t.capacity() > 0, "open");
    t.update_backends(Backends::None);
    assert_eq!(t.capacity(), 0, "closed");
}

// Item 96.
#[test]
fn trackers_sorted_by_dest_string() {
    let t = throttler(1);
    t.update_backends(pods(&[
        "10.0.0.9:8012",
        "10.0.0.10:8012",
        "10.0.0.1:8012",
        "10.0.0.9:8012",
    ]));
    // Lexicographic, not numeric: '0' sorts before ':'.
    assert_eq!(
        t.assigned_dests(),
        ["10.0.0.10:8012", "10.0.0.1:8012", "10.0.0.9:8012"]
    );
    assert_eq!(t.capacity(), 3, "duplicates count once");
}

#[test]
fn activator_change_recomputes_subset() {
    let t = throttler(1);
    t.update_backends(pods(&["a", "b"]));
    assert_eq!(t.capacity(), 2);
    t.update_activators(activators(2, 1));
    assert_eq!(t.assigned_dests(), ["b"]);
    assert_eq!(t.capacity(), 1);
    t.update_activators(activators(1, 0));
    assert_eq!(t.capacity(), 2);
}

// === dest selection (item 95) ===

#[test]
fn single_pod_gets_the_request() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let lease = granted(t.try_acquire());
    assert_eq!(lease.dest(), "10.0.0.1:8012");
    assert!(!lease.is_cluster_ip());
    assert_eq!(t.in_flight(), 1);
    drop(lease);
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn cc_0_replacement_update() {
    let t = throttler(0);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    t.update_backends(pods(&["10.0.0.2:8012"]));
    assert_eq!(granted(t.try_acquire()).dest(), "10.0.0.2:8012");
}

#[test]
fn cluster_ip_overrides_pods() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    t.update_backends(Backends::ClusterIp {
        dest: "10.96.0.1:80".into(),
        ready_pods: 3,
    });
    let leases: Vec<_> = (0..3).map(|_| granted(t.try_acquire())).collect();
    assert!(
        leases
            .iter()
            .all(|l| l.dest() == "10.96.0.1:80" && l.is_cluster_ip())
    );
    // cc 1 × 3 ready pods: the fourth waits (item 94).
    let _fourth = waiting(&t);
}

#[test]
fn two_cc_1_pods_both_used() {
    for t in [throttler(1), knative(1)] {
        t.update_backends(pods(&["10.0.0.1:8012", "10.0.0.2:8012"]));
        let leases = [granted(t.try_acquire()), granted(t.try_acquire())];
        assert_eq!(
            dests(&leases),
            BTreeSet::from(["10.0.0.1:8012", "10.0.0.2:8012"])
        );
    }
}

#[test]
fn knative_cc_3_clumps_on_the_first_pod() {
    let t = knative(3);
    t.update_backends(pods(&["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]));
    let leases: Vec<_> = (0..3).map(|_| granted(t.try_acquire())).collect();
    assert_eq!(dests(&leases), BTreeSet::from(["10.0.0.1:8012"]));
}

#[test]
fn knative_cc_5_round_robin_spreads() {
    let t = knative(5);
    t.update_backends(pods(&["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]));
    let leases: Vec<_> = (0..3).map(|_| granted(t.try_acquire())).collect();
    assert_eq!(dests(&leases).len(), 3);
}

#[test]
fn least_loaded_cc_3_does_not_clump() {
    let t = throttler(3);
    t.update_backends(pods(&["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]));
    let leases: Vec<_> = (0..3).map(|_| granted(t.try_acquire())).collect();
    assert_eq!(dests(&leases).len(), 3);
}

#[test]
fn spread_cc_1_five_pods() {
    let t = throttler(1);
    t.update_backends(Backends::Pods {
        healthy: pod_dests(5),
    });
    let leases: Vec<_> = (0..5).map(|_| granted(t.try_acquire())).collect();
    assert_eq!(dests(&leases).len(), 5);
    let _sixth = waiting(&t);
}

#[test]
fn spread_cc_10_three_pods() {
    for _ in 0..20 {
        let t = throttler(10);
        t.update_backends(Backends::Pods {
            healthy: pod_dests(3),
        });
        let leases: Vec<_> = (0..3).map(|_| granted(t.try_acquire())).collect();
        assert_eq!(dests(&leases).len(), 3);
    }
}

#[test]
fn least_loaded_refills_the_freed_pod() {
    let t = throttler(10);
    t.update_backends(Backends::Pods {
        healthy: pod_dests(3),
    });
    let mut leases: Vec<_> = (0..6).map(|_| granted(t.try_acquire())).collect();
    let freed = leases.remove(0).dest().to_owned();
    let next = granted(t.try_acquire());
    assert_eq!(next.dest(), freed);
}

#[test]
fn all_requests_via_cluster_ip() {
    let t = throttler(0);
    t.update_backends(Backends::ClusterIp {
        dest: "10.96.0.1:80".into(),
        ready_pods: 1,
    });
    for _ in 0..10 {
        let lease = granted(t.try_acquire());
        assert!(lease.is_cluster_ip());
        assert_eq!(lease.dest(), "10.96.0.1:80");
    }
}

// Item 100: two activators, three cc-1 pods, this one second: one pod.
#[test]
fn two_activators_three_pods_one_slot() {
    let t = throttler(1);
    t.update_activators(activators(2, 1));
    t.update_backends(pods(&["10.0.0.1:8012", "10.0.0.2:8012", "10.0.0.3:8012"]));
    let lease = granted(t.try_acquire());
    assert_eq!(lease.dest(), "10.0.0.2:8012");
    let _second = waiting(&t);
}

// === queueing ===

#[test]
fn queue_full_at_the_bound() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let _lease = granted(t.try_acquire());
    let queued: Vec<_> = (0..DEFAULT_MAX_QUEUED).map(|_| t.try_acquire()).collect();
    assert_eq!(t.queued(), DEFAULT_MAX_QUEUED);
    let mut overflow = t.try_acquire();
    match poll(&mut overflow) {
        Poll::Ready(Err(ThrottleError::QueueFull(QueueFull))) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(t.queued(), DEFAULT_MAX_QUEUED);
    drop(queued);
    assert_eq!(t.queued(), 0);
}

#[test]
fn queue_bound_applies_to_cc_0() {
    let t = throttler_with(0, LoadBalancing::Knative, 2);
    let _a = waiting(&t);
    let _b = waiting(&t);
    let mut c = t.try_acquire();
    assert!(matches!(
        poll(&mut c),
        Poll::Ready(Err(ThrottleError::QueueFull(_)))
    ));
}

#[test]
fn cancelled_request_frees_its_place_at_once() {
    let t = throttler_with(1, LoadBalancing::LeastLoaded, 1);
    let a = waiting(&t);
    let mut b = t.try_acquire();
    assert!(matches!(
        poll(&mut b),
        Poll::Ready(Err(ThrottleError::QueueFull(_)))
    ));
    drop(a);
    assert_eq!(t.queued(), 0);
    let mut c = waiting(&t);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    assert!(matches!(poll(&mut c), Poll::Ready(Ok(_))));
}

#[test]
fn cancelled_after_grant_passes_the_slot_on() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let lease = granted(t.try_acquire());
    let first = waiting(&t);
    let mut second = waiting(&t);
    drop(lease);
    // `first` now owns the slot without having seen it; cancelling it hands
    // the slot to `second`.
    assert_eq!((t.queued(), t.in_flight()), (1, 1));
    drop(first);
    assert!(matches!(poll(&mut second), Poll::Ready(Ok(_))));
    assert_eq!((t.queued(), t.in_flight()), (0, 0));
}

#[test]
fn held_requests_released_in_arrival_order() {
    let t = throttler(1);
    let mut queued: Vec<_> = (0..5).map(|_| waiting(&t)).collect();
    t.update_backends(pods(&["10.0.0.1:8012"]));
    for i in 0..5 {
        let lease = match poll(&mut queued[i]) {
            Poll::Ready(Ok(lease)) => lease,
            other => panic!("request {i}: {other:?}"),
        };
        for later in &mut queued[i + 1..] {
            assert!(poll(later).is_pending());
        }
        drop(lease);
    }
}

#[test]
fn newcomers_do_not_barge_past_waiters() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let lease = granted(t.try_acquire());
    let mut old = waiting(&t);
    drop(lease);
    // The freed slot went to `old`, even before it was polled.
    let _new = waiting(&t);
    assert!(matches!(poll(&mut old), Poll::Ready(Ok(_))));
}

#[test]
fn every_waiter_released_when_many_pods_appear() {
    let t = throttler(2);
    let mut queued: Vec<_> = (0..6).map(|_| waiting(&t)).collect();
    t.update_backends(Backends::Pods {
        healthy: pod_dests(3),
    });
    let leases: Vec<_> = queued
        .iter_mut()
        .map(|a| match poll(a) {
            Poll::Ready(Ok(lease)) => lease,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dests(&leases).len(), 3);
    assert_eq!(t.in_flight(), 6);
}

// Item 101: the infinite breaker.
#[test]
fn cc_0_blocks_when_closed_and_releases_waiters_when_opened() {
    let t = throttler(0);
    // Closed: requests wait; a cancelled one leaves.
    let cancelled = waiting(&t);
    drop(cancelled);
    assert_eq!(t.queued(), 0);
    // Open: requests pass.
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let lease = granted(t.try_acquire());
    // Closed again: requests wait, leases out stay valid.
    t.update_backends(Backends::None);
    let mut held: Vec<_> = (0..3).map(|_| waiting(&t)).collect();
    assert_eq!(lease.dest(), "10.0.0.1:8012");
    // Reopened: every waiter is released at once.
    t.update_backends(pods(&["10.0.0.1:8012"]));
    for acquire in &mut held {
        assert!(matches!(poll(acquire), Poll::Ready(Ok(_))));
    }
}

#[test]
fn cc_0_weight_counts_in_flight() {
    let t = throttler(0);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let leases: Vec<_> = (0..100).map(|_| granted(t.try_acquire())).collect();
    let state = t.shared.lock();
    assert_eq!(state.trackers[0].load(), 100);
    drop(state);
    drop(leases);
    assert_eq!(t.shared.lock().trackers[0].load(), 0);
}

// Item 94: cc 1 behind a ClusterIP with one ready pod: the second request
// waits until its deadline while the first holds the slot.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn second_request_times_out_while_first_holds_the_slot() {
    let t = throttler(1);
    t.update_backends(Backends::ClusterIp {
        dest: "10.96.0.1:80".into(),
        ready_pods: 1,
    });
    let first = t.try_acquire().await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(100), t.try_acquire()).await;
    assert!(second.is_err(), "second request must time out");
    assert_eq!(t.queued(), 0, "the timed-out request left the queue");
    drop(first);
    let third = tokio::time::timeout(Duration::from_millis(100), t.try_acquire()).await;
    assert!(third.unwrap().unwrap().is_cluster_ip());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn held_request_released_without_delay_when_a_pod_appears() {
    let t = Arc::new(throttler(1));
    let acquire = t.try_acquire();
    let task = tokio::spawn(async move { acquire.await.map(|lease| lease.dest().to_owned()) });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!task.is_finished());

    let start = Instant::now();
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let dest = task.await.unwrap().unwrap();
    assert_eq!(dest, "10.0.0.1:8012");
    // No timer was involved: paused time did not move.
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_tasks_served_in_arrival_order() {
    let t = Arc::new(throttler(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5 {
        let acquire = t.try_acquire();
        let tx = tx.clone();
        tokio::spawn(async move {
            let lease = acquire.await.unwrap();
            tx.send(i).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(lease);
        });
    }
    drop(tx);
    tokio::task::yield_now().await;
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let mut order = Vec::new();
    while let Some(i) = rx.recv().await {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
}

#[test]
fn pod_that_rejoins_keeps_its_in_flight_requests() {
    let t = throttler(1);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    let lease = granted(t.try_acquire());
    t.update_backends(Backends::None);
    t.update_backends(pods(&["10.0.0.1:8012"]));
    assert_eq!(t.capacity(), 1);
    // The pod is still busy with `lease`, so this one waits.
    let mut next = waiting(&t);
    drop(lease);
    assert!(matches!(poll(&mut next), Poll::Ready(Ok(_))));
}

#[test]
fn scale_down_takes_effect_as_leases_return() {
    let t = throttler(1);
    t.update_backends(pods(&["a", "b"]));
    let a = granted(t.try_acquire());
    let b = granted(t.try_acquire());
    t.update_backends(pods(&["b"]));
    let mut next = waiting(&t);
    drop(a);
    // "a" left; "b" is still busy.
    assert!(poll(&mut next).is_pending());
    drop(b);
    match poll(&mut next) {
        Poll::Ready(Ok(lease)) => assert_eq!(lease.dest(), "b"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn closed_throttler_fails_waiters_and_newcomers() {
    let t = throttler(1);
    let mut held = waiting(&t);
    t.close();
    match poll(&mut held) {
        Poll::Ready(Err(ThrottleError::RevisionNotFound(e))) => {
            assert_eq!(
                e.to_string(),
                "revision.serving.knative.dev \"test-revision\" not found"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut late = t.try_acquire();
    assert!(matches!(
        poll(&mut late),
        Poll::Ready(Err(ThrottleError::RevisionNotFound(_)))
    ));
}

#[test]
fn futures_and_leases_are_send_and_sync() {
    fn is_send_sync<T: Send + Sync + 'static>() {}
    is_send_sync::<Acquire>();
    is_send_sync::<Lease>();
    is_send_sync::<RevisionThrottler>();
}

// === properties ===

/// One step of the model.
#[derive(Clone, Debug)]
enum Op {
    Acquire,
    DropLease(u8),
    Cancel(u8),
    /// Healthy pods: a bitmask over six dests.
    Pods(u8),
    ClusterIp(u8),
    ScaleToZero,
    Activators(u8, u8),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let pick = *g.choose(&[0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6]).unwrap_or(&0);
        match pick {
            0 => Self::Acquire,
            1 => Self::DropLease(u8::arbitrary(g)),
            2 => Self::Cancel(u8::arbitrary(g)),
            3 => Self::Pods(u8::arbitrary(g)),
            4 => Self::ClusterIp(u8::arbitrary(g) % 4),
            5 => Self::ScaleToZero,
            _ => Self::Activators(u8::arbitrary(g) % 4, u8::arbitrary(g) % 4),
        }
    }
}

const DESTS: [&str; 6] = ["ip0", "ip1", "ip2", "ip3", "ip4", "ip5"];

/// Checks the invariants after a step; `before` is `in_flight` before it.
fn check(
    t: &RevisionThrottler,
    cc: usize,
    leases: &[Lease],
    queued: usize,
    before: usize,
) -> Result<(), String> {
    let state = t.shared.lock();
    if state.in_flight != leases.len() {
        return Err(format!(
            "in_flight {} but {} leases",
            state.in_flight,
            leases.len()
        ));
    }
    if state.waiters.len() != queued {
        return Err(format!(
            "{} waiters but {queued} queued",
            state.waiters.len()
        ));
    }
    // Per revision: a lease is only granted below capacity.
    if cc > 0 && state.in_flight > before && state.in_flight > state.capacity {
        return Err(format!(
            "in_flight {} over capacity {}",
            state.in_flight, state.capacity
        ));
    }
    if cc == 0 && state.in_flight > before && state.capacity == 0 {
        return Err("granted while the infinite breaker is closed".into());
    }
    // Per pod: never more than cc, and the loads add up to the pod leases.
    let mut pod_load = 0;
    for tracker in state.trackers.iter().chain(&state.retired) {
        if cc > 0 && tracker.load() > cc {
            return Err(format!(
                "{} has {} > cc {cc}",
                tracker.dest(),
                tracker.load()
            ));
        }
        pod_load += tracker.load();
    }
    let pod_leases = leases.iter().filter(|l| !l.is_cluster_ip()).count();
    if pod_load != pod_leases {
        return Err(format!("pod loads {pod_load} but {pod_leases} pod leases"));
    }
    // Liveness: nobody waits while a lease could be granted.
    if !state.waiters.is_empty() {
        let room = if cc == 0 {
            state.capacity > 0
        } else {
            state.in_flight < state.capacity
        };
        let target = state.cluster_ip.is_some() || state.assigned.iter().any(|t| t.has_spare());
        if room && target {
            return Err("a request waits although it could be granted".into());
        }
    }
    Ok(())
}

fn run_model(cc: u8, knative: bool, ops: Vec<Op>) -> TestResult {
    let cc = usize::from(cc % 4);
    let mode = if knative {
        LoadBalancing::Knative
    } else {
        LoadBalancing::LeastLoaded
    };
    let t = throttler_with(cc, mode, 5);
    let mut leases: Vec<Lease> = Vec::new();
    let mut waiting: Vec<Acquire> = Vec::new();
    for op in ops {
        let before = t.in_flight();
        match op {
            Op::Acquire => {
                let mut acquire = t.try_acquire();
                match poll(&mut acquire) {
                    Poll::Ready(Ok(lease)) => leases.push(lease),
                    Poll::Ready(Err(ThrottleError::QueueFull(_))) => {
                        if waiting.len() < 5 {
                            return TestResult::error("queue full below the bound");
                        }
                    }
                    Poll::Ready(Err(e)) => return TestResult::error(format!("{e:?}")),
                    Poll::Pending => waiting.push(acquire),
                }
            }
            Op::DropLease(i) if !leases.is_empty() => {
                drop(leases.swap_remove(usize::from(i) % leases.len()));
            }
            Op::Cancel(i) if !waiting.is_empty() => {
                drop(waiting.remove(usize::from(i) % waiting.len()));
            }
            Op::DropLease(_) | Op::Cancel(_) => {}
            Op::Pods(mask) => {
                let healthy = (0..DESTS.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| DESTS[i].to_owned())
                    .collect();
                t.update_backends(Backends::Pods { healthy });
            }
            Op::ClusterIp(ready_pods) => t.update_backends(Backends::ClusterIp {
                dest: "cluster".into(),
                ready_pods: usize::from(ready_pods),
            }),
            Op::ScaleToZero => t.update_backends(Backends::None),
            Op::Activators(count, index) => {
                let count = usize::from(count);
                let index = usize::from(index);
                t.update_activators(Activators {
                    count,
                    index: (index < count).then_some(index),
                });
            }
        }
        // Granted waiters resolve, in order.
        let mut still = Vec::new();
        for mut acquire in waiting.drain(..) {
            match poll(&mut acquire) {
                Poll::Ready(Ok(lease)) => leases.push(lease),
                Poll::Ready(Err(e)) => return TestResult::error(format!("{e:?}")),
                Poll::Pending => still.push(acquire),
            }
        }
        waiting = still;
        if let Err(e) = check(&t, cc, &leases, waiting.len(), before) {
            return TestResult::error(e);
        }
    }
    // Every lease comes back.
    drop(waiting);
    drop(leases);
    let state = t.shared.lock();
    let loads: usize = state
        .trackers
        .iter()
        .chain(&state.retired)
        .map(|t| t.load())
        .sum();
    if state.in_flight != 0 || !state.waiters.is_empty() || loads != 0 {
        return TestResult::error("leases or waiters left behind");
    }
    TestResult::passed()
}

#[test]
fn capacity_never_exceeded_and_every_lease_returned() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(run_model as fn(u8, bool, Vec<Op>) -> TestResult);
}

#[test]
fn capacity_is_shared_across_activators() {
    fn property(cc: u8, pods: u8, count: u8) -> TestResult {
        let (cc, pods, count) = (
            usize::from(cc % 20) + 1,
            usize::from(pods % 60) + 1,
            usize::from(count % 8) + 1,
        );
        let total: usize = (0..count)
            .map(|index| {
                let t = throttler(cc);
                t.update_activators(activators(count, index));
                t.update_backends(Backends::Pods {
                    healthy: pod_dests(pods),
                });
                t.capacity()
            })
            .sum();
        // Every pod is owned by exactly one activator when there are at least
        // as many pods; otherwise pods are shared round robin.
        let want = if count > pods { cc * count } else { cc * pods };
        TestResult::from_bool(total == want)
    }
    QuickCheck::new().quickcheck(property as fn(u8, u8, u8) -> TestResult);
}
