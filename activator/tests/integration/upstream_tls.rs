//! system-internal-tls towards pods: with `config-network`
//! `system-internal-tls: Enabled` the activator probes a pod in plain HTTP on
//! its Endpoints port, then proxies to `https://<pod-ip>:8112`, trusting the
//! `ca.crt` of `routing-serving-certs` and requiring the SAN
//! `kn-user-<namespace>` (Knative's 502 text when it is missing).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kdp_test_support::client::{Got, get_req, send};
use kdp_test_support::tls::{Leaf, TestCa};
use kdp_test_support::{FakeApiServer, FakePod};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use super::startup::{Running, network, run, secret};
use super::{REV, ip, private_endpoints, revision};

/// The pod's TLS port, as the activator addresses it (Knative's 8112).
const POD_TLS_PORT: u16 = 8112;
/// What the TLS listener answers, unlike the plain pod (its name).
const TLS_BODY: &str = "served over TLS";

/// One request the pod's TLS listener served.
#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    alpn: Option<Vec<u8>>,
    sni: Option<String>,
    headers: HeaderMap,
}

/// A queue-proxy pod as the activator sees it with system-internal-tls:
/// plain HTTP on the Endpoints port for probes (a [`FakePod`], which also
/// counts any request that wrongly arrives in plain text), and TLS on
/// `ip:8112` with `leaf`, recording what it served.
struct TlsPod {
    plain: FakePod,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: JoinHandle<()>,
}

impl TlsPod {
    async fn start(ip: IpAddr, leaf: &Leaf) -> Self {
        let plain = FakePod::start("plain-port", ip).unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // SO_REUSEADDR: a rerun binds the fixed port past TIME_WAIT.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(SocketAddr::new(ip, POD_TLS_PORT)).unwrap();
        let listener = socket.listen(64).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(listener, acceptor, seen.clone()));
        Self {
            plain,
            seen,
            accept,
        }
    }

    /// The Endpoints address (the plain, probed port).
    fn addr(&self) -> SocketAddr {
        self.plain.addr()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TlsPod {
    fn drop(&mut self) {
        // Connection tasks are detached; they end with the test's runtime.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        tokio::spawn(async move {
            // A refused handshake (the SAN check) ends here.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let (_, conn) = tls.get_ref();
            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
            let sni = conn.server_name().map(str::to_owned);
            let service = service_fn(move |req: Request<Incoming>| {
                seen.lock().unwrap().push(Seen {
                    version: req.version(),
                    alpn: alpn.clone(),
                    sni: sni.clone(),
                    headers: req.headers().clone(),
                });
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(TLS_BODY)))) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// An activator with system-internal-tls, trusting `ca`.
async fn activator(ca: &TestCa) -> Running {
    let api = FakeApiServer::start().await;
    api.apply(network(&[("system-internal-tls", "Enabled")]));
    api.apply(secret(&ca.leaf(&["data-plane.knative.dev"]), Some(ca)));
    let r = run(api).await;
    assert!(r.https.is_some(), "system-internal-tls is on");
    r
}

/// `GET /path` for revision `hello-00001` on `addr`, HTTP/1.1 or h2c.
async fn request(addr: SocketAddr, version: Version) -> Got {
    let mut req = get_req(&format!("http://{addr}/path?x=1"), &REV);
    *req.version_mut() = version;
    tokio::time::timeout(Duration::from_secs(10), send(req))
        .await
        .expect("an answer within 10 s")
}

#[tokio::test]
async fn requests_reach_the_pod_over_tls_and_probes_stay_plain() {
    let ca = TestCa::new();
    let r = activator(&ca).await;
    let pod = TlsPod::start(
        ip(47),
        &ca.leaf(&["data-plane.knative.dev", "kn-user-default"]),
    )
    .await;
    r.api.apply(revision("hello-00001", 0, 300));
    r.api.apply(private_endpoints("hello-00001", &[pod.addr()]));

    let got = request(r.http1, Version::HTTP_11).await;
    assert_eq!((got.status, got.body.as_str()), (200, TLS_BODY));
    let got = request(r.h2c, Version::HTTP_2).await;
    assert_eq!((got.status, got.body.as_str()), (200, TLS_BODY));

    let seen = pod.seen();
    assert_eq!(seen.len(), 2, "both requests on the TLS port: {seen:?}");
    // HTTP/1.1 inbound goes out as HTTP/1.1, h2c inbound as h2 (by ALPN).
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen[1].version, Version::HTTP_2);
    assert_eq!(seen[1].alpn.as_deref(), Some(&b"h2"[..]));
    for s in &seen {
        assert_eq!(s.sni.as_deref(), Some("data-plane.knative.dev"));
        assert_eq!(s.headers["k-proxy-request"], "activator");
        assert!(s.headers.get("k-original-host").is_some());
        assert!(s.headers.get("knative-serving-revision").is_none());
    }
    assert_eq!(
        seen[0].headers["host"],
        format!("{}:{POD_TLS_PORT}", pod.addr().ip())
    );
    assert!(pod.plain.probes() >= 1, "probed on the plain port");
    assert_eq!(pod.plain.requests(), 0, "no traffic in plain text");
}

#[tokio::test]
async fn a_pod_without_the_namespace_san_is_502_with_knatives_text() {
    let ca = TestCa::new();
    let r = activator(&ca).await;
    let pod = TlsPod::start(
        ip(48),
        &ca.leaf(&["data-plane.knative.dev", "kn-user-other"]),
    )
    .await;
    r.api.apply(revision("hello-00001", 0, 300));
    r.api.apply(private_endpoints("hello-00001", &[pod.addr()]));

    let got = request(r.http1, Version::HTTP_11).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (
            502,
            "san \"kn-user-default\" does not have a matching name in \
             [data-plane.knative.dev kn-user-other]\n"
        )
    );
    assert!(pod.plain.probes() >= 1, "the pod was probed ready");
    assert!(
        pod.seen().is_empty(),
        "nothing served over a refused handshake"
    );
    assert_eq!(pod.plain.requests(), 0, "no fallback to plain text");
}
