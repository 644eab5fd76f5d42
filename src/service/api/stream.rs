//! BridgeStream: chunks of Bridge items over one call, each validated and computed as it
//! arrives, answered in order.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status, Streaming};
use tracing::Instrument;

use crate::service::api::context::Context;
use crate::service::api::faults::Reached;
use crate::service::api::request_id::{self, timings};
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::ops::metrics;
use crate::service::proto;
use crate::service::request::bridge::bridge_rows;
use crate::service::request::repository::Served;
use crate::service::request::validate::{self, check_count};

/// The answers of one BridgeStream call.
pub type ChunkStream =
    Pin<Box<dyn Stream<Item = Result<proto::BridgeStreamResponse, Status>> + Send>>;

/// Chunks of one BridgeStream call computed at the same time (later ones wait).
pub const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

/// Each chunk is validated and sent to the worker as soon as it arrives (up to
/// [`STREAM_CHUNKS_IN_FLIGHT`] at once), and answered in order. The first bad chunk ends
/// the stream with its status; chunks already answered stay answered.
pub fn bridge_stream(
    ctx: &Context,
    request: Request<Streaming<proto::BridgeStreamRequest>>,
) -> ChunkStream {
    Reached::mark(request.extensions());
    let deadline = crate::service::api::deadline::deadline_from_metadata(request.metadata());
    let id = request_id::from_metadata(request.metadata());
    let mut input = request.into_inner();
    let repo = ctx.repo.clone();
    let max_items = ctx.limits.max_items_per_request;
    let observation =
        metrics::RpcObservation::start("BridgeStream", ctx.model_label("")).with_deadline(deadline);
    let span = tracing::info_span!("rpc", rpc = "BridgeStream", request_id = %id);
    let (pending_tx, mut pending_rx) = tokio::sync::mpsc::channel::<
        tokio::task::JoinHandle<Result<proto::BridgeStreamResponse, Status>>,
    >(STREAM_CHUNKS_IN_FLIGHT);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
    // Reader: validates chunks and starts their work, in order. A bad chunk goes through
    // the same queue as a finished task, so that it ends the stream only after the chunks
    // before it are answered.
    let fail = |e: Status| tokio::spawn(std::future::ready(Err(e)));
    tokio::spawn(
        async move {
            let mut served: Option<Arc<Served>> = None;
            let mut next_item: u64 = 0;
            let mut chunk: u64 = 0;
            while let Some(msg) = input.next().await {
                let started = Instant::now();
                let req = match msg {
                    Ok(r) => r,
                    Err(status) => {
                        let _ = pending_tx.send(fail(body_fault(status))).await;
                        return;
                    }
                };
                let s = match &served {
                    Some(s) => {
                        if !req.model.is_empty() && req.model != s.info.name {
                            let e = ServiceError::invalid(
                                "model",
                                format!(
                                    "chunk {chunk} names '{}' but the stream is on '{}'",
                                    echo(&req.model),
                                    s.info.name
                                ),
                            );
                            let _ = pending_tx.send(fail(Status::from(e))).await;
                            return;
                        }
                        s.clone()
                    }
                    None => match repo.get().and_then(|r| Ok(r.model(&req.model)?.clone())) {
                        Ok(s) => {
                            served = Some(s.clone());
                            s
                        }
                        Err(e) => {
                            let _ = pending_tx.send(fail(Status::from(e))).await;
                            return;
                        }
                    },
                };
                let n = req.items.len();
                if let Err(e) = check_count("items", n, max_items) {
                    let _ = pending_tx.send(fail(Status::from(e))).await;
                    return;
                }
                if next_item + n as u64 > validate::MAX_STREAM_ITEMS {
                    let e = ServiceError::invalid(
                        "items",
                        format!(
                            "the stream passes {} items, the limit is {}",
                            next_item + n as u64,
                            validate::MAX_STREAM_ITEMS
                        ),
                    );
                    let _ = pending_tx.send(fail(Status::from(e))).await;
                    return;
                }
                let first = next_item;
                let this = chunk;
                let task = tokio::spawn(
                    async move {
                        let rows = bridge_rows(&s, req.items, first as usize, deadline).await?;
                        let out = s.worker.bridge_checked(rows.rows, deadline).await?;
                        Ok(proto::BridgeStreamResponse {
                            chunk: this,
                            first_item: first,
                            embeddings: out
                                .embeddings
                                .into_iter()
                                .map(|values| proto::Embedding { values })
                                .collect(),
                            timings: Some(timings(
                                out.queue + rows.encode.0,
                                out.compute + rows.encode.1,
                                started,
                            )),
                        })
                    }
                    .in_current_span(),
                );
                if pending_tx.send(task).await.is_err() {
                    return;
                }
                next_item += n as u64;
                chunk += 1;
            }
        }
        .instrument(span.clone()),
    );
    // Writer: answers the chunks in order.
    tokio::spawn(
        async move {
            let mut status = "ok";
            while let Some(task) = pending_rx.recv().await {
                let answer = match task.await {
                    Ok(answer) => answer,
                    Err(e) => Err(Status::internal(format!("chunk task: {e}"))),
                };
                let failed = answer.is_err();
                if let Err(s) = &answer {
                    status = metrics::code_name(s.code());
                }
                if out_tx.send(answer).await.is_err() {
                    // The client is gone: the observation's drop counts an expiry or a
                    // cancellation.
                    return;
                }
                if failed {
                    break;
                }
            }
            observation.finish(status, None);
        }
        .instrument(span),
    );
    let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
    Box::pin(stream)
}

/// A chunk the stream could not read: an undecodable one is INVALID_ARGUMENT already (the
/// codec); a gRPC frame cut short reads INTERNAL in tonic, but is the client's body too.
fn body_fault(status: Status) -> Status {
    if status.code() == tonic::Code::Internal {
        Status::invalid_argument(status.message())
    } else {
        status
    }
}
