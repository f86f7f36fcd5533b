//! Clients for tests that talk to a proxy on loopback: pooled HTTP/1 and h2c
//! (prior knowledge) clients, and [`Got`], a response read to the end.
//!
//! Everything here panics on a broken request builder; the `try_*` helpers
//! return the client-visible error as text, for tests that expect one.
//!
//! ```no_run
//! # async fn demo() {
//! use kdp_test_support::client::{get, try_get};
//!
//! let got = get("http://127.0.0.1:8012/", &[("k-network-probe", "queue")]).await;
//! assert_eq!((got.status, got.body.as_str()), (200, "queue"));
//! assert!(try_get("http://127.0.0.1:1/", &[]).await.is_err());
//! # }
//! ```

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client type every helper here uses: plain TCP, whole bodies.
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A response read to the end.
#[derive(Clone, Debug)]
pub struct Got {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The body as received.
    pub raw: Bytes,
}

/// A plain HTTP/1.1 client with a keep-alive pool.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client: one connection, many streams.
pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A request with `headers` and a whole `body`.
///
/// # Panics
///
/// If `method`, `url` or a header does not parse.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("a valid request")
}

/// A `GET` of `url` with `headers` and no body.
///
/// # Panics
///
/// If `url` or a header does not parse.
pub fn get_req(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request("GET", url, headers, Bytes::new())
}

/// Sends `req` on `client` and reads the whole body; `Err` carries the
/// client-visible error text.
///
/// # Errors
///
/// If the request fails or the body ends in an error.
pub async fn try_send(client: &Client, req: Request<Full<Bytes>>) -> Result<Got, String> {
    let rsp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let raw = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Got {
        status,
        headers,
        body: String::from_utf8_lossy(&raw).into_owned(),
        raw,
    })
}

/// Sends `req` on a fresh client: h2c when the request says HTTP/2,
/// HTTP/1.1 otherwise.
///
/// # Panics
///
/// If the exchange fails.
pub async fn send(req: Request<Full<Bytes>>) -> Got {
    let client = if req.version() == Version::HTTP_2 {
        h2_client()
    } else {
        client()
    };
    try_send(&client, req).await.expect("a response")
}

/// `GET url` over HTTP/1.1 on a fresh client.
///
/// # Errors
///
/// If the request fails or the body ends in an error.
pub async fn try_get(url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    try_send(&client(), get_req(url, headers)).await
}

/// `GET url` over HTTP/1.1 on a fresh client.
///
/// # Panics
///
/// If the exchange fails.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    try_get(url, headers).await.expect("a response")
}
