//! HTTP readiness probes (§4.4): one `GET` per attempt on a fresh
//! connection, redirects followed, 200–399 counts as ready. With HTTP/2
//! auto-detection the request goes over h2c prior knowledge first and falls
//! back to HTTP/1.1.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONNECTION, HOST, LOCATION, RANGE, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{Budget, HttpGetAction, ProbeError, USER_AGENT as PROBE_USER_AGENT, connect, within};

/// Go's `http.Client` gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Host as written in the URL (IPv6 literals bracketed).
    host: String,
    port: u16,
    /// `Host` header / `:authority` value.
    authority: String,
    path_and_query: PathAndQuery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    H2c,
}

/// One probe attempt; each request (and its redirects) gets `timeout`.
pub(super) async fn probe(
    action: &HttpGetAction,
    autodetect_http2: bool,
    timeout: Option<Duration>,
) -> Result<(), ProbeError> {
    let target = Target::from_action(action)?;
    let headers = configured_headers(action)?;
    if !autodetect_http2 {
        return ready(fetch(&target, Proto::Http1, &headers, timeout).await?);
    }
    // The detection requests carry no custom headers; only the real h2c
    // request does.
    let plain = HeaderMap::new();
    if let Ok(status) = fetch(&target, Proto::H2c, &plain, timeout).await
        && is_ready(status)
    {
        return ready(fetch(&target, Proto::H2c, &headers, timeout).await?);
    }
    ready(fetch(&target, Proto::Http1, &plain, timeout).await?)
}

fn is_ready(status: StatusCode) -> bool {
    (200..400).contains(&status.as_u16())
}

fn ready(status: StatusCode) -> Result<(), ProbeError> {
    if is_ready(status) {
        Ok(())
    } else {
        Err(ProbeError::NotReady(status.as_u16()))
    }
}

/// The configured headers, minus those Go's client never sends from the
/// header map: `Host` (the URL's authority wins) and `User-Agent` (only the
/// first value, `kube-probe//`, goes on the wire).
fn configured_headers(action: &HttpGetAction) -> Result<HeaderMap, ProbeError> {
    let mut headers = HeaderMap::new();
    for header in &action.http_headers {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| ProbeError::InvalidHeader(header.name.clone()))?;
        let value = HeaderValue::from_str(&header.value)
            .map_err(|_| ProbeError::InvalidHeader(header.name.clone()))?;
        if name != HOST && name != USER_AGENT {
            headers.append(name, value);
        }
    }
    Ok(headers)
}

/// Sends the request, following redirects, all within one timeout (Go's
/// `Client.Timeout` covers the whole chain). Returns the final status.
async fn fetch(
    target: &Target,
    proto: Proto,
    headers: &HeaderMap,
    timeout: Option<Duration>,
) -> Result<StatusCode, ProbeError> {
    let budget = Budget::start(timeout);
    let mut target = target.clone();
    for redirects in 0..=MAX_REDIRECTS {
        let (status, location) = send(&target, proto, headers, budget).await?;
        let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        match location {
            Some(location) if follows => {
                if redirects == MAX_REDIRECTS {
                    return Err(ProbeError::TooManyRedirects);
                }
                target = target.join(&location)?;
            }
            _ => return Ok(status),
        }
    }
    Err(ProbeError::TooManyRedirects)
}

/// One request on a fresh connection. The body is drained but its errors
/// are ignored: as in Go, the status alone decides.
async fn send(
    target: &Target,
    proto: Proto,
    headers: &HeaderMap,
    budget: Option<Budget>,
) -> Result<(StatusCode, Option<String>), ProbeError> {
    if target.tls && proto == Proto::H2c {
        return Err(ProbeError::H2cOverTls);
    }
    let request = target.request(proto, headers)?;
    let stream = within(budget, connect(&target.host, target.port)).await?;
    let _ = stream.set_nodelay(true);
    if target.tls {
        let name = target.host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| ProbeError::TlsServerName(target.host.clone()))?;
        let tls = within(budget, async {
            tls_connector()
                .connect(name, stream)
                .await
                .map_err(|source| ProbeError::Tls {
                    addr: target.authority.clone(),
                    source,
                })
        })
        .await?;
        // Boxed: the TLS state would otherwise bloat every future above.
        exchange(TokioIo::new(Box::new(tls)), proto, request, budget).await
    } else {
        exchange(TokioIo::new(stream), proto, request, budget).await
    }
}

async fn exchange<IO>(
    io: IO,
    proto: Proto,
    request: Request<Empty<Bytes>>,
    budget: Option<Budget>,
) -> Result<(StatusCode, Option<String>), ProbeError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match proto {
        Proto::Http1 => {
            let handshake = async {
                hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(ProbeError::Http)
            };
            let (mut sender, conn) = within(budget, handshake).await?;
            drive(conn, async move {
                let response = within(budget, async {
                    sender.send_request(request).await.map_err(ProbeError::Http)
                })
                .await?;
                Ok(finish(response, budget).await)
            })
            .await
        }
        Proto::H2c => {
            let handshake = async {
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(ProbeError::Http)
            };
            let (mut sender, conn) = within(budget, handshake).await?;
            drive(conn, async move {
                let response = within(budget, async {
                    sender.send_request(request).await.map_err(ProbeError::Http)
                })
                .await?;
                Ok(finish(response, budget).await)
            })
            .await
        }
    }
}

