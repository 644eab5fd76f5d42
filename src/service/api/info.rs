//! Info (what is served, with the limits) and Reload (the models and catalogs again).

use crate::eval::card_ladder::DirectionLadder;
use crate::model::card::direction_key;
use crate::service::api::context::Context;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::repository::Outcome;
use crate::service::request::validate::{self, MAX_GUIDANCE, MAX_SAMPLES};

pub fn info(ctx: &Context) -> Result<proto::InfoResponse, ServiceError> {
    let registry = ctx.repo.get()?;
    let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let models: Vec<proto::ModelInfo> = registry
        .ordered()
        .into_iter()
        .map(|s| {
            let m = &s.info;
            let enc = m.encoders.clone();
            proto::ModelInfo {
                name: m.name.clone(),
                space: m.space.clone(),
                modalities: m.modalities.clone(),
                dim: u32_of(m.dim),
                directions: m
                    .directions
                    .iter()
                    .map(|(a, b)| direction_key(a, b))
                    .collect(),
                default_steps: u32_of(m.defaults.steps),
                default_guidance: m.defaults.guidance,
                default_samples: u32_of(m.defaults.samples),
                max_steps: u32_of(m.max_steps),
                parameters: m.parameters.max(0) as u64,
                fingerprint: m.fingerprint.clone(),
                catalogs: s
                    .catalogs
                    .values()
                    .map(|c| proto::CatalogInfo {
                        name: c.meta.name.clone(),
                        modality: c.meta.modality.clone(),
                        entries: c.meta.ids.len() as u64,
                        reverse_modalities: c.reverse.keys().cloned().collect(),
                    })
                    .collect(),
                default_refine_strength: m.defaults.refine_strength as f32,
                raw_modalities: enc
                    .as_ref()
                    .map(|e| {
                        [&e.text, &e.audio, &e.video]
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
                audio_sample_rate: enc.as_ref().map_or(0, |e| e.sample_rate),
                max_audio_seconds: enc.as_ref().map_or(0.0, |e| e.max_audio_seconds as f32),
                video_shape: enc
                    .as_ref()
                    .and_then(|e| e.video_shape)
                    .map(|(t, h, w)| vec![t as u32, 3, h as u32, w as u32])
                    .unwrap_or_default(),
                instances: u32_of(m.instances),
                threads_per_instance: u32_of(m.threads_per_instance),
                dtype: m.dtype.clone(),
                ladders: m.ladders.iter().map(ladder).collect(),
            }
        })
        .collect();
    let device = registry
        .ordered()
        .first()
        .map(|s| s.info.device.clone())
        .unwrap_or_default();
    Ok(proto::InfoResponse {
        models,
        device,
        version: env!("CARGO_PKG_VERSION").into(),
        limits: Some(proto::Limits {
            max_items_per_request: u32_of(ctx.limits.max_items_per_request),
            max_batch_rows: u32_of(ctx.limits.max_batch_rows),
            queue_capacity: u32_of(ctx.limits.queue_capacity),
            max_samples: u32_of(MAX_SAMPLES),
            max_guidance: MAX_GUIDANCE,
            max_stream_items: validate::MAX_STREAM_ITEMS,
            max_shortlist: u32_of(validate::MAX_SHORTLIST),
        }),
    })
}

fn ladder(l: &DirectionLadder) -> proto::RankLadder {
    proto::RankLadder {
        direction: l.direction.clone(),
        validated_best: l.validated_best.clone(),
        best_baseline: l.best_baseline.clone(),
        rungs: l
            .rows
            .iter()
            .map(|r| proto::LadderRung {
                mode: r.mode.clone(),
                r1: r.metrics.r1 as f32,
                r5: r.metrics.r5 as f32,
                r10: r.metrics.r10 as f32,
                map10: r.metrics.map10 as f32,
                us_per_query: r.us_per_query as f32,
                baseline: r.baseline,
            })
            .collect(),
    }
}

pub async fn reload(ctx: &Context) -> Result<proto::ReloadResponse, ServiceError> {
    let report = ctx.repo.reload().await?;
    let outcome = |o: Outcome| proto::ReloadOutcome {
        reloaded: o.error.is_none(),
        error: o.error.unwrap_or_default(),
        name: o.name,
    };
    Ok(proto::ReloadResponse {
        models: report.models.into_iter().map(outcome).collect(),
        catalogs: report.catalogs.into_iter().map(outcome).collect(),
        removed_models: report.removed_models,
    })
}
