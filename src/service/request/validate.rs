//! Request validation against a model and the server's limits: every check names the field
//! and the limit it broke (INVALID_ARGUMENT), so that no client input reaches a panic.

use crate::diffusion::sampler::SampleOptions;
use crate::diffusion::schedule::Strength;
use crate::model::card::direction_key;
use crate::model::row_seed;
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::types::{BridgeRow, CheckedRows, ModelInfo, RowStart};

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
    e: Option<proto::Embedding>,
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

/// A request field given as an embedding or as a raw input, resolved to values.
pub struct Field {
    /// The embedding's field, e.g. `items[2].embedding`.
    pub(super) name: String,
    /// The raw input's field, e.g. `items[2].raw`.
    pub(super) raw_name: String,
    pub(super) modality: String,
    pub(super) embedding: Option<proto::Embedding>,
    pub(super) raw: Option<proto::RawInput>,
    /// Set by [`super::raw_input::resolve_all`] for a field given raw.
    pub(super) resolved: Option<Vec<f32>>,
}

impl Field {
    pub fn new(
        name: &str,
        raw_name: &str,
        modality: &str,
        embedding: Option<proto::Embedding>,
        raw: Option<proto::RawInput>,
    ) -> Self {
        Self {
            name: name.into(),
            raw_name: raw_name.into(),
            modality: modality.into(),
            embedding,
            raw,
            resolved: None,
        }
    }

    /// The field's values, checked against the model's dimension.
    pub fn values(self, dim: usize) -> Result<Vec<f32>, ServiceError> {
        match (self.resolved, self.embedding) {
            (Some(v), _) => check_values(&self.name, v, dim),
            (None, e) => check_embedding(&self.name, e, dim),
        }
    }
}

/// Bridge items whose modalities are checked (before any encoding, so that a bad item costs
/// none), their embeddings waiting in [`BridgeItems::fields`] for the raw ones to be resolved.
pub struct BridgeItems {
    items: Vec<proto::BridgeItem>,
    pub fields: Vec<Field>,
}

/// Takes the items' embeddings (or raw inputs) out into fields and checks their modalities.
pub fn bridge_items(
    m: &ModelInfo,
    items: Vec<proto::BridgeItem>,
) -> Result<BridgeItems, ServiceError> {
    let mut fields = Vec::with_capacity(items.len());
    let mut stripped = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        fields.push(Field::new(
            &format!("items[{i}].embedding"),
            &format!("items[{i}].raw"),
            &item.source_modality,
            item.embedding.take(),
            item.raw.take(),
        ));
        stripped.push(item);
    }
    for (i, item) in stripped.iter().enumerate() {
        let f = format!("items[{i}]");
        check_modality(m, &format!("{f}.source_modality"), &item.source_modality)?;
        check_modality(m, &format!("{f}.target_modality"), &item.target_modality)?;
    }
    Ok(BridgeItems {
        items: stripped,
        fields,
    })
}

impl BridgeItems {
    /// The checked rows, item by item: its values, its direction, its options. `first` is
    /// the index of the first item in its request or stream (for the default seeds).
    pub fn into_rows(self, m: &ModelInfo, first: usize) -> Result<CheckedRows, ServiceError> {
        let rows = self
            .items
            .into_iter()
            .zip(self.fields)
            .enumerate()
            .map(|(i, (item, field))| {
                let embedding = field.values(m.dim)?;
                let f = format!("items[{i}]");
                check_direction(
                    m,
                    &format!("{f}.target_modality"),
                    &item.source_modality,
                    &item.target_modality,
                )?;
                let opts =
                    sample_options(m, &format!("{f}."), item.steps, item.guidance, item.samples)?;
                Ok(BridgeRow {
                    from: item.source_modality,
                    to: item.target_modality,
                    embedding,
                    opts,
                    seed: item.seed.unwrap_or_else(|| row_seed(0, first + i)),
                    start: RowStart::Noise,
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        Ok(CheckedRows::checked(rows))
    }
}

/// A Refine request with its modalities, direction, strength and options checked (before any
/// encoding); its embedding and partner wait in [`RefineItem::fields`].
pub struct RefineItem {
    /// The embedding (modality `to`), then its partner (modality `from`).
    pub fields: Vec<Field>,
    from: String,
    to: String,
    opts: SampleOptions,
    strength: Strength,
    seed: u64,
}

/// Checks a Refine request against the model; the partner's modality defaults to the other
/// one of a two-modality model.
pub fn refine_item(m: &ModelInfo, req: proto::RefineRequest) -> Result<RefineItem, ServiceError> {
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
    let strength = Strength::new(req.strength.map_or(m.defaults.refine_strength, f64::from))
        .map_err(|e| ServiceError::invalid("strength", e))?;
    let opts = sample_options(m, "", req.steps, req.guidance, req.samples)?;
    let fields = vec![
        Field::new("embedding", "raw", &req.modality, req.embedding, req.raw),
        Field::new(
            "partner",
            "raw_partner",
            &partner_modality,
            req.partner,
            req.raw_partner,
        ),
    ];
    Ok(RefineItem {
        fields,
        from: partner_modality,
        to: req.modality,
        opts,
        strength,
        seed: req.seed.unwrap_or_else(|| row_seed(0, 0)),
    })
}

impl RefineItem {
    /// The checked row, once the fields hold their values.
    pub fn into_rows(self, m: &ModelInfo) -> Result<CheckedRows, ServiceError> {
        let [x, partner] = <[Field; 2]>::try_from(self.fields)
            .map_err(|_| ServiceError::Internal("refine inputs; this is a bug".into()))?;
        let row = BridgeRow {
            from: self.from,
            to: self.to,
            embedding: partner.values(m.dim)?,
            opts: self.opts,
            seed: self.seed,
            start: RowStart::Refine {
                embedding: x.values(m.dim)?,
                strength: self.strength,
            },
        };
        Ok(CheckedRows::checked(vec![row]))
    }
}
