//! Knative's per-request access log (queue-proxy spec §7.1, activator §7.3).
//!
//! Sits at the outermost edge of the request path: once the response has
//! finished (or the chain failed), the handler fills a [`LogEntry`] with the
//! request, the response status, size and latency, the revision and the
//! trace id, and hands it to [`RequestLogger::log`], which renders the
//! operator's Go `text/template` and writes one line to stdout. Nothing is
//! handed on; a template that fails at render time yields Knative's
//! `Invalid request log template: ...` line instead, so logging never fails
//! a request.
//!
//! [`Template`] implements the subset of Go's `text/template` that request
//! log templates use (see `parse` for the exact list). Templates that use
//! anything else are rejected with a [`TemplateError`] at parse time rather
//! than rendered differently from Go.
//!
//! ```
//! use kdp_proxy::request_log::{
//!     LogEntry, RequestInfo, RequestLogger, ResponseInfo, RevisionInfo, DEFAULT_TEMPLATE,
//! };
//!
//! let mut logger = RequestLogger::disabled();
//! logger.update(true, DEFAULT_TEMPLATE).expect("the default template parses");
//! let headers = http::HeaderMap::new();
//! let revision = RevisionInfo::default();
//! let entry = LogEntry {
//!     request: RequestInfo {
//!         method: "GET",
//!         request_uri: "/",
//!         url: "/",
//!         host: "example.com",
//!         proto: "HTTP/1.1",
//!         content_length: 0,
//!         remote_addr: "10.0.0.1:5000",
//!         user_agent: "curl/8.0",
//!         referer: "",
//!         headers: &headers,
//!     },
//!     response: ResponseInfo { code: 200, size: 2, latency: 0.5 },
//!     revision: &revision,
//!     trace_id: "",
//! };
//! let line = logger.format(&entry).expect("logging is enabled");
//! assert!(line.contains(r#""latency": "0.5s""#));
//! ```

use std::io::{self, Write as _};
use std::sync::Arc;

mod exec;
mod go_fmt;
mod layer;
mod parse;

pub use layer::{RequestLog, RequestLogLayer};
#[cfg(test)]
mod tests;

/// Knative's default `logging.request-log-template`
/// (`pkg/observability/config.go`).
pub const DEFAULT_TEMPLATE: &str = r#"{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}"#;

/// A parsed request-log template, rendered once per request.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

/// A template that does not parse (Go would reject it too, or it uses a
/// feature kdp does not implement).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("template: line {line}: {message}")]
pub struct TemplateError {
    line: usize,
    message: String,
}

/// A template failed while rendering one entry, e.g. an unknown field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("executing template: {message}")]
pub struct RenderError {
    message: String,
}

/// Why [`RequestLogger::update`] kept the previous configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// Logging was enabled without a template.
    #[error("request log enabled but the template is empty")]
    EmptyTemplate,
    /// The template does not parse.
    #[error("invalid request log template")]
    Parse(#[source] TemplateError),
}

/// Everything a request-log template can see (Knative's
/// `RequestLogTemplateInput`).
#[derive(Clone, Copy, Debug)]
pub struct LogEntry<'a> {
    /// `.Request`.
    pub request: RequestInfo<'a>,
    /// `.Response`.
    pub response: ResponseInfo,
    /// `.Revision`.
    pub revision: &'a RevisionInfo,
    /// `.TraceID`; see [`trace_id`].
    pub trace_id: &'a str,
}

/// The parts of Go's `*http.Request` a template can read.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// `.Method`.
    pub method: &'a str,
    /// `.RequestURI`: the raw request target, e.g. `/a?b=1`.
    pub request_uri: &'a str,
    /// `.URL` as Go prints it: the absolute URL when the client used
    /// absolute-form (`http://example.com/testpage`), else `path?query`.
    pub url: &'a str,
    /// `.Host`: the `Host` header or HTTP/2 `:authority`.
    pub host: &'a str,
    /// `.Proto`: `HTTP/1.1`, `HTTP/2.0`.
    pub proto: &'a str,
    /// `.ContentLength`: -1 when unknown.
    pub content_length: i64,
    /// `.RemoteAddr`: the peer's `ip:port`.
    pub remote_addr: &'a str,
    /// `.UserAgent`: the first `User-Agent` value, or empty.
    pub user_agent: &'a str,
    /// `.Referer`: the first `Referer` value, or empty.
    pub referer: &'a str,
    /// `.Header`.
    pub headers: &'a http::HeaderMap,
}

/// Knative's `RequestLogResponse`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResponseInfo {
    /// `.Code`: the first status written (500 if the chain panicked).
    pub code: u16,
    /// `.Size`: body bytes written.
    pub size: u64,
    /// `.Latency`: seconds from log-handler entry to exit.
    pub latency: f64,
}

