//! Activator spec §8.5 worked examples, plus the behaviours of Knative's
//! `autoscaler_test.go` they come from.

use std::time::Duration;

use quickcheck::{QuickCheck, TestResult};

use super::*;
use crate::spec::AggregationAlgorithm;

/// Knative's test utilisation: total = target / 0.75.
const UTILIZATION: f64 = 0.75;
const STABLE_WINDOW: Duration = Duration::from_secs(60);

fn spec(target: f64, tbc: f64) -> DeciderSpec {
    DeciderSpec {
        metric: ScalingMetric::Concurrency,
        target_value: target,
        total_value: target / UTILIZATION,
        target_burst_capacity: tbc,
        activator_capacity: 100.0,
        panic_threshold: 2.0,
        max_scale_up_rate: 10.0,
        max_scale_down_rate: 10.0,
        stable_window: STABLE_WINDOW,
        panic_window: Duration::from_secs(6),
        scale_down_delay: Duration::ZERO,
        initial_scale: 1,
        activation_scale: 0,
        reachable: true,
        aggregation: AggregationAlgorithm::Linear,
        scrape_pods: true,
    }
}

fn t0() -> Timestamp {
    Timestamp::from_unix_secs(1_700_000_000)
}

fn obs(stable: f64, panic: f64) -> Observation {
    Observation { stable, panic }
}

/// Knative's `expectedEBC`: floor(pods × total − TBC − panic).
fn ebc(target: f64, tbc: f64, panic: f64, pods: u32) -> i32 {
    to_i32((f64::from(pods) * target / UTILIZATION - tbc - panic).floor())
}

fn result(desired: u32, excess_burst_capacity: i32) -> ScaleResult {
    ScaleResult {
        desired,
        excess_burst_capacity,
    }
}

#[test]
fn stable_demand_scales_to_target() {
    // §8.5: S 50, P 50, R 1 → 5.
    let mut d = Decider::new(spec(10.0, 100.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 1, obs(50.0, 50.0)),
        result(5, ebc(10.0, 100.0, 50.0, 1))
    );
    // Demand of 5 pods on 1 is over the panic threshold, which changes nothing here.
    assert!(d.is_panicking());
    // Already at 5 pods: stays.
    assert_eq!(
        d.scale_with(t0(), 5, obs(50.0, 50.0)),
        result(5, ebc(10.0, 100.0, 50.0, 5))
    );
}

#[test]
fn panic_demand_doubles() {
    // §8.5: S 50, P 100, R 1 → 10 (panic).
    let mut d = Decider::new(spec(10.0, 84.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 1, obs(50.0, 100.0)),
        result(10, ebc(10.0, 84.0, 100.0, 1))
    );
    assert!(d.is_panicking());
}

#[test]
fn scale_up_is_rate_limited() {
    // §8.5: S 1000, P 1001, R 1 → 10, then R 10 → 100.
    let mut d = Decider::new(spec(10.0, 61.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 1, obs(1000.0, 1001.0)),
        result(10, ebc(10.0, 61.0, 1001.0, 1))
    );
    assert_eq!(
        d.scale_with(t0(), 10, obs(1000.0, 1001.0)),
        result(100, ebc(10.0, 61.0, 1001.0, 10))
    );
}

#[test]
fn scale_down_is_rate_limited() {
    // §8.5: S 1, R 100 → 10, then R 10 → 1.
    let mut d = Decider::new(spec(10.0, 61.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 100, obs(1.0, 1.0)),
        result(10, ebc(10.0, 61.0, 1.0, 100))
    );
    assert_eq!(
        d.scale_with(t0(), 10, obs(1.0, 1.0)),
        result(1, ebc(10.0, 61.0, 1.0, 10))
    );
}

#[test]
fn slow_scale_up_rate_still_grows() {
    // §8.5: maxScaleUpRate 1.1, target 1, S 3, R 2 → 3 (ceil keeps growth ≥ 1).
    let mut s = spec(1.0, 1982.0);
    s.max_scale_up_rate = 1.1;
    let mut d = Decider::new(s, 1, t0());
    assert_eq!(
        d.scale_with(t0(), 2, obs(3.0, 3.1)),
        result(3, ebc(1.0, 1982.0, 3.1, 2))
    );
}

#[test]
fn slow_scale_down_rate() {
    let mut s = spec(10.0, 1982.0);
    s.max_scale_down_rate = 1.1;
    let mut d = Decider::new(s, 1, t0());
    assert_eq!(
        d.scale_with(t0(), 100, obs(1.0, 1.0)),
        result(90, ebc(10.0, 1982.0, 1.0, 100))
    );
}

