//! TLS on the serving port (8112): settings, certificate and handshake.
//!
//! Sits in front of [`serve`](crate::serve): [`TlsAcceptor`] implements
//! [`Accept`], so `serve_with(listener, tls_acceptor, ...)` serves the same
//! stack over TLS that the plain ports serve in the clear.
//!
//! * [`TlsSettings`] reads Knative's `<PREFIX>_TLS_*` variables
//!   (`QUEUE_PROXY_TLS_*` in the queue-proxy, `ACTIVATOR_TLS_*` in the
//!   activator) with the semantics of `knative.dev/pkg/tls`: TLS 1.3 minimum
//!   unless told otherwise, Go cipher-suite and curve names.
//! * [`ReloadingCert`] serves `tls.crt`/`tls.key` from a folder and swaps in
//!   a new pair when the files change on disk (a Secret update).
//! * [`TlsAcceptor`] builds the rustls server: ALPN `h2` and `http/1.1`, no
//!   client certificates, any [`ResolvesServerCert`] as certificate source.
//!
//! The only crypto provider is *ring*; every config here names it explicitly,
//! and [`install_default_provider`] makes it the process default for code
//! (such as the Kubernetes client) that asks rustls for the default.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kdp_core::env::{EnvError, Strings, optional};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use rustls::server::ResolvesServerCert;
use rustls::{CipherSuite, NamedGroup, ServerConfig, SupportedProtocolVersion};
use tokio::net::TcpStream;

use crate::serve::Accept;

pub use self::cert::{
    CERT_FILE, DEFAULT_RELOAD_INTERVAL, KEY_FILE, ReloadingCert, cert_files_exist,
    certified_key_from_pem,
};

mod cert;
#[cfg(test)]
mod tests;

/// ALPN protocols offered, in preference order (Go's `http.Server` default).
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Time allowed for a TLS handshake: Go's `http.Server` bounds it by
/// `ReadHeaderTimeout`, which Knative sets to 60 s on the serving ports.
pub const HANDSHAKE_TIMEOUT: Duration = crate::serve::HEADER_READ_TIMEOUT;

/// Errors loading certificates or building the TLS server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The certificate PEM holds no usable `CERTIFICATE` block.
    #[error("invalid certificate PEM")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// The key PEM holds no usable private key block.
    #[error("invalid private key PEM")]
    PrivateKey(#[source] rustls::pki_types::pem::Error),
    /// The key is of an unsupported type or does not match the certificate.
    #[error("certificate and private key do not form a usable pair")]
    KeyPair(#[source] rustls::Error),
    /// rustls refused the server configuration (for example, no cipher suite
    /// left for an allowed protocol version).
    #[error("invalid TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A TLS protocol version that may bound the server's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (`1.2`).
    Tls12,
    /// TLS 1.3 (`1.3`).
    Tls13,
}

/// Server TLS settings from `<PREFIX>_TLS_*` (Knative's
/// `tls.DefaultConfigFromEnv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `<PREFIX>_TLS_MIN_VERSION`; empty or unset means TLS 1.3.
    pub min_version: TlsVersion,
    /// `<PREFIX>_TLS_MAX_VERSION`; empty or unset means no maximum.
    pub max_version: Option<TlsVersion>,
    /// `<PREFIX>_TLS_CIPHER_SUITES`: the TLS 1.2 suites allowed, in order;
    /// `None` keeps ring's defaults. As in Go, this never restricts TLS 1.3
    /// suites: TLS 1.3 names are accepted and have no effect.
    pub cipher_suites: Option<Vec<CipherSuite>>,
    /// `<PREFIX>_TLS_CURVE_PREFERENCES`: key-exchange groups in preference
    /// order; `None` keeps ring's defaults (X25519, P-256, P-384).
    pub curve_preferences: Option<Vec<NamedGroup>>,
}

/// Installs *ring* as the process-wide rustls [`CryptoProvider`].
///
/// Idempotent: later calls (and a provider already installed) are no-ops.
/// Call it first thing in `main`, before any TLS client or server exists.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: ring is the only
        // provider compiled in, so whoever won installed the same one.
        let _ = ring::default_provider().install_default();
    }
}

