use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use tokio_test::task::{Spawn, spawn};
use tokio_test::{assert_pending, assert_ready_ok};

use super::*;

fn qp_breaker(cc: usize) -> Breaker {
    Breaker::new(BreakerParams {
        queue_depth: 10 * cc,
        max_concurrency: cc,
        initial_capacity: cc,
    })
}

type Acquire = Pin<Box<dyn Future<Output = Result<Permit, QueueFull>> + Send>>;

fn waiter(breaker: &Breaker) -> Spawn<Acquire> {
    let breaker = breaker.clone();
    spawn(Box::pin(async move { breaker.acquire().await }))
}

#[test]
fn queue_full_display() {
    assert_eq!(QueueFull.to_string(), "pending request queue full");
}

#[test]
fn acquire_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let breaker = qp_breaker(1);
    is_send(&breaker.acquire());
}

// B1: CC=1 admits 11 (1 executing + 10 queued); the 12th is rejected at once,
// and releasing lets every admitted one through.
#[tokio::test(flavor = "current_thread")]
async fn overload_rejects_immediately() {
    let breaker = qp_breaker(1);
    let first = breaker.acquire().await.expect("empty breaker");
    let mut queued: Vec<_> = (0..10).map(|_| waiter(&breaker)).collect();
    for w in &mut queued {
        assert_pending!(w.poll());
    }
    assert_eq!(breaker.in_flight(), 11);

    let mut twelfth = waiter(&breaker);
    assert_eq!(
        twelfth.poll().map(|r| r.map(drop)),
        Poll::Ready(Err(QueueFull))
    );
    assert!(breaker.try_acquire().is_none());
    assert_eq!(breaker.in_flight(), 11);

    drop(first);
    let mut done = 0;
    while done < 10 {
        let w = queued
            .iter_mut()
            .find(|w| w.is_woken())
            .expect("a release wakes a waiter");
        let permit = assert_ready_ok!(w.poll());
        drop(permit);
        done += 1;
    }
    assert_eq!(breaker.in_flight(), 0);
}

// B2: a queued request does not run until the executing one finishes.
#[tokio::test(flavor = "current_thread")]
async fn queued_waits_for_release() {
    let breaker = qp_breaker(1);
    let first = breaker.acquire().await.expect("empty breaker");
    let mut second = waiter(&breaker);
    assert_pending!(second.poll());
    assert!(!second.is_woken());
    assert_eq!(breaker.in_flight(), 2);

    drop(first);
    assert!(second.is_woken());
    let permit = assert_ready_ok!(second.poll());
    assert_eq!(breaker.in_flight(), 1);
    drop(permit);
    assert_eq!(breaker.in_flight(), 0);
}

// B3: a cancelled waiter frees its place at once.
#[tokio::test(flavor = "current_thread")]
async fn cancelled_waiter_frees_its_place() {
    let breaker = Breaker::new(BreakerParams {
        queue_depth: 1,
        max_concurrency: 1,
        initial_capacity: 1,
    });
    let running = breaker.acquire().await.expect("empty breaker");
    let mut queued = waiter(&breaker);
    assert_pending!(queued.poll());
    assert_eq!(breaker.acquire().await.map(drop), Err(QueueFull));

    drop(queued);
    assert_eq!(breaker.in_flight(), 1);
    let mut next = waiter(&breaker);
    assert_pending!(next.poll());
    drop(running);
    let permit = assert_ready_ok!(next.poll());
    drop(permit);
    assert_eq!(breaker.in_flight(), 0);
}

// A waiter picked by a release and then dropped before it ran passes the
// wake-up on instead of swallowing the slot.
#[tokio::test(flavor = "current_thread")]
async fn woken_then_cancelled_waiter_passes_the_slot_on() {
    let breaker = qp_breaker(1);
    let running = breaker.acquire().await.expect("empty breaker");
    let mut a = waiter(&breaker);
    let mut b = waiter(&breaker);
    assert_pending!(a.poll());
    assert_pending!(b.poll());

    drop(running);
    assert!(a.is_woken());
    assert!(!b.is_woken());
    drop(a);
    assert!(b.is_woken());
    let permit = assert_ready_ok!(b.poll());
    assert_eq!(breaker.in_flight(), 1);
    drop(permit);
}

