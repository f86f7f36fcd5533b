//! The throttler: holds each request until a pod of its revision has room,
//! and picks that pod.
//!
//! **Where it sits.** After the timeout stage and before forwarding
//! (`activator.md` §2.1): the request path looks its revision up in the
//! [`Throttler`] registry and awaits [`RevisionThrottler::try_acquire`]; the
//! time spent queued therefore counts against the revision timeout, as in
//! Knative. The backends watcher feeds [`Throttler::update_backends`], the
//! public Endpoints watcher [`Throttler::update_activator_ips`], and the
//! Revision informer [`Throttler::upsert_revision`] /
//! [`Throttler::remove_revision`].
//!
//! **What it hands on.** A [`Lease`] whose [`dest`](Lease::dest) is the
//! `ip:port` to forward to; the forwarder keeps it until the response is done.
//! Errors ([`ThrottleError`]): the queue is full (its source is
//! [`QueueFull`], which the respond edge answers with 503
//! `pending request queue full` and `Retry-After`), or the revision is unknown
//! or was removed (its source is [`RevisionNotFound`],
//! `revision.serving.knative.dev "<name>" not found`; Knative answers 500 with
//! an empty body). A client that goes away simply drops the future, which
//! frees its queue place at once.
//!
//! # Behaviour
//!
//! Capacity arithmetic, pod subsetting across activators and the activator
//! index are Knative's (§3.3–§3.5), in `revision.rs` and `pod_tracker.rs`.
//! Deliberate differences (see `DESIGN.md` §3):
//!
//! * **Bounded queue.** At most [`ThrottleConfig::max_queued`] requests
//!   ([`DEFAULT_MAX_QUEUED`]) wait per revision, also for
//!   `containerConcurrency: 0`; Knative's bound (10000 + 2^31−1 in flight, none
//!   for cc 0) is effectively unbounded. Set `max_queued` to `usize::MAX` for
//!   Knative's behaviour.
//! * **Strict FIFO, no re-queue spin.** A request is granted only when the
//!   revision and a pod both have room, oldest first, and the grant happens in
//!   the call that frees room (a finished request, a backends update).
//! * **Least-loaded pod** ([`LoadBalancing::LeastLoaded`], the default): the
//!   assigned pod with spare capacity and the fewest requests in flight from
//!   this activator, ties broken at random; Knative's first-available and
//!   round-robin policies pile requests onto the first pods.
//!   [`LoadBalancing::Knative`] restores Knative's policies.
//! * **Endpoints before the Revision.** Updates for a revision that is not
//!   (yet) known are kept and applied when it is upserted; Knative drops them.
//! * A pod that leaves and rejoins the healthy set while requests are still in
//!   flight to it keeps counting them, so it never gets more than `cc`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use kdp_proxy::breaker::QueueFull;
pub use kdp_stats::RevisionKey;

mod lb_policy;
mod pod_tracker;
mod revision;

pub use lb_policy::LbPolicy;
pub use revision::{Acquire, Lease, RevisionThrottler};

/// Default bound on the requests waiting per revision.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// Knative's largest revision capacity, 2^31−1 (`revisionMaxConcurrency`).
pub const REVISION_MAX_CONCURRENCY: usize = 0x7fff_ffff;

/// Result of throttler operations.
pub type Result<T, E = ThrottleError> = std::result::Result<T, E>;

/// The registry of per-revision throttlers.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Throttler {
    config: ThrottleConfig,
    registry: RwLock<Registry>,
}

/// Settings shared by every revision's throttler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Pod selection: kdp's least-loaded policy or Knative's.
    pub load_balancing: LoadBalancing,
    /// Requests that may wait per revision; the next one gets
    /// [`ThrottleError::QueueFull`].
    pub max_queued: usize,
}

/// Which load-balancing policies revisions use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalancing {
    /// Knative's: random choice of two for `containerConcurrency` 0, first
    /// available for 1–3, round robin above (`activator.md` §3.6).
    Knative,
    /// kdp's default: least-loaded pod with spare capacity, random tie-break.
    #[default]
    LeastLoaded,
}

