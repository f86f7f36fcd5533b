//! The bundled hello-world app (`kdp hello`), Knative's `helloworld-go` sample in Rust.
//!
//! Not part of the request path itself: it is the user process at the far end of it, so a
//! fresh clone can run `kdp run deploy/local/hello-world.yaml` with nothing else built. It
//! listens on `127.0.0.1:$PORT` (default 8080) and answers every request with
//! `Hello $TARGET!\n` (`TARGET` defaulting to `World`), like the sample. It starts in a few
//! milliseconds, which keeps local cold starts honest. `?sleep=<ms>` delays the answer, to
//! make a slow app for autoscaling demos. Errors are a bad `PORT`
//! ([`HelloError::BadPort`]) or I/O errors binding the port.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The port used when `PORT` is unset, as in the sample.
pub const DEFAULT_PORT: u16 = 8080;
/// The longest `?sleep=<ms>` honoured.
pub const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);
/// The greeting target when `TARGET` is unset.
pub const DEFAULT_TARGET: &str = "World";

/// What the app serves, from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloConfig {
    /// Where to listen: `127.0.0.1:$PORT`.
    pub addr: SocketAddr,
    /// `TARGET`.
    pub target: String,
}

/// The app cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// `PORT` is not a port number.
    #[error("PORT={0:?} is not a port number")]
    BadPort(String),
}

// === impl HelloConfig ===

impl HelloConfig {
    /// Reads `PORT` and `TARGET` through `get` (the process env in `main`, a map in tests).
    ///
    /// # Errors
    /// [`HelloError::BadPort`].
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, HelloError> {
        let port = match get("PORT").filter(|p| !p.is_empty()) {
            Some(p) => p.trim().parse().map_err(|_| HelloError::BadPort(p))?,
            None => DEFAULT_PORT,
        };
        Ok(Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            target: get("TARGET")
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| DEFAULT_TARGET.to_owned()),
        })
    }
}

/// Serves `Hello <target>!` on `listener` until `shutdown` resolves.
///
/// # Errors
/// Only if accepting fails persistently; per-connection errors are logged at debug level.
pub async fn serve(
    listener: TcpListener,
    target: &str,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let body = Bytes::from(format!("Hello {target}!\n"));
    let body: Arc<Bytes> = Arc::new(body);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // EMFILE and friends: back off briefly instead of spinning.
                Err(err) => {
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let body = Arc::clone(&body);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, Arc::clone(&body)));
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    body: Arc<Bytes>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(delay) = requested_delay(req.uri().query()) {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::clone(&body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `?sleep=<ms>`: how long to wait before answering (a slow app for autoscaling demos and
/// tests), capped at [`MAX_SLEEP`].
fn requested_delay(query: Option<&str>) -> Option<std::time::Duration> {
    let ms = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sleep="))?
        .parse::<u64>()
        .ok()?;
    Some(std::time::Duration::from_millis(ms).min(MAX_SLEEP))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http_body_util::BodyExt as _;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_defaults_and_overrides() {
        let c = HelloConfig::from_env(env(&[])).unwrap();
        assert_eq!((c.addr.port(), c.target.as_str()), (8080, "World"));
        let c =
            HelloConfig::from_env(env(&[("PORT", "9000"), ("TARGET", "Go Sample v2")])).unwrap();
        assert_eq!((c.addr.port(), c.target.as_str()), (9000, "Go Sample v2"));
        let err = HelloConfig::from_env(env(&[("PORT", "http")])).unwrap_err();
        assert_eq!(err.to_string(), "PORT=\"http\" is not a port number");
    }

    #[test]
    fn sleep_query_delays_within_the_cap() {
        use std::time::Duration;
        assert_eq!(requested_delay(None), None);
        assert_eq!(requested_delay(Some("a=1")), None);
        assert_eq!(
            requested_delay(Some("a=1&sleep=250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(requested_delay(Some("sleep=x")), None);
        assert_eq!(requested_delay(Some("sleep=99999999")), Some(MAX_SLEEP));
    }

    #[tokio::test]
    async fn answers_hello_target() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, "Go Sample v1", async {
                let _ = stop_rx.await;
            })
            .await
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        for path in ["/", "/anything?x=1"] {
            let req = Request::get(path)
                .header(header::HOST, "helloworld-go.default.example.com")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(
                res.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "Hello Go Sample v1!\n");
        }
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
