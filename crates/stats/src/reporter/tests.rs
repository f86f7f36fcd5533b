//! Activator spec §5.3 examples and §9 items 41–50; times in milliseconds.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn stat(average_concurrency: f64, request_count: f64) -> ConcurrencyStat {
    ConcurrencyStat {
        average_concurrency,
        request_count,
    }
}

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn rev(name: &str) -> RevisionKey {
    RevisionKey::new("test", name)
}

fn sorted(mut entries: Vec<(RevisionKey, ConcurrencyStat)>) -> Vec<(RevisionKey, ConcurrencyStat)> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

#[test]
fn first_request_pokes_each_revision() {
    // §9 item 41.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    assert_eq!(cr.request_in(&rev("rev1"), t.at(0)), Some(stat(1.0, 1.0)));
    assert_eq!(cr.request_in(&rev("rev2"), t.at(0)), Some(stat(1.0, 1.0)));
    assert_eq!(cr.request_in(&rev("rev1"), t.at(0)), None, "state is live");
    assert_eq!(cr.len(), 2);
}

#[test]
fn sequential_requests_then_tick() {
    // §9 item 42; §5.3 "two sequential 1 ms requests".
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    assert_eq!(cr.request_in(&key, t.at(0)), Some(ConcurrencyStat::POKE));
    cr.request_out(&key, t.at(1));
    assert_eq!(cr.request_in(&key, t.at(1)), None);
    cr.request_out(&key, t.at(2));
    assert_eq!(cr.tick(t.at(2)), vec![(key, stat(0.0, 1.0))]);
}

#[test]
fn two_open_requests_report_two() {
    // §9 item 43.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    assert_eq!(cr.request_in(&key, t.at(0)), Some(stat(1.0, 1.0)));
    assert_eq!(cr.request_in(&key, t.at(0)), None);
    assert_eq!(cr.tick(t.at(1)), vec![(key.clone(), stat(1.0, 1.0))]);
    assert_eq!(cr.tick(t.at(2)), vec![(key, stat(2.0, 0.0))]);
}

#[test]
fn idle_revision_is_dropped_and_pokes_again() {
    // §9 item 44.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    assert_eq!(cr.request_in(&key, t.at(0)), Some(stat(1.0, 1.0)));
    cr.request_out(&key, t.at(1));
    // First stat, discounted by the poke; the period was busy, so kept.
    assert_eq!(cr.tick(t.at(1)), vec![(key.clone(), stat(0.0, 0.0))]);
    assert!(cr.contains(&key));
    // Nothing seen for the entire period: reported once more, then dropped.
    assert_eq!(cr.tick(t.at(2)), vec![(key.clone(), stat(0.0, 0.0))]);
    assert!(!cr.contains(&key));
    assert!(cr.tick(t.at(3)).is_empty());
    assert_eq!(cr.request_in(&key, t.at(3)), Some(stat(1.0, 1.0)));
}

#[test]
fn one_tick_covers_every_revision() {
    // §9 item 45: the tick comes at the creation instant, so every entry is
    // the zero-adjusted first report; the requests are still open, so the
    // state survives even though the (empty) period averaged 0.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    for name in ["rev1", "rev2", "rev3"] {
        assert_eq!(cr.request_in(&rev(name), t.at(0)), Some(stat(1.0, 1.0)));
    }
    assert_eq!(
        sorted(cr.tick(t.at(0))),
        vec![
            (rev("rev1"), stat(0.0, 0.0)),
            (rev("rev2"), stat(0.0, 0.0)),
            (rev("rev3"), stat(0.0, 0.0)),
        ]
    );
    assert_eq!(cr.len(), 3);
}

