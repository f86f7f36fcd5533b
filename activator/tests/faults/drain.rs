//! Drain without loss (DESIGN §8, issue 6 item 4): SIGTERM to an activator
//! under continuous traffic fails no request, lets in-flight ones finish, and
//! the activator stops after its drain timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn sigterm_under_continuous_traffic_loses_nothing() {
    let _shared = EXCLUSIVE.read().await;
    let app = kdp_test_support::Upstream::start([127, 0, 0, 1].into(), |req| async move {
        let ms = if req.uri().path() == "/slow" { 800 } else { 10 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")))
    })
    .unwrap();
    let pod = Pod::start(app.addr().port(), 0).await;
    let drain = Duration::from_millis(600);
    let mut act = Activator::start(&[("KDP_DRAIN_TIMEOUT", "600ms")]).await;
    act.revision(0, &[pod.addr]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            // Half the clients speak HTTP/1.1 to the http1 port, half h2c to the h2c port.
            let (c, addr) = if i % 2 == 0 {
                (client(), act.http1)
            } else {
                (h2_client(), act.h2c)
            };
            tokio::spawn(async move {
                let (mut ok, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Acquire) {
                    let req = request("GET", &format!("http://{addr}/"), &REV, Bytes::new());
                    match try_send(&c, req).await {
                        Ok(g) if g.status == 200 => ok += 1,
                        other => failures.push(format!("{:?}", other.map(|g| g.status))),
                    }
                }
                (ok, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow = {
        let url = format!("http://{}/slow", act.http1);
        tokio::spawn(async move { try_get(&url, &REV).await.map(|g| g.status) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sigterm = Instant::now();
    act.terminate();
    // Traffic goes on during the drain timeout, while the load balancers
    // take the activator out.
    tokio::time::sleep(drain - Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    let mut total = 0;
    for l in loops {
        let (ok, failures) = l.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        total += ok;
    }
    assert_eq!(
        slow.await.unwrap(),
        Ok(200),
        "the in-flight request finished"
    );
    tokio::time::timeout(Duration::from_secs(3), &mut act.done)
        .await
        .expect("stops after the drain timeout and the in-flight requests")
        .unwrap();
    let took = sigterm.elapsed();
    assert!(took >= drain, "stopped before the drain timeout: {took:?}");
    assert!(total > 20, "traffic flowed: {total}");
    assert_eq!(act.in_flight(), 0);
    eprintln!("activator drain: {total} requests ok, stopped {took:?} after SIGTERM");
}
