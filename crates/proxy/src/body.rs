//! Body types shared by every stage: one boxed body type for requests and
//! responses, plus constructors for the small bodies the proxy writes itself.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use kdp_core::Error;

/// The body type of every request and response inside a kdp stack.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Error>;

/// A body with the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`Error`].
pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Error>,
{
    body.map_err(Into::into).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// A body that holds a value (a breaker permit, a stats entry) until the
    /// body ends or is dropped, so accounting covers the whole response.
    pub struct Guarded<G> {
        #[pin]
        body: BoxBody,
        guard: Option<G>,
    }
}

impl<G: Send + 'static> Guarded<G> {
    /// Wraps `body`, keeping `guard` alive until the body is done.
    pub fn boxed(body: BoxBody, guard: G) -> BoxBody {
        Self {
            body,
            guard: Some(guard),
        }
        .boxed_unsync()
    }
}

impl<G> std::fmt::Debug for Guarded<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").finish_non_exhaustive()
    }
}

impl<G> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let std::task::Poll::Ready(None | Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
