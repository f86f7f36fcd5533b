//! The three revision timeouts: total (`timeoutSeconds`), response start
//! (`responseStartTimeoutSeconds`) and idle (`idleTimeoutSeconds`).
//!
//! **Where it sits.** Step 8 of the queue-proxy chain (`queue-proxy.md` §3.1,
//! §3.5) and the activator's timeout handler (`activator.md` §6.3): outside the
//! breaker and the forwarder, so a request waiting in the breaker queue is
//! bounded by the same timers as one being proxied.
//!
//! **What it hands on.** The inner service's response, with its body wrapped so
//! the timers keep running while it streams. It produces no error of its own:
//! a timeout is answered here, as Knative does it.
//!
//! * Before the inner service has produced response headers, any timer firing
//!   drops (cancels) the inner future and answers **504** with the body
//!   [`Timeouts::message`], exactly, without a trailing newline.
//! * Afterwards only the total and idle timers matter. When one fires the
//!   status already sent stays, the upstream body is dropped, the message bytes
//!   are appended and the body ends normally (Go's timeout writer appends the
//!   same way). Because of that, the wrapped body never reports an exact size
//!   hint; a `Content-Length` header copied from upstream still applies.
//! * Idle counts from the last response write (headers or a body frame);
//!   before the first write it counts from entry, so it also limits the wait
//!   for headers.
//!
//! Every timeout logs at warn: `Request timeout: 5m0s`,
//! `Response start timeout: 10s` or `Idle timeout: 1.5s` (Go duration format).
//!
//! Upgraded connections (websockets) bypass the body, so the forwarder cuts
//! them itself at the [`RequestDeadline`] this layer puts in the request's
//! extensions.
//!
//! # Cost
//!
//! No task is spawned and nothing is allocated per request beyond re-boxing
//! the response body. The future and the body each own one [`Sleep`], armed at
//! the earliest deadline that can apply; a body write only records the time,
//! and the idle timer is re-armed for the remainder when it fires, as in Go.
//! A response whose headers are ready at the first poll never registers a
//! timer at all.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use kdp_core::Error;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{Layer, Service};

use crate::body::{BoxBody, boxed, full};

#[cfg(test)]
mod tests;

/// The 504 body the queue-proxy writes.
pub const QUEUE_PROXY_MESSAGE: &str = "request timeout";

/// The 504 body the activator writes.
pub const ACTIVATOR_MESSAGE: &str = "activator request timeout";

/// A revision's timeouts and the text written when one fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Maximum duration of the whole request, from entry into this layer
    /// (`timeoutSeconds`). Zero is not "off": it times out at once.
    pub total: Duration,
    /// Maximum wait for response headers (`responseStartTimeoutSeconds`).
    /// `None` or zero: off.
    pub response_start: Option<Duration>,
    /// Maximum silence between response writes (`idleTimeoutSeconds`).
    /// `None` or zero: off.
    pub idle: Option<Duration>,
    /// The 504 body, also appended to a started response:
    /// [`QUEUE_PROXY_MESSAGE`] or [`ACTIVATOR_MESSAGE`].
    pub message: &'static str,
}

/// Request extension: the instant at which an upgraded connection (websocket)
/// must be cut.
///
/// Post-upgrade bytes never count as response writes, so as in Knative this is
/// the earliest of entry + total, entry + response start and entry + idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDeadline(pub Instant);

/// Which timer fired. Inserted as an extension into the 504 responses this
/// layer writes, for the request log and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The total (revision) timeout.
    Request,
    /// The response-start timeout.
    ResponseStart,
    /// The idle timeout.
    Idle,
}

/// Applies [`Timeouts`] to every request; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeouts: Timeouts,
}

/// The service built by [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeouts: Timeouts,
}

pin_project! {
    /// Response future of [`Timeout`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        // `None` once resolved or timed out: a timeout drops the inner future
        // (cancelling a breaker wait or the upstream request) at once.
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Sleep,
        // Which timer `sleep` is armed for.
        kind: TimeoutKind,
        start: Instant,
        timeouts: Timeouts,
    }
}

