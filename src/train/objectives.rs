//! What training optimises besides the denoising loss, and what it chooses on validation: the
//! contrastive term of the loss and the step count of the ranking scores.

use tch::{Kind, Tensor};

use super::config::TrainConfig;
use crate::baselines::adapter::multi_positive_infonce;
use crate::data::pairs::PairedSet;
use crate::diffusion::normalize::l2_normalize;
use crate::diffusion::prediction::{NoiseLevel, Prediction};
use crate::eval::report::{self, EvalOptions, Fusion};
use crate::model::{DiffgapModel, ModelError};

/// InfoNCE between the x_0 the network implies and the true targets, over the rows that saw
/// their condition (a dropped condition cannot tell partners apart), both directions apart.
pub fn contrastive_term(
    prediction: Prediction,
    (out, x_t, level): (&Tensor, &Tensor, &NoiseLevel),
    x0: &Tensor,
    mask: &Tensor,
    groups: &Tensor,
) -> Tensor {
    let (x0_pred, _) = prediction.split(out, x_t, level);
    let rows = x0.size()[0] / 2;
    let mut total = Tensor::zeros([], (Kind::Float, x0.device()));
    for half in [0, rows] {
        let keep = mask.narrow(0, half, rows).nonzero().squeeze_dim(1) + half;
        if keep.size()[0] < 2 {
            continue;
        }
        let pick = |t: &Tensor| l2_normalize(&t.index_select(0, &keep));
        total += multi_positive_infonce(
            &pick(&x0_pred),
            &pick(x0),
            &groups.index_select(0, &keep),
            CONTRASTIVE_TEMPERATURE,
        ) / 2.0;
    }
    total
}

/// Temperature of the contrastive term (in the normalised diffusion space, L2-normalised).
const CONTRASTIVE_TEMPERATURE: f64 = 0.1;

/// Step counts tried for the ranking scores: from a single step (the conditional mean) up to
/// the generation default.
fn rank_step_candidates(cfg: &TrainConfig) -> Vec<usize> {
    let mut v: Vec<usize> = [1, 2, 5, cfg.steps]
        .into_iter()
        .filter(|&s| s <= cfg.steps)
        .collect();
    v.dedup();
    v
}

/// Retrieval is measured, not assumed, to want the same trajectory as generation: the step
/// count of the bridged ranking scores is the one with the best fused objective on validation
/// (fewer steps on a tie). Returns it with the whole sweep.
pub fn choose_rank_steps(
    model: &DiffgapModel,
    val: &PairedSet,
    pair: (&str, &str),
    cfg: &TrainConfig,
    eval_opts: EvalOptions,
) -> Result<(usize, Vec<(usize, f64)>), ModelError> {
    let mut sweep = Vec::new();
    for steps in rank_step_candidates(cfg) {
        let opts = EvalOptions { steps, ..eval_opts };
        let rep = report::evaluate_model(model, val, pair, Fusion::FitOnThisSet, opts)?;
        sweep.push((steps, report::fused_objective(&rep)));
    }
    let best = sweep
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(cfg.steps, |s| s.0);
    Ok((best, sweep))
}
