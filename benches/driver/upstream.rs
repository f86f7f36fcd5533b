//! The test upstream (`kdp-bench upstream --port PORT`), run as its own
//! process so that its CPU is not the driver's.
//!
//! Routes: `/` answers `Hello World!\n` with a `Content-Length`;
//! `/sleep/MS` answers the same after sleeping MS milliseconds (Knative's
//! dataplane-probe shape); `/stream/KB` streams KB KiB in chunked 4 KiB
//! frames, yielding between frames so that they leave as separate writes.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const HELLO: &[u8] = b"Hello World!\n";
const CHUNK: usize = 4096;

/// Serves on `127.0.0.1:port` until killed.
pub(crate) async fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path();
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    } else if let Some(kib) = path
        .strip_prefix("/stream/")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let frames = (kib * 1024).div_ceil(CHUNK);
        let body = stream::unfold(0, move |sent| {
            let chunk = chunk.clone();
            async move {
                if sent == frames {
                    return None;
                }
                tokio::task::yield_now().await;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + 1))
            }
        });
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(StreamBody::new(body).boxed())
            .unwrap_or_default());
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(HELLO)).boxed())
        .unwrap_or_default())
}
