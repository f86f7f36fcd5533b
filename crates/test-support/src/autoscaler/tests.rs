//! The fake autoscaler driven by a real tokio-tungstenite client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kdp_stats::{Stat, WireStatMessage, WireStatMessages};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::FakeAutoscaler;
use crate::within;

const T: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn dial(url: &str) -> Client {
    within(T, "websocket dial", connect_async(url))
        .await
        .unwrap()
        .0
}

fn frame(rev: &str, concurrency: f64) -> WireStatMessages {
    WireStatMessages {
        messages: vec![WireStatMessage::new(
            "default",
            rev,
            Stat {
                pod_name: "activator-abc".to_owned(),
                average_concurrent_requests: concurrency,
                request_count: 1.0,
                ..Stat::default()
            },
        )],
    }
}

/// Reads until the server's close frame and returns its code, then keeps
/// reading (which sends the close reply) until the stream ends, as a real
/// client does.
async fn close_code(client: &mut Client) -> Option<CloseCode> {
    within(T, "close frame", async {
        let mut code = None;
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => code = frame.map(|f| f.code),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return code,
            }
        }
    })
    .await
}

#[tokio::test]
async fn records_binary_frames_and_drops_others() {
    let scaler = FakeAutoscaler::start().await;
    let mut client = dial(&scaler.url()).await;
    let (first, second) = (frame("hello-00001", 1.0), frame("hello-00002", 2.5));
    client
        .send(Message::binary(first.to_bytes()))
        .await
        .unwrap();
    client.send(Message::text("not a stat")).await.unwrap();
    client
        .send(Message::binary(vec![0xff, 0xff, 0xff]))
        .await
        .unwrap();
    client
        .send(Message::binary(second.to_bytes()))
        .await
        .unwrap();

    let frames = scaler.wait_for_frames(2, T).await.unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].message, first);
    assert_eq!(frames[1].message, second);
    assert!(frames[0].at <= frames[1].at);
    assert!(frames.iter().all(|f| f.connection == 1));
    assert_eq!(scaler.dropped_frames(), 2, "text and undecodable frames");
    assert_eq!(scaler.paths(), ["/"]);

    scaler.clear_frames();
    assert!(scaler.frames().is_empty());
}

#[tokio::test]
async fn any_path_upgrades() {
    let scaler = FakeAutoscaler::start().await;
    let _client = dial(&format!("{}/some/path", scaler.url())).await;
    scaler.wait_for_connections(1, T).await.unwrap();
    assert_eq!(scaler.paths(), ["/some/path"]);
}

#[tokio::test]
async fn answers_pings() {
    let scaler = FakeAutoscaler::start().await;
    let mut client = dial(&scaler.url()).await;
    client
        .send(Message::Ping(b"keepalive".to_vec().into()))
        .await
        .unwrap();
    let reply = within(T, "pong", client.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Pong(b"keepalive".to_vec().into()));
}

#[tokio::test]
async fn disconnect_all_closes_with_1012_and_accepts_reconnects() {
    let scaler = FakeAutoscaler::start().await;
    let mut client = dial(&scaler.url()).await;
    scaler.wait_for_connections(1, T).await.unwrap();
    scaler.disconnect_all();
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Restart));

    let mut again = dial(&scaler.url()).await;
    again
        .send(Message::binary(frame("r", 1.0).to_bytes()))
        .await
        .unwrap();
    let frames = scaler.wait_for_frames(1, T).await.unwrap();
    assert_eq!(frames[0].connection, 2);
    assert_eq!(scaler.connections(), 2);
    crate::poll_until(T, String::new, || {
        (scaler.open_connections() == 1).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn stop_refuses_dials_until_restart_on_the_same_port() {
    let scaler = FakeAutoscaler::start().await;
    let url = scaler.url();
    let mut client = dial(&url).await;
    client
        .send(Message::binary(frame("r", 1.0).to_bytes()))
        .await
        .unwrap();
    scaler.wait_for_frames(1, T).await.unwrap();

    let stop = async {
        scaler.stop().await;
    };
    let (code, ()) = tokio::join!(close_code(&mut client), within(T, "stop", stop));
    assert_eq!(code, Some(CloseCode::Restart));
    assert_eq!(scaler.open_connections(), 0);
    assert!(
        within(T, "refused dial", connect_async(&url))
            .await
            .is_err()
    );

    scaler.restart().unwrap();
    assert_eq!(scaler.url(), url);
    let mut client = dial(&url).await;
    client
        .send(Message::binary(frame("r", 2.0).to_bytes()))
        .await
        .unwrap();
    let frames = scaler.wait_for_frames(2, T).await.unwrap();
    assert_eq!(frames[1].connection, 2, "frames survive a restart");
}

#[tokio::test]
async fn kill_drops_connections_without_a_close_frame() {
    let scaler = FakeAutoscaler::start().await;
    let mut client = dial(&scaler.url()).await;
    scaler.wait_for_connections(1, T).await.unwrap();
    scaler.kill();
    assert_eq!(close_code(&mut client).await, None);
    scaler.restart().unwrap();
    let _client = dial(&scaler.url()).await;
}

#[tokio::test]
async fn wait_for_frames_reports_a_timeout() {
    let scaler = FakeAutoscaler::start().await;
    let err = scaler
        .wait_for_frames(2, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 50ms waiting for 2 frames (got 0)"
    );
}
