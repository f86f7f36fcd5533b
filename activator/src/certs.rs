//! System-internal TLS: the certificate served on 8112 and the trust used
//! towards pods, both from the cluster and both reloaded when it changes.
//!
//! Beside the request path; only in use when `config-network` enables
//! `system-internal-tls` (`activator.md` §1.3, §2.5):
//!
//! * [`ServingCert`] is the 8112 listener's certificate: `tls.crt` and
//!   `tls.key` of the Secret `routing-serving-certs` in `SYSTEM_NAMESPACE`,
//!   swapped in whenever the Secret changes (a bad update is logged and the
//!   previous pair stays in service).
//! * [`UpstreamTrust`] is what the activator trusts when it talks TLS to a
//!   queue-proxy: the Secret's `ca.crt` plus every PEM value of the
//!   ConfigMaps labelled `networking.knative.dev/trust-bundle` (invalid
//!   bundles are skipped with a warning), TLS 1.3 only, and a certificate
//!   that must name both `data-plane.knative.dev` and
//!   `kn-user-<namespace>` ([`data_plane_user_san`]). It hands out one
//!   rustls [`ClientConfig`] per namespace ([`UpstreamTrust::client_config`]),
//!   rebuilt when the trust changes.
//! * [`tls_dest`] is Knative's port rewrite for TLS upstreams: pods on 8112,
//!   ClusterIPs on 443.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// The Secret holding the serving certificate and the CA (Knative's
/// `ServingRoutingCertName`).
pub const SECRET_NAME: &str = "routing-serving-certs";
/// Secret key of the certificate chain.
pub const CERT_KEY: &str = "tls.crt";
/// Secret key of the private key.
pub const PRIVATE_KEY_KEY: &str = "tls.key";
/// Secret key of the CA certificate.
pub const CA_KEY: &str = "ca.crt";
/// Label marking a ConfigMap whose values are trusted CA bundles.
pub const LABEL_TRUST_BUNDLE: &str = "networking.knative.dev/trust-bundle";
/// The name every queue-proxy certificate carries, and the name the
/// activator verifies (Knative's `LegacyFakeDnsName`).
pub const DATA_PLANE_SERVER_NAME: &str = "data-plane.knative.dev";
/// Port of a pod's queue-proxy TLS listener.
pub const POD_TLS_PORT: u16 = 8112;
/// Port of a private Service's TLS port.
pub const CLUSTER_IP_TLS_PORT: u16 = 443;

/// Namespaces whose client configs are kept; past it the cache starts over.
const MAX_CACHED_NAMESPACES: usize = 4096;

/// The 8112 listener's certificate, replaced when the Secret changes.
#[derive(Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

/// Why a Secret did not yield a serving certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The Secret lacks `tls.crt` or `tls.key`.
    #[error("secret has no {0}")]
    Missing(&'static str),
    /// The pair does not parse or does not match.
    #[error("secret's tls.crt and tls.key are not a usable pair")]
    Invalid(#[source] kdp_proxy::tls::Error),
}

/// The activator's trust towards queue-proxies.
pub struct UpstreamTrust {
    provider: Arc<CryptoProvider>,
    state: RwLock<TrustState>,
}

struct TrustState {
    /// `None` when no CA is configured: every handshake then fails.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    anchors: usize,
    configs: HashMap<String, Arc<ClientConfig>>,
}

/// Accepts a queue-proxy certificate only if it chains to the trusted CAs,
/// names [`DATA_PLANE_SERVER_NAME`], and names the revision's
/// `kn-user-<namespace>` SAN.
struct SanVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    san: String,
    provider: Arc<CryptoProvider>,
}

/// A leaf certificate without the expected SAN; the text is Knative's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("san {san:?} does not have a matching name in [{}]", .names.join(" "))]
pub struct SanMismatch {
    /// The SAN looked for.
    pub san: String,
    /// The leaf's DNS names.
    pub names: Vec<String>,
}

// === impl ServingCert ===

impl ServingCert {
    /// No certificate yet: handshakes fail until [`set`](Self::set) succeeds.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Puts `tls.crt`/`tls.key` of the Secret's `data` into service.
    ///
    /// # Errors
    /// A key is missing or the pair is unusable; the previous pair stays.
    pub fn set(&self, data: &BTreeMap<String, Vec<u8>>) -> Result<(), CertError> {
        let cert = data.get(CERT_KEY).ok_or(CertError::Missing(CERT_KEY))?;
        let key = data
            .get(PRIVATE_KEY_KEY)
            .ok_or(CertError::Missing(PRIVATE_KEY_KEY))?;
        let certified =
            kdp_proxy::tls::certified_key_from_pem(cert, key).map_err(CertError::Invalid)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(certified);
        Ok(())
    }

