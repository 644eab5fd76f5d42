//! The open streams of each connection, counted by a tower layer in front of every service, so
//! that a connection is idle only when no call is open on it. Traffic alone would not do: a
//! long Bridge or a health Watch sends nothing for minutes and must not be cut, while the
//! keepalive pings of an unused connection are traffic that says nothing about its use (the
//! meaning of gRPC's `MAX_CONNECTION_IDLE`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::activity::Activity;
use super::connection::ConnectionInfo;
use crate::service::api::held_body::HeldBody;

/// The activity of the connection a request came on (`None` for a request that did not come
/// through [`super::Incoming`]). With TLS, tonic puts the connection's own info beside its
/// `TlsConnectInfo`, so this finds both.
fn activity_of(extensions: &http::Extensions) -> Option<&Arc<Activity>> {
    extensions
        .get::<ConnectionInfo>()
        .map(ConnectionInfo::activity)
}

/// The tower layer that counts the open streams of each connection (in its [`Activity`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenStreamsLayer;

impl<S> tower::Layer<S> for OpenStreamsLayer {
    type Service = OpenStreams<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenStreams { inner }
    }
}

/// The service of [`OpenStreamsLayer`].
#[derive(Clone, Debug)]
pub struct OpenStreams<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for OpenStreams<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let guard = activity_of(req.extensions()).map(Activity::opened);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            // The stream stays counted open until its answer is sent to its end, or reset.
            Ok(response.map(|inner| HeldBody::wrap(inner, guard)))
        })
    }
}
