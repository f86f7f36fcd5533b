//! Drain without loss (DESIGN §8, issue 6 item 4): SIGTERM under continuous
//! traffic fails no request, lets in-flight ones finish and exits in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn sigterm_under_continuous_traffic_loses_nothing() {
    let _shared = EXCLUSIVE.read().await;
    let addr = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let ms = if req.uri().path() == "/slow" { 600 } else { 20 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        text(200, "ok")
    })
    .await
    .addr;
    let quiet = Duration::from_millis(300);
    let mut qp = Qp::start(
        addr.port(),
        &[
            ("CONTAINER_CONCURRENCY", "4"),
            ("KDP_DRAIN_QUIET_PERIOD", "300ms"),
        ],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let c = client();
    // Four clients in a loop on keep-alive connections, until the load
    // balancer would have taken the pod out (`stop`).
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (c, url, stop, ok) = (c.clone(), qp.url("/"), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    match try_send(&c, get_req(&url, &[])).await {
                        Ok(g) if g.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.push(format!("{:?}", other.map(|g| g.status))),
                    }
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow = {
        let url = qp.url("/slow");
        tokio::spawn(async move { get(&url, &[]).await.status })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    qp.terminate();
    // Traffic goes on for a while after SIGTERM (endpoints propagate slowly).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_stop = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Release);
    let last_request = Instant::now();
    for l in loops {
        let failures = l.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert_eq!(slow.await.unwrap(), 200, "the in-flight request finished");
    tokio::time::timeout(quiet + Duration::from_secs(2), &mut qp.done)
        .await
        .expect("exits a quiet period after the last request")
        .unwrap();
    let exit_after = last_request.elapsed();
    assert!(
        exit_after >= quiet - Duration::from_millis(50),
        "{exit_after:?}"
    );
    assert!(before_stop > 20, "traffic flowed: {before_stop}");
    eprintln!("drain: {before_stop} requests ok, exited {exit_after:?} after the last one");
}

/// The same through the binary and a real SIGTERM: exit code 0, nothing lost.
#[tokio::test]
async fn binary_sigterm_under_traffic_exits_0_and_loses_nothing() {
    let _shared = EXCLUSIVE.read().await;
    let addr = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text(200, "ok")
    })
    .await
    .addr;
    let mut qp = Binary::spawn(
        addr.port(),
        &[("KDP_DRAIN_QUIET_PERIOD", "300ms")],
        std::process::Stdio::null(),
    )
    .await;
    let url = qp.url("/");
    let stop = Arc::new(AtomicBool::new(false));
    let c = client();
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let (c, url, stop) = (c.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Acquire) {
                    match try_send(&c, get_req(&url, &[])).await {
                        Ok(g) if g.status == 200 => ok += 1,
                        other => failures.push(format!("{:?}", other.map(|g| g.status))),
                    }
                }
                (ok, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    qp.sigterm().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let mut total = 0;
    for l in loops {
        let (ok, failures) = l.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        total += ok;
    }
    let status = tokio::time::timeout(Duration::from_secs(3), qp.child.wait())
        .await
        .expect("exits soon after the quiet period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(total > 10, "traffic flowed: {total}");
}
