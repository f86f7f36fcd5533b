use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;

use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;
use crate::body;
use crate::pool::{DialError, PoolConfig, Target, Upstream, UpstreamError, UpstreamTls};
use crate::serve::{ServeConfig, serve_with};

fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kdp_proxy=debug")
        .try_init();
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("kdp-tls-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

// === env ===

fn settings(vars: &[(&str, &str)]) -> Result<TlsSettings, EnvError> {
    let env: HashMap<&str, &str> = vars.iter().copied().collect();
    TlsSettings::from_env(&env, "QUEUE_PROXY")
}

#[track_caller]
fn invalid(vars: &[(&str, &str)], var: &str, needle: &str) {
    let err = settings(vars).expect_err("should be refused");
    assert_eq!(err.var(), var, "{err}");
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn env_defaults_to_tls13_only() {
    assert_eq!(settings(&[]).unwrap(), TlsSettings::default());
    let blank = settings(&[
        ("QUEUE_PROXY_TLS_MIN_VERSION", ""),
        ("QUEUE_PROXY_TLS_MAX_VERSION", ""),
        ("QUEUE_PROXY_TLS_CIPHER_SUITES", ""),
        ("QUEUE_PROXY_TLS_CURVE_PREFERENCES", ""),
    ])
    .unwrap();
    assert_eq!(blank, TlsSettings::default());
    assert_eq!(blank.min_version, TlsVersion::Tls13);
    assert_eq!(blank.max_version, None);
}

#[test]
fn env_versions() {
    let s = settings(&[
        ("QUEUE_PROXY_TLS_MIN_VERSION", "1.2"),
        ("QUEUE_PROXY_TLS_MAX_VERSION", "1.2"),
    ])
    .unwrap();
    assert_eq!(
        (s.min_version, s.max_version),
        (TlsVersion::Tls12, Some(TlsVersion::Tls12))
    );
    let s = settings(&[("QUEUE_PROXY_TLS_MAX_VERSION", "1.3")]).unwrap();
    assert_eq!(s.max_version, Some(TlsVersion::Tls13));

    invalid(
        &[("QUEUE_PROXY_TLS_MIN_VERSION", "1.1")],
        "QUEUE_PROXY_TLS_MIN_VERSION",
        "\"1.1\"",
    );
    invalid(
        &[("QUEUE_PROXY_TLS_MIN_VERSION", "TLS13")],
        "QUEUE_PROXY_TLS_MIN_VERSION",
        "TLS13",
    );
    invalid(
        &[("QUEUE_PROXY_TLS_MAX_VERSION", "1.4")],
        "QUEUE_PROXY_TLS_MAX_VERSION",
        "\"1.4\"",
    );
    // The default minimum (1.3) is above a 1.2 maximum.
    invalid(
        &[("QUEUE_PROXY_TLS_MAX_VERSION", "1.2")],
        "QUEUE_PROXY_TLS_MAX_VERSION",
        "minimum",
    );
}

#[test]
fn env_cipher_suites() {
    let s = settings(&[(
        "QUEUE_PROXY_TLS_CIPHER_SUITES",
        " TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,\
         TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,\
         TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,",
    )])
    .unwrap();
    assert_eq!(
        s.cipher_suites,
        Some(vec![
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]),
        "blanks and repeats skipped, TLS 1.3 names accepted without effect"
    );
    let s = settings(&[("QUEUE_PROXY_TLS_CIPHER_SUITES", " , ")]).unwrap();
    assert_eq!(s.cipher_suites, None, "only blanks means unset");

    let var = "QUEUE_PROXY_TLS_CIPHER_SUITES";
    invalid(
        &[(var, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_FOO")],
        var,
        "\"TLS_FOO\"",
    );
    invalid(
        &[(var, "tls_ecdhe_rsa_with_aes_128_gcm_sha256")],
        var,
        "unknown",
    );
    // In Go's InsecureCipherSuites, which knative's lookup does not accept.
    invalid(&[(var, "TLS_RSA_WITH_AES_128_GCM_SHA256")], var, "unknown");
    invalid(
        &[(var, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")],
        var,
        "not supported",
    );
}

#[test]
fn env_curve_preferences() {
    let s = settings(&[(
        "QUEUE_PROXY_TLS_CURVE_PREFERENCES",
        "CurveP384, X25519,,P-256,CurveP256",
    )])
    .unwrap();
    assert_eq!(
        s.curve_preferences,
        Some(vec![
            NamedGroup::secp384r1,
            NamedGroup::X25519,
            NamedGroup::secp256r1
        ])
    );
    assert_eq!(
        settings(&[("QUEUE_PROXY_TLS_CURVE_PREFERENCES", "P-384")])
            .unwrap()
            .curve_preferences,
        Some(vec![NamedGroup::secp384r1])
    );

    let var = "QUEUE_PROXY_TLS_CURVE_PREFERENCES";
    invalid(
        &[(var, "X25519,Curve25519")],
        var,
        "unknown curve \"Curve25519\"",
    );
    invalid(&[(var, "CurveP521")], var, "not supported");
    invalid(&[(var, "P-521")], var, "not supported");
    invalid(&[(var, "X25519MLKEM768")], var, "not supported");
}

#[test]
fn env_prefix_selects_variables() {
    let env = HashMap::from([
        ("ACTIVATOR_TLS_MIN_VERSION", "1.2"),
        ("QUEUE_PROXY_TLS_MIN_VERSION", "bogus"),
    ]);
    let s = TlsSettings::from_env(&env, "ACTIVATOR").unwrap();
    assert_eq!(s.min_version, TlsVersion::Tls12);
    let err = TlsSettings::from_env(&env, "QUEUE_PROXY").unwrap_err();
    assert_eq!(err.var(), "QUEUE_PROXY_TLS_MIN_VERSION");
}

#[test]
fn provider_follows_settings() {
    let s = TlsSettings {
        min_version: TlsVersion::Tls12,
        max_version: None,
        cipher_suites: Some(vec![
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]),
        curve_preferences: Some(vec![NamedGroup::secp384r1, NamedGroup::X25519]),
    };
    let provider = s.provider();
    let suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        [
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    );
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);
    assert_eq!(
        s.versions(),
        [&rustls::version::TLS13, &rustls::version::TLS12]
    );
    assert_eq!(TlsSettings::default().versions(), [&rustls::version::TLS13]);
}

#[test]
fn install_default_provider_is_idempotent() {
    install_default_provider();
    install_default_provider();
    assert!(CryptoProvider::get_default().is_some());
}

// === certificates ===

/// A throwaway CA that issues leaf certificates.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and key as PEM, plus the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn leaf(&self, san: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn write_leaf(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join(CERT_FILE), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join(KEY_FILE), &leaf.key_pem).unwrap();
}

#[test]
fn cert_files_exist_needs_both() {
    let dir = tempdir();
    assert!(!cert_files_exist(dir.path()).unwrap());
    std::fs::write(dir.path().join(CERT_FILE), "x").unwrap();
    assert!(!cert_files_exist(dir.path()).unwrap());
    std::fs::write(dir.path().join(KEY_FILE), "x").unwrap();
    assert!(cert_files_exist(dir.path()).unwrap());
    assert!(!cert_files_exist(&dir.path().join("absent")).unwrap());
    // A stat error other than "not found" (here ENOTDIR) is an error.
    cert_files_exist(&dir.path().join(CERT_FILE)).unwrap_err();
}

#[tokio::test(flavor = "current_thread")]
async fn load_refuses_missing_or_bad_files() {
    let ca = TestCa::new();
    let dir = tempdir();
    let err = ReloadingCert::load(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().contains(CERT_FILE), "{err}");

    std::fs::write(dir.path().join(CERT_FILE), "not pem").unwrap();
    std::fs::write(dir.path().join(KEY_FILE), ca.leaf("a.example").key_pem).unwrap();
    let err = ReloadingCert::load(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::Certificate(_)), "{err}");

    // A valid certificate with someone else's key.
    let (a, b) = (ca.leaf("a.example"), ca.leaf("b.example"));
    std::fs::write(dir.path().join(CERT_FILE), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join(KEY_FILE), &b.key_pem).unwrap();
    let err = ReloadingCert::load(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::KeyPair(_)), "{err}");

    std::fs::write(dir.path().join(KEY_FILE), "").unwrap();
    let err = ReloadingCert::load(dir.path()).await.unwrap_err();
    assert!(matches!(err, Error::PrivateKey(_)), "{err}");

    write_leaf(dir.path(), &a);
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    assert_eq!(cert.current().cert[0], a.der);
}

#[tokio::test(flavor = "current_thread")]
async fn reload_swaps_only_on_change() {
    let ca = TestCa::new();
    let dir = tempdir();
    let (a, b) = (ca.leaf("a.example"), ca.leaf("b.example"));
    write_leaf(dir.path(), &a);
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    assert!(!cert.reload().await.unwrap(), "unchanged files");

    // Half-written update: new cert, old key. Refused, old pair kept.
    std::fs::write(dir.path().join(CERT_FILE), &b.cert_pem).unwrap();
    assert!(matches!(cert.reload().await, Err(Error::KeyPair(_))));
    assert_eq!(cert.current().cert[0], a.der);

    std::fs::write(dir.path().join(KEY_FILE), &b.key_pem).unwrap();
    assert!(cert.reload().await.unwrap());
    assert_eq!(cert.current().cert[0], b.der);
    assert!(!cert.reload().await.unwrap());

    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    assert!(matches!(cert.reload().await, Err(Error::Read { .. })));
    assert_eq!(cert.current().cert[0], b.der);
}

// === server ===

/// A TLS server on 127.0.0.1:0 answering with the request's HTTP version.
struct Server {
    addr: std::net::SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    async fn start(settings: &TlsSettings, certs: Arc<dyn ResolvesServerCert>) -> Self {
        trace_init();
        let acceptor = TlsAcceptor::new(settings, certs).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = tower::service_fn(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                Ok::<_, Infallible>(Response::new(body::full(format!("{:?}", req.version()))))
            })
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            acceptor,
            service,
            ServeConfig::new("tls-test"),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            _shutdown: tx,
        }
    }

    async fn handshake(
        &self,
        client: ClientConfig,
        name: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from(name.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
    }
}

async fn get_http1(tls: tokio_rustls::client::TlsStream<TcpStream>) -> (Version, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "a.example")
        .body(Empty::<bytes::Bytes>::new());
    let resp = send.send_request(req.unwrap()).await.unwrap();
    read(resp).await
}

