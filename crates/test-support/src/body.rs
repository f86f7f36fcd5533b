//! Response bodies shared by the fake servers: whole buffers, and a channel
//! body for streams (watch events) that ends when the sender is dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// The body type every fake server answers with.
pub(crate) type RespBody = BoxBody<Bytes, Infallible>;

/// A body fed chunk by chunk from an `mpsc` channel.
#[derive(Debug)]
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> RespBody {
    http_body_util::Full::new(bytes.into()).boxed()
}

/// A streamed body and the sender feeding it. The body ends when every sender
/// is dropped; `Sender::closed` resolves once the client has gone away.
pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, RespBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

// === impl ChannelBody ===

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
