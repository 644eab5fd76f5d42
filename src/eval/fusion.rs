//! Fitting the fused score's weights on validation rows.

use super::retrieval::{evaluate, per_query, RetrievalMetrics};
use crate::baselines::hubness::BETA_GRID;
pub use crate::baselines::hubness::{hub_fused, ModeScores};
use crate::baselines::linear::fold_assignment;
use crate::model::card::{FusionWeights, HubFusion};

/// Folds of the cross-validation that guards the hubness-corrected fusion.
pub const FOLDS: usize = 5;

/// The simplex in steps of 0.1, most contrastive weight first.
fn weight_grid() -> Vec<FusionWeights> {
    let mut grid = Vec::new();
    for i in (0..=10).rev() {
        for j in 0..=(10 - i) {
            grid.push(FusionWeights {
                contrastive: i as f64 / 10.0,
                bridged: j as f64 / 10.0,
                reverse: (10 - i - j) as f64 / 10.0,
            });
        }
    }
    grid
}

/// Fits [`HubFusion`] on validation scores: every (weights, beta) of the grid is scored per
/// query once; k-fold cross-validation over query items then compares choosing among every
/// weight with choosing among contrastive-only ones, and DiffGAP's terms are used only when
/// they win there. The final choice is made on all validation queries.
pub fn fit_hub(
    scores: &ModeScores,
    bank: &ModeScores,
    query_groups: &[i64],
    cand_groups: &[i64],
) -> HubFusion {
    let configs: Vec<(FusionWeights, f64)> = weight_grid()
        .into_iter()
        .flat_map(|w| BETA_GRID.iter().map(move |&b| (w, b)))
        .collect();
    let outcomes: Vec<Vec<f64>> = configs
        .iter()
        .map(|&(weights, beta)| {
            let h = HubFusion {
                weights,
                beta,
                cv_objective: 0.0,
                cv_objective_contrastive: 0.0,
            };
            per_query(&hub_fused(scores, bank, &h), query_groups, cand_groups)
                .iter()
                .map(|o| o.objective())
                .collect()
        })
        .collect();
    let contrastive_only = |c: usize| configs[c].0.contrastive >= 1.0 - 1e-9;
    let any = |_: usize| true;
    let best = |allowed: &dyn Fn(usize) -> bool, used: &dyn Fn(usize) -> bool| -> usize {
        let mut best: Option<(usize, f64)> = None;
        for c in (0..configs.len()).filter(|&c| allowed(c)) {
            let total: f64 = outcomes[c]
                .iter()
                .enumerate()
                .filter(|(q, _)| used(*q))
                .map(|(_, v)| v)
                .sum();
            if best.is_none_or(|(_, b)| total > b + 1e-12) {
                best = Some((c, total));
            }
        }
        best.map_or(0, |b| b.0)
    };
    let fold_of = fold_assignment(query_groups, FOLDS);
    let cross_validated = |allowed: &dyn Fn(usize) -> bool| -> f64 {
        let mut held_out = 0.0;
        for f in 0..FOLDS {
            let chosen = best(allowed, &|q| fold_of[q] != f);
            held_out += (0..query_groups.len())
                .filter(|&q| fold_of[q] == f)
                .map(|q| outcomes[chosen][q])
                .sum::<f64>();
        }
        held_out / query_groups.len().max(1) as f64
    };
    let (cv_all, cv_contrastive) = (cross_validated(&any), cross_validated(&contrastive_only));
    let chosen = if cv_all > cv_contrastive + 1e-12 {
        best(&any, &any)
    } else {
        best(&contrastive_only, &any)
    };
    HubFusion {
        weights: configs[chosen].0,
        beta: configs[chosen].1,
        cv_objective: cv_all,
        cv_objective_contrastive: cv_contrastive,
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
    for w in weight_grid() {
        let m = evaluate(&scores.fuse(&w), query_groups, cand_groups);
        if best
            .as_ref()
            .is_none_or(|(_, b)| m.objective() > b.objective() + 1e-12)
        {
            best = Some((w, m));
        }
    }
    best.expect("the grid is not empty. This is a bug.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn noise(rows: i64, cols: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([rows, cols], (Kind::Float, Device::Cpu))
    }

    /// Scores where query i's partner is candidate i, seen through `signal` (0: pure noise).
    fn scores(n: i64, signal: f64, seed: i64) -> Tensor {
        noise(n, n, seed) + Tensor::eye(n, (Kind::Float, Device::Cpu)) * signal
    }

    fn setup(diffgap_signal: f64) -> (ModeScores, ModeScores, Vec<i64>) {
        let n = 120;
        let s = ModeScores {
            contrastive: scores(n, 1.5, 1),
            bridged: scores(n, diffgap_signal, 2),
            reverse: scores(n, diffgap_signal.min(0.0), 3),
        };
        let bank = ModeScores {
            contrastive: noise(200, n, 4),
            bridged: noise(200, n, 5),
            reverse: noise(200, n, 6),
        };
        (s, bank, (0..n).collect())
    }

    #[test]
    fn misleading_diffgap_terms_get_no_weight() {
        // The bridged and reverse scores point away from the partner.
        let (s, bank, g) = setup(-3.0);
        let h = fit_hub(&s, &bank, &g, &g);
        assert_eq!(h.weights.contrastive, 1.0, "{h:?}");
        assert!(h.cv_objective <= h.cv_objective_contrastive + 1e-12);
    }

    #[test]
    fn informative_diffgap_terms_are_used_when_cross_validation_says_so() {
        let (s, bank, g) = setup(3.0);
        let h = fit_hub(&s, &bank, &g, &g);
        assert!(h.weights.bridged > 0.0, "{h:?}");
        assert!(h.cv_objective > h.cv_objective_contrastive, "{h:?}");
        let fused = evaluate(&hub_fused(&s, &bank, &h), &g, &g);
        let raw = evaluate(&s.contrastive, &g, &g);
        assert!(fused.r1 > raw.r1, "{} vs {}", fused.r1, raw.r1);
    }
}
