use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn trackers(n: usize, cc: usize) -> Vec<Arc<PodTracker>> {
    (0..n)
        .map(|i| Arc::new(PodTracker::new(format!("10.0.0.{i}:8012"), cc)))
        .collect()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Picks with `policy` and returns the index of the chosen tracker.
fn pick(
    policy: LbPolicy,
    trackers: &[Arc<PodTracker>],
    cursor: &mut usize,
    rng: &mut StdRng,
) -> Option<usize> {
    let chosen = policy.pick(trackers, cursor, rng)?;
    trackers.iter().position(|t| Arc::ptr_eq(t, &chosen))
}

fn loads(trackers: &[Arc<PodTracker>]) -> Vec<usize> {
    trackers.iter().map(|t| t.load()).collect()
}

#[test]
fn knative_policy_by_concurrency() {
    let knative = LoadBalancing::Knative;
    assert_eq!(
        LbPolicy::for_revision(knative, 0),
        LbPolicy::RandomChoiceOf2
    );
    for cc in 1..=3 {
        assert_eq!(
            LbPolicy::for_revision(knative, cc),
            LbPolicy::FirstAvailable
        );
    }
    assert_eq!(LbPolicy::for_revision(knative, 4), LbPolicy::RoundRobin);
    assert_eq!(LbPolicy::for_revision(knative, 1000), LbPolicy::RoundRobin);
    for cc in [0, 1, 3, 4, 100] {
        assert_eq!(
            LbPolicy::for_revision(LoadBalancing::LeastLoaded, cc),
            LbPolicy::LeastLoaded
        );
    }
}

#[test]
fn every_policy_finds_nothing_in_an_empty_list() {
    for policy in [
        LbPolicy::LeastLoaded,
        LbPolicy::FirstAvailable,
        LbPolicy::RoundRobin,
        LbPolicy::RandomChoiceOf2,
    ] {
        assert_eq!(pick(policy, &[], &mut 0, &mut rng()), None, "{policy:?}");
    }
}

// Item 57: one tracker is always picked; its weight counts in-flight requests.
#[test]
fn random_choice_of_2_single_tracker_counts_weight() {
    let ts = trackers(1, 0);
    let (mut cursor, mut rng) = (0, rng());
    assert_eq!(
        pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng),
        Some(0)
    );
    assert_eq!(ts[0].load(), 1);
    assert_eq!(
        pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng),
        Some(0)
    );
    assert_eq!(ts[0].load(), 2);
    ts[0].release();
    assert_eq!(ts[0].load(), 1);
}

// Item 58: with two trackers the lighter one wins, and both get traffic.
#[test]
fn random_choice_of_2_two_trackers() {
    let ts = trackers(2, 0);
    let (mut cursor, mut rng) = (0, rng());
    let first = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
    let second = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
    assert_ne!(first, second, "the idle tracker must win");
    assert_eq!(loads(&ts), [1, 1]);
    ts[second].release();
    let third = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
    assert_eq!(third, second, "the lighter tracker must win");
    ts[first].release();
    ts[third].release();

    let mut counts = [0; 2];
    for _ in 0..100 {
        let i = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
        ts[i].release();
        counts[i] += 1;
    }
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    assert_eq!(counts[0] + counts[1], 100);
}

// Item 59: with three trackers a loaded one never beats an idle one.
#[test]
fn random_choice_of_2_three_trackers_prefers_idle() {
    for seed in 0..50 {
        let ts = trackers(3, 0);
        let (mut cursor, mut rng) = (0, StdRng::seed_from_u64(seed));
        let first = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
        let second = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
        assert_ne!(first, second);
        ts[second].release();
        let third = pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng).unwrap();
        assert_ne!(first, third);
        assert_eq!(ts[third].load(), 1);
        assert!(loads(&ts).iter().all(|&w| w <= 1), "{:?}", loads(&ts));
    }
}

// Item 60: a single cc-1 pod serves one request; the next finds none.
#[test]
fn first_available_single_slot() {
    let ts = trackers(1, 1);
    let (mut cursor, mut rng) = (0, rng());
    assert_eq!(
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng),
        Some(0)
    );
    assert_eq!(
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng),
        None
    );
    assert_eq!(ts[0].load(), 1);
}

