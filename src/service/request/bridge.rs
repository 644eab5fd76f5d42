//! Bridge and Refine requests into checked rows for the worker: the model-level checks first
//! (so that a bad item costs no encoding), then the raw inputs resolved, then each item's
//! values and options checked ([`validate`]).

use std::time::{Duration, Instant};

use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::raw_input::resolve_all;
use crate::service::request::repository::Served;
use crate::service::request::validate;
use crate::service::types::CheckedRows;

/// A request's checked rows, and the encoder worker's (queue, compute) for its raw inputs.
pub struct Rows {
    pub rows: CheckedRows,
    pub encode: (Duration, Duration),
}

/// Bridge items as checked rows, `first` being the index of the first item in its request or
/// stream (for default seeds).
pub async fn bridge_rows(
    s: &Served,
    items: Vec<proto::BridgeItem>,
    first: usize,
    deadline: Option<Instant>,
) -> Result<Rows, ServiceError> {
    let mut items = validate::bridge_items(&s.info, items)?;
    let encode = resolve_all(s, &mut items.fields, deadline).await?;
    let rows = items.into_rows(&s.info, first)?;
    Ok(Rows { rows, encode })
}

/// A Refine request as its one checked row.
pub async fn refine_rows(
    s: &Served,
    req: proto::RefineRequest,
    deadline: Option<Instant>,
) -> Result<Rows, ServiceError> {
    let mut item = validate::refine_item(&s.info, req)?;
    let encode = resolve_all(s, &mut item.fields, deadline).await?;
    let rows = item.into_rows(&s.info)?;
    Ok(Rows { rows, encode })
}
