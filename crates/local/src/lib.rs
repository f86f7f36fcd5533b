//! Local mode: Knative Services on one machine, no cluster (`kdp run`).
//!
//! The local request path is the cluster's with Kubernetes swapped out (DESIGN.md §2, §6):
//!
//! ```text
//! client -> router (route)  -> activator core (holds while no replica is ready)
//!        -> queue-proxy core (one per replica) -> user process (supervisor)
//! ```
//!
//! This crate owns the parts that replace Kubernetes:
//!
//! | module | role |
//! |---|---|
//! | [`manifest`] | YAML files and folders → typed `Service`s and ConfigMaps, refused with file/document/field |
//! | [`config`] | config-domain, config-features, config-defaults; config-autoscaler passed through |
//! | [`revision`] | revision naming, change detection, history, traffic resolution |
//! | [`route`] | Host / tag host / `Knative-Serving-Tag` → revision, weighted split |
//! | [`model`] | the validated desired state ([`Model`]) the runtime consumes |
//! | [`watch`] | reload on file change; a bad edit keeps the old model |
//! | [`supervisor`] | replica processes: `PORT`, output prefixes, restart with backoff, SIGTERM/SIGKILL |
//! | [`hello`] | the bundled hello-world app (`kdp hello`) |
//! | [`status`] | the `kdp status` report |
//! | [`plane`] | the runtime: router, activator (hold, poke, stats), queue-proxies, the KPA from `kdp-autoscaler`, `GET /.kdp/status` |
//!
//! # The boundary with the runtime
//!
//! The runtime (router server, activator and queue-proxy cores, KPA) consumes [`Model`]s:
//!
//! ```no_run
//! # async fn run() {
//! use kdp_local::{Loader, Options, Reload, Watcher};
//!
//! let options = Options { domain: None, self_exe: std::env::current_exe().unwrap() };
//! let mut watcher = Watcher::new(Loader::new(vec!["deploy/local".into()], options),
//!                                kdp_local::watch::DEFAULT_INTERVAL);
//! let Reload::Applied { model, .. } = watcher.load_now() else { return };
//! // For each request: model.routes.route(host, tag_header, &mut rand::rng()) -> revision key.
//! // For each revision in model.routed_revisions(): annotations + model.config.autoscaler feed
//! // the KPA; replicas are supervisor::Replica::spawn(ProcessSpec { env:
//! // revision.process_env(port), .. }) behind a queue-proxy core.
//! loop {
//!     match watcher.next().await {
//!         Reload::Applied { model, changes } => { /* swap the model in, start/stop revisions */ }
//!         Reload::Rejected(err) => { /* log it; keep serving the old model */ }
//!     }
//! }
//! # }
//! ```
//!
//! A [`revision::RevisionKey`] always names the same content, so swapping models only has to
//! start revisions that appear and stop those that disappear.

pub mod config;
pub mod hello;
pub mod manifest;
pub mod model;
pub mod plane;
pub mod revision;
pub mod route;
pub mod status;
pub mod supervisor;
pub mod watch;

pub use model::{Change, LoadError, Model, Options, ServiceModel};
pub use revision::{Revision, RevisionKey, ServiceKey};
pub use route::{NoRoute, RouteMatch, RouteTable};
pub use watch::{Loader, Reload, Watcher};
