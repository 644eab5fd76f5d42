//! Rank: the request checked and planned ([`crate::service::request::rank`] scores it).

use std::time::Instant;

use crate::service::api::context::Context;
use crate::service::api::request_id::timings;
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::rank::{self, Candidates, Plan};
use crate::service::request::rank_mode;
use crate::service::request::raw_input::resolve_all;
use crate::service::request::validate::{check_direction, check_modality, Field};

pub async fn rank(
    ctx: &Context,
    req: proto::RankRequest,
    deadline: Option<Instant>,
) -> Result<proto::RankResponse, ServiceError> {
    let t0 = Instant::now();
    let s = ctx.served(&req.model)?;
    let m = &s.info;
    let q = req.query_modality.clone();
    check_modality(m, "query_modality", &q)?;
    let catalog = if req.catalog.is_empty() {
        None
    } else {
        if !req.candidates.is_empty() {
            return Err(ServiceError::invalid(
                "candidates",
                "must be empty when catalog is set",
            ));
        }
        Some(s.catalogs.get(&req.catalog).cloned().ok_or_else(|| {
            ServiceError::NotFound(format!(
                "model '{}' serves no catalog '{}'; it serves {:?}",
                m.name,
                echo(&req.catalog),
                s.catalogs.keys().collect::<Vec<_>>()
            ))
        })?)
    };
    let c = match &catalog {
        Some(cat) if req.candidate_modality.is_empty() => cat.meta.modality.clone(),
        Some(cat) if req.candidate_modality != cat.meta.modality => {
            return Err(ServiceError::invalid(
                "candidate_modality",
                format!(
                    "is '{}' but catalog '{}' holds {}",
                    echo(&req.candidate_modality),
                    echo(&req.catalog),
                    cat.meta.modality
                ),
            ))
        }
        _ => req.candidate_modality.clone(),
    };
    check_modality(m, "candidate_modality", &c)?;
    if q == c {
        return Err(ServiceError::invalid(
            "candidate_modality",
            format!("must differ from query_modality (both are '{}')", echo(&q)),
        ));
    }
    if catalog.is_none() {
        ctx.count("candidates", req.candidates.len())?;
    }
    let choice = rank_mode::resolve(m, req.mode, req.shortlist, (&q, &c))?;
    let weights = choice.scoring.weights();
    if choice.shortlist > 0 {
        check_direction(m, "query_modality", &c, &q)?;
    }
    if weights.bridged != 0.0 {
        check_direction(m, "candidate_modality", &q, &c)?;
    }
    if weights.reverse != 0.0 && catalog.is_none() {
        check_direction(m, "query_modality", &c, &q)?;
    }
    let mut fields = vec![Field::new(
        "query",
        "raw_query",
        &q,
        req.query,
        req.raw_query,
    )];
    let mut ids = Vec::with_capacity(req.candidates.len());
    for (i, cand) in req.candidates.into_iter().enumerate() {
        fields.push(Field::new(
            &format!("candidates[{i}].embedding"),
            &format!("candidates[{i}].raw"),
            &c,
            cand.embedding,
            cand.raw,
        ));
        ids.push(cand.id);
    }
    let encode = resolve_all(&s, &mut fields, deadline).await?;
    let mut values = fields
        .into_iter()
        .map(|f| f.values(m.dim))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let query = values
        .next()
        .ok_or_else(|| ServiceError::Internal("rank query".into()))?;
    let candidates = match catalog {
        Some(cat) => Candidates::Catalog {
            name: req.catalog.clone(),
            ids: cat.meta.ids.clone(),
        },
        None => Candidates::Inline {
            ids,
            embeddings: values.collect(),
        },
    };
    let plan = Plan {
        query,
        query_modality: q,
        candidate_modality: c,
        scoring: choice.scoring,
        shortlist: choice.shortlist,
        top_k: req.top_k as usize,
        seed: req.seed.unwrap_or(0),
    };
    let out = rank::rank(m, &s.worker, plan, candidates, deadline).await?;
    Ok(proto::RankResponse {
        results: out.results,
        timings: Some(timings(out.queue + encode.0, out.compute + encode.1, t0)),
    })
}