// Item 61: two cc-1 pods: first request to pod 1, second to pod 2.
#[test]
fn first_available_two_pods() {
    let ts = trackers(2, 1);
    let (mut cursor, mut rng) = (0, rng());
    assert_eq!(
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng),
        Some(0)
    );
    assert_eq!(
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng),
        Some(1)
    );
    assert_eq!(
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng),
        None
    );
}

// Item 62: round robin, cc 1.
#[test]
fn round_robin_cc_1() {
    let ts = trackers(3, 1);
    let (mut cursor, mut rng) = (0, rng());
    let rr = LbPolicy::RoundRobin;
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(0));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(1));
    // A shorter list resets the cursor to 0, which is taken.
    assert_eq!(pick(rr, &ts[..1], &mut cursor, &mut rng), None);
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(2));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), None);
    ts[2].release();
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(2));
}

// Item 63: round robin, cc 2: 0, 1, (short list) 0, 1, 2, 2.
#[test]
fn round_robin_cc_2() {
    let ts = trackers(3, 2);
    let (mut cursor, mut rng) = (0, rng());
    let rr = LbPolicy::RoundRobin;
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(0));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(1));
    assert_eq!(pick(rr, &ts[..1], &mut cursor, &mut rng), Some(0));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(1));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(2));
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), Some(2));
    assert_eq!(loads(&ts), [2, 2, 2]);
    assert_eq!(pick(rr, &ts, &mut cursor, &mut rng), None);
}

#[test]
fn least_loaded_picks_the_lowest_load_with_room() {
    let ts = trackers(3, 10);
    for (tracker, load) in ts.iter().zip([5, 2, 8]) {
        for _ in 0..load {
            assert!(tracker.try_reserve());
        }
    }
    let (mut cursor, mut rng) = (0, rng());
    assert_eq!(
        pick(LbPolicy::LeastLoaded, &ts, &mut cursor, &mut rng),
        Some(1)
    );
    assert_eq!(loads(&ts), [5, 3, 8]);
}

#[test]
fn least_loaded_skips_full_pods() {
    let ts = trackers(3, 1);
    assert!(ts[0].try_reserve());
    assert!(ts[2].try_reserve());
    let (mut cursor, mut rng) = (0, rng());
    assert_eq!(
        pick(LbPolicy::LeastLoaded, &ts, &mut cursor, &mut rng),
        Some(1)
    );
    assert_eq!(
        pick(LbPolicy::LeastLoaded, &ts, &mut cursor, &mut rng),
        None
    );
}

#[test]
fn least_loaded_spreads_before_stacking() {
    // cc 10, 3 pods, 3 requests: one each (Knative's first-available would
    // put all three on the first pod).
    let ts = trackers(3, 10);
    let (mut cursor, mut rng) = (0, rng());
    for _ in 0..3 {
        pick(LbPolicy::LeastLoaded, &ts, &mut cursor, &mut rng).unwrap();
    }
    assert_eq!(loads(&ts), [1, 1, 1]);

    let ts = trackers(3, 3);
    for _ in 0..3 {
        pick(LbPolicy::FirstAvailable, &ts, &mut cursor, &mut rng).unwrap();
    }
    assert_eq!(loads(&ts), [3, 0, 0], "Knative's first-available clumps");
}

#[test]
fn least_loaded_breaks_ties_at_random() {
    let ts = trackers(4, 1);
    let (mut cursor, mut rng) = (0, rng());
    let mut counts = [0; 4];
    for _ in 0..400 {
        let i = pick(LbPolicy::LeastLoaded, &ts, &mut cursor, &mut rng).unwrap();
        ts[i].release();
        counts[i] += 1;
    }
    // Uniform over 4: each ~100; far from 0 and from 400.
    assert!(
        counts.iter().all(|&n| (50..=150).contains(&n)),
        "{counts:?}"
    );
}

#[test]
fn random_choice_of_2_falls_back_when_both_contestants_are_full() {
    // Only reachable with cc > 0, which Knative never combines with this
    // policy; the fallback keeps "a pod with room is always found".
    let ts = trackers(3, 1);
    assert!(ts[0].try_reserve());
    assert!(ts[1].try_reserve());
    for seed in 0..20 {
        let (mut cursor, mut rng) = (0, StdRng::seed_from_u64(seed));
        assert_eq!(
            pick(LbPolicy::RandomChoiceOf2, &ts, &mut cursor, &mut rng),
            Some(2)
        );
        ts[2].release();
    }
}
