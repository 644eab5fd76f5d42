//! Bridge and Refine: the items, validated into rows the worker trusts, go to the model's
//! worker; the answer carries the embeddings and where the time went.

use std::time::Instant;

use crate::service::api::context::Context;
use crate::service::api::request_id::timings;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::bridge::{bridge_rows, refine_rows};

/// The embedding of a field given either as `embedding` or as `raw`, with the raw ones
/// resolved together (one pass of the encoder worker) by [`resolve_all`].
pub async fn bridge(
    ctx: &Context,
    req: proto::BridgeRequest,
    deadline: Option<Instant>,
) -> Result<proto::BridgeResponse, ServiceError> {
    let t0 = Instant::now();
    let s = ctx.served(&req.model)?;
    ctx.count("items", req.items.len())?;
    let rows = bridge_rows(&s, req.items, 0, deadline).await?;
    let out = s.worker.bridge_checked(rows.rows, deadline).await?;
    Ok(proto::BridgeResponse {
        embeddings: out
            .embeddings
            .into_iter()
            .map(|values| proto::Embedding { values })
            .collect(),
        timings: Some(timings(
            out.queue + rows.encode.0,
            out.compute + rows.encode.1,
            t0,
        )),
    })
}

pub async fn refine(
    ctx: &Context,
    req: proto::RefineRequest,
    deadline: Option<Instant>,
) -> Result<proto::RefineResponse, ServiceError> {
    let t0 = Instant::now();
    let s = ctx.served(&req.model)?;
    let rows = refine_rows(&s, req, deadline).await?;
    let encode = rows.encode;
    let out = s.worker.bridge_checked(rows.rows, deadline).await?;
    Ok(proto::RefineResponse {
        embedding: out
            .embeddings
            .into_iter()
            .next()
            .map(|values| proto::Embedding { values }),
        timings: Some(timings(out.queue + encode.0, out.compute + encode.1, t0)),
    })
}