// === impl TlsVersion ===

impl TlsVersion {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            _ => Err("unsupported TLS version: must be \"1.2\" or \"1.3\"".to_owned()),
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            Self::Tls12 => &rustls::version::TLS12,
            Self::Tls13 => &rustls::version::TLS13,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        })
    }
}

// === impl TlsSettings ===

impl Default for TlsSettings {
    /// TLS 1.3 only, ring's default suites and groups.
    fn default() -> Self {
        Self {
            min_version: TlsVersion::Tls13,
            max_version: None,
            cipher_suites: None,
            curve_preferences: None,
        }
    }
}

impl TlsSettings {
    /// Reads `<prefix>_TLS_MIN_VERSION`, `_MAX_VERSION`, `_CIPHER_SUITES` and
    /// `_CURVE_PREFERENCES` (`prefix` is `QUEUE_PROXY` or `ACTIVATOR`).
    ///
    /// Empty values count as unset. Every error names the variable. Beyond
    /// Go's checks, a minimum above the maximum is refused here (Go would
    /// start and then fail every handshake), as are names Go knows but ring
    /// cannot provide (the ECDHE CBC suites, P-521 and X25519MLKEM768).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use kdp_proxy::tls::{TlsSettings, TlsVersion};
    ///
    /// let env = HashMap::from([("QUEUE_PROXY_TLS_MIN_VERSION", "1.2")]);
    /// let settings = TlsSettings::from_env(&env, "QUEUE_PROXY").unwrap();
    /// assert_eq!(settings.min_version, TlsVersion::Tls12);
    /// ```
    pub fn from_env(env: &dyn Strings, prefix: &str) -> Result<Self, EnvError> {
        let min_version =
            read(env, prefix, "MIN_VERSION", TlsVersion::parse)?.unwrap_or(TlsVersion::Tls13);
        let max_version = read(env, prefix, "MAX_VERSION", TlsVersion::parse)?;
        if let Some(max) = max_version
            && max < min_version
        {
            return Err(EnvError::invalid(
                &format!("{prefix}_TLS_MAX_VERSION"),
                &max.to_string(),
                format_args!("below the minimum TLS version {min_version}"),
            ));
        }
        let cipher_suites = read(env, prefix, "CIPHER_SUITES", |v| {
            parse_list(v, cipher_suite)
        })?
        .flatten()
        .map(|suites| dedup(suites.into_iter().flatten()));
        let curve_preferences = read(env, prefix, "CURVE_PREFERENCES", |v| parse_list(v, curve))?
            .flatten()
            .map(dedup);
        Ok(Self {
            min_version,
            max_version,
            cipher_suites,
            curve_preferences,
        })
    }

    /// The protocol versions in range, newest first.
    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        [TlsVersion::Tls13, TlsVersion::Tls12]
            .into_iter()
            .filter(|v| (self.min_version..=max).contains(v))
            .map(TlsVersion::rustls)
            .collect()
    }

    /// ring, narrowed to the configured TLS 1.2 suites and groups.
    fn provider(&self) -> CryptoProvider {
        let mut provider = ring::default_provider();
        if let Some(wanted) = &self.cipher_suites {
            let all = std::mem::take(&mut provider.cipher_suites);
            let (tls13, tls12): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|s| s.version() == &rustls::version::TLS13);
            provider.cipher_suites = tls13;
            provider.cipher_suites.extend(
                wanted
                    .iter()
                    .filter_map(|id| tls12.iter().find(|s| s.suite() == *id).copied()),
            );
        }
        if let Some(wanted) = &self.curve_preferences {
            provider.kx_groups = wanted
                .iter()
                .filter_map(|name| {
                    ring::ALL_KX_GROUPS
                        .iter()
                        .find(|g| g.name() == *name)
                        .copied()
                })
                .collect::<Vec<&'static dyn SupportedKxGroup>>();
        }
        provider
    }

    /// A rustls server config with these settings, ALPN `h2` and `http/1.1`,
    /// session tickets, no client authentication, and `certs` choosing the
    /// certificate for each handshake.
    pub fn server_config(&self, certs: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig> {
        let versions = self.versions();
        let mut config = ServerConfig::builder_with_provider(Arc::new(self.provider()))
            .with_protocol_versions(&versions)
            .map_err(Error::Config)?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        config.ticketer = ring::Ticketer::new().map_err(Error::Config)?;
        Ok(config)
    }
}

