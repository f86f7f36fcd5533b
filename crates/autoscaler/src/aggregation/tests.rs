use super::*;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_secs(secs)
}

fn linear(window: u64) -> Buckets {
    Buckets::new(Duration::from_secs(window), AggregationAlgorithm::Linear)
}

fn weighted(window: u64) -> Buckets {
    Buckets::new(
        Duration::from_secs(window),
        AggregationAlgorithm::WeightedExponential,
    )
}

#[test]
fn empty_buckets_read_zero() {
    let b = linear(60);
    assert!(b.is_empty(at(1000)));
    assert_eq!(b.window_average(at(1000)), 0.0);
    assert_eq!(weighted(60).window_average(at(1000)), 0.0);
}

#[test]
fn values_in_one_second_add_up() {
    let mut b = linear(60);
    b.record(at(1000), 1.0);
    b.record(Timestamp::from_unix(Duration::from_millis(1_000_900)), 2.0);
    assert_eq!(b.window_average(at(1000)), 3.0);
    assert!(!b.is_empty(at(1000)));
}

#[test]
fn partial_window_averages_since_first_write() {
    let mut b = linear(60);
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].into_iter().enumerate() {
        b.record(at(1000 + i as u64), v);
    }
    assert_eq!(b.window_average(at(1005)), 3.5);
    // A later `now` with no new data drops nothing that was written in the
    // window, but divides by the shrinking remainder of it.
    assert_eq!(b.window_average(at(1010)), 3.5);
}

#[test]
fn silent_seconds_leave_the_window() {
    let mut b = linear(5);
    for s in 1000..1005 {
        b.record(at(s), 2.0);
    }
    assert_eq!(b.window_average(at(1004)), 2.0);
    // Two seconds of silence: three buckets of data remain valid.
    assert_eq!(b.window_average(at(1006)), 2.0);
    // A window of silence: nothing.
    assert_eq!(b.window_average(at(1009)), 0.0);
    assert!(!b.is_empty(at(1009)));
    assert!(b.is_empty(at(1010)));
}

#[test]
fn gaps_read_as_zero() {
    let mut b = linear(10);
    b.record(at(1000), 4.0);
    b.record(at(1003), 4.0);
    // Four seconds of data, two of them skipped.
    assert_eq!(b.window_average(at(1003)), 2.0);
}

#[test]
fn full_window_wraps_the_ring() {
    let mut b = linear(3);
    for (i, v) in [9.0, 1.0, 2.0, 3.0].into_iter().enumerate() {
        b.record(at(1000 + i as u64), v);
    }
    // The first value was overwritten by the fourth.
    assert_eq!(b.window_average(at(1003)), 2.0);
}

#[test]
fn old_values_are_dropped_and_late_ones_kept() {
    let mut b = linear(5);
    b.record(at(1010), 5.0);
    b.record(at(1005), 100.0);
    assert_eq!(b.window_average(at(1010)), 5.0, "a window older is dropped");
    b.record(at(1008), 1.0);
    // Late but inside the window: counted, and data now starts at 1008.
    assert_eq!(b.window_average(at(1010)), 2.0);
}

#[test]
fn silence_of_a_window_resets_the_start() {
    let mut b = linear(5);
    b.record(at(1000), 10.0);
    b.record(at(1010), 1.0);
    assert_eq!(b.window_average(at(1010)), 1.0);
}

#[test]
fn linear_average_rounds_to_six_decimals() {
    let mut b = linear(60);
    b.record(at(1000), 1.0);
    b.record(at(1001), 0.0);
    b.record(at(1002), 0.0);
    assert_eq!(b.window_average(at(1002)), 0.333333);
}

#[test]
fn weighted_average_favours_recent_data() {
    // Four buckets: α = 1 - 0.0001^(1/4) = 0.9.
    let mut b = weighted(4);
    for (i, v) in [10.0, 10.0, 5.0, 5.0].into_iter().enumerate() {
        b.record(at(1000 + i as u64), v);
    }
    let want = 5.0 * 0.9 + 5.0 * 0.09 + 10.0 * 0.009 + 10.0 * 0.0009;
    assert!((b.window_average(at(1003)) - want).abs() < 1e-9);
    // One silent second shifts every weight by one step.
    let want = 5.0 * 0.09 + 5.0 * 0.009 + 10.0 * 0.0009;
    assert!((b.window_average(at(1004)) - want).abs() < 1e-9);
    assert_eq!(b.window_average(at(1009)), 0.0);
}

#[test]
fn weighted_smoothing_has_a_floor() {
    // 60 buckets would give α ≈ 0.142; the floor is 0.2.
    let mut b = weighted(60);
    b.record(at(1000), 10.0);
    assert!((b.window_average(at(1000)) - 2.0).abs() < 1e-9);
}

#[test]
fn weighted_works_near_the_epoch() {
    let mut b = weighted(4);
    b.record(at(1), 1.0);
    assert!((b.window_average(at(1)) - 0.9).abs() < 1e-9);
}

#[test]
fn max_window_keeps_the_largest_recent_value() {
    // 10 s in 2 s slots: five slots.
    let mut w = MaxWindow::new(Duration::from_secs(10), Duration::from_secs(2));
    assert_eq!(w.current(), 0);
    w.record(at(0), 4);
    w.record(at(2), 1);
    assert_eq!(w.current(), 4);
    w.record(at(8), 2);
    assert_eq!(w.current(), 4, "slot 0 is still in the window");
    w.record(at(10), 1);
    assert_eq!(w.current(), 2, "slot 0 scrolled out");
    w.record(at(10), 3);
    assert_eq!(w.current(), 3, "same slot keeps the larger value");
    w.record(at(11), 0);
    assert_eq!(w.current(), 3);
    w.record(at(30), 0);
    assert_eq!(w.current(), 0);
}
