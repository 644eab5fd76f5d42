//! Request validation against a model and the server's limits: every check names the field
//! and the limit it broke (INVALID_ARGUMENT), so that no client input reaches a panic.

use crate::diffusion::sampler::SampleOptions;
use crate::model::card::direction_key;
use crate::model::row_seed;
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, ModelInfo, RowStart};

/// Largest accepted `samples`.
pub const MAX_SAMPLES: usize = 64;
/// Largest accepted `guidance`.
pub const MAX_GUIDANCE: f32 = 20.0;
/// Largest accepted `shortlist` of a generative Rank.
pub const MAX_SHORTLIST: usize = 256;
/// Shortlist of a generative Rank that sets none.
pub const DEFAULT_SHORTLIST: usize = 10;
/// Most items in all the chunks of one BridgeStream call.
pub const MAX_STREAM_ITEMS: u64 = 1 << 24;

pub fn check_count(field: &str, n: usize, max: usize) -> Result<(), ServiceError> {
    if n == 0 {
        return Err(ServiceError::invalid(field, "is empty; send at least one"));
    }
    if n > max {
        return Err(ServiceError::invalid(
            field,
            format!("has {n} entries, the limit is {max}"),
        ));
    }
    Ok(())
}

pub fn check_modality(m: &ModelInfo, field: &str, name: &str) -> Result<(), ServiceError> {
    if m.modalities.iter().any(|x| x == name) {
        return Ok(());
    }
    Err(ServiceError::invalid(
        field,
        format!(
            "unknown modality '{}'; the model knows {:?}",
            echo(name),
            m.modalities
        ),
    ))
}

pub fn check_direction(
    m: &ModelInfo,
    field: &str,
    from: &str,
    to: &str,
) -> Result<(), ServiceError> {
    if m.directions.iter().any(|(a, b)| a == from && b == to) {
        return Ok(());
    }
    let known: Vec<String> = m
        .directions
        .iter()
        .map(|(a, b)| direction_key(a, b))
        .collect();
    Err(ServiceError::invalid(
        field,
        format!(
            "the model has no direction {}->{}; it knows {known:?}",
            echo(from),
            echo(to)
        ),
    ))
}

/// The values of an embedding, after checking its length, finiteness and norm.
pub fn check_values(field: &str, values: Vec<f32>, dim: usize) -> Result<Vec<f32>, ServiceError> {
    if values.len() != dim {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            format!(
                "has {} values, the model's dimension is {dim}",
                values.len()
            ),
        ));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ServiceError::invalid(
            format!("{field}.values[{i}]"),
            format!("is {v}; every value must be finite"),
        ));
    }
    // The model normalises in f32: the norm must be positive and finite there too.
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            "is the zero vector (or too small to normalise); an embedding needs a direction",
        ));
    }
    if !norm.is_finite() {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            "has a norm too large to represent as f32; scale it down",
        ));
    }
    Ok(values)
}

/// A required embedding.
pub fn check_embedding(
    field: &str,
    e: Option<crate::service::proto::Embedding>,
    dim: usize,
) -> Result<Vec<f32>, ServiceError> {
    let values = e
        .ok_or_else(|| ServiceError::invalid(field, "is required"))?
        .values;
    check_values(field, values, dim)
}

/// Steps, guidance and samples, each defaulting to the model's.
pub fn sample_options(
    m: &ModelInfo,
    field: &str,
    steps: Option<u32>,
    guidance: Option<f32>,
    samples: Option<u32>,
) -> Result<SampleOptions, ServiceError> {
    let steps = steps.map_or(m.defaults.steps, |s| s as usize);
    if steps == 0 || steps > m.max_steps {
        return Err(ServiceError::invalid(
            format!("{field}steps"),
            format!("must be in 1..={}, got {steps}", m.max_steps),
        ));
    }
    let guidance = guidance.unwrap_or(m.defaults.guidance);
    if !(guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&guidance)) {
        return Err(ServiceError::invalid(
            format!("{field}guidance"),
            format!("must be in [0, {MAX_GUIDANCE}], got {guidance}"),
        ));
    }
    let samples = samples.map_or(m.defaults.samples, |s| s as usize);
    if samples == 0 || samples > MAX_SAMPLES {
        return Err(ServiceError::invalid(
            format!("{field}samples"),
            format!("must be in 1..={MAX_SAMPLES}, got {samples}"),
        ));
    }
    Ok(SampleOptions {
        steps,
        guidance,
        samples,
    })
}

/// One Bridge item (its embedding already resolved from `raw` when it had one) as a worker
/// row; `index` is the item's index in the request (or stream), for the default seed.
pub fn bridge_row(
    m: &ModelInfo,
    field: &str,
    index: usize,
    item: crate::service::proto::BridgeItem,
    embedding: Vec<f32>,
) -> Result<BridgeRow, ServiceError> {
    check_modality(
        m,
        &format!("{field}.source_modality"),
        &item.source_modality,
    )?;
    check_modality(
        m,
        &format!("{field}.target_modality"),
        &item.target_modality,
    )?;
    check_direction(
        m,
        &format!("{field}.target_modality"),
        &item.source_modality,
        &item.target_modality,
    )?;
    let opts = sample_options(
        m,
        &format!("{field}."),
        item.steps,
        item.guidance,
        item.samples,
    )?;
    Ok(BridgeRow {
        from: item.source_modality,
        to: item.target_modality,
        embedding,
        opts,
        seed: item.seed.unwrap_or_else(|| row_seed(0, index)),
        start: RowStart::Noise,
    })
}
