//! Raw TCP on loopback, for what an HTTP client will not do: half-written
//! requests, hand-made heads, reading a response until the peer closes, and
//! ports nobody listens on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP head (through `\r\n\r\n`) from `tcp` (or a TLS stream),
/// keeping what follows in `buf`. `None` once the connection ends first.
pub async fn read_head<S>(tcp: &mut S, buf: &mut Vec<u8>) -> Option<String>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `bytes` on a fresh connection to `addr` and returns everything
/// read until the server closes, errors, or `limit` passes.
///
/// # Panics
///
/// If `addr` does not accept the connection.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(bytes).await;
    read_until_closed(&mut tcp, limit).await.0
}

/// Reads until EOF, an error, or `limit`; returns the text and whether the
/// connection ended (rather than the limit passing).
pub async fn read_until_closed<S>(tcp: &mut S, limit: Duration) -> (String, bool)
where
    S: AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

/// A loopback port nobody listens on (bound, read, released).
///
/// # Panics
///
/// If no ephemeral port can be bound.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}
