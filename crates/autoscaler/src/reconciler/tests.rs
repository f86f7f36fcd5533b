use quickcheck::{QuickCheck, TestResult};

use super::*;
use crate::annotations::RevisionAnnotations;
use crate::config::Config;

const GRACE: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);

fn params() -> KpaParams {
    KpaParams::resolve(&Config::default(), &RevisionAnnotations::default(), true)
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_unix_secs(1_000_000 + secs)
}

fn status(activity: Activity, since: Timestamp) -> PaStatus {
    PaStatus {
        activity,
        since,
        scale_target_initialized: true,
    }
}

fn input(desired: Option<u32>, ready_pods: u32) -> ReconcileInput {
    ReconcileInput {
        desired,
        ready_pods,
        proxy_since: None,
        activator_in_path: true,
    }
}

fn apply(want: u32) -> ReplicaDecision {
    ReplicaDecision {
        want: Some(want),
        apply: true,
        recheck_after: None,
        probe_activator: false,
    }
}

fn keep(want: Option<u32>, recheck_after: Option<Duration>) -> ReplicaDecision {
    ReplicaDecision {
        want,
        apply: false,
        recheck_after,
        probe_activator: false,
    }
}

fn decide(p: &KpaParams, s: PaStatus, i: ReconcileInput, now: Timestamp) -> ReplicaDecision {
    decide_replicas(p, &s, &i, now)
}

#[test]
fn unknown_desired_leaves_replicas() {
    let active = status(Activity::Active, t(0));
    assert_eq!(
        decide(&params(), active, input(None, 1), t(5)),
        keep(None, None)
    );
    let activating = status(Activity::Activating, t(0));
    assert_eq!(
        decide(&params(), activating, input(None, 0), t(5)),
        keep(None, None)
    );
    let p = KpaParams {
        min_scale: 2,
        ..params()
    };
    assert_eq!(
        decide(&p, activating, input(None, 0), t(5)),
        apply(2),
        "activating honours min"
    );
}

#[test]
fn min_and_max_bound_desired() {
    let p = KpaParams {
        min_scale: 2,
        max_scale: 5,
        ..params()
    };
    let s = status(Activity::Active, t(0));
    assert_eq!(decide(&p, s, input(Some(0), 2), t(1)), apply(2));
    assert_eq!(decide(&p, s, input(Some(3), 2), t(1)), apply(3));
    assert_eq!(decide(&p, s, input(Some(10), 2), t(1)), apply(5));
}

#[test]
fn initial_scale_is_a_floor_until_reached() {
    let p = KpaParams {
        initial_scale: 3,
        ..params()
    };
    let mut s = status(Activity::Activating, t(0));
    s.scale_target_initialized = false;
    assert_eq!(decide(&p, s, input(Some(1), 0), t(1)), apply(3));
    s.scale_target_initialized = true;
    assert_eq!(decide(&p, s, input(Some(1), 3), t(1)), apply(1));
    // Unreachable revisions skip the initial scale.
    let p = KpaParams {
        reachable: false,
        ..p
    };
    s.scale_target_initialized = false;
    assert_eq!(decide(&p, s, input(Some(1), 0), t(1)), apply(1));
}

#[test]
fn scale_to_zero_disabled_keeps_one() {
    let p = KpaParams {
        enable_scale_to_zero: false,
        ..params()
    };
    let s = status(Activity::Inactive, t(0));
    assert_eq!(decide(&p, s, input(Some(0), 1), t(1000)), apply(1));
}

#[test]
fn active_waits_out_the_stable_window() {
    let s = status(Activity::Active, t(0));
    assert_eq!(
        decide(&params(), s, input(Some(0), 1), t(20)),
        ReplicaDecision {
            recheck_after: Some(Duration::from_secs(40)),
            ..apply(1)
        }
    );
    assert_eq!(
        decide(&params(), s, input(Some(0), 1), t(60)),
        keep(Some(0), None)
    );
    let mut i = input(Some(0), 1);
    i.proxy_since = Some(t(10));
    assert_eq!(
        decide(&params(), s, i, t(60)),
        keep(Some(0), Some(PROXY_MODE_RECHECK))
    );
}

#[test]
fn activation_times_out() {
    let p = params();
    assert_eq!(p.activation_timeout, Duration::from_secs(630));
    let s = status(Activity::Activating, t(0));
    assert_eq!(
        decide(&p, s, input(Some(0), 0), t(630)),
        keep(None, Some(p.activation_timeout))
    );
    assert_eq!(decide(&p, s, input(Some(0), 0), t(631)), apply(0));
}

#[test]
fn inactive_probes_the_activator_first() {
    let s = status(Activity::Inactive, t(0));
    let mut i = input(Some(0), 1);
    i.activator_in_path = false;
    assert_eq!(
        decide(&params(), s, i, t(100)),
        ReplicaDecision {
            probe_activator: true,
            ..keep(Some(0), None)
        }
    );
    // With TBC −1 the activator is always in the path.
    let p = KpaParams {
        target_burst_capacity: -1.0,
        ..params()
    };
    assert_eq!(decide(&p, s, i, t(100)), apply(0));
}

