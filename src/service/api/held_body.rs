//! A response body that holds something until the body is dropped (sent to its end, or
//! reset): how the tower layers in front of the services keep a call counted while its answer
//! is still being sent (the connection's open streams, the server's calls in flight).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

/// `inner`, holding `held` until it is dropped.
pub struct HeldBody<T> {
    inner: tonic::body::Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> HeldBody<T> {
    /// `inner` as a tonic body that holds `held`.
    pub fn wrap<B>(inner: B, held: T) -> tonic::body::Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        tonic::body::Body::new(HeldBody {
            inner: tonic::body::Body::new(inner),
            _held: held,
        })
    }
}

impl<T: Unpin> http_body::Body for HeldBody<T> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
