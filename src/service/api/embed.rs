//! Embed: raw inputs through the model's encoders.

use std::time::Instant;

use crate::service::api::context::Context;
use crate::service::api::request_id::timings;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::raw_input::{self, Slot};

pub async fn embed(
    ctx: &Context,
    req: proto::EmbedRequest,
    deadline: Option<Instant>,
) -> Result<proto::EmbedResponse, ServiceError> {
    let t0 = Instant::now();
    let s = ctx.served(&req.model)?;
    ctx.count("inputs", req.inputs.len())?;
    let slots = req
        .inputs
        .into_iter()
        .enumerate()
        .map(|(i, raw)| Slot {
            field: format!("inputs[{i}]"),
            modality: String::new(),
            raw,
        })
        .collect();
    let out = raw_input::resolve(
        &s.worker,
        s.info.encoders.as_ref(),
        &s.info.name,
        slots,
        deadline,
    )
    .await?;
    Ok(proto::EmbedResponse {
        embeddings: out
            .rows
            .into_iter()
            .zip(out.modalities)
            .map(|(values, modality)| proto::EmbeddedInput {
                modality,
                embedding: Some(proto::Embedding { values }),
            })
            .collect(),
        timings: Some(timings(out.queue, out.compute, t0)),
    })
}
