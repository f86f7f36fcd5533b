use std::collections::BTreeMap;

use kdp_test_support::tls::{Leaf, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn secret_data(leaf: &Leaf, ca: Option<&TestCa>) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::from([
        (CERT_KEY.to_owned(), leaf.cert_pem.clone().into_bytes()),
        (
            PRIVATE_KEY_KEY.to_owned(),
            leaf.key_pem.clone().into_bytes(),
        ),
    ]);
    if let Some(ca) = ca {
        data.insert(CA_KEY.to_owned(), ca.cert_pem().into_bytes());
    }
    data
}

/// Serves `leaf` over TLS on loopback (one connection), echoing one byte.
async fn tls_server(leaf: &Leaf) -> std::net::SocketAddr {
    let cert = ServingCert::new();
    cert.set(&secret_data(leaf, None)).unwrap();
    let config = kdp_proxy::tls::TlsSettings::default()
        .server_config(cert)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 1];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(&b).await;
                    }
                }
            });
        }
    });
    addr
}

/// Connects with the trust's config for `namespace`; the handshake's outcome.
async fn handshake(
    trust: &UpstreamTrust,
    namespace: &str,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    let connector = tokio_rustls::TlsConnector::from(trust.client_config(namespace));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(DATA_PLANE_SERVER_NAME).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| san_mismatch(&e).map_or_else(|| e.to_string(), ToString::to_string))?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn san_is_kn_user_lowercased_namespace() {
    assert_eq!(data_plane_user_san("My-NS"), "kn-user-my-ns");
}

#[test]
fn san_check_accepts_one_of_several_and_names_them_otherwise() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["a.example", "kn-user-ns", DATA_PLANE_SERVER_NAME]);
    assert!(verify_san(&leaf.der, "kn-user-ns").is_ok());
    let err = verify_san(&leaf.der, "kn-user-other").unwrap_err();
    assert_eq!(
        err.to_string(),
        "san \"kn-user-other\" does not have a matching name in \
         [a.example kn-user-ns data-plane.knative.dev]"
    );
}

#[test]
fn tls_dest_rewrites_ports_ipv6_safe() {
    assert_eq!(tls_dest("10.0.0.1:8012", false), "10.0.0.1:8112");
    assert_eq!(tls_dest("10.0.0.1:8013", false), "10.0.0.1:8112");
    assert_eq!(tls_dest("[2001:db8::1]:8012", false), "[2001:db8::1]:8112");
    assert_eq!(tls_dest("10.96.0.7:80", true), "10.96.0.7:443");
    assert_eq!(tls_dest("[fd00::7]:80", true), "[fd00::7]:443");
    assert_eq!(tls_dest("10.0.0.1", false), "10.0.0.1:8112");
    assert_eq!(tls_dest("2001:db8::1", false), "[2001:db8::1]:8112");
}

#[test]
fn serving_cert_refuses_bad_pairs_and_keeps_the_previous_one() {
    let ca = TestCa::new();
    let cert = ServingCert::new();
    assert!(!cert.is_loaded());
    let leaf = ca.leaf(&[DATA_PLANE_SERVER_NAME]);
    cert.set(&secret_data(&leaf, None)).unwrap();
    assert!(cert.is_loaded());
    let mut bad = secret_data(&leaf, None);
    bad.remove(PRIVATE_KEY_KEY);
    assert!(matches!(cert.set(&bad), Err(CertError::Missing("tls.key"))));
    let other = ca.leaf(&["x.example"]);
    let mut mismatched = secret_data(&leaf, None);
    mismatched.insert(PRIVATE_KEY_KEY.to_owned(), other.key_pem.into_bytes());
    assert!(matches!(cert.set(&mismatched), Err(CertError::Invalid(_))));
    assert!(cert.is_loaded());
}

#[test]
fn trust_pool_is_the_union_of_secret_ca_and_bundles() {
    let (a, b) = (TestCa::new(), TestCa::new());
    let trust = UpstreamTrust::new();
    assert_eq!(trust.rebuild(None, []), 0);
    assert_eq!(trust.rebuild(Some(a.cert_pem().as_bytes()), []), 1);
    let bundle = b.cert_pem();
    assert_eq!(trust.rebuild(None, [("bundle", bundle.as_str())]), 1);
    assert_eq!(
        trust.rebuild(Some(a.cert_pem().as_bytes()), [("bundle", bundle.as_str())]),
        2
    );
    // An invalid bundle is skipped; the secret's CA still applies.
    assert_eq!(
        trust.rebuild(
            Some(a.cert_pem().as_bytes()),
            [("broken", "-----BEGIN CERTIFICATE-----\nnot base64\n")]
        ),
        1
    );
    assert_eq!(trust.rebuild(Some(b"garbage"), []), 0);
}

#[tokio::test]
async fn upstream_handshake_checks_ca_and_namespace_san() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&[DATA_PLANE_SERVER_NAME, "kn-user-ns"]);
    let addr = tls_server(&leaf).await;
    let trust = UpstreamTrust::new();
    // No CA configured: nothing is trusted.
    assert!(handshake(&trust, "ns", addr).await.is_err());
    trust.rebuild(Some(ca.cert_pem().as_bytes()), []);
    handshake(&trust, "ns", addr).await.unwrap();
    handshake(&trust, "NS", addr).await.unwrap();
    let err = handshake(&trust, "other", addr).await.unwrap_err();
    assert!(
        err.contains("san \"kn-user-other\" does not have a matching name"),
        "{err}"
    );
    // Another CA: refused, even for the right namespace.
    trust.rebuild(Some(TestCa::new().cert_pem().as_bytes()), []);
    assert!(handshake(&trust, "ns", addr).await.is_err());
}

#[tokio::test]
async fn upstream_requires_the_data_plane_name() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["kn-user-ns"]);
    let addr = tls_server(&leaf).await;
    let trust = UpstreamTrust::new();
    trust.rebuild(Some(ca.cert_pem().as_bytes()), []);
    assert!(handshake(&trust, "ns", addr).await.is_err());
}