#[test]
fn unreachable_scales_down_at_once() {
    // §8.5: not reachable, S 1, R 100 → 1.
    let mut s = spec(10.0, 1982.0);
    s.max_scale_down_rate = 1.1;
    s.reachable = false;
    let mut d = Decider::new(s, 1, t0());
    assert_eq!(
        d.scale_with(t0(), 100, obs(1.0, 1.0)),
        result(1, ebc(10.0, 1982.0, 1.0, 100))
    );
}

#[test]
fn zero_ready_pods_count_as_one() {
    let mut d = Decider::new(spec(10.0, 81.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 0, obs(1000.0, 888.0)),
        result(10, ebc(10.0, 81.0, 888.0, 0))
    );
}

#[test]
fn no_traffic_scales_to_zero() {
    let mut d = Decider::new(spec(10.0, 75.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(1.0, 0.0)).desired, 1);
    assert_eq!(d.scale_with(t0(), 1, obs(0.0, 0.0)).desired, 0);
}

#[test]
fn activation_scale_is_the_minimum_non_zero() {
    let mut s = spec(10.0, 75.0);
    s.activation_scale = 2;
    let mut d = Decider::new(s, 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(0.0, 0.0)).desired, 0);
    assert_eq!(d.scale_with(t0(), 1, obs(1.0, 0.0)).desired, 2);
}

#[test]
fn burst_capacity_special_values() {
    let mut d = Decider::new(spec(181.0, -1.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(21.0, 26.0)), result(1, -1));
    let mut d = Decider::new(spec(10.0, 0.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(50.0, 49.0)), result(5, 0));
}

#[test]
fn panic_holds_scale_until_stable_window_passes() {
    let mut d = Decider::new(spec(10.0, 93.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(100.0, 100.0)).desired, 10);
    let panic_at = t0() + Duration::from_secs(1);
    assert_eq!(d.scale_with(panic_at, 10, obs(100.0, 1000.0)).desired, 100);
    // Traffic dropped off; still panicking, so no scale-down.
    let later = panic_at + Duration::from_secs(30);
    assert_eq!(d.scale_with(later, 10, obs(1.0, 1.0)).desired, 100);
    let after = panic_at + Duration::from_secs(61);
    assert_eq!(d.scale_with(after, 10, obs(1.0, 1.0)).desired, 1);
    assert!(!d.is_panicking());
}

#[test]
fn panic_ends_after_slow_increase() {
    let mut d = Decider::new(spec(1.0, 98.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 10, obs(11.0, 25.0)),
        result(25, ebc(1.0, 98.0, 25.0, 10))
    );
    assert_eq!(d.panic_time, Some(t0()));
    let half = t0() + STABLE_WINDOW / 2;
    assert_eq!(
        d.scale_with(half, 40, obs(30.0, 41.0)),
        result(41, ebc(1.0, 98.0, 41.0, 40))
    );
    assert_eq!(d.panic_time, Some(t0()), "41/40 is under the threshold");
    let end = half + STABLE_WINDOW / 2 + TICK_INTERVAL;
    assert_eq!(
        d.scale_with(end, 55, obs(50.0, 56.0)),
        result(50, ebc(1.0, 98.0, 56.0, 55))
    );
    assert_eq!(d.panic_time, None);
}

#[test]
fn continued_surge_extends_panic() {
    let mut d = Decider::new(spec(1.0, 98.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 10, obs(11.0, 25.0)).desired, 25);
    let half = t0() + STABLE_WINDOW / 2;
    assert_eq!(
        d.scale_with(half, 40, obs(30.0, 80.0)),
        result(80, ebc(1.0, 98.0, 80.0, 40))
    );
    assert_eq!(d.panic_time, Some(half));
}

#[test]
fn panic_uses_larger_of_stable_and_panic() {
    for (stable, want) in [(50.0, 50), (20.0, 30)] {
        let mut d = Decider::new(spec(1.0, 100.0), 1, t0());
        d.panic_time = Some(t0() - Duration::from_secs(5));
        d.max_panic_pods = 5;
        assert_eq!(
            d.scale_with(t0(), 5, obs(stable, 30.0)),
            result(want, ebc(1.0, 100.0, 30.0, 5))
        );
    }
}

