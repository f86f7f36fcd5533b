//! Throwaway certificates for TLS tests: a CA and the leaf certificates it
//! issues, as PEM (for Secrets and files) and DER (for rustls).
//!
//! ```
//! use kdp_test_support::tls::TestCa;
//!
//! let ca = TestCa::new();
//! let leaf = ca.leaf(&["data-plane.knative.dev", "kn-user-default"]);
//! assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

/// A self-signed CA that issues leaf certificates.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

// === impl TestCa ===

impl TestCa {
    /// A fresh CA with a new key.
    ///
    /// # Panics
    ///
    /// If key generation fails (it does not with the ring backend).
    pub fn new() -> Self {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().expect("ring generates keys");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signing works");
        Self { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A client configuration (ring, rustls' safe defaults) that trusts
    /// this CA alone.
    ///
    /// # Panics
    ///
    /// If rustls rejects its own defaults.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der())
            .expect("a CA certificate rustls parses");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the safe defaults")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// A leaf certificate with DNS SANs `names`, signed by this CA.
    ///
    /// # Panics
    ///
    /// If a name is not a valid DNS name.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("ring generates keys");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .expect("valid SANs")
            .signed_by(&key, &self.issuer)
            .expect("signing works");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
