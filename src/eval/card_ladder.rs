//! The validation ladder a model card records: every ranking mode of each direction, baselines
//! first, with the card's validated choice (what Info shows and RANK_MODE_VALIDATED_BEST uses).

use crate::model::card::{direction_key, ModelCard};

use super::ladder::BASELINE_MODES;
use super::report::{DirectionReport, MODES};
use super::retrieval::RetrievalMetrics;

/// One mode of a direction on the validation split, as the card recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderRow {
    pub mode: String,
    pub metrics: RetrievalMetrics,
    pub us_per_query: f64,
    pub baseline: bool,
}

/// A direction's modes on the validation split, with the card's choice.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionLadder {
    /// "query->candidate".
    pub direction: String,
    pub validated_best: String,
    pub best_baseline: String,
    /// Baselines first (raw cosine, then cheapest first), then DiffGAP's modes.
    pub rows: Vec<LadderRow>,
}

/// The ladder of every direction the card's validation evaluation (`evaluation.validation`, as
/// `diffgap eval --json`) holds: none for a card without one, or from before the baselines.
pub fn of_card(card: &ModelCard) -> Vec<DirectionLadder> {
    let directions = card
        .evaluation
        .as_ref()
        .map(|e| e.get("validation").unwrap_or(e))
        .and_then(|e| e.get("directions"))
        .and_then(|d| serde_json::from_value::<Vec<DirectionReport>>(d.clone()).ok())
        .unwrap_or_default();
    let order: Vec<(&str, bool)> = ["contrastive"]
        .into_iter()
        .chain(BASELINE_MODES)
        .map(|m| (m, true))
        .chain(MODES[1..].iter().map(|&m| (m, false)))
        .collect();
    directions
        .into_iter()
        .filter_map(|d| {
            let key = direction_key(&d.query, &d.candidate);
            let best = card.validated_best.get(&key)?;
            let rows = order
                .iter()
                .filter_map(|&(mode, baseline)| {
                    Some(LadderRow {
                        mode: mode.to_owned(),
                        metrics: *d.modes.get(mode)?,
                        us_per_query: d.cost_us.get(mode).copied().unwrap_or(0.0),
                        baseline,
                    })
                })
                .collect();
            Some(DirectionLadder {
                direction: key,
                validated_best: best.mode.clone(),
                best_baseline: best.best_baseline.clone(),
                rows,
            })
        })
        .collect()
}