async fn read(resp: Response<hyper::body::Incoming>) -> (Version, String) {
    let version = resp.version();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(bytes.to_vec()).unwrap())
}

fn peer_leaf(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn leaf_server(settings: &TlsSettings) -> (TestCa, Leaf, Server, TempDir) {
    let ca = TestCa::new();
    let dir = tempdir();
    let leaf = ca.leaf("a.example");
    write_leaf(dir.path(), &leaf);
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    let server = Server::start(settings, cert).await;
    (ca, leaf, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_over_http1() {
    let (ca, leaf, server, _dir) = leaf_server(&TlsSettings::default()).await;
    let client = ca.client(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let tls = server.handshake(client, "a.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), leaf.der);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        get_http1(tls).await,
        (Version::HTTP_11, "HTTP/1.1".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_h2_via_alpn() {
    let (ca, _leaf, server, _dir) = leaf_server(&TlsSettings::default()).await;
    let client = ca.client(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let tls = server.handshake(client, "a.example").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.example/").body(Empty::<bytes::Bytes>::new());
    let resp = send.send_request(req.unwrap()).await.unwrap();
    assert_eq!(read(resp).await, (Version::HTTP_2, "HTTP/2.0".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tls13_refuses_tls12_client() {
    let (ca, _leaf, server, _dir) = leaf_server(&TlsSettings::default()).await;
    let client = ca.client(&[&rustls::version::TLS12], &[b"http/1.1"]);
    server.handshake(client, "a.example").await.unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tls12_accepts_tls12_client_with_configured_suite() {
    let settings = TlsSettings {
        min_version: TlsVersion::Tls12,
        cipher_suites: Some(vec![CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]),
        curve_preferences: Some(vec![NamedGroup::secp384r1]),
        ..TlsSettings::default()
    };
    let (ca, _leaf, server, _dir) = leaf_server(&settings).await;
    let client = ca.client(&[&rustls::version::TLS12], &[b"http/1.1"]);
    let tls = server.handshake(client, "a.example").await.unwrap();
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    assert_eq!(get_http1(tls).await.0, Version::HTTP_11);
}

/// C1: a new certificate for a new SAN written to the folder is served to
/// new handshakes within one reload interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_cert_is_served_after_reload() {
    let ca = TestCa::new();
    let dir = tempdir();
    write_leaf(dir.path(), &ca.leaf("a.example"));
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    let reloader = cert.spawn_reloader(Duration::from_millis(20));
    let server = Server::start(&TlsSettings::default(), cert.clone()).await;
    let client = || ca.client(&[&rustls::version::TLS13], &[b"http/1.1"]);
    server.handshake(client(), "a.example").await.unwrap();
    server.handshake(client(), "b.example").await.unwrap_err();

    let b = ca.leaf("b.example");
    write_leaf(dir.path(), &b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let tls = loop {
        match server.handshake(client(), "b.example").await {
            Ok(tls) => break tls,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("new certificate never served: {err}"),
        }
    };
    assert_eq!(peer_leaf(&tls), b.der);
    assert_eq!(get_http1(tls).await.0, Version::HTTP_11);
    server.handshake(client(), "a.example").await.unwrap_err();

    // The reloader ends once the certificate is gone.
    drop(server);
    drop(cert);
    tokio::time::timeout(Duration::from_secs(5), reloader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_cert_keeps_the_old_one() {
    let ca = TestCa::new();
    let dir = tempdir();
    let a = ca.leaf("a.example");
    write_leaf(dir.path(), &a);
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    let _reloader = cert.spawn_reloader(Duration::from_millis(10));
    let server = Server::start(&TlsSettings::default(), cert.clone()).await;

    std::fs::write(
        dir.path().join(CERT_FILE),
        "-----BEGIN CERTIFICATE-----\ngarbage",
    )
    .unwrap();
    assert!(cert.reload().await.is_err());
    // Give the background reloader a few ticks at the broken files too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = ca.client(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let tls = server.handshake(client, "a.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), a.der);
    assert_eq!(get_http1(tls).await.0, Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_times_out() {
    let ca = TestCa::new();
    let dir = tempdir();
    write_leaf(dir.path(), &ca.leaf("a.example"));
    let cert = ReloadingCert::load(dir.path()).await.unwrap();
    let acceptor = TlsAcceptor::new(&TlsSettings::default(), cert)
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(50));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let err = acceptor.accept(tcp).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

/// An upstream pool request to `server` over TLS with `client`.
fn pool_request(server: &Server, client: &Arc<ClientConfig>) -> Request<body::BoxBody> {
    let mut req = Request::get(format!("https://{}/", server.addr))
        .body(body::empty())
        .unwrap();
    req.extensions_mut().insert(UpstreamTls::new(
        client.clone(),
        ServerName::try_from("a.example").unwrap(),
    ));
    req
}

fn from_uri_pool() -> Upstream {
    Upstream::new(&PoolConfig {
        target: Target::FromUri,
        max_idle_per_host: 10,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_pools_speak_tls_with_their_own_alpn() {
    let (ca, _leaf, server, _dir) = leaf_server(&TlsSettings::default()).await;
    let client = Arc::new(ca.client(&[&rustls::version::TLS13], &[]));
    let pool = from_uri_pool();
    for _ in 0..2 {
        let rsp = pool
            .http1()
            .send(pool_request(&server, &client))
            .await
            .unwrap();
        let text = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, "HTTP/1.1");
    }
    assert_eq!(pool.http1().idle_count(), 1, "the TLS connection is reused");
    // Another configuration (another namespace's SAN check) never shares it.
    let other = Arc::new(ca.client(&[&rustls::version::TLS13], &[]));
    let rsp = pool
        .http1()
        .send(pool_request(&server, &other))
        .await
        .unwrap();
    let _ = rsp.into_body().collect().await.unwrap();
    assert_eq!(pool.http1().idle_count(), 2);
    let rsp = pool
        .http2()
        .send(pool_request(&server, &client))
        .await
        .unwrap();
    assert_eq!(read(rsp).await, (Version::HTTP_2, "HTTP/2.0".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_refusal_is_a_dial_error() {
    let (_ca, _leaf, server, _dir) = leaf_server(&TlsSettings::default()).await;
    let stranger = Arc::new(TestCa::new().client(&[&rustls::version::TLS13], &[]));
    let err = from_uri_pool()
        .http1()
        .send(pool_request(&server, &stranger))
        .await
        .unwrap_err();
    let UpstreamError::Dial(DialError::Tls { reason, .. }) = &err else {
        panic!("expected a TLS dial error, got {err:?}");
    };
    assert!(
        reason.starts_with("tls: invalid peer certificate"),
        "{reason}"
    );
}
