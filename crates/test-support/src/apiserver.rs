//! A fake Kubernetes API server over real HTTP, for kube-rs clients.
//!
//! Tests point a `kube::Client` at [`FakeApiServer::url`] and run the
//! production list/watch code (kdp-k8s reflectors, the activator's
//! `/version` gate) against it, with no cluster (DESIGN §5). The test owns
//! the object store: [`apply`](FakeApiServer::apply) and
//! [`delete`](FakeApiServer::delete) are the cluster's writers, and every
//! write bumps one global resource version, as etcd does.
//!
//! What it serves (read-only, `GET` only; anything else is 405):
//!
//! - `GET /version` ([`set_version`](FakeApiServer::set_version)).
//! - `GET /api/v1/...` and `/apis/<group>/<version>/...`, namespaced
//!   (`/namespaces/<ns>/<plural>`) or across all namespaces (`/<plural>`):
//!   - list, with `labelSelector` (`k=v`, `k!=v`, `k`, `!k`, `k in (..)`,
//!     `k notin (..)`) and `fieldSelector` (`metadata.name`,
//!     `metadata.namespace`); one page, `limit` is ignored;
//!   - get by name (404 `NotFound` Status when missing);
//!   - watch (`watch=true|1`): the changes after `resourceVersion` (or the
//!     current state as `ADDED` when it is absent or `0`), then live
//!     changes; `BOOKMARK`s every [`set_bookmark_interval`] when
//!     `allowWatchBookmarks=true`; closed after `timeoutSeconds`;
//!     `sendInitialEvents=true` is honoured with the
//!     `k8s.io/initial-events-end` bookmark; a `resourceVersion` older than
//!     the retained history gets an `ERROR` event carrying a 410 `Expired`
//!     Status.
//!
//! Types are found by plural in a small table (core `endpoints`, `services`,
//! `configmaps`, `secrets`, `pods`, Knative `revisions`, ...); other kinds
//! are registered on first [`apply`](FakeApiServer::apply) with a guessed
//! plural, or explicitly with [`register`](FakeApiServer::register).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kdp_test_support::FakeApiServer;
//!
//! let server = FakeApiServer::start().await;
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1",
//!     "kind": "ConfigMap",
//!     "metadata": { "name": "config-network", "namespace": "knative-serving" },
//!     "data": {},
//! }));
//! // kube::Client::try_from(kube::Config::new(server.url().parse()?))?
//! # Ok(()) }
//! ```
//!
//! [`set_bookmark_interval`]: FakeApiServer::set_bookmark_interval

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use hyper::service::service_fn;
use serde_json::Value;
use tokio::sync::watch;

use crate::WaitTimeout;
use crate::serve::{self, Server};
use store::{Filter, Key, Store};

mod handler;
mod resource;
mod selector;
mod store;
#[cfg(test)]
mod tests;

/// A running fake API server on `127.0.0.1:<ephemeral>`.
///
/// Dropping it closes the listener, every connection and every watch.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    signal: watch::Sender<Signal>,
    server: Server,
}

/// One request the server received, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The raw (still percent-encoded) query string, empty if none.
    pub query: String,
    /// Whether this was a watch (`watch=true` or `watch=1`).
    pub watch: bool,
}

/// State shared by the handle, the HTTP handler and the watch tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Cloned by each watch; changes on every write and on close/expire.
    signal: watch::Receiver<Signal>,
    open_watches: AtomicUsize,
}

/// What watch tasks wait on. Every write notifies (the value need not
/// change); the two epochs tell open watches to stop.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Signal {
    /// Bumped by `expire_watches`: open watches send 410 and end.
    expired: u64,
    /// Bumped by `close_watches`: open watches end cleanly.
    closed: u64,
}

// === impl FakeApiServer ===

