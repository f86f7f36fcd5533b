//! The request log, switched on, off or re-templated while serving.
//!
//! Wraps the shared request-log stage (`kdp_proxy::request_log`) right
//! after revision identification, where Knative's sits. The cluster side
//! feeds every version of `config-observability` to
//! [`RequestLogSwitch::apply`]; each request takes the logger in force when
//! it starts. A template that does not parse, or `enable-request-log: true`
//! with an empty template, is refused and the previous setting stays, as in
//! Knative.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use kdp_proxy::body::BoxBody;
use kdp_proxy::request_log::{
    DEFAULT_TEMPLATE, RequestLogLayer, RequestLogger, RevisionInfo, UpdateError,
};
use tower::{Layer, Service};

/// `config-observability` key turning the request log on.
pub const KEY_ENABLE: &str = "logging.enable-request-log";
/// `config-observability` key of the template.
pub const KEY_TEMPLATE: &str = "logging.request-log-template";

/// The request logger in force, shared by the stack and the cluster side.
#[derive(Clone, Debug, Default)]
pub struct RequestLogSwitch {
    state: Arc<RwLock<State>>,
    /// Mirrors `state.layer.is_some()`, so requests skip the lock while off.
    enabled: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct State {
    logger: RequestLogger,
    /// `Some` while logging: the layer each request is wrapped in.
    layer: Option<RequestLogLayer>,
}

/// Why a `config-observability` version was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestLogError {
    /// `logging.enable-request-log` is not a boolean.
    #[error("{KEY_ENABLE} {0:?} is not a boolean")]
    Enable(String),
    /// The template was refused.
    #[error("request log template refused")]
    Template(#[source] UpdateError),
}

/// The request-log stage reading the switch per request.
#[derive(Clone, Debug)]
pub struct DynamicRequestLog<S> {
    inner: S,
    switch: RequestLogSwitch,
}

// === impl RequestLogSwitch ===

impl RequestLogSwitch {
    /// A switch starting with `logger` (or off).
    pub fn new(logger: Option<RequestLogger>) -> Self {
        let switch = Self::default();
        if let Some(logger) = logger {
            switch.install(logger);
        }
        switch
    }

    /// Applies a `config-observability` version.
    ///
    /// # Errors
    /// The version is refused; the previous setting stays.
    pub fn apply(&self, data: &BTreeMap<String, String>) -> Result<(), RequestLogError> {
        let (enable, template) = settings(data)?;
        let mut logger = self.read_logger();
        logger
            .update(enable, &template)
            .map_err(RequestLogError::Template)?;
        self.install(logger);
        Ok(())
    }

    /// Whether requests are being logged.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn layer(&self) -> Option<RequestLogLayer> {
        if !self.is_enabled() {
            return None;
        }
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .layer
            .clone()
    }

    fn read_logger(&self) -> RequestLogger {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .logger
            .clone()
    }

    fn install(&self, logger: RequestLogger) {
        let layer = logger
            .is_enabled()
            .then(|| RequestLogLayer::new(Some(logger.clone()), RevisionInfo::default()));
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        self.enabled.store(layer.is_some(), Ordering::Release);
        *state = State { logger, layer };
    }
}

/// `logging.enable-request-log` (Go boolean, default false) and the
/// template (Knative's default when the key is absent).
///
/// # Errors
/// A malformed boolean.
pub fn settings(data: &BTreeMap<String, String>) -> Result<(bool, String), RequestLogError> {
    let enable = match data.get(KEY_ENABLE) {
        None => false,
        Some(v) => {
            kdp_core::env::parse_go_bool(v).map_err(|_| RequestLogError::Enable(v.clone()))?
        }
    };
    let template = data
        .get(KEY_TEMPLATE)
        .cloned()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
    Ok((enable, template))
}

// === impl DynamicRequestLog ===

impl<S> DynamicRequestLog<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, switch: RequestLogSwitch) -> Self {
        Self { inner, switch }
    }
}

impl<S, B> Service<Request<B>> for DynamicRequestLog<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.switch.layer() {
            None => Box::pin(self.inner.call(req)),
            Some(layer) => {
                // The instance `poll_ready` prepared serves this request.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(layer.layer(ready).call(req))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdp_test_support::string_map as data;

    #[test]
    fn follows_the_config_and_keeps_the_previous_setting_on_errors() {
        let switch = RequestLogSwitch::new(None);
        assert!(!switch.is_enabled());
        // Enabled without a template: Knative's default template.
        switch.apply(&data(&[(KEY_ENABLE, "true")])).unwrap();
        assert!(switch.is_enabled());
        // An empty template is refused; logging stays on.
        assert!(
            switch
                .apply(&data(&[(KEY_ENABLE, "true"), (KEY_TEMPLATE, "")]))
                .is_err()
        );
        assert!(switch.is_enabled());
        assert!(
            switch
                .apply(&data(&[(KEY_ENABLE, "yes"), (KEY_TEMPLATE, "x")]))
                .is_err()
        );
        assert!(switch.is_enabled());
        // Disabled whatever the template.
        switch
            .apply(&data(&[
                (KEY_ENABLE, "false"),
                (KEY_TEMPLATE, "{{.Request.Method}}"),
            ]))
            .unwrap();
        assert!(!switch.is_enabled());
        switch.apply(&data(&[])).unwrap();
        assert!(!switch.is_enabled());
    }
}