#[test]
fn exponential_growth_is_tracked() {
    let mut d = Decider::new(spec(1.0, 101.0), 1, t0());
    assert_eq!(d.scale_with(t0(), 1, obs(6.0, 6.0)).desired, 6);
    let mut tm = t0();
    for (ready, demand) in [(6, 36), (36, 216), (216, 1296)] {
        let got = d.scale_with(tm, ready, obs(f64::from(demand), f64::from(demand)));
        assert_eq!(
            got,
            result(demand, ebc(1.0, 101.0, f64::from(demand), ready))
        );
        assert_eq!(d.panic_time, Some(tm));
        tm = tm + Duration::from_secs(1);
    }
    assert_eq!(d.scale_with(tm, 1296, obs(1296.0, 1296.0)).desired, 1296);
}

#[test]
fn starts_in_panic_with_more_than_one_pod() {
    for ready in [0, 1] {
        let d = Decider::new(spec(100.0, 11.0), ready, t0());
        assert!(!d.is_panicking());
        assert_eq!(d.max_panic_pods, ready);
    }
    let mut d = Decider::new(spec(100.0, 11.0), 2, t0());
    assert!(d.is_panicking());
    assert_eq!(d.max_panic_pods, 2);
    // Holds the current scale while the metric history is empty.
    assert_eq!(d.scale_with(t0(), 2, obs(0.0, 0.0)).desired, 2);
}

#[test]
fn scale_down_delay_holds_the_maximum() {
    let mut s = spec(10.0, 0.0);
    s.panic_threshold = 100.0;
    s.scale_down_delay = Duration::from_secs(300);
    let now = Timestamp::UNIX_EPOCH;
    let min = |m: u64| now + Duration::from_secs(60 * m);
    let mut d = Decider::new(s, 0, now);

    // Simple.
    assert_eq!(
        d.scale_with(now + Duration::from_secs(2), 0, obs(40.0, 40.0))
            .desired,
        4
    );
    assert_eq!(d.scale_with(min(5), 0, obs(0.0, 0.0)).desired, 4);
    assert_eq!(
        d.scale_with(min(5) + Duration::from_secs(2), 0, obs(0.0, 0.0))
            .desired,
        0
    );

    // Gradual.
    assert_eq!(d.scale_with(min(9), 0, obs(40.0, 40.0)).desired, 4);
    assert_eq!(
        d.scale_with(min(10), 0, obs(30.0, 30.0)).desired,
        4,
        "4 still dominates"
    );
    assert_eq!(d.scale_with(min(11), 0, obs(0.0, 0.0)).desired, 4);
    assert_eq!(
        d.scale_with(min(14), 0, obs(0.0, 0.0)).desired,
        3,
        "4 scrolls out"
    );
    assert_eq!(d.scale_with(min(15), 0, obs(0.0, 0.0)).desired, 0);
}

#[test]
fn scale_down_delay_ignored_when_unreachable() {
    let mut s = spec(10.0, 0.0);
    s.panic_threshold = 100.0;
    s.scale_down_delay = Duration::from_secs(300);
    let now = Timestamp::UNIX_EPOCH;
    let mut d = Decider::new(s.clone(), 0, now);
    assert_eq!(
        d.scale_with(now + Duration::from_secs(2), 0, obs(40.0, 40.0))
            .desired,
        4
    );
    assert_eq!(
        d.scale_with(now + Duration::from_secs(60), 0, obs(0.0, 0.0))
            .desired,
        4
    );
    s.reachable = false;
    d.update(s);
    assert_eq!(
        d.scale_with(now + Duration::from_secs(62), 0, obs(0.0, 0.0))
            .desired,
        0
    );
}

#[test]
fn no_delay_scales_down_within_a_slot() {
    let mut s = spec(10.0, 0.0);
    s.panic_threshold = 100.0;
    let now = Timestamp::UNIX_EPOCH;
    let mut d = Decider::new(s, 0, now);
    assert_eq!(d.scale_with(now, 0, obs(40.0, 40.0)).desired, 4);
    assert_eq!(
        d.scale_with(now + Duration::from_millis(500), 0, obs(20.0, 20.0))
            .desired,
        2
    );
}

#[test]
fn target_update_applies_to_next_run() {
    let mut d = Decider::new(spec(10.0, 77.0), 1, t0());
    assert_eq!(
        d.scale_with(t0(), 1, obs(100.0, 101.0)),
        result(10, ebc(10.0, 77.0, 101.0, 1))
    );
    d.update(spec(1.0, 71.0));
    assert_eq!(
        d.scale_with(t0(), 10, obs(100.0, 101.0)),
        result(100, ebc(1.0, 71.0, 101.0, 10))
    );
}