/// Where a revision's traffic can go (`activator.md` §3.2), from the backends
/// watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// Send to pods directly: the dests (`ip:port`) that answered the probe.
    Pods {
        /// Healthy pod dests; order and duplicates do not matter.
        healthy: Vec<String>,
    },
    /// Send everything to the private service's ClusterIP.
    ClusterIp {
        /// The ClusterIP dest, `ip:port`.
        dest: String,
        /// Pods Kubernetes reports ready behind it.
        ready_pods: usize,
    },
    /// Scaled to zero: no backends; requests wait.
    None,
}

/// How many activators serve a revision and which one this is (§3.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activators {
    /// Activators serving the revision (`N`); 0 if unknown.
    pub count: usize,
    /// This activator's position among them (string-sorted IPs); `None` if
    /// unknown, in which case every pod is used.
    pub index: Option<usize>,
}

/// The protocol a revision's pods speak, fixed when it is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (port name `http`).
    #[default]
    Http1,
    /// HTTP/2 over cleartext (first container port named `h2c`; port name
    /// `http2`).
    H2c,
}

/// Why the throttler did not hand out a lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThrottleError {
    /// The revision's queue already holds `max_queued` requests.
    #[error("throttler queue rejected the request")]
    QueueFull(#[source] QueueFull),
    /// The revision is unknown, or was removed.
    #[error("throttler has no such revision")]
    RevisionNotFound(#[source] RevisionNotFound),
}

/// The revision is not (or no longer) known: Knative's lister NotFound error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision.serving.knative.dev \"{name}\" not found")]
pub struct RevisionNotFound {
    /// The revision's namespace.
    pub namespace: String,
    /// The revision's name.
    pub name: String,
}

#[derive(Default)]
struct Registry {
    revisions: HashMap<RevisionKey, Arc<RevisionThrottler>>,
    /// Updates for revisions not yet upserted, applied when they are.
    pending: HashMap<RevisionKey, Pending>,
}

#[derive(Default)]
struct Pending {
    backends: Option<Backends>,
    activators: Option<Activators>,
}

// === impl Throttler ===

impl Throttler {
    /// An empty registry.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            registry: RwLock::new(Registry::default()),
        }
    }

    /// The settings every revision gets.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Creates the throttler for a revision (the Revision informer's
    /// add/update), applying any backends or activator update that arrived
    /// first. A revision's spec is immutable, so an existing throttler is
    /// returned unchanged.
    pub fn upsert_revision(
        &self,
        key: RevisionKey,
        container_concurrency: usize,
        protocol: Protocol,
    ) -> Arc<RevisionThrottler> {
        let mut registry = self.write();
        if let Some(existing) = registry.revisions.get(&key) {
            return Arc::clone(existing);
        }
        let pending = registry.pending.remove(&key);
        let throttler = Arc::new(RevisionThrottler::new(
            key.clone(),
            container_concurrency,
            protocol,
            &self.config,
        ));
        registry.revisions.insert(key, Arc::clone(&throttler));
        drop(registry);
        if let Some(pending) = pending {
            if let Some(activators) = pending.activators {
                throttler.update_activators(activators);
            }
            if let Some(backends) = pending.backends {
                throttler.update_backends(backends);
            }
        }
        throttler
    }

    /// Forgets a revision (the Revision informer's delete). Requests still
    /// waiting for it, and later lookups, fail with
    /// [`ThrottleError::RevisionNotFound`]. Returns whether it was known.
    pub fn remove_revision(&self, key: &RevisionKey) -> bool {
        let removed = {
            let mut registry = self.write();
            registry.pending.remove(key);
            registry.revisions.remove(key)
        };
        match removed {
            Some(throttler) => {
                throttler.close();
                true
            }
            None => false,
        }
    }

    /// The throttler of a known revision.
    pub fn get(&self, key: &RevisionKey) -> Result<Arc<RevisionThrottler>, RevisionNotFound> {
        self.read()
            .revisions
            .get(key)
            .cloned()
            .ok_or_else(|| RevisionNotFound::new(key))
    }

    /// [`RevisionThrottler::try_acquire`] on the revision `key`; fails with
    /// [`ThrottleError::RevisionNotFound`] if it is unknown.
    pub fn try_acquire(&self, key: &RevisionKey) -> Acquire {
        match self.get(key) {
            Ok(throttler) => throttler.try_acquire(),
            Err(not_found) => Acquire::ready(Err(ThrottleError::RevisionNotFound(not_found))),
        }
    }

    /// Replaces a revision's backends; kept for later if the revision is not
    /// known yet.
    pub fn update_backends(&self, key: &RevisionKey, backends: Backends) {
        if let Ok(throttler) = self.get(key) {
            return throttler.update_backends(backends);
        }
        let mut registry = self.write();
        match registry.revisions.get(key).cloned() {
            // Upserted since we looked.
            Some(throttler) => {
                drop(registry);
                throttler.update_backends(backends);
            }
            None => {
                let pending = registry.pending.entry(key.clone()).or_default();
                pending.backends = Some(backends);
            }
        }
    }

    /// Sets a revision's activator count and index; kept for later if the
    /// revision is not known yet.
    pub fn update_activators(&self, key: &RevisionKey, activators: Activators) {
        if let Ok(throttler) = self.get(key) {
            return throttler.update_activators(activators);
        }
        let mut registry = self.write();
        match registry.revisions.get(key).cloned() {
            Some(throttler) => {
                drop(registry);
                throttler.update_activators(activators);
            }
            None => {
                let pending = registry.pending.entry(key.clone()).or_default();
                pending.activators = Some(activators);
            }
        }
    }

    /// Sets a revision's activators from the ready IPs in its public Endpoints
    /// and this activator's `POD_IP` (§3.5). Ignored when `own_ip` is not
    /// among them, as in Knative. Returns whether the update was applied.
    pub fn update_activator_ips<S: AsRef<str>>(
        &self,
        key: &RevisionKey,
        ips: &[S],
        own_ip: &str,
    ) -> bool {
        match Activators::from_ips(ips, own_ip) {
            Some(activators) => {
                self.update_activators(key, activators);
                true
            }
            None => false,
        }
    }

    /// Every known revision's throttler, for metrics (`queued`, `in_flight`).
    pub fn revisions(&self) -> Vec<Arc<RevisionThrottler>> {
        self.read().revisions.values().cloned().collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // The map is never left half-updated: inserts and removes are single calls.
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Throttler {
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

impl fmt::Debug for Throttler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.read();
        f.debug_struct("Throttler")
            .field("config", &self.config)
            .field("revisions", &registry.revisions.len())
            .field("pending", &registry.pending.len())
            .finish()
    }
}