/// Reads the status and `Location`, then drains the body.
async fn finish(
    response: hyper::Response<Incoming>,
    budget: Option<Budget>,
) -> (StatusCode, Option<String>) {
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let drain = async {
        response
            .into_body()
            .collect()
            .await
            .map(drop)
            .map_err(ProbeError::Http)
    };
    let _ = within(budget, drain).await;
    (status, location)
}

/// Polls the connection task alongside `exchange` without spawning it, so a
/// timed-out attempt drops the socket with it.
pub(super) async fn drive<C, F, T>(conn: C, exchange: F) -> Result<T, ProbeError>
where
    C: Future<Output = Result<(), hyper::Error>>,
    F: Future<Output = Result<T, ProbeError>>,
{
    tokio::pin!(conn);
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        // Once the connection is done the exchange resolves promptly, with
        // its response or with the connection's error.
        _ = &mut conn => exchange.await,
    }
}

/// Default TLS verification against the system roots, as Go's client does
/// (no skip-verify: self-signed user-container certificates fail).
fn tls_connector() -> TlsConnector {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    TlsConnector::from(Arc::clone(config))
}

// === impl Target ===

impl Target {
    /// `<scheme>://<host>:<port>/<path without one leading '/'>`.
    fn from_action(action: &HttpGetAction) -> Result<Self, ProbeError> {
        let tls = match action.scheme.to_ascii_lowercase().as_str() {
            "" | "http" => false,
            "https" => true,
            _ => return Err(ProbeError::UnsupportedScheme(action.scheme.clone())),
        };
        let host = if action.host.is_empty() {
            "127.0.0.1"
        } else {
            action.host.as_str()
        };
        let port = action.port.port()?;
        let path = action.path.strip_prefix('/').unwrap_or(&action.path);
        let authority = super::join_host_port(host, port);
        let host = authority
            .rsplit_once(':')
            .map_or(host, |(host, _port)| host)
            .to_owned();
        Ok(Self {
            tls,
            host,
            port,
            authority,
            path_and_query: path_and_query(&format!("/{path}"))?,
        })
    }

    /// Resolves a `Location` header against this target.
    fn join(&self, location: &str) -> Result<Self, ProbeError> {
        let location = location.split('#').next().unwrap_or_default();
        let invalid = || ProbeError::InvalidUrl(location.to_owned());
        if location.starts_with("//") {
            let scheme = if self.tls { "https:" } else { "http:" };
            return self.join(&format!("{scheme}{location}"));
        }
        if location.contains("://") {
            let uri: Uri = location.parse().map_err(|_| invalid())?;
            let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(invalid()),
            };
            let authority = uri.authority().ok_or_else(invalid)?;
            let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
            return Ok(Self {
                tls,
                host: authority.host().to_owned(),
                port,
                authority: authority.as_str().to_owned(),
                path_and_query: path_and_query(path)?,
            });
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path_and_query.path();
            let dir = base.rsplit_once('/').map_or("", |(dir, _file)| dir);
            format!("{dir}/{location}")
        };
        Ok(Self {
            path_and_query: path_and_query(&path)?,
            ..self.clone()
        })
    }

    fn request(
        &self,
        proto: Proto,
        configured: &HeaderMap,
    ) -> Result<Request<Empty<Bytes>>, ProbeError> {
        let invalid = || ProbeError::InvalidUrl(self.authority.clone());
        let (uri, version) = match proto {
            // Origin form; the authority goes in `Host`.
            Proto::Http1 => (Uri::from(self.path_and_query.clone()), Version::HTTP_11),
            // Absolute form, from which hyper derives `:authority`.
            Proto::H2c => {
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(self.authority.as_str())
                    .path_and_query(self.path_and_query.clone())
                    .build()
                    .map_err(|_| invalid())?;
                (uri, Version::HTTP_2)
            }
        };
        let mut request = Request::get(uri)
            .version(version)
            .body(Empty::new())
            .map_err(|_| invalid())?;
        let headers = request.headers_mut();
        if proto == Proto::Http1 {
            headers.insert(
                HOST,
                HeaderValue::from_str(&self.authority).map_err(|_| invalid())?,
            );
            // Keep-alives are disabled: Go announces it with `Connection: close`.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT));
        for (name, value) in configured {
            headers.append(name, value.clone());
        }
        // Go's transport asks for gzip unless the caller chose an encoding
        // or a range; the body is discarded either way.
        if !headers.contains_key(ACCEPT_ENCODING) && !headers.contains_key(RANGE) {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(request)
    }
}

fn path_and_query(raw: &str) -> Result<PathAndQuery, ProbeError> {
    let raw = raw.split('#').next().unwrap_or_default();
    PathAndQuery::try_from(raw).map_err(|_| ProbeError::InvalidUrl(raw.to_owned()))
}
