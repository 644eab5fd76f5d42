//! Client faults caught before a `diffgap.v1.Diffgap` handler runs, answered with a client
//! code and counted in `diffgap_requests_total` like every other call (the rpc is known from
//! the path even when the body never decoded):
//! - metadata larger than `max_metadata_bytes`: INVALID_ARGUMENT, before any work;
//! - a body tonic could not turn into a message (an undecodable one is INVALID_ARGUMENT
//!   already, see [`super::codec`]; a gRPC frame cut short or with a bad compression flag is
//!   INTERNAL in tonic): INVALID_ARGUMENT, since nothing but the request body fails there;
//! - any other status tonic answers without calling the handler (OUT_OF_RANGE for a message
//!   over the size limit, UNIMPLEMENTED for an unknown compression): counted as it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::service::ops::metrics;

/// The path prefix of the calls this layer watches.
pub const DIFFGAP_PREFIX: &str = "/diffgap.v1.Diffgap/";
/// What HTTP/2 counts for each header besides its name and value (RFC 9113, 6.5.2).
const HEADER_OVERHEAD: usize = 32;

/// Put in a call's extensions by the layer; the RPC helpers mark it when the call reaches its
/// handler (and so is counted there).
#[derive(Clone, Default, Debug)]
pub struct Reached(Arc<AtomicBool>);

impl Reached {
    /// Marks the call of `extensions` as reached (a no-op for calls that did not pass the layer).
    pub fn mark(extensions: &tonic::Extensions) {
        if let Some(r) = extensions.get::<Reached>() {
            r.0.store(true, Ordering::Relaxed);
        }
    }

    fn reached(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The RPC a path names (its `rpc` label), for the methods of `diffgap.v1.Diffgap`.
pub fn rpc_of(path: &str) -> Option<&'static str> {
    let method = path.strip_prefix(DIFFGAP_PREFIX)?;
    metrics::RPCS.into_iter().find(|&rpc| rpc == method)
}

/// The size of a header block as HTTP/2 counts it against SETTINGS_MAX_HEADER_LIST_SIZE.
pub fn metadata_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD)
        .sum()
}

/// The tower layer of this module, in front of the gRPC services.
#[derive(Clone, Copy, Debug)]
pub struct ClientFaultLayer {
    max_metadata_bytes: usize,
}

impl ClientFaultLayer {
    pub fn new(max_metadata_bytes: usize) -> Self {
        Self { max_metadata_bytes }
    }
}

impl<S> tower::Layer<S> for ClientFaultLayer {
    type Service = ClientFaults<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientFaults {
            inner,
            max_metadata_bytes: self.max_metadata_bytes,
        }
    }
}

/// The service of [`ClientFaultLayer`].
#[derive(Clone, Debug)]
pub struct ClientFaults<S> {
    inner: S,
    max_metadata_bytes: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ClientFaults<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let Some(rpc) = rpc_of(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let start = Instant::now();
        let size = metadata_bytes(req.headers());
        if size > self.max_metadata_bytes {
            let status = tonic::Status::invalid_argument(format!(
                "the request metadata is {size} bytes in {} entries; the limit is {} bytes",
                req.headers().len(),
                self.max_metadata_bytes
            ));
            refused(rpc, tonic::Code::InvalidArgument, start);
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let reached = Reached::default();
        req.extensions_mut().insert(reached.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut response = answer.await?;
            if !reached.reached() {
                if let Some(code) = unreached_code(response.headers_mut()) {
                    refused(rpc, code, start);
                }
            }
            Ok(response)
        })
    }
}

/// The code of an answer given without calling the handler (`None`: OK or no status), with a
/// failure to read the request body (INTERNAL in tonic) rewritten to INVALID_ARGUMENT.
fn unreached_code(headers: &mut http::HeaderMap) -> Option<tonic::Code> {
    let code = tonic::Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    match code {
        tonic::Code::Ok => None,
        tonic::Code::Internal => {
            headers.insert(
                "grpc-status",
                http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
            );
            Some(tonic::Code::InvalidArgument)
        }
        other => Some(other),
    }
}

/// Counts (never logs: a flood of garbage must not flood the log) a call refused here.
fn refused(rpc: &'static str, code: tonic::Code, start: Instant) {
    let status = metrics::code_name(code);
    tracing::debug!(rpc, status, "refused before the handler");
    metrics::record_rpc(
        rpc,
        metrics::UNKNOWN_MODEL.to_owned(),
        status,
        start.elapsed(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_are_known_from_the_path() {
        assert_eq!(rpc_of("/diffgap.v1.Diffgap/Bridge"), Some("Bridge"));
        assert_eq!(
            rpc_of("/diffgap.v1.Diffgap/BridgeStream"),
            Some("BridgeStream")
        );
        assert_eq!(rpc_of("/diffgap.v1.Diffgap/Nope"), None);
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn metadata_is_measured_as_http2_does() {
        let mut h = http::HeaderMap::new();
        h.insert("x-a", http::HeaderValue::from_static("12345"));
        assert_eq!(metadata_bytes(&h), 3 + 5 + 32);
    }

    #[test]
    fn body_failures_before_the_handler_are_the_clients() {
        let mut h = tonic::Status::internal("Unexpected EOF decoding stream.")
            .into_http::<tonic::body::Body>()
            .into_parts()
            .0
            .headers;
        assert_eq!(unreached_code(&mut h), Some(tonic::Code::InvalidArgument));
        assert_eq!(h.get("grpc-status").map(|v| v.as_bytes()), Some(&b"3"[..]));
        let mut h = tonic::Status::out_of_range("too large")
            .into_http::<tonic::body::Body>()
            .into_parts()
            .0
            .headers;
        assert_eq!(unreached_code(&mut h), Some(tonic::Code::OutOfRange));
        assert_eq!(unreached_code(&mut http::HeaderMap::new()), None);
    }
}