/// Knative's `RequestLogRevision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionInfo {
    /// `.Name`.
    pub name: String,
    /// `.Namespace`.
    pub namespace: String,
    /// `.Service`: the `serving.knative.dev/service` label, or empty.
    pub service: String,
    /// `.Configuration`: the `serving.knative.dev/configuration` label.
    pub configuration: String,
    /// `.PodName` (empty in the activator).
    pub pod_name: String,
    /// `.PodIP` (empty in the activator).
    pub pod_ip: String,
}

/// The configured request log: disabled, or a parsed template.
///
/// Cheap to clone; the activator republishes it when config-observability
/// changes, and [`RequestLogger::update`] keeps the previous setting when
/// the new one is rejected.
#[derive(Clone, Debug, Default)]
pub struct RequestLogger {
    template: Option<Arc<Template>>,
    log_probes: bool,
}

// === impl Template ===

impl Template {
    /// Parses `src` with Go `text/template` syntax.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            nodes: parse::parse(src)?,
        })
    }

    /// Renders the template for `entry`, appending to `out`. On error `out`
    /// may hold a partial rendering.
    pub fn render(&self, entry: &LogEntry<'_>, out: &mut String) -> Result<(), RenderError> {
        exec::render(&self.nodes, entry, out)
    }
}

// === impl TemplateError ===

impl TemplateError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }

    /// The 1-based source line of the offending action.
    pub fn line(&self) -> usize {
        self.line
    }
}

// === impl RenderError ===

impl RenderError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

// === impl RequestLogger ===

impl RequestLogger {
    /// A logger that logs nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A logger configured as by [`RequestLogger::update`] from disabled.
    pub fn new(enable: bool, template: &str) -> Result<Self, UpdateError> {
        let mut logger = Self::disabled();
        logger.update(enable, template)?;
        Ok(logger)
    }

    /// Sets whether probe requests are logged (queue-proxy's
    /// `logging.enable-probe-request-log`; the activator never logs them).
    #[must_use]
    pub fn with_probe_logging(mut self, enabled: bool) -> Self {
        self.log_probes = enabled;
        self
    }

    /// Applies a new `logging.enable-request-log` / `request-log-template`
    /// pair. `enable == false` disables logging whatever the template. An
    /// empty or unparsable template with `enable == true` is rejected and
    /// the previous setting stays in force.
    ///
    /// As Knative does, a newline is appended to the template source when
    /// missing, before parsing (so a final `-}}` trims it away again).
    pub fn update(&mut self, enable: bool, template: &str) -> Result<(), UpdateError> {
        if !enable {
            self.template = None;
            return Ok(());
        }
        if template.is_empty() {
            return Err(UpdateError::EmptyTemplate);
        }
        let parsed = if template.ends_with('\n') {
            Template::parse(template)
        } else {
            Template::parse(&format!("{template}\n"))
        };
        self.template = Some(Arc::new(parsed.map_err(UpdateError::Parse)?));
        Ok(())
    }

    /// Whether any request is logged.
    pub fn is_enabled(&self) -> bool {
        self.template.is_some()
    }

    /// Whether a request should be logged at all; handlers check this
    /// before collecting the entry.
    pub fn wants(&self, is_probe: bool) -> bool {
        self.is_enabled() && (!is_probe || self.log_probes)
    }

    /// The line [`RequestLogger::log`] writes for `entry`, or `None` when
    /// logging is disabled.
    pub fn format(&self, entry: &LogEntry<'_>) -> Option<String> {
        let template = self.template.as_ref()?;
        let mut line = String::with_capacity(256);
        if template.render(entry, &mut line).is_err() {
            line.clear();
            push_invalid_line(&mut line, entry);
        }
        Some(line)
    }

    /// Renders `entry` and writes it to `w` in a single `write_all`.
    pub fn write_to(&self, entry: &LogEntry<'_>, w: &mut impl io::Write) -> io::Result<()> {
        match self.format(entry) {
            Some(line) => w.write_all(line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Writes `entry`'s line to stdout; the stdout lock keeps lines from
    /// concurrent requests whole. Write errors are dropped, as Go does.
    pub fn log(&self, entry: &LogEntry<'_>) {
        if let Some(line) = self.format(entry) {
            let _ = io::stdout().lock().write_all(line.as_bytes());
        }
    }
}

/// Knative's fallback line for a template that failed to execute.
fn push_invalid_line(out: &mut String, entry: &LogEntry<'_>) {
    out.push_str("Invalid request log template: method: ");
    out.push_str(entry.request.method);
    out.push_str(", response code: ");
    out.push_str(&entry.response.code.to_string());
    out.push_str(", latency: ");
    go_fmt::push_float(out, entry.response.latency);
    out.push_str(", url: ");
    out.push_str(entry.request.url);
    out.push('\n');
}

/// `.TraceID`: the second `-`-separated field of `traceparent` when it has
/// at least two, else `X-B3-TraceId`, else empty (queue-proxy L7).
pub fn trace_id(headers: &http::HeaderMap) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let traceparent = first("traceparent");
    let mut fields = traceparent.split('-');
    match (fields.next(), fields.next()) {
        (Some(_), Some(id)) if !id.is_empty() => id.to_owned(),
        _ => first("x-b3-traceid"),
    }
}
