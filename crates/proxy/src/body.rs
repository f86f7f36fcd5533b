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
