//! Scripted raw-TCP upstreams that misbehave on demand and small helpers
//! shared by the fault tests, on top of the common queue-proxy harness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) use crate::harness::*;

/// Tests that measure or exhaust process-wide resources (fds, memory) take
/// this exclusively; every other test takes it shared.
pub(crate) static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// What a scripted upstream does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// `200 ok`, connection kept alive.
    Ok,
    /// `200 ok`, then the connection is closed.
    OkThenClose,
    /// Reads the request and closes without a byte of response (an idle
    /// timeout racing a reused connection).
    CloseSilently,
    /// Never answers.
    Hang,
    /// Headers with `Content-Length: 1000`, 10 body bytes, then a TCP reset.
    ResetMidBody,
    /// Chunked headers, one chunk, then a TCP reset.
    ResetMidChunks,
    /// Bytes that are not HTTP, then close.
    Garbage,
}

/// A raw-TCP user container whose behaviour is `script(path, nth request on
/// this connection)`. Counts requests it read.
pub(crate) struct Scripted {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<AtomicUsize>,
}

pub(crate) async fn scripted<F>(script: F) -> Scripted
where
    F: Fn(&str, usize) -> Act + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let req2 = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_scripted(tcp, script.clone(), req2.clone()));
        }
    });
    Scripted { addr, requests }
}

async fn serve_scripted<F>(mut tcp: TcpStream, script: F, requests: Arc<AtomicUsize>)
where
    F: Fn(&str, usize) -> Act,
{
    let mut buf = Vec::new();
    for nth in 0.. {
        let Some(head) = read_head(&mut tcp, &mut buf).await else {
            return;
        };
        // Bodies are skipped by Content-Length (the tests send small ones).
        let len = header_value(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len);
        requests.fetch_add(1, Ordering::Relaxed);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        match script(&path, nth) {
            Act::Ok => {
                if tcp.write_all(OK).await.is_err() {
                    return;
                }
            }
            Act::OkThenClose => {
                let _ = tcp.write_all(OK).await;
                return;
            }
            Act::CloseSilently => return,
            Act::Hang => {
                let _ = tcp.read(&mut [0u8; 1]).await;
                return;
            }
            Act::ResetMidBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tcp.set_zero_linger();
                return;
            }
            Act::ResetMidChunks => {
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tcp.set_zero_linger();
                return;
            }
            Act::Garbage => {
                let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                return;
            }
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A GET that must be answered within `limit`.
pub(crate) async fn get_within(url: &str, limit: Duration) -> Got {
    tokio::time::timeout(limit, get(url, &[]))
        .await
        .unwrap_or_else(|_| panic!("GET {url} not answered within {limit:?}"))
}