pin_project! {
    /// The response body once headers are out: streams the inner body until
    /// it ends or the total/idle timer fires.
    struct TimeoutBody {
        // `None` once ended or timed out.
        inner: Option<BoxBody>,
        #[pin]
        sleep: Sleep,
        clock: BodyClock,
    }
}

/// What a [`TimeoutBody`] needs to decide which timer, if any, has expired.
#[derive(Clone, Copy, Debug)]
struct BodyClock {
    deadline_total: Instant,
    /// Time of the last response write; only kept up to date with an idle timeout.
    last_write: Instant,
    timeouts: Timeouts,
}

/// `Duration` in Go's `time.Duration.String()` format (`5m0s`, `1.5s`, `300ms`).
struct GoDuration(Duration);

/// Beyond any real deadline; used when `start + timeout` would overflow.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

// === impl Timeouts ===

impl Timeouts {
    fn response_start(&self) -> Option<Duration> {
        self.response_start.filter(|d| !d.is_zero())
    }

    fn idle(&self) -> Option<Duration> {
        self.idle.filter(|d| !d.is_zero())
    }

    /// The earliest deadline before any write, and the timer it belongs to.
    /// On a tie the total timeout wins.
    fn first_deadline(&self, start: Instant) -> (Instant, TimeoutKind) {
        let mut first = (after(start, self.total), TimeoutKind::Request);
        for (d, kind) in [
            (self.response_start(), TimeoutKind::ResponseStart),
            (self.idle(), TimeoutKind::Idle),
        ] {
            if let Some(d) = d {
                let at = after(start, d);
                if at < first.0 {
                    first = (at, kind);
                }
            }
        }
        first
    }

    fn log(&self, kind: TimeoutKind) {
        match kind {
            TimeoutKind::Request => {
                let t = GoDuration(self.total);
                tracing::warn!("Request timeout: {t}");
            }
            TimeoutKind::ResponseStart => {
                let r = GoDuration(self.response_start.unwrap_or_default());
                tracing::warn!("Response start timeout: {r}");
            }
            TimeoutKind::Idle => {
                let i = GoDuration(self.idle.unwrap_or_default());
                tracing::warn!("Idle timeout: {i}");
            }
        }
    }
}

fn after(start: Instant, d: Duration) -> Instant {
    start.checked_add(d).unwrap_or_else(|| start + FAR_FUTURE)
}

// === impl TimeoutLayer ===

impl TimeoutLayer {
    /// A layer enforcing `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Self { timeouts }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.timeouts)
    }
}

// === impl Timeout ===

impl<S> Timeout<S> {
    /// Wraps `inner` with `timeouts`.
    pub fn new(inner: S, timeouts: Timeouts) -> Self {
        Self { inner, timeouts }
    }
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Error>,
{
    type Response = Response<BoxBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let (deadline, kind) = self.timeouts.first_deadline(start);
        req.extensions_mut().insert(RequestDeadline(deadline));
        ResponseFuture {
            inner: Some(self.inner.call(req)),
            sleep: sleep_until(deadline),
            kind,
            start,
            timeouts: self.timeouts,
        }
    }
}

// === impl ResponseFuture ===

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A zero total timeout fires before the inner service gets a chance,
        // as Go's zero-length timer nearly always does.
        let expired_at_entry = this.timeouts.total.is_zero();
        if !expired_at_entry
            && let Some(inner) = this.inner.as_mut().as_pin_mut()
            && let Poll::Ready(result) = inner.poll(cx)
        {
            this.inner.set(None);
            let (timeouts, start) = (*this.timeouts, *this.start);
            return Poll::Ready(result.map(|rsp| wrap_body(rsp, timeouts, start)));
        }
        ready!(this.sleep.poll(cx));
        this.inner.set(None);
        this.timeouts.log(*this.kind);
        Poll::Ready(Ok(timeout_response(this.timeouts.message, *this.kind)))
    }
}