#[test]
fn inactive_waits_for_grace_and_retention() {
    let s = status(Activity::Inactive, t(0));
    assert_eq!(decide(&params(), s, input(Some(0), 1), t(30)), apply(0));
    // Not yet through the grace period, not proxying: wait for the rest.
    assert_eq!(
        decide(&params(), s, input(Some(0), 1), t(10)),
        keep(Some(0), Some(GRACE))
    );
    // Proxying long enough already: fast path.
    let mut i = input(Some(0), 1);
    i.proxy_since = Some(t(0) - GRACE);
    assert_eq!(decide(&params(), s, i, t(10)), apply(0));
    i.proxy_since = Some(t(0));
    assert_eq!(
        decide(&params(), s, i, t(10)),
        keep(Some(0), Some(Duration::from_secs(20)))
    );

    let p = KpaParams {
        scale_to_zero_pod_retention: Duration::from_secs(60),
        ..params()
    };
    i.proxy_since = Some(t(0) - GRACE);
    assert_eq!(
        decide(&p, s, i, t(40)),
        keep(Some(0), Some(Duration::from_secs(20))),
        "retention is a hard deadline"
    );
    assert_eq!(decide(&p, s, i, t(60)), apply(0));
}

#[test]
fn active_condition_follows_want_and_ready() {
    let p = KpaParams {
        initial_scale: 2,
        ..params()
    };
    let mut pa = PodAutoscaler::new(p, t(0));
    assert_eq!(pa.status().activity, Activity::Activating);
    // Initial scale 2 not reached: still activating.
    assert_eq!(pa.reconcile(t(1), &input(Some(1), 1)), apply(2));
    assert_eq!(pa.status().activity, Activity::Activating);
    assert!(!pa.status().scale_target_initialized);
    pa.reconcile(t(2), &input(Some(1), 2));
    assert_eq!(
        pa.status(),
        PaStatus {
            activity: Activity::Active,
            since: t(2),
            scale_target_initialized: true,
        }
    );
    // Zero demand: one pod for the rest of the stable window, then inactive.
    assert_eq!(pa.reconcile(t(10), &input(Some(0), 2)).want, Some(1));
    assert_eq!(pa.status().activity, Activity::Active);
    assert_eq!(pa.reconcile(t(62), &input(Some(0), 1)), keep(Some(0), None));
    assert_eq!(pa.status().activity, Activity::Inactive);
    assert_eq!(pa.status().since, t(62));
    // Unknown demand does not wake it; real demand does.
    pa.reconcile(t(63), &input(None, 1));
    assert_eq!(pa.status().activity, Activity::Inactive);
    assert_eq!(pa.reconcile(t(64), &input(Some(1), 0)), apply(1));
    assert_eq!(pa.status().activity, Activity::Activating);
}

#[test]
fn scale_to_zero_sequence() {
    let mut pa = PodAutoscaler::with_status(params(), status(Activity::Active, t(0)));
    let mut i = input(Some(0), 1);
    assert_eq!(
        pa.reconcile(t(10), &i).recheck_after,
        Some(STABLE - Duration::from_secs(10))
    );
    assert_eq!(pa.reconcile(t(60), &i), keep(Some(0), None));
    // The SKS moves to proxy mode.
    i.proxy_since = Some(t(61));
    assert_eq!(
        pa.reconcile(t(61), &i),
        keep(Some(0), Some(Duration::from_secs(30)))
    );
    assert_eq!(pa.reconcile(t(90), &i), apply(0));
    assert_eq!(pa.status().activity, Activity::Inactive);
}

/// Property: whatever the state, a wanted scale is within [min, max] (max 0
/// = unbounded), and only a known scale is ever applied.
#[test]
fn want_stays_within_bounds() {
    #[expect(
        clippy::too_many_arguments,
        reason = "quickcheck generates one value per argument"
    )]
    fn property(
        min: u8,
        span: u8,
        initial: u8,
        desired: Option<u16>,
        ready: u8,
        activity: u8,
        elapsed: u16,
        flags: u8,
    ) -> TestResult {
        let min = u32::from(min % 8);
        let max = if span.is_multiple_of(4) {
            0
        } else {
            min.max(1) + u32::from(span % 16)
        };
        let initial = u32::from(initial % 8);
        if max != 0 && initial > max {
            return TestResult::discard();
        }
        let reachable = flags & 1 == 0;
        let p = KpaParams {
            min_scale: if reachable { min } else { 0 },
            max_scale: max,
            initial_scale: initial,
            reachable,
            enable_scale_to_zero: flags & 2 == 0,
            scale_to_zero_pod_retention: Duration::from_secs(u64::from(flags >> 4)),
            target_burst_capacity: if flags & 4 == 0 { 211.0 } else { -1.0 },
            ..params()
        };
        let s = PaStatus {
            activity: [Activity::Activating, Activity::Active, Activity::Inactive]
                [usize::from(activity % 3)],
            since: t(0),
            scale_target_initialized: activity & 4 == 0,
        };
        let i = ReconcileInput {
            desired: desired.map(u32::from),
            ready_pods: u32::from(ready),
            proxy_since: (flags & 8 == 0).then(|| t(0)),
            activator_in_path: activity & 8 == 0,
        };
        let d = decide_replicas(&p, &s, &i, t(u64::from(elapsed)));
        let within = d
            .want
            .is_none_or(|w| w >= p.min_scale && (max == 0 || w <= max));
        TestResult::from_bool(within && (!d.apply || d.want.is_some()))
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(u8, u8, u8, Option<u16>, u8, u8, u16, u8) -> TestResult);
}