/// Reads and parses `<prefix>_TLS_<suffix>`; empty counts as unset.
fn read<T>(
    env: &dyn Strings,
    prefix: &str,
    suffix: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, EnvError> {
    let var = format!("{prefix}_TLS_{suffix}");
    optional(env, &var)?
        .map(|value| parse(&value).map_err(|reason| EnvError::invalid(&var, &value, reason)))
        .transpose()
}

/// Drops repeats, keeping the first occurrence's position.
fn dedup<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Splits a comma list, skipping blanks; `None` when nothing is named.
fn parse_list<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>, String> {
    let items = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!items.is_empty()).then_some(items))
}

/// Maps a Go cipher-suite name (`tls.CipherSuites()`) to the TLS 1.2 suite
/// to enable, or `None` for TLS 1.3 suites, which are always on.
fn cipher_suite(name: &str) -> Result<Option<CipherSuite>, String> {
    use CipherSuite as C;
    Ok(Some(match name {
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None);
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => {
            return Err(format!(
                "cipher suite {name:?} is not supported by rustls (no CBC suites); \
                 use the ECDHE GCM or CHACHA20_POLY1305 suites"
            ));
        }
        _ => {
            return Err(format!(
                "unknown cipher suite {name:?} (expected a Go crypto/tls name such as \
                 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
            ));
        }
    }))
}

/// Maps a Go curve name to a key-exchange group ring provides.
fn curve(name: &str) -> Result<NamedGroup, String> {
    match name {
        "X25519" => Ok(NamedGroup::X25519),
        "CurveP256" | "P-256" => Ok(NamedGroup::secp256r1),
        "CurveP384" | "P-384" => Ok(NamedGroup::secp384r1),
        "CurveP521" | "P-521" | "X25519MLKEM768" => Err(format!(
            "curve {name:?} is not supported by the ring crypto provider \
             (supported: X25519, CurveP256/P-256, CurveP384/P-384)"
        )),
        _ => Err(format!(
            "unknown curve {name:?} (supported: X25519, CurveP256/P-256, CurveP384/P-384)"
        )),
    }
}

/// An [`Accept`] that performs a rustls server handshake.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

// === impl TlsAcceptor ===

impl TlsAcceptor {
    /// An acceptor with `settings`, serving the certificate `certs` chooses.
    pub fn new(settings: &TlsSettings, certs: Arc<dyn ResolvesServerCert>) -> Result<Self> {
        Ok(Self::from_config(Arc::new(settings.server_config(certs)?)))
    }

    /// An acceptor over a prepared rustls config.
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        Self {
            inner: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Overrides [`HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("config", self.inner.config())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Accept for TlsAcceptor {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    const PARKS: bool = true;

    /// Only with no decrypted bytes waiting in rustls (a pipelined request
    /// that arrived with the last one, say) and nothing left to send: the
    /// socket would not announce the first, nobody would flush the second.
    /// A parked connection keeps rustls' state (its buffers and the
    /// session), only hyper's buffers are freed. One case stays invisible
    /// here: a read error tokio-rustls holds back for its next read; the
    /// connection then waits for the socket (whose peer has usually closed
    /// it, which wakes it) before the error ends it.
    fn parkable(io: &Self::Io) -> Option<&TcpStream> {
        let (tcp, tls) = io.get_ref();
        (tls.wants_read() && !tls.wants_write()).then_some(tcp)
    }

    fn accept(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send>> {
        let handshake = self.inner.accept(tcp);
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        })
    }
}
