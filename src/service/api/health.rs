//! The server side of `grpc.health.v1.Health`: tonic-health's statuses, with Watch streams
//! that end once the drain has begun. A Watch is a call that never ends by itself: left open,
//! it holds its connection, and so the process, until the drain timeout (30 s in the abuse
//! run, with every other call long done). Ended after the NOT_SERVING that the drain sets
//! first, a watcher still learns the state before its stream closes.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service of `reporter`'s statuses; its Watch streams end when `drain` turns
/// true (or its sender is gone).
pub fn server(
    reporter: HealthReporter,
    drain: watch::Receiver<bool>,
) -> HealthServer<DrainingHealth> {
    HealthServer::new(DrainingHealth {
        inner: HealthService::from_health_reporter(reporter),
        drain,
    })
}

/// tonic-health's service, with Watch streams that end on the drain.
#[derive(Debug)]
pub struct DrainingHealth {
    inner: HealthService,
    drain: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = EndsOnDrain<tonic_health::server::WatchStream>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?;
        Ok(statuses.map(|s| EndsOnDrain::new(s, self.drain.clone())))
    }
}

/// A stream that ends once the drain has begun and `inner` has nothing ready: whatever the
/// drain's own status change made ready (NOT_SERVING) is still sent first.
pub struct EndsOnDrain<S> {
    inner: S,
    drain: Option<WatchStream<bool>>,
    draining: bool,
}

impl<S> EndsOnDrain<S> {
    pub fn new(inner: S, drain: watch::Receiver<bool>) -> Self {
        Self {
            inner,
            drain: Some(WatchStream::new(drain)),
            draining: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for EndsOnDrain<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        // Polled first, so that the drain wakes this stream even while `inner` has nothing.
        while let Some(drain) = this.drain.as_mut() {
            match Pin::new(drain).poll_next(cx) {
                Poll::Ready(Some(false)) => {}
                Poll::Ready(Some(true)) | Poll::Ready(None) => {
                    this.draining = true;
                    this.drain = None;
                }
                Poll::Pending => break,
            }
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending if this.draining => Poll::Ready(None),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::ServingStatus;

    use super::*;

    async fn watch(health: &DrainingHealth) -> EndsOnDrain<tonic_health::server::WatchStream> {
        let request = Request::new(HealthCheckRequest {
            service: "svc".into(),
        });
        health.watch(request).await.expect("watch").into_inner()
    }

    #[tokio::test]
    async fn a_watch_gets_not_serving_then_ends_on_the_drain() {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status("svc", ServingStatus::Serving)
            .await;
        let (drain, draining) = watch::channel(false);
        let health = DrainingHealth {
            inner: HealthService::from_health_reporter(reporter.clone()),
            drain: draining,
        };
        let mut early = watch(&health).await;
        let first = early.next().await.expect("a status").expect("ok");
        assert_eq!(first.status, Wire::Serving as i32);
        let still = tokio::time::timeout(std::time::Duration::from_millis(100), early.next());
        assert!(still.await.is_err(), "open while serving");

        // What the drain does: NOT_SERVING first, then the signal.
        reporter
            .set_service_status("svc", ServingStatus::NotServing)
            .await;
        drain.send(true).expect("drain");
        let last = early.next().await.expect("a status").expect("ok");
        assert_eq!(last.status, Wire::NotServing as i32);
        assert!(early.next().await.is_none(), "ended after NOT_SERVING");

        // A watch opened during the drain gets the status and ends too.
        let mut late = watch(&health).await;
        let only = late.next().await.expect("a status").expect("ok");
        assert_eq!(only.status, Wire::NotServing as i32);
        assert!(late.next().await.is_none());
    }
}
