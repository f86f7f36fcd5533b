//! Read-only views of the Kubernetes objects the activator needs.
//!
//! Beside the request path: the activator looks revisions, endpoints and
//! services up in these caches, never in the API server. Each cache is a
//! kube-rs reflector [`Store`] kept current by a watcher (list, then watch,
//! relisting on `410 Gone`, with kube's default back-off), and each can also
//! hand out its changes as a stream of [`Change`]s so the activator can react
//! to an Endpoints update the moment it arrives. [`Cache::ready`] resolves
//! once the initial list has been applied, which gates the activator's
//! readiness.
//!
//! # Memory
//! A store holds every object it watches. Watch selectors (labels) keep the
//! Endpoints caches to Knative's own objects; `managedFields` are stripped
//! before objects are stored.

use std::fmt::Debug;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

pub mod revision;

pub use k8s_openapi;
pub use kube;
pub use revision::{Revision, RevisionSpec};

/// A change seen by a cache's watcher.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// The object was added or modified.
    Applied(Arc<K>),
    /// The object was deleted.
    Deleted(Arc<K>),
    /// The watch was (re)started and the store now holds exactly these objects.
    Relisted(Vec<Arc<K>>),
}

/// One watched resource: a store plus an optional change stream.
pub struct Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
}

// === impl Cache ===

impl<K> Debug for Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    /// Starts watching `api` with `config` on the current runtime. Changes are
    /// also sent on `changes` when given. The watcher task ends when the
    /// returned cache's store writer is dropped with it (never, in practice: it
    /// runs for the life of the process).
    pub fn spawn(
        api: Api<K>,
        config: watcher::Config,
        changes: Option<mpsc::UnboundedSender<Change<K>>>,
    ) -> Self {
        let (store, mut writer) = reflector::store::<K>();
        tokio::spawn(async move {
            let mut events = watcher(api, config)
                .default_backoff()
                .modify(|obj: &mut K| {
                    obj.meta_mut().managed_fields = None;
                })
                .boxed();
            let mut relist: Vec<Arc<K>> = Vec::new();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, kind = %K::kind(&K::DynamicType::default()), "watch failed; retrying");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                let Some(tx) = &changes else { continue };
                let change = match event {
                    watcher::Event::Apply(obj) => Change::Applied(Arc::new(obj)),
                    watcher::Event::Delete(obj) => Change::Deleted(Arc::new(obj)),
                    watcher::Event::Init => {
                        relist.clear();
                        continue;
                    }
                    watcher::Event::InitApply(obj) => {
                        relist.push(Arc::new(obj));
                        continue;
                    }
                    watcher::Event::InitDone => Change::Relisted(std::mem::take(&mut relist)),
                };
                if tx.send(change).is_err() {
                    tracing::debug!("change receiver gone");
                }
            }
        });
        Self { store }
    }

    /// The store (cheap to clone).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Resolves once the first list has been applied.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// The object `namespace/name`, if cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = reflector::ObjectRef::<K>::new(name).within(namespace);
        self.store.get(&key)
    }

    /// Every cached object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}
