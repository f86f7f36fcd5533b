//! Overload (DESIGN §8, issue 6 item 3): at ten times its queue depth the
//! queue-proxy answers 503 fast, never crashes, and recovers the moment the
//! load drops.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn ten_times_the_queue_depth_is_a_fast_503_then_recovers() {
    let _shared = EXCLUSIVE.read().await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let addr = upstream(move |_req| {
        let mut rx = release_rx.clone();
        async move {
            let _ = rx.wait_for(|r| *r).await;
            text(200, "done")
        }
    })
    .await
    .addr;
    // CC=2: 2 executing + 20 queued are admitted; offer 10 × 20 = 200.
    let qp = Qp::start(addr.port(), &[("CONTAINER_CONCURRENCY", "2")]).await;
    let offered = 200;
    let c = client();
    let tasks: Vec<_> = (0..offered)
        .map(|_| {
            let c = c.clone();
            let url = qp.url("/");
            tokio::spawn(async move {
                let start = Instant::now();
                let got = try_send(&c, get_req(&url, &[])).await.unwrap();
                (got.status, got.body, start.elapsed())
            })
        })
        .collect();
    eventually("breaker full", || {
        let n = qp.stats.concurrency();
        async move { n == 22 }
    })
    .await;
    // Everything past the bound has been answered (and fast) while the
    // admitted requests are still held.
    let mut rejected = Vec::new();
    let mut admitted = Vec::new();
    for t in tasks {
        if t.is_finished() {
            rejected.push(t.await.unwrap());
        } else {
            admitted.push(t);
        }
    }
    let fresh = get_within(&qp.url("/"), Duration::from_secs(1)).await;
    assert_eq!(fresh.status, 503);
    let mut rejected_waited = rejected.len();
    while admitted.len() > 22 {
        // A few rejections may still be on their way back over loopback.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (done, pending): (Vec<_>, Vec<_>) = admitted.into_iter().partition(|t| t.is_finished());
        for t in done {
            rejected.push(t.await.unwrap());
        }
        admitted = pending;
        rejected_waited += 1;
        assert!(rejected_waited < 400, "rejections are not arriving");
    }
    assert_eq!(rejected.len(), offered - 22);
    let slowest = rejected.iter().map(|r| r.2).max().unwrap();
    for (status, body, _) in &rejected {
        assert_eq!(
            (*status, body.as_str()),
            (503, "pending request queue full\n")
        );
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest 503 took {slowest:?}"
    );
    // Load drops: the held requests complete and new ones pass at once.
    release_tx.send(true).unwrap();
    for t in admitted {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let t = Instant::now();
    assert_eq!(
        get_within(&qp.url("/"), Duration::from_secs(1))
            .await
            .status,
        200
    );
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    qp.settles().await;
    eprintln!(
        "overload: {} rejected, slowest 503 in {slowest:?}",
        rejected.len()
    );
}