fn wrap_body(rsp: Response<BoxBody>, timeouts: Timeouts, start: Instant) -> Response<BoxBody> {
    // Nothing more will be written (e.g. a 101 or a 204): no timer needed.
    if rsp.body().is_end_stream() {
        return rsp;
    }
    let now = Instant::now();
    let deadline_total = after(start, timeouts.total);
    let first = match timeouts.idle() {
        Some(idle) => deadline_total.min(after(now, idle)),
        None => deadline_total,
    };
    rsp.map(|inner| {
        boxed(TimeoutBody {
            inner: Some(inner),
            sleep: sleep_until(first),
            clock: BodyClock {
                deadline_total,
                last_write: now,
                timeouts,
            },
        })
    })
}

fn timeout_response(message: &'static str, kind: TimeoutKind) -> Response<BoxBody> {
    let mut rsp = Response::new(full(message));
    *rsp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    // What Go's content sniffing sets for this body.
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp.extensions_mut().insert(kind);
    rsp
}

// === impl BodyClock ===

impl BodyClock {
    /// The timer that has expired at `now`, or else the next deadline.
    fn check(&self, now: Instant) -> Result<TimeoutKind, Instant> {
        if now >= self.deadline_total {
            return Ok(TimeoutKind::Request);
        }
        let Some(idle) = self.timeouts.idle() else {
            return Err(self.deadline_total);
        };
        let at = after(self.last_write, idle);
        if now >= at {
            Ok(TimeoutKind::Idle)
        } else {
            Err(at.min(self.deadline_total))
        }
    }
}

// === impl TimeoutBody ===

impl Body for TimeoutBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The timer is checked before the inner body so that a body that is
        // always ready still gets cut at its deadline.
        while this.sleep.as_mut().poll(cx).is_ready() {
            match this.clock.check(Instant::now()) {
                Ok(kind) => {
                    // Dropping the upstream body aborts the upstream request.
                    *this.inner = None;
                    this.clock.timeouts.log(kind);
                    let message = Bytes::from_static(this.clock.timeouts.message.as_bytes());
                    return Poll::Ready(Some(Ok(Frame::data(message))));
                }
                // Written since the timer was armed: re-arm for the remainder.
                Err(next) => this.sleep.as_mut().reset(next),
            }
        }
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if this.clock.timeouts.idle().is_some() {
                    this.clock.last_write = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err))),
            None => {
                *this.inner = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let Some(inner) = &self.inner else {
            return SizeHint::with_exact(0);
        };
        let hint = inner.size_hint();
        let mut out = SizeHint::new();
        out.set_lower(hint.lower());
        if let Some(upper) = hint.upper() {
            let message = u64::try_from(self.clock.timeouts.message.len()).unwrap_or(u64::MAX);
            out.set_upper(upper.saturating_add(message));
        }
        out
    }
}

impl fmt::Debug for TimeoutBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

// === impl GoDuration ===

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if secs == 0 {
            return match nanos {
                0 => f.write_str("0s"),
                1..1_000 => write!(f, "{nanos}ns"),
                1_000..1_000_000 => write_decimal(f, nanos, 1_000, "µs"),
                _ => write_decimal(f, nanos, 1_000_000, "ms"),
            };
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{s}")?;
        write_fraction(f, nanos, 1_000_000_000)?;
        f.write_str("s")
    }
}

/// Writes `n / unit`, its fraction, and `suffix`.
fn write_decimal(f: &mut fmt::Formatter<'_>, n: u32, unit: u32, suffix: &str) -> fmt::Result {
    write!(f, "{}", n / unit)?;
    write_fraction(f, n % unit, unit)?;
    f.write_str(suffix)
}

/// Writes `.ddd` for `frac / unit` (unit a power of ten) without trailing zeros.
fn write_fraction(f: &mut fmt::Formatter<'_>, mut frac: u32, mut unit: u32) -> fmt::Result {
    if frac == 0 {
        return Ok(());
    }
    while frac.is_multiple_of(10) {
        frac /= 10;
        unit /= 10;
    }
    let width = unit.ilog10() as usize;
    write!(f, ".{frac:0width$}")
}
