//! Freed memory goes back to the OS while the process idles: a sidecar that
//! served a burst shrinks afterwards instead of staying at its peak.

#![allow(missing_docs, reason = "test crate")]

use std::time::Duration;

use kdp_core::memory;

#[global_allocator]
static GLOBAL: memory::Allocator = memory::Allocator;

/// The tests measure the whole process's RSS, and a collection on any
/// thread purges for the whole process: one test at a time, even when the
/// harness runs them on threads of one process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a burst allocates and then frees: 4096 connection-sized buffers.
const BURST: usize = 4096;
const BUFFER: usize = 8 * 1024;
const BURST_BYTES: u64 = (BURST * BUFFER) as u64;

/// Resident set size of this process.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Allocates and touches a burst's buffers, checks they are resident, frees them.
fn burst() {
    let before = rss();
    let buffers: Vec<Vec<u8>> = (0..BURST).map(|_| vec![1_u8; BUFFER]).collect();
    let during = rss();
    assert!(
        during >= before + BURST_BYTES * 3 / 4,
        "the burst is resident: {before} -> {during} bytes"
    );
    drop(std::hint::black_box(buffers));
}

/// Waits (at most 10 s) until RSS is back within a quarter of a burst of
/// `baseline`, calling `step` between looks.
#[expect(clippy::disallowed_methods, reason = "a plain thread, no runtime")]
fn shrinks_to(baseline: u64, mut step: impl FnMut()) -> Result<(), u64> {
    for _ in 0..100 {
        if rss() <= baseline + BURST_BYTES / 4 {
            return Ok(());
        }
        step();
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(rss())
}

#[test]
fn an_idle_process_gives_a_bursts_memory_back() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let baseline = rss();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The binaries' reclaimer, on a runtime of its own.
    let reclaimer = std::thread::spawn(move || {
        let rt = kdp_core::runtime::build(1).expect("runtime");
        rt.block_on(async {
            tokio::select! {
                () = memory::reclaim_every(Duration::from_millis(100)) => {}
                _ = stopped => {}
            }
        });
    });
    burst();
    // Idle: nothing allocates but the reclaimer.
    let shrunk = shrinks_to(baseline, || {});
    let _ = stop.send(());
    reclaimer.join().expect("reclaimer thread");
    if let Err(after) = shrunk {
        panic!("RSS {baseline} before a {BURST_BYTES}-byte burst, still {after} after 10 s idle");
    }
}

#[test]
fn a_burst_freed_by_a_thread_that_then_sleeps_is_reclaimed_from_another() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let baseline = rss();
    let (done, sleep) = std::sync::mpsc::channel::<()>();
    let (freed_tx, freed) = std::sync::mpsc::channel::<()>();
    // A worker of a multi-threaded runtime: serves a burst, then sleeps.
    let worker = std::thread::spawn(move || {
        burst();
        freed_tx.send(()).expect("main thread waits");
        let _ = sleep.recv();
    });
    freed.recv().expect("worker ran");
    // The reclaimer runs on some other worker.
    let shrunk = shrinks_to(baseline, memory::collect);
    done.send(()).expect("worker waits");
    worker.join().expect("worker thread");
    if let Err(after) = shrunk {
        panic!("RSS {baseline} before the burst, still {after} after 10 s");
    }
}
