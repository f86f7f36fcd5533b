//! Forwarding: the request as the upstream must see it, and the response back.
//!
//! Second-to-last stage, just before the upstream [`pool`](crate::pool). It
//! does what Go's `httputil.ReverseProxy` does for Knative: strips hop-by-hop
//! headers both ways, appends the peer to `X-Forwarded-For`, keeps `Te:
//! trailers`, streams bodies in both directions at once without buffering,
//! picks HTTP/1.1 or h2c upstream by the inbound protocol, and relays
//! protocol upgrades (websockets) as byte tunnels that it tracks so a drain
//! can wait for them. Errors are the pool's (dial failures, resets); the
//! edge turns them into 502s. A bodiless idempotent request that fails on a
//! reused upstream connection before any response byte (the user container
//! closed an idle keep-alive connection as the request went out) is sent
//! again on another connection, as Go's transport does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use kdp_core::header::X_FORWARDED_FOR;
use kdp_core::{Error, ErrorChain};
use tokio::sync::Notify;

use crate::body::{self, BoxBody};
use crate::pool::{Target, Upstream, UpstreamTls};
use crate::serve::{DownstreamUpgrade, UpgradeReceiver, UpgradedIo};
use crate::timeout::RequestDeadline;

/// The downstream peer's address; [`serve`](crate::serve) puts it in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Forwards requests to the upstream.
#[derive(Clone, Debug)]
pub struct Forward {
    upstream: Upstream,
    target: Target,
    tunnels: Tunnels,
}

/// Counts open upgraded tunnels, so shutdown can wait for them.
#[derive(Clone, Debug, Default)]
pub struct Tunnels {
    inner: Arc<TunnelsInner>,
}

#[derive(Debug, Default)]
struct TunnelsInner {
    open: AtomicUsize,
    idle: Notify,
}

/// The upstream answered an upgrade with a different protocol.
#[derive(Debug, thiserror::Error)]
#[error("backend tried to switch protocol {got:?} when {want:?} was requested")]
pub struct UpgradeMismatch {
    /// The protocol the client asked for.
    pub want: String,
    /// The protocol the upstream switched to.
    pub got: String,
}

/// The client's side of an upgrade.
enum Downstream {
    /// hyper hands the connection over (HTTP/2 extended CONNECT, or a
    /// server not built by [`serve`](crate::serve)).
    Hyper(hyper::upgrade::OnUpgrade),
    /// The HTTP/1 server loop hands the socket over (see [`DownstreamUpgrade`]).
    Served(UpgradeReceiver),
}

/// What is needed to send a bodiless request again.
#[derive(Debug)]
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The only extension the pools read; copying all of them would cost a
    /// map allocation on every GET for a replay that rarely happens.
    tls: Option<UpstreamTls>,
}

/// Most replays of one request; each one consumed a dead pooled connection.
const MAX_REPLAYS: usize = 8;

/// Headers that describe one hop only (RFC 9110 §7.6.1, plus Go's list).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

// === impl Forward ===

impl Forward {
    /// A forwarder over `upstream`, which must have been built for `target`.
    pub fn new(upstream: Upstream, target: Target) -> Self {
        Self {
            upstream,
            target,
            tunnels: Tunnels::default(),
        }
    }

    /// The tunnel counter (for drain).
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Sends `req` upstream and returns the upstream's response.
    ///
    /// With a [`Target::FromUri`] upstream the request URI must already be
    /// absolute (`http://ip:port/path`); with a fixed target any form works.
    ///
    /// # Errors
    /// The pool's errors: dial failures, resets, malformed responses, or an
    /// [`UpgradeMismatch`].
    pub async fn forward<B>(&self, mut req: Request<B>) -> Result<Response<BoxBody>, Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Error>,
    {
        let upgrade = upgrade_token(req.headers()).map(|token| (token, Downstream::of(&mut req)));
        let deadline = req.extensions().get::<RequestDeadline>().copied();
        let inbound_h2 = req.version() == Version::HTTP_2;
        let (mut parts, body) = req.into_parts();

        strip_hop_by_hop(&mut parts.headers, true);
        if let Some((token, _)) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            parts.headers.insert(header::UPGRADE, token.clone());
        }
        if let Some(ClientAddr(peer)) = parts.extensions.get::<ClientAddr>() {
            append_forwarded_for(&mut parts.headers, peer.ip());
        }
        if inbound_h2 {
            parts.uri = self.upstream_uri(&parts.uri, &parts.headers)?;
            parts.version = Version::HTTP_2;
        } else {
            // The HTTP/1 pool sends origin-form and dials the target itself.
            parts.version = Version::HTTP_11;
        }
        let replay = (upgrade.is_none() && body.is_end_stream())
            .then(|| Replay::of(&parts))
            .flatten();
        let req = Request::from_parts(parts, body::boxed(body));

        let mut rsp = send(&self.upstream, inbound_h2, req, replay).await?;

