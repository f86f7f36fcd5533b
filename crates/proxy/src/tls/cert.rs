//! The serving certificate: loaded from a folder, reloaded when it changes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Error, Result};

/// The certificate chain's file name in the certificate folder.
pub const CERT_FILE: &str = "tls.crt";
/// The private key's file name in the certificate folder.
pub const KEY_FILE: &str = "tls.key";
/// How often [`ReloadingCert::spawn_reloader`] looks at the files in the
/// binaries (Knative's certificate watcher period).
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Whether both [`CERT_FILE`] and [`KEY_FILE`] exist in `dir`: TLS is
/// enabled iff they do. A stat error other than "not found" (say, a
/// permission error) is returned rather than read as "no TLS".
pub fn cert_files_exist(dir: &Path) -> io::Result<bool> {
    Ok(dir.join(CERT_FILE).try_exists()? && dir.join(KEY_FILE).try_exists()?)
}

/// Parses a PEM certificate chain (leaf first; non-certificate blocks are
/// skipped) and a PEM private key (PKCS#8, PKCS#1 or SEC1) into a key rustls
/// can serve, checking that the key matches the leaf certificate.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Certificate)?;
    if chain.is_empty() {
        return Err(Error::Certificate(
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(Error::PrivateKey)?;
    let certified =
        CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(Error::KeyPair)?;
    Ok(Arc::new(certified))
}

/// A certificate and key read from `tls.crt`/`tls.key` in a folder, served
/// to every handshake (no SNI selection) and replaced when the files change.
///
/// [`load`](Self::load) reads the pair once and fails if it is unusable;
/// [`spawn_reloader`](Self::spawn_reloader) then re-reads both files every
/// interval and, when their SHA-256 differs from the last good load, parses
/// and swaps them in. A pair that fails to read or parse is logged and the
/// previous one stays in service; it is retried on the next tick, so a
/// half-written update heals once both files are in place.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

/// The pair in service and the digests of the file contents it came from.
struct Loaded {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Loads [`CERT_FILE`] and [`KEY_FILE`] from `dir`.
    pub async fn load(dir: impl AsRef<Path>) -> Result<Arc<Self>> {
        let dir = dir.as_ref();
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let (cert, key) = read_pair(&cert_path, &key_path).await?;
        let loaded = Loaded {
            key: certified_key_from_pem(&cert, &key)?,
            digest: digest(&cert, &key),
        };
        Ok(Arc::new(Self {
            cert_path,
            key_path,
            current: RwLock::new(loaded),
        }))
    }

    /// The pair in service.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .key
            .clone()
    }

    /// Reads both files once and swaps in the pair if it changed.
    ///
    /// Returns `Ok(true)` when a new pair went into service, `Ok(false)` when
    /// the files are unchanged, and an error (the old pair staying in service)
    /// when they could not be read or parsed.
    pub async fn reload(&self) -> Result<bool> {
        let (cert, key) = read_pair(&self.cert_path, &self.key_path).await?;
        let digest = digest(&cert, &key);
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .digest
            == digest
        {
            return Ok(false);
        }
        let key = certified_key_from_pem(&cert, &key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded { key, digest };
        Ok(true)
    }

    /// Spawns a task that calls [`reload`](Self::reload) every `interval`
    /// (the first check one interval from now) and logs the outcome. The
    /// task holds only a weak reference and ends once `self` is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval;
            let mut ticks = tokio::time::interval_at(start, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(this) = weak.upgrade() else { return };
                match this.reload().await {
                    Ok(true) => {
                        tracing::info!(
                            "Certificate and/or key have changed on disk and were reloaded."
                        );
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        error = %kdp_core::ErrorChain(&error),
                        cert = %this.cert_path.display(),
                        "failed to reload the certificate; keeping the previous one",
                    ),
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

async fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| Error::Read { path, source })
        }
    };
    Ok((read(cert_path).await?, read(key_path).await?))
}

/// SHA-256 over both files, each prefixed by its length so that moving
/// bytes between them still counts as a change.
fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [cert, key] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}