impl FakeApiServer {
    /// Starts a server with an empty store, reporting Kubernetes v1.34.0.
    ///
    /// # Panics
    ///
    /// If `127.0.0.1:0` cannot be bound.
    pub async fn start() -> Self {
        let (signal, rx) = watch::channel(Signal::default());
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            signal: rx,
            open_watches: AtomicUsize::new(0),
        });
        let listener = serve::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0 always succeeds on a test host");
        let service = {
            let shared = shared.clone();
            service_fn(move |req| handler::handle(shared.clone(), req))
        };
        let server =
            Server::spawn(listener, service).expect("a bound listener has a local address");
        tracing::debug!(addr = %server.addr(), "fake API server listening");
        Self {
            shared,
            signal,
            server,
        }
    }

    /// The base URL, `http://127.0.0.1:<port>`, for `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Creates or replaces an object, as a controller's write would.
    ///
    /// `apiVersion`, `kind` and `metadata.name` are required; a namespaced
    /// object without `metadata.namespace` goes to `default`. The write gets
    /// the next resource version, written to `metadata.resourceVersion`; a
    /// create also gets a `uid` and `creationTimestamp` unless the object
    /// brings its own, and a replace keeps the stored ones. Open watches see
    /// `ADDED` or `MODIFIED`. Returns the stored object.
    ///
    /// # Panics
    ///
    /// If a required field is missing, or a cluster-scoped kind has a
    /// namespace.
    #[track_caller]
    pub fn apply(&self, object: Value) -> Value {
        let stored = self.shared.lock().apply(object);
        match stored {
            Ok(stored) => {
                self.notify();
                stored
            }
            Err(message) => panic!("FakeApiServer::apply: {message}"),
        }
    }

    /// Deletes an object; open watches see `DELETED`. `kind_or_plural` is
    /// `Endpoints` or `endpoints`; `namespace` is ignored for cluster-scoped
    /// kinds. Returns the deleted object, or `None` if it did not exist (no
    /// version is used up then).
    pub fn delete(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let deleted = {
            let mut store = self.shared.lock();
            let key = key(&mut store, api_version, kind_or_plural, namespace, name);
            store.delete(&key)
        };
        if deleted.is_some() {
            self.notify();
        }
        deleted
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let mut store = self.shared.lock();
        let key = key(&mut store, api_version, kind_or_plural, namespace, name);
        store.objects.get(&key).cloned()
    }

    /// Stored objects of one type, in one namespace or (`None`) all of them.
    pub fn objects(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let mut store = self.shared.lock();
        let ty = store.resolve(api_version, kind_or_plural, true);
        store.list(&Filter {
            api_version: ty.api_version,
            plural: ty.plural,
            namespace: namespace.map(str::to_owned),
            labels: selector::LabelSelector::default(),
            fields: selector::FieldSelector::default(),
        })
    }

    /// Serves a type missing from the built-in table (a CRD), under
    /// `plural`. Built-in types need no registration.
    pub fn register(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        let mut store = self.shared.lock();
        store.types.retain(|ty| {
            !(ty.api_version == api_version && (ty.kind == kind || ty.plural == plural))
        });
        store.types.push(resource::ResourceType {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        });
    }

    /// The current (latest) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Forgets the change history, as etcd compaction does: a later watch
    /// from any version older than now gets a 410 `Expired` ERROR event.
    /// Watches already open keep streaming.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Compacts (see [`compact`](Self::compact)) and sends every open watch
    /// a 410 `Expired` ERROR event before closing it, so watchers must
    /// re-list.
    pub fn expire_watches(&self) {
        self.shared.lock().compact();
        self.signal.send_modify(|s| s.expired += 1);
    }

    /// Ends every open watch stream cleanly, as an API server restart or a
    /// load balancer would; watchers resume from their last version.
    pub fn close_watches(&self) {
        self.signal.send_modify(|s| s.closed += 1);
    }

    /// Sets what `GET /version` reports, e.g. `("1", "31", "v1.31.2")`.
    pub fn set_version(&self, major: &str, minor: &str, git_version: &str) {
        self.shared.lock().version = store::version_info(major, minor, git_version);
    }

    /// How often watches that asked for bookmarks get one (default 1 s).
    /// Applies to watches opened afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.lock().bookmark_interval = interval;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests (lists, gets and watches) hit exactly `path`.
    pub fn request_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// How many list requests (not watches) hit exactly `path`.
    pub fn list_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path && !r.watch)
            .count()
    }

    /// How many watch requests hit exactly `path`.
    pub fn watch_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path && r.watch)
            .count()
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` watch streams are open.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] if that does not happen within `timeout`.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> Result<(), WaitTimeout> {
        crate::poll_until(
            timeout,
            || format!("{n} open watches"),
            || (self.open_watches() >= n).then_some(()),
        )
        .await
    }

    fn notify(&self) {
        // `send_modify` wakes every receiver even when nothing changed.
        self.signal.send_modify(|_| {});
    }
}

fn key(
    store: &mut Store,
    api_version: &str,
    kind_or_plural: &str,
    namespace: &str,
    name: &str,
) -> Key {
    let ty = store.resolve(api_version, kind_or_plural, true);
    Key {
        api_version: ty.api_version,
        plural: ty.plural,
        namespace: if ty.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

// === impl RecordedRequest ===

impl RecordedRequest {
    /// A decoded query parameter, e.g. `resourceVersion` or `labelSelector`.
    pub fn param(&self, name: &str) -> Option<String> {
        handler::parse_query(&self.query).remove(name)
    }
}

// === impl Shared ===

impl Shared {
    /// The store; a test that panicked while holding it does not poison
    /// other tests' view.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
