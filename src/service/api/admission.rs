//! A limit on the model calls in flight over the whole server, checked in front of decoding:
//! a call over it is refused RESOURCE_EXHAUSTED (with a retry delay) before its body is read,
//! so that a flood of calls the model could not take costs as little as the server can make
//! it (text-embeddings-inference's `max_concurrent_requests`). Info, Reload, health and
//! reflection are not counted. The model worker's own admission (row-step budget, queue,
//! deadline; see `worker::handle`) decides for the calls let through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::faults::rpc_of;
use super::held_body::HeldBody;
use crate::service::error::{pushback_value, RETRY_PUSHBACK};
use crate::service::worker::refusals;

/// The retry delay told to calls refused here (jittered by +-25 %) before any model's
/// admission has told one (then its last delay is told, see `worker::refusals`).
const FIRST_PUSHBACK: Duration = Duration::from_millis(500);

/// Whether a `diffgap.v1.Diffgap` method is model work (counted against the limit).
fn is_model_work(rpc: &str) -> bool {
    !matches!(rpc, "Info" | "Reload")
}

/// The layer; `limit` 0 lets every call through.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

impl AdmissionLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            limit: self.limit,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// The service of [`AdmissionLayer`].
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

/// One call counted in flight until its response body is dropped (sent to its end, or reset).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot if fewer than `limit` calls hold one.
    fn take(in_flight: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(in_flight.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Admission<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
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
        let counted = self.limit > 0 && rpc_of(req.uri().path()).is_some_and(is_model_work);
        let slot = match counted {
            false => None,
            true => match Slot::take(&self.in_flight, self.limit) {
                Some(slot) => Some(slot),
                None => return Box::pin(std::future::ready(Ok(refusal(self.limit)))),
            },
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| match slot {
                None => tonic::body::Body::new(inner),
                Some(slot) => HeldBody::wrap(inner, slot),
            }))
        })
    }
}

/// RESOURCE_EXHAUSTED with its retry delay, as a trailers-only response.
fn refusal(limit: usize) -> http::Response<tonic::body::Body> {
    let base = refusals::latest_delay().unwrap_or(FIRST_PUSHBACK);
    let retry = base.mul_f64(0.75 + 0.5 * rand::random::<f64>());
    let mut status = tonic::Status::resource_exhausted(format!(
        "the server has {limit} model calls in flight, its limit; retry in {} ms",
        retry.as_millis()
    ));
    status
        .metadata_mut()
        .insert(RETRY_PUSHBACK, pushback_value(retry));
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let n = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&n, 2).expect("first");
        let b = Slot::take(&n, 2).expect("second");
        assert!(Slot::take(&n, 2).is_none());
        drop(a);
        assert!(Slot::take(&n, 2).is_some(), "a dropped slot is free again");
        drop(b);
        assert_eq!(n.load(Ordering::Acquire), 0);
    }

    #[test]
    fn only_model_work_is_counted() {
        assert!(is_model_work("Bridge") && is_model_work("Embed") && is_model_work("Rank"));
        assert!(!is_model_work("Info") && !is_model_work("Reload"));
    }

    #[test]
    fn a_refusal_is_resource_exhausted_with_a_retry_delay() {
        let r = refusal(8);
        let h = r.headers();
        assert_eq!(h.get("grpc-status").map(|v| v.as_bytes()), Some(&b"8"[..]));
        let ms: u64 = h
            .get(RETRY_PUSHBACK)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a pushback");
        let base = refusals::latest_delay()
            .unwrap_or(FIRST_PUSHBACK)
            .as_millis() as u64;
        assert!(
            (base * 3 / 4..=base * 5 / 4 + 1).contains(&ms),
            "{ms} of {base}"
        );
    }
}