// === impl ThrottleConfig ===

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            load_balancing: LoadBalancing::default(),
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

// === impl Activators ===

impl Activators {
    /// Count and index unknown: use every pod (the initial state).
    pub const UNKNOWN: Self = Self {
        count: 0,
        index: None,
    };

    /// From the activator IPs of a revision's public Endpoints and this
    /// activator's own IP: `count` is the number of distinct IPs and `index`
    /// the position of `own_ip` among them sorted as strings. `None` when
    /// `own_ip` is not among them (Knative then keeps the previous values).
    pub fn from_ips<S: AsRef<str>>(ips: &[S], own_ip: &str) -> Option<Self> {
        let mut sorted: Vec<&str> = ips.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let index = infer_index(&sorted, own_ip)?;
        Some(Self {
            count: sorted.len(),
            index: Some(index),
        })
    }
}

/// Position of `ip` in the string-sorted `sorted` (Knative's `inferIndex`),
/// `None` if absent.
fn infer_index(sorted: &[&str], ip: &str) -> Option<usize> {
    sorted.binary_search(&ip).ok()
}

// === impl ThrottleError ===

impl ThrottleError {
    /// Whether the queue was full (answer 503).
    pub fn is_queue_full(&self) -> bool {
        matches!(self, Self::QueueFull(_))
    }

    /// Whether the revision is unknown or was removed.
    pub fn is_revision_not_found(&self) -> bool {
        matches!(self, Self::RevisionNotFound(_))
    }
}

// === impl RevisionNotFound ===

impl RevisionNotFound {
    /// The error for revision `key`.
    pub fn new(key: &RevisionKey) -> Self {
        Self {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
