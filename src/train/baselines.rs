//! Fits the cheap baselines (`crate::baselines`) on the training rows; each free parameter is
//! chosen where the method says: the ridge penalty by cross-validation over training items, the
//! inverted softmax's temperature and the adapter's epoch on the validation rows.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::baselines::adapter::train_adapter;
use crate::baselines::hubness::{inverted_softmax, BETA_GRID};
use crate::baselines::linear::{fit_procrustes, fit_ridge};
use crate::baselines::{Baselines, BaselinesCard, DirectionFit, DirectionMaps, MAX_BANK};
use crate::data::pairs::PairedSet;
use crate::diffusion::normalize::l2_normalize;
use crate::eval::retrieval::evaluate;
use crate::eval::views::view;
use crate::model::card::direction_key;

/// Folds of the ridge penalty's cross-validation.
const RIDGE_FOLDS: usize = 5;

/// One modality of a set, deduplicated to its distinct items as the evaluation sees it.
struct Items {
    emb: Tensor,
    groups: Vec<i64>,
}

fn items(set: &PairedSet, modality: &str, device: Device) -> Result<Items> {
    let x = set.modality(modality)?.to_kind(Kind::Float);
    let v = view(&x, &set.groups);
    Ok(Items {
        emb: l2_normalize(&v.select(&x)).to_device(device),
        groups: v.groups,
    })
}

pub fn fit(
    train: &PairedSet,
    val: &PairedSet,
    (ma, mb): (&str, &str),
    seed: u64,
    device: Device,
) -> Result<Baselines> {
    let started = Instant::now();
    let _g = tch::no_grad_guard();
    let rows = |set: &PairedSet, m: &str| -> Result<Tensor> {
        Ok(l2_normalize(
            &set.modality(m)?.to_kind(Kind::Float).to_device(device),
        ))
    };
    let mut means = BTreeMap::new();
    let mut banks = BTreeMap::new();
    for m in [ma, mb] {
        means.insert(
            m.to_string(),
            rows(train, m)?.mean_dim(0, true, Kind::Float),
        );
        banks.insert(m.to_string(), bank(&items(train, m, device)?.emb, seed));
    }
    let mut maps = BTreeMap::new();
    let mut fits = BTreeMap::new();
    for (q, c) in [(ma, mb), (mb, ma)] {
        let key = direction_key(q, c);
        let (xq, xc) = (rows(train, q)?, rows(train, c)?);
        let (vq, vc) = (items(val, q, device)?, items(val, c, device)?);
        let objective = |scores: &Tensor| evaluate(scores, &vq.groups, &vc.groups).objective();
        let ridge = fit_ridge(&xq, &xc, &train.groups, RIDGE_FOLDS);
        let procrustes = fit_procrustes(&xq, &xc);
        let adapter = tch::with_grad(|| {
            train_adapter(&xq, &xc, &train.groups, seed, &mut |a| {
                objective(&a.apply(&vq.emb).matmul(&vc.emb.tr()))
            })
        })
        .with_context(|| format!("training the {key} adapter"))?;
        let raw = vq.emb.matmul(&vc.emb.tr());
        let bank_scores = banks[q].matmul(&vc.emb.tr());
        let beta = BETA_GRID
            .iter()
            .copied()
            .map(|b| (b, objective(&inverted_softmax(&raw, &bank_scores, b))))
            .fold((BETA_GRID[0], f64::MIN), |best, (b, o)| {
                if o > best.1 + 1e-12 {
                    (b, o)
                } else {
                    best
                }
            })
            .0;
        fits.insert(
            key.clone(),
            DirectionFit {
                ridge_lambda: ridge.lambda,
                ridge_cv_mse: ridge.cv_mse,
                inverted_softmax_beta: beta,
                adapter_hidden: adapter.adapter.hidden(),
                adapter_steps: adapter.steps_run,
                adapter_best_step: adapter.best_step,
            },
        );
        maps.insert(
            key,
            DirectionMaps {
                ridge: ridge.map,
                procrustes,
                adapter: adapter.adapter,
            },
        );
    }
    Ok(Baselines {
        card: BaselinesCard {
            data_fingerprint: train.fingerprint.clone(),
            train_rows: train.rows(),
            bank_rows: banks
                .iter()
                .map(|(m, b)| (m.clone(), b.size()[0] as usize))
                .collect(),
            directions: fits,
            seconds: started.elapsed().as_secs_f64(),
        },
        means,
        banks,
        maps,
    })
}

/// At most [`MAX_BANK`] distinct training items, drawn by seed when there are more.
fn bank(items: &Tensor, seed: u64) -> Tensor {
    let n = items.size()[0] as usize;
    if n <= MAX_BANK {
        return items.shallow_clone();
    }
    let mut idx: Vec<i64> = (0..n as i64).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xBA4C));
    idx.truncate(MAX_BANK);
    idx.sort_unstable();
    items.index_select(0, &Tensor::from_slice(&idx).to_device(items.device()))
}

/// `diffgap baselines fit`.
#[derive(Debug, Clone, clap::Args)]
pub struct FitArgs {
    /// Model directory written by `diffgap train`; its card and baselines file are rewritten.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// The training rows the model was trained on.
    #[arg(long)]
    pub pairs: std::path::PathBuf,
    /// The validation rows of its training run.
    #[arg(long)]
    pub val: std::path::PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
}

/// Fits the baselines and the hubness-corrected fusion for an existing model and stores them.
pub fn fit_into_model(args: &FitArgs) -> Result<crate::model::card::ModelCard> {
    use crate::eval::report::{self, EvalOptions, Fusion};
    use crate::model::artifact;

    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (train, val) = (PairedSet::load(&args.pairs)?, PairedSet::load(&args.val)?);
    let m = model.card.space.modalities.clone();
    let [ma, mb] = m.as_slice() else {
        anyhow::bail!("the model has modalities {m:?}; baselines need a two-modality model");
    };
    let baselines = fit(&train, &val, (ma, mb), args.seed, device)?;
    let d = &model.card.defaults;
    let opts = EvalOptions {
        steps: d.rank_steps,
        samples: d.rank_samples,
        guidance: d.guidance,
        seed: args.seed,
        shortlist: 0,
        gap_steps: d.rank_steps,
    };
    let rep = report::evaluate_with_baselines(
        &model,
        &val,
        (ma, mb),
        Fusion::FitOnThisSet,
        opts,
        Some(&baselines),
    )?;
    // The stored card, not the loaded one (which takes its directory's name).
    let mut card = artifact::read_card(&args.model)?;
    card.hub_fusion = report::hub_fusions(&rep);
    card.validated_best = report::validated_best(&rep);
    artifact::write_baselines(&args.model, &mut card, &baselines)?;
    Ok(card)
}