    /// Whether a certificate is in service.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

// === impl UpstreamTrust ===

impl Default for UpstreamTrust {
    fn default() -> Self {
        Self {
            provider: Arc::new(ring::default_provider()),
            state: RwLock::new(TrustState {
                verifier: None,
                anchors: 0,
                configs: HashMap::new(),
            }),
        }
    }
}

impl UpstreamTrust {
    /// Trusts nothing until [`rebuild`](Self::rebuild).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the trusted CAs: the first certificate of `ca_crt` (the
    /// Secret's `ca.crt`, as Knative decodes one PEM block) and every
    /// certificate of every `bundles` value (`(ConfigMap name, PEM)`).
    /// Unusable input is logged and skipped. Returns how many CAs are
    /// trusted now.
    pub fn rebuild<'a>(
        &self,
        ca_crt: Option<&[u8]>,
        bundles: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> usize {
        let mut roots = RootCertStore::empty();
        if let Some(pem) = ca_crt.filter(|p| !p.is_empty()) {
            let first = CertificateDer::pem_slice_iter(pem).next();
            match first.map(|c| c.map(|c| roots.add(c))) {
                Some(Ok(Ok(()))) => {}
                _ => tracing::warn!(
                    secret = SECRET_NAME,
                    key = CA_KEY,
                    "CA in the secret is invalid and is ignored"
                ),
            }
        }
        for (name, bundle) in bundles {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(bundle.as_bytes())
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                tracing::warn!(
                    configmap = name,
                    "trust bundle holds no valid certificate and is skipped"
                );
            }
        }
        let anchors = roots.len();
        let verifier = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| tracing::warn!(%error, "cannot build the upstream verifier"))
                .ok()
        };
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.verifier = verifier;
        state.anchors = anchors;
        state.configs.clear();
        anchors
    }

    /// CAs trusted now.
    pub fn anchors(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .anchors
    }

    /// The client config for a pod of a revision in `namespace`: TLS 1.3
    /// only, the current CAs, the SAN check for `kn-user-<namespace>`, no
    /// client certificate, no ALPN (the pool sets its own). Connectors should
    /// send [`DATA_PLANE_SERVER_NAME`] as the server name, as Knative does;
    /// the check uses that name whatever they send.
    pub fn client_config(&self, namespace: &str) -> Arc<ClientConfig> {
        if let Some(config) = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .configs
            .get(namespace)
        {
            return config.clone();
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.configs.len() >= MAX_CACHED_NAMESPACES {
            state.configs.clear();
        }
        let verifier = Arc::new(SanVerifier {
            inner: state.verifier.clone(),
            san: data_plane_user_san(namespace),
            provider: self.provider.clone(),
        });
        let config = Arc::new(
            ClientConfig::builder_with_provider(self.provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring supports TLS 1.3")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        );
        state.configs.insert(namespace.to_owned(), config.clone());
        config
    }
}

impl fmt::Debug for UpstreamTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTrust")
            .field("anchors", &self.anchors())
            .finish_non_exhaustive()
    }
}

// === impl SanVerifier ===

impl fmt::Debug for SanVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SanVerifier")
            .field("san", &self.san)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let name = ServerName::try_from(DATA_PLANE_SERVER_NAME).expect("a valid DNS name");
        inner.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)?;
        verify_san(end_entity, &self.san).map_err(|mismatch| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(mismatch),
            )))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The SAN a revision's queue-proxy certificate must carry:
/// `kn-user-<namespace>`, lowercased (Knative's `DataPlaneUserSAN`).
pub fn data_plane_user_san(namespace: &str) -> String {
    format!("kn-user-{}", namespace.to_lowercase())
}

/// Whether the leaf certificate `cert` has the DNS SAN `san` (exactly).
///
/// # Errors
/// [`SanMismatch`] listing the names it has (none if it does not parse).
pub fn verify_san(cert: &CertificateDer<'_>, san: &str) -> Result<(), SanMismatch> {
    let names: Vec<String> = webpki::EndEntityCert::try_from(cert)
        .map(|ee| ee.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default();
    if names.iter().any(|n| n == san) {
        Ok(())
    } else {
        Err(SanMismatch {
            san: san.to_owned(),
            names,
        })
    }
}

/// The [`SanMismatch`] behind a failed upstream connection, if that is why
/// it failed: walks `error`'s source chain, looking inside rustls errors
/// (whose `Display` prints the mismatch in debug form). The forwarder can
/// answer 502 with Knative's text from it.
pub fn san_mismatch<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a SanMismatch> {
    let mut next = Some(error);
    let mut depth = 0;
    while let Some(err) = next {
        if let Some(mismatch) = err.downcast_ref::<SanMismatch>() {
            return Some(mismatch);
        }
        let rustls_err = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) = rustls_err
        {
            return other.0.downcast_ref::<SanMismatch>();
        }
        depth += 1;
        // Source chains are short; the bound only guards against a cycle.
        next = if depth < 32 { err.source() } else { None };
    }
    None
}

/// The dest to use over TLS: the pod's (or ClusterIP's) host with port 8112
/// (pods) or 443 (ClusterIP); IPv6 hosts stay bracketed.
pub fn tls_dest(dest: &str, cluster_ip: bool) -> String {
    let port = if cluster_ip {
        CLUSTER_IP_TLS_PORT
    } else {
        POD_TLS_PORT
    };
    let host = match dest.rsplit_once(':') {
        // `host:port` or `[v6]:port`.
        Some((host, p))
            if p.parse::<u16>().is_ok() && (host.starts_with('[') || !host.contains(':')) =>
        {
            host.to_owned()
        }
        // A bare IPv6 address.
        _ if dest.contains(':') && !dest.starts_with('[') => format!("[{dest}]"),
        _ => dest.to_owned(),
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests;
