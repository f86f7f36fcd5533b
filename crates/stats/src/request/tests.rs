use std::time::Duration;

use quickcheck::{QuickCheck, TestResult};
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn empty_window_reports_zero() {
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0);
    assert_eq!(stats.report(t0 + ms(1000)), Report::default());
    // A zero-length window divides by nothing.
    assert_eq!(stats.report(t0 + ms(1000)), Report::default());
}

#[test]
fn half_second_request_is_half_concurrency() {
    // queue-proxy spec §8 M7.
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0);
    stats.request_in(t0, false);
    stats.request_out(t0 + ms(500), false);
    let report = stats.report(t0 + ms(1000));
    assert_eq!(report.average_concurrency, 0.5);
    assert_eq!(report.request_count, 1);

    stats.request_in(t0 + ms(1000), false);
    stats.request_out(t0 + ms(1500), false);
    stats.request_in(t0 + ms(1500), false);
    stats.request_out(t0 + ms(2000), false);
    let report = stats.report(t0 + ms(2000));
    assert_eq!(report.average_concurrency, 1.0);
    assert_eq!(report.request_count, 2);
}

#[test]
fn proxied_requests_count_twice() {
    // queue-proxy spec §8 B7: a proxied request is in both counts.
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0);
    stats.request_in(t0, true);
    assert_eq!(stats.proxied_concurrency(), 1);
    stats.request_out(t0 + ms(250), true);
    let report = stats.report(t0 + ms(1000));
    assert_eq!(
        report,
        Report {
            average_concurrency: 0.25,
            average_proxied_concurrency: 0.25,
            request_count: 1,
            proxied_request_count: 1,
        }
    );
}

#[test]
fn concurrency_carries_over_reports() {
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0);
    stats.request_in(t0, false);
    stats.request_in(t0, false);
    assert_eq!(stats.report(t0 + ms(1000)).average_concurrency, 2.0);
    let report = stats.report(t0 + ms(2000));
    assert_eq!(report.average_concurrency, 2.0);
    assert_eq!(report.request_count, 0, "the window counts arrivals only");
    assert_eq!(stats.concurrency(), 2);
}

#[test]
fn stale_timestamps_are_not_integrated() {
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0 + ms(1000));
    // Earlier than the window start: counted, but adds no area.
    stats.request_in(t0, false);
    let report = stats.report(t0 + ms(2000));
    assert_eq!(report.average_concurrency, 1.0);
    assert_eq!(report.request_count, 1);
    stats.request_out(t0 + ms(1500), false);
    assert_eq!(stats.concurrency(), 0);
    assert_eq!(stats.report(t0 + ms(3000)).average_concurrency, 0.0);
}

#[test]
fn unmatched_out_does_not_wrap() {
    let t0 = Instant::now();
    let mut stats = RequestStats::new(t0);
    stats.request_out(t0, true);
    assert_eq!(stats.concurrency(), 0);
    assert_eq!(stats.proxied_concurrency(), 0);
    assert_eq!(stats.report(t0 + ms(1)).average_concurrency, 0.0);
}

#[test]
fn stat_turns_counts_into_rates() {
    // queue-proxy spec §8 M3 (and the 2 s / 10 s unit-test periods).
    let report = Report {
        average_concurrency: 3.0,
        average_proxied_concurrency: 2.0,
        request_count: 39,
        proxied_request_count: 15,
    };
    let stat = report.to_stat("pod", Duration::from_secs(1), Duration::ZERO);
    assert_eq!(stat.pod_name, "pod");
    assert_eq!(stat.average_concurrent_requests, 3.0);
    assert_eq!(stat.average_proxied_concurrent_requests, 2.0);
    assert_eq!(stat.request_count, 39.0);
    assert_eq!(stat.proxied_request_count, 15.0);
    assert_eq!(stat.timestamp, 0);

    let stat = report.to_stat("pod", Duration::from_secs(2), Duration::ZERO);
    assert_eq!(
        (stat.request_count, stat.proxied_request_count),
        (19.5, 7.5)
    );
    assert_eq!(
        stat.average_concurrent_requests, 3.0,
        "averages are not rates"
    );
    let stat = report.to_stat("pod", Duration::from_secs(10), Duration::from_millis(5500));
    assert_eq!((stat.request_count, stat.proxied_request_count), (3.9, 1.5));
    assert_eq!(stat.process_uptime, 5.5);
}

#[test]
fn shared_stats_count_every_event() {
    let t0 = Instant::now();
    let stats = SharedRequestStats::new(t0);
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for j in 0..1000u64 {
                    let at = t0 + Duration::from_micros(i * 1000 + j);
                    stats.request_in(at, j % 2 == 0);
                    stats.request_out(at, j % 2 == 0);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(stats.concurrency(), 0);
    let report = stats.report(t0 + ms(1000));
    assert_eq!(report.request_count, 8000);
    assert_eq!(report.proxied_request_count, 4000);
}

/// Property: for any set of requests inside one window, the concurrency
/// integral equals the sum of the request durations, and the average is that
/// sum over the window.
#[test]
fn integral_is_sum_of_durations() {
    fn property(requests: Vec<(u16, u16)>) -> TestResult {
        let t0 = Instant::now();
        let window = ms(1 << 17);
        let mut events = Vec::with_capacity(requests.len() * 2);
        let mut total = Duration::ZERO;
        for &(start, len) in &requests {
            let start = ms(u64::from(start));
            let len = ms(u64::from(len));
            total += len;
            events.push((start, false));
            events.push((start + len, true));
        }
        // Apply in time order, arrivals before departures at equal times
        // (a zero-length request must not depart before it arrives).
        events.sort();
        let mut stats = RequestStats::new(t0);
        for (at, is_out) in events {
            if is_out {
                stats.request_out(t0 + at, false);
            } else {
                stats.request_in(t0 + at, false);
            }
        }
        // Exact in integer nanoseconds (the window may not have been
        // integrated to its end yet, but every request has finished).
        let exact = stats.concurrency_nanos == total.as_nanos();
        let report = stats.report(t0 + window);
        let expected = total.as_secs_f64() / window.as_secs_f64();
        let close = (report.average_concurrency - expected).abs() <= 1e-9 * expected.max(1.0);
        TestResult::from_bool(
            exact
                && close
                && report.request_count == requests.len() as u64
                && stats.concurrency() == 0,
        )
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(property as fn(Vec<(u16, u16)>) -> TestResult);
}