#[test]
fn initial_status() {
    let d = Decider::new(spec(10.0, 211.0), 0, t0());
    assert_eq!(d.status().desired_scale, None);
    // int(initialScale × total − TBC) = int(13.33 − 211) = −197.
    assert_eq!(d.status().excess_burst_capacity, -197);
    assert_eq!(
        Decider::new(spec(10.0, -1.0), 0, t0())
            .status()
            .excess_burst_capacity,
        -1
    );
    assert_eq!(
        Decider::new(spec(10.0, 0.0), 0, t0())
            .status()
            .excess_burst_capacity,
        0
    );
}

#[test]
fn empty_window_is_no_data_only_when_scraping() {
    let mut d = Decider::new(spec(10.0, 211.0), 0, t0());
    assert_eq!(d.scale(t0(), 0), Err(NoData));
    assert_eq!(d.status().desired_scale, None);

    let mut s = spec(10.0, -1.0);
    s.scrape_pods = false;
    let mut d = Decider::new(s, 0, t0());
    assert_eq!(d.scale(t0(), 0), Ok(result(0, -1)));
}

#[test]
fn poke_scales_from_zero() {
    // Activator spec §5.4: at desired 0, the activator's poke runs the scaler.
    let mut s = spec(70.0, -1.0);
    s.scrape_pods = false;
    let mut d = Decider::new(s, 0, t0());
    let idle = Stat::default();
    assert!(!d.record(t0(), &idle), "no decision yet");
    assert_eq!(d.scale(t0(), 0).unwrap().desired, 0);
    assert!(!d.record(t0(), &idle), "no demand");

    let later = t0() + Duration::from_secs(120);
    let poke = Stat {
        average_concurrent_requests: 1.0,
        request_count: 1.0,
        ..Stat::default()
    };
    assert!(d.record(later, &poke));
    assert_eq!(d.scale(later, 0), Ok(result(1, -1)));
    assert!(!d.record(later, &poke), "desired is no longer 0");
}

#[test]
fn proxied_load_is_subtracted() {
    let mut s = spec(1.0, 211.0);
    s.metric = ScalingMetric::Rps;
    let mut d = Decider::new(s, 1, t0());
    let stat = Stat {
        average_concurrent_requests: 10.0,
        average_proxied_concurrent_requests: 10.0,
        request_count: 5.0,
        proxied_request_count: 2.0,
        ..Stat::default()
    };
    d.record(t0(), &stat);
    assert_eq!(d.scale(t0(), 1).unwrap().desired, 3, "rps 5 − 2");
}

#[test]
fn notify_on_change_or_sign_flip() {
    let s = |desired_scale, excess_burst_capacity| DeciderStatus {
        desired_scale,
        excess_burst_capacity,
    };
    assert!(s(Some(1), 5).notifies(&s(None, 5)));
    assert!(!s(Some(1), 5).notifies(&s(Some(1), 7)));
    assert!(s(Some(1), -1).notifies(&s(Some(1), 0)));
    assert!(!s(Some(1), -3).notifies(&s(Some(1), -1)));
}

/// Property: a fresh decider never scales up by more than maxScaleUpRate
/// (rounded up, or the activation scale) and, when reachable, never down by
/// more than maxScaleDownRate.
#[test]
fn one_step_respects_rate_limits() {
    fn property(
        stable: u16,
        panic: u16,
        ready: u16,
        up_tenths: u8,
        down_tenths: u8,
        act: u8,
    ) -> TestResult {
        let mut s = spec(1.5, 211.0);
        s.max_scale_up_rate = 1.0 + f64::from(up_tenths.max(1)) / 10.0;
        s.max_scale_down_rate = 1.0 + f64::from(down_tenths.max(1)) / 10.0;
        s.activation_scale = u32::from(act % 5);
        let ready = u32::from(ready);
        let mut d = Decider::new(s.clone(), ready, t0());
        let got = d.scale_with(t0(), ready, obs(f64::from(stable), f64::from(panic)));
        let pods = f64::from(ready.max(1));
        let up = to_pods((s.max_scale_up_rate * pods).ceil()).max(s.activation_scale);
        let down = to_pods((pods / s.max_scale_down_rate).floor());
        TestResult::from_bool(got.desired <= up.max(ready) && got.desired >= down)
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(property as fn(u16, u16, u16, u8, u8, u8) -> TestResult);
}
