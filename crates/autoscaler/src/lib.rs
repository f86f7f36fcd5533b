//! The Knative Pod Autoscaler (KPA) decider.
//!
//! This crate is the autoscaler half of kdp's local mode: it consumes the
//! [`Stat`](kdp_stats::Stat)s the activator (and, in a cluster, the pod
//! scraper) produces and decides how many pods a revision should run. It
//! follows activator spec §8 and is pure: no I/O, no clock; every step takes
//! `now` as a [`Timestamp`].
//!
//! The flow, one module per stage:
//!
//! 1. [`config`]: `config-autoscaler` ConfigMap data → [`Config`] (§8.1).
//! 2. [`annotations`]: revision annotations → [`RevisionAnnotations`] (§8.2).
//! 3. [`spec`]: both, plus container concurrency and reachability →
//!    [`DeciderSpec`] and [`KpaParams`] (§8.3).
//! 4. [`aggregation`]: 1 s metric buckets with linear or weighted-exponential
//!    window averages, and the scale-down-delay sliding max (§8.4).
//! 5. [`decider`]: [`Decider::record`] stats, [`Decider::scale`] every 2 s or
//!    on a poke → [`ScaleResult`] (§8.5).
//! 6. [`reconciler`]: desired scale → replicas, scale-to-zero timing and the
//!    PodAutoscaler's Active condition ([`PodAutoscaler::reconcile`], §8.6).

pub mod aggregation;
pub mod annotations;
pub mod config;
pub mod decider;
pub mod reconciler;
pub mod spec;
pub mod time;

pub use aggregation::{Buckets, MaxWindow};
pub use annotations::RevisionAnnotations;
pub use config::{Config, ConfigError};
pub use decider::{Decider, DeciderStatus, NoData, Observation, ScaleResult};
pub use reconciler::{
    Activity, PaStatus, PodAutoscaler, ReconcileInput, ReplicaDecision, decide_replicas,
};
pub use spec::{AggregationAlgorithm, DeciderSpec, KpaParams, ScalingMetric};
pub use time::Timestamp;
