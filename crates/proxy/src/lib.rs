//! The shared hyper/tower proxy core of kdp's queue-proxy and activator.
//!
//! Stages, in request order (each module's docs say where it sits):
//! [`serve`] accepts connections; [`respond`] is the infallible edge that turns
//! errors into Knative's status codes and bodies; [`timeout`] enforces the
//! three revision timeouts; [`breaker`] bounds concurrency and queueing;
//! [`forward`] rewrites headers and relays bodies and upgrades through the
//! upstream [`pool`]. [`request_log`] renders Knative's request log lines.

pub mod body;
pub mod breaker;
pub mod forward;
pub mod pool;
pub mod probe;
pub mod request_log;
pub mod respond;
pub mod serve;
pub mod timeout;
pub mod tls;
