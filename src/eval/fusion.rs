//! Fitting the fused score's weights on validation rows.

use tch::Tensor;

use super::retrieval::{evaluate, RetrievalMetrics};
use crate::model::card::FusionWeights;

/// The three score matrices of one query direction.
pub struct ModeScores {
    pub contrastive: Tensor,
    pub bridged: Tensor,
    pub reverse: Tensor,
}

impl ModeScores {
    pub fn fuse(&self, w: &FusionWeights) -> Tensor {
        &self.contrastive * w.contrastive + &self.bridged * w.bridged + &self.reverse * w.reverse
    }
}

/// Grid search over the simplex in steps of 0.1; the best R@1 + mAP@10 wins, ties going to the
/// grid point found first (more contrastive weight), the conservative choice.
pub fn fit(
    scores: &ModeScores,
    query_groups: &[i64],
    cand_groups: &[i64],
) -> (FusionWeights, RetrievalMetrics) {
    let mut best: Option<(FusionWeights, RetrievalMetrics)> = None;
    for i in (0..=10).rev() {
        for j in 0..=(10 - i) {
            let w = FusionWeights {
                contrastive: i as f64 / 10.0,
                bridged: j as f64 / 10.0,
                reverse: (10 - i - j) as f64 / 10.0,
            };
            let m = evaluate(&scores.fuse(&w), query_groups, cand_groups);
            if best
                .as_ref()
                .is_none_or(|(_, b)| m.objective() > b.objective() + 1e-12)
            {
                best = Some((w, m));
            }
        }
    }
    best.expect("the grid is not empty. This is a bug.")
}