        if let (StatusCode::SWITCHING_PROTOCOLS, Some((want, downstream))) = (rsp.status(), upgrade)
        {
            let got = rsp
                .headers()
                .get(header::UPGRADE)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(""));
            if !got.as_bytes().eq_ignore_ascii_case(want.as_bytes()) {
                return Err(UpgradeMismatch {
                    want: String::from_utf8_lossy(want.as_bytes()).into_owned(),
                    got: String::from_utf8_lossy(got.as_bytes()).into_owned(),
                }
                .into());
            }
            let upstream = hyper::upgrade::on(&mut rsp);
            self.tunnels.spawn(downstream, upstream, deadline);
            return Ok(rsp);
        }
        strip_hop_by_hop(rsp.headers_mut(), false);
        Ok(rsp)
    }

    /// The absolute URI an h2 request goes out with: h2 carries the Host in
    /// `:authority`, so a fixed target keeps the client's.
    fn upstream_uri(&self, uri: &Uri, headers: &HeaderMap) -> Result<Uri, Error> {
        let authority = match self.target {
            Target::FromUri => return Ok(uri.clone()),
            Target::Fixed(addr) => uri
                .authority()
                .cloned()
                .or_else(|| {
                    headers
                        .get(header::HOST)
                        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                })
                .map_or_else(|| Authority::try_from(addr.to_string()), Ok)?,
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()?)
    }
}

/// Sends `req` (over HTTP/2 when `h2`), replaying it while it fails on a
/// reused connection that the upstream closed before answering (Go's
/// `shouldRetryRequest`: replayable request, reused connection, nothing
/// read). The pools themselves only resend requests never written.
async fn send(
    upstream: &Upstream,
    h2: bool,
    mut req: Request<BoxBody>,
    replay: Option<Replay>,
) -> Result<Response<BoxBody>, Error> {
    let mut replays = 0;
    loop {
        match upstream.send(req, h2).await {
            Ok(rsp) => return Ok(rsp),
            Err(err) => {
                let Some(again) = replay
                    .as_ref()
                    .filter(|_| replays < MAX_REPLAYS && err.closed_before_answering())
                else {
                    return Err(err.into());
                };
                tracing::debug!(error = %ErrorChain(&err), "reused upstream connection closed; sending again");
                replays += 1;
                req = again.request();
            }
        }
    }
}

// === impl Downstream ===

impl Downstream {
    fn of<B>(req: &mut Request<B>) -> Self {
        match req
            .extensions_mut()
            .remove::<DownstreamUpgrade>()
            .and_then(|u| u.take())
        {
            Some(served) => Self::Served(served),
            None => Self::Hyper(hyper::upgrade::on(req)),
        }
    }

    async fn into_io(self) -> Result<Box<dyn UpgradedIo>, Error> {
        match self {
            Self::Hyper(upgrade) => Ok(Box::new(TokioIo::new(upgrade.await?))),
            Self::Served(served) => served
                .await
                .map_err(|_| "the client connection ended before the upgrade".into()),
        }
    }
}

// === impl Replay ===

impl Replay {
    /// Only Go's replayable methods qualify (GET, HEAD, OPTIONS, TRACE).
    fn of(parts: &http::request::Parts) -> Option<Self> {
        matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        )
        .then(|| Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            tls: parts.extensions.get::<UpstreamTls>().cloned(),
        })
    }

    fn request(&self) -> Request<BoxBody> {
        let mut req = Request::new(body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        if let Some(tls) = &self.tls {
            req.extensions_mut().insert(tls.clone());
        }
        req
    }
}

/// The `Upgrade` token of an HTTP/1 upgrade request (`Connection: upgrade` + `Upgrade: x`).
fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if connection_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers and every header `Connection` names. On
/// requests, `Te: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, request: bool) {
    // Most messages carry none of them (and a header `Connection` names is
    // only removed when `Connection` is there): one pass over the names
    // present, rather than a hashed removal per hop-by-hop name, twice per
    // proxied request.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let te_trailers = request
        && headers
            .get_all(header::TE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends `ip` to `X-Forwarded-For`, joining earlier values with `, ` as Go does.
pub fn append_forwarded_for(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    let ip = ip.to_canonical().to_string();
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter();
    let value = match (prior.next(), prior.next()) {
        (None, _) => ip,
        (Some(one), None) => format!("{}, {ip}", String::from_utf8_lossy(one.as_bytes())),
        (Some(_), Some(_)) => {
            let joined: Vec<String> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            format!("{}, {ip}", joined.join(", "))
        }
    };
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
}

// === impl Tunnels ===

impl Tunnels {
    /// Open tunnels right now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Waits until no tunnel is open, or `limit` passes; true when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    fn spawn(
        &self,
        downstream: Downstream,
        upstream: hyper::upgrade::OnUpgrade,
        deadline: Option<RequestDeadline>,
    ) {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        let guard = TunnelGuard(self.inner.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let upstream = async { upstream.await.map_err(Error::from) };
            let (mut down, up) = match tokio::try_join!(downstream.into_io(), upstream) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "upgrade failed");
                    return;
                }
            };
            let mut up = TokioIo::new(up);
            let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
            match deadline {
                Some(RequestDeadline(at)) => {
                    if tokio::time::timeout_at(at, copy).await.is_err() {
                        tracing::debug!("tunnel cut at the revision timeout");
                    }
                }
                None => {
                    let _ = copy.await;
                }
            }
        });
    }
}

struct TunnelGuard(Arc<TunnelsInner>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn strip_keeps_end_to_end_headers_and_still_finds_a_lone_hop_header() {
        // No hop-by-hop header: nothing changes, even names that a
        // `Connection` header could have listed.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a.example.com".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.append(header::ACCEPT, "*/*".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h, before);
        // One hop-by-hop header among others, with no `Connection`.
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_for_appends_like_go() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, ip);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(&X_FORWARDED_FOR, "2.2.2.2, 3.3.3.3".parse().unwrap());
        append_forwarded_for(&mut h, ip);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(upgrade_token(&h).is_none());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(upgrade_token(&h).unwrap(), "websocket");
    }
}
