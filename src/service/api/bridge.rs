//! Bridge and Refine: the items, validated into rows the worker trusts, go to the model's
//! worker; the answer carries the embeddings and where the time went.

use std::time::Instant;

use crate::model::row_seed;
use crate::service::api::context::Context;
use crate::service::api::request_id::timings;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::bridge::bridge_rows;
use crate::service::request::raw_input::{resolve_all, Field};
use crate::service::request::validate::{self, check_direction, check_modality};
use crate::service::types::{BridgeRow, RowStart};

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
    let out = s.worker.bridge_until(rows.rows, deadline).await?;
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
    let m = &s.info;
    check_modality(m, "modality", &req.modality)?;
    let partner_modality = if req.partner_modality.is_empty() {
        let others: Vec<&String> = m
            .modalities
            .iter()
            .filter(|x| **x != req.modality)
            .collect();
        match others.as_slice() {
            [one] => (*one).clone(),
            _ => {
                return Err(ServiceError::invalid(
                    "partner_modality",
                    format!("is required: the model has modalities {:?}", m.modalities),
                ))
            }
        }
    } else {
        check_modality(m, "partner_modality", &req.partner_modality)?;
        req.partner_modality.clone()
    };
    check_direction(m, "modality", &partner_modality, &req.modality)?;
    let strength = req.strength.map_or(m.defaults.refine_strength, f64::from);
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(ServiceError::invalid(
            "strength",
            format!("must be in (0, 1], got {strength}"),
        ));
    }
    let opts = validate::sample_options(m, "", req.steps, req.guidance, req.samples)?;
    let mut inputs = vec![
        Field::new("embedding", "raw", &req.modality, req.embedding, req.raw),
        Field::new(
            "partner",
            "raw_partner",
            &partner_modality,
            req.partner,
            req.raw_partner,
        ),
    ];
    let encode = resolve_all(&s, &mut inputs, deadline).await?;
    let [x, partner] = <[Field; 2]>::try_from(inputs)
        .map_err(|_| ServiceError::Internal("refine inputs".into()))?;
    let row = BridgeRow {
        from: partner_modality,
        to: req.modality,
        embedding: partner.values(m.dim)?,
        opts,
        seed: req.seed.unwrap_or_else(|| row_seed(0, 0)),
        start: RowStart::Refine {
            embedding: x.values(m.dim)?,
            strength,
        },
    };
    let out = s.worker.bridge_until(vec![row], deadline).await?;
    Ok(proto::RefineResponse {
        embedding: out
            .embeddings
            .into_iter()
            .next()
            .map(|values| proto::Embedding { values }),
        timings: Some(timings(out.queue + encode.0, out.compute + encode.1, t0)),
    })
}