#[tokio::test(flavor = "current_thread")]
async fn try_acquire_never_waits() {
    let breaker = qp_breaker(2);
    let a = breaker.try_acquire().expect("free slot");
    let b = breaker.try_acquire().expect("free slot");
    assert!(breaker.try_acquire().is_none());
    assert_eq!(breaker.in_flight(), 2);
    drop(a);
    let c = breaker.try_acquire().expect("slot returned");
    drop((b, c));
    assert_eq!(breaker.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn growing_wakes_waiters() {
    let breaker = Breaker::new(BreakerParams {
        queue_depth: 10,
        max_concurrency: 10,
        initial_capacity: 0,
    });
    let mut waiters: Vec<_> = (0..3).map(|_| waiter(&breaker)).collect();
    for w in &mut waiters {
        assert_pending!(w.poll());
    }
    breaker.update_concurrency(2);
    assert_eq!(breaker.capacity(), 2);
    let ready: Vec<_> = waiters
        .iter_mut()
        .filter(|w| w.is_woken())
        .map(|w| assert_ready_ok!(w.poll()))
        .collect();
    assert_eq!(ready.len(), 2);
    assert_eq!(breaker.in_flight(), 3);
    drop(ready);
    assert_eq!(breaker.in_flight(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn shrinking_takes_effect_as_permits_return() {
    let breaker = qp_breaker(3);
    let permits: Vec<_> = (0..3)
        .map(|_| breaker.try_acquire().expect("free"))
        .collect();
    breaker.update_concurrency(1);
    assert_eq!(breaker.capacity(), 1);
    let mut queued = waiter(&breaker);
    assert_pending!(queued.poll());

    let mut permits = permits.into_iter();
    drop(permits.next());
    drop(permits.next());
    assert!(!queued.is_woken(), "one permit out: at the new capacity");
    assert_pending!(queued.poll());
    drop(permits.next());
    assert!(queued.is_woken());
    let permit = assert_ready_ok!(queued.poll());
    assert!(breaker.try_acquire().is_none());
    drop(permit);
}

#[test]
fn capacity_is_clamped_to_max_concurrency() {
    let breaker = Breaker::new(BreakerParams {
        queue_depth: 1,
        max_concurrency: 2,
        initial_capacity: 5,
    });
    assert_eq!(breaker.capacity(), 2);
    breaker.update_concurrency(7);
    assert_eq!(breaker.capacity(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn infinite_breaker_closed_then_open() {
    let breaker = Breaker::infinite(0);
    assert_eq!(breaker.capacity(), 0);
    assert!(breaker.try_acquire().is_none());
    // No queue limit while closed.
    let mut waiters: Vec<_> = (0..1000).map(|_| waiter(&breaker)).collect();
    for w in &mut waiters {
        assert_pending!(w.poll());
    }
    assert_eq!(breaker.in_flight(), 1000);

    breaker.update_concurrency(42);
    assert_eq!(breaker.capacity(), 1);
    let permits: Vec<_> = waiters
        .iter_mut()
        .map(|w| {
            assert!(w.is_woken());
            assert_ready_ok!(w.poll())
        })
        .collect();
    // Open means unlimited.
    let extra = breaker.try_acquire().expect("open");
    assert_eq!(breaker.in_flight(), 1001);

    // Closing keeps the running ones and holds new arrivals.
    breaker.update_concurrency(0);
    let mut late = waiter(&breaker);
    assert_pending!(late.poll());
    drop(permits);
    drop(extra);
    assert!(!late.is_woken());
    assert_eq!(breaker.in_flight(), 1);
    breaker.update_concurrency(1);
    let permit = assert_ready_ok!(late.poll());
    drop(permit);
    assert_eq!(breaker.in_flight(), 0);
}

// Cross-task check on a real (paused-clock) runtime: 11 admitted, all finish.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn admitted_requests_all_complete() {
    let breaker = qp_breaker(1);
    let tasks: Vec<_> = (0..11)
        .map(|_| {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                let _permit = breaker.acquire().await?;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                Ok::<_, QueueFull>(())
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(breaker.in_flight(), 11);
    assert_eq!(breaker.acquire().await.map(drop), Err(QueueFull));
    for task in tasks {
        task.await.expect("no panic").expect("admitted");
    }
    assert_eq!(breaker.in_flight(), 0);
}

// === property: capacity respected, every permit returned ===

#[derive(Clone, Debug)]
enum Op {
    TryAcquire,
    StartWait,
    PollWaiters,
    CancelWaiter(usize),
    Release(usize),
    Update(usize),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = usize::arbitrary(g);
        match u8::arbitrary(g) % 6 {
            0 => Self::TryAcquire,
            1 => Self::StartWait,
            2 => Self::PollWaiters,
            3 => Self::CancelWaiter(n),
            4 => Self::Release(n),
            _ => Self::Update(n % 6),
        }
    }
}

fn never_over_capacity(depth: u8, cap: u8, ops: Vec<Op>) -> TestResult {
    let depth = usize::from(depth % 4);
    let max = usize::from(cap % 5) + 1;
    let breaker = Breaker::new(BreakerParams {
        queue_depth: depth,
        max_concurrency: max,
        initial_capacity: max,
    });
    let mut held: Vec<Permit> = Vec::new();
    let mut waiters: Vec<Spawn<Acquire>> = Vec::new();
    for op in ops {
        let before = held.len();
        let capacity = breaker.capacity();
        match op {
            Op::TryAcquire => {
                if let Some(p) = breaker.try_acquire() {
                    held.push(p);
                }
            }
            Op::StartWait => {
                let mut w = waiter(&breaker);
                match w.poll() {
                    Poll::Ready(Ok(p)) => held.push(p),
                    Poll::Ready(Err(QueueFull)) => {
                        if before + waiters.len() < depth + max {
                            return TestResult::error("rejected below the admission limit");
                        }
                    }
                    Poll::Pending => waiters.push(w),
                }
            }
            Op::PollWaiters => {
                let mut still = Vec::new();
                for mut w in waiters.drain(..) {
                    match w.poll() {
                        Poll::Ready(Ok(p)) => held.push(p),
                        Poll::Ready(Err(QueueFull)) => {
                            return TestResult::error("admitted waiter rejected");
                        }
                        Poll::Pending => still.push(w),
                    }
                }
                waiters = still;
            }
            Op::CancelWaiter(i) if !waiters.is_empty() => drop(waiters.remove(i % waiters.len())),
            Op::Release(i) if !held.is_empty() => drop(held.remove(i % held.len())),
            Op::Update(n) => breaker.update_concurrency(n),
            Op::CancelWaiter(_) | Op::Release(_) => {}
        }
        if held.len() > before && held.len() > capacity {
            return TestResult::error(format!(
                "granted a permit with {before} out and capacity {capacity}"
            ));
        }
        if breaker.in_flight() != held.len() + waiters.len() {
            return TestResult::error("in_flight disagrees with the model");
        }
        // Nobody may sleep on a free slot: a waiter is either woken or the
        // breaker is at capacity.
        if held.len() < breaker.capacity() && !waiters.is_empty() {
            let woken = waiters.iter().filter(|w| w.is_woken()).count();
            if woken == 0 {
                return TestResult::error("free slot but no waiter woken");
            }
        }
    }
    drop(waiters);
    drop(held);
    if breaker.in_flight() != 0 {
        return TestResult::error("permits leaked");
    }
    let capacity = breaker.capacity();
    let all: Vec<_> = (0..capacity)
        .filter_map(|_| breaker.try_acquire())
        .collect();
    if all.len() != capacity {
        return TestResult::error("slots leaked");
    }
    TestResult::passed()
}

#[test]
fn capacity_never_exceeded_and_permits_returned() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(never_over_capacity as fn(u8, u8, Vec<Op>) -> TestResult);
}