#[test]
fn overlapping_requests_average_half() {
    // §9 item 46; §5.3 "0–2 and 0–1 → (0.5, 1)".
    let t = Clock(Instant::now());
    for tick_at in [2, 0] {
        let mut cr = ConcurrencyReporter::new();
        let key = rev("rev1");
        assert_eq!(cr.request_in(&key, t.at(0)), Some(stat(1.0, 1.0)));
        assert_eq!(cr.request_in(&key, t.at(0)), None);
        cr.request_out(&key, t.at(1));
        cr.request_out(&key, t.at(2));
        // Knative's test ticks at a stale time 0: nothing more is
        // integrated, the result is the same.
        assert_eq!(cr.tick(t.at(tick_at)), vec![(key, stat(0.5, 1.0))]);
    }
}

#[test]
fn three_open_requests() {
    // §9 item 47.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    assert_eq!(cr.request_in(&key, t.0), Some(stat(1.0, 1.0)));
    assert_eq!(cr.request_in(&key, t.0), None);
    assert_eq!(cr.request_in(&key, t.0), None);
    let entries = cr.tick(t.0 + Duration::from_nanos(1));
    assert_eq!(entries, vec![(key, stat(2.0, 2.0))]);
}

#[test]
fn three_quick_requests() {
    // §9 item 48: three requests of 1 µs each, then a tick.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    let mut pokes = Vec::new();
    for i in 0..3 {
        let start = t.0 + Duration::from_micros(10 * i);
        pokes.extend(cr.request_in(&key, start));
        cr.request_out(&key, start + Duration::from_micros(1));
    }
    assert_eq!(pokes, vec![stat(1.0, 1.0)]);
    assert_eq!(cr.tick(t.at(1)), vec![(key, stat(0.0, 2.0))]);
}

#[test]
fn never_negative_and_next_period_correct() {
    // §9 item 49, without the Go race (in/tick/out cannot interleave here).
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    assert_eq!(cr.request_in(&key, t.at(0)), Some(stat(1.0, 1.0)));
    let first = cr.tick(t.at(1000));
    assert_eq!(first, vec![(key.clone(), stat(0.0, 0.0))]);
    assert!(cr.contains(&key), "a request is in flight");
    cr.request_out(&key, t.at(2000));
    let second = cr.tick(t.at(2000));
    assert_eq!(second, vec![(key.clone(), stat(1.0, 0.0))]);
    for (_, s) in first.iter().chain(&second) {
        assert!(s.average_concurrency >= 0.0 && s.request_count >= 0.0);
    }
    assert_eq!(cr.request_in(&key, t.at(2500)), None);
    cr.request_out(&key, t.at(3000));
    assert_eq!(cr.tick(t.at(3000)), vec![(key, stat(0.5, 1.0))]);
}

#[test]
fn gauge_value_is_adjusted_concurrency() {
    // §9 item 50: four open requests report 3, then 4.
    let t = Clock(Instant::now());
    let mut cr = ConcurrencyReporter::new();
    let key = rev("rev1");
    for _ in 0..4 {
        cr.request_in(&key, t.0);
    }
    assert_eq!(cr.concurrency(&key), 4);
    let first = cr.tick(t.0 + Duration::from_nanos(1));
    assert_eq!(first[0].1.average_concurrency, 3.0);
    let second = cr.tick(t.0 + Duration::from_nanos(2));
    assert_eq!(second[0].1, stat(4.0, 0.0));
}

#[test]
fn unknown_out_is_ignored() {
    let t = Clock(Instant::now());
    let mut cr: ConcurrencyReporter = ConcurrencyReporter::new();
    cr.request_out(&rev("ghost"), t.at(0));
    assert!(cr.is_empty());
}

#[test]
fn wire_message_carries_pod_and_revision() {
    let msg = rev("hello-00001").wire_message(ConcurrencyStat::POKE, "activator-abc");
    assert_eq!(msg.namespace, "test");
    assert_eq!(msg.name, "hello-00001");
    let stat = msg.stat.unwrap();
    assert_eq!(stat.pod_name, "activator-abc");
    assert_eq!(stat.average_concurrent_requests, 1.0);
    assert_eq!(stat.request_count, 1.0);
    assert_eq!(stat.average_proxied_concurrent_requests, 0.0);
    assert_eq!(stat.timestamp, 0);
}
