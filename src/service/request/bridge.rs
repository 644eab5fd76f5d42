//! Bridge items into rows for the worker: the model-level checks first (so that a bad item
//! costs no encoding), then the raw inputs resolved, then each item validated.

use std::time::{Duration, Instant};

use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::raw_input::{resolve_all, Field};
use crate::service::request::repository::Served;
use crate::service::request::validate::{self, check_modality};
use crate::service::types::{BridgeRow, ModelInfo};

/// Bridge items as worker rows (raw inputs resolved), `first` being the index of the first
/// item in its request or stream (for default seeds).
pub struct Rows {
    pub rows: Vec<BridgeRow>,
    pub encode: (Duration, Duration),
}

pub async fn bridge_rows(
    s: &Served,
    items: Vec<proto::BridgeItem>,
    first: usize,
    deadline: Option<Instant>,
) -> Result<Rows, ServiceError> {
    let m: &ModelInfo = &s.info;
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
    // Model-level checks first, so that a bad item costs no encoding.
    for (i, item) in stripped.iter().enumerate() {
        let f = format!("items[{i}]");
        check_modality(m, &format!("{f}.source_modality"), &item.source_modality)?;
        check_modality(m, &format!("{f}.target_modality"), &item.target_modality)?;
    }
    let encode = resolve_all(s, &mut fields, deadline).await?;
    let rows = stripped
        .into_iter()
        .zip(fields)
        .enumerate()
        .map(|(i, (item, field))| {
            let values = field.values(m.dim)?;
            validate::bridge_row(m, &format!("items[{i}]"), first + i, item, values)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows { rows, encode })
}
