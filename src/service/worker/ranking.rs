//! What an instance holds for the Rank modes beyond plain cosines: the model's fitted baselines
//! and, for each direction with a hubness-corrected fusion, its bank of training queries bridged
//! once at load (that term of the bank's scores does not depend on the request).

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use crate::baselines::Baselines;
use crate::diffusion::normalize::l2_normalize;
use crate::diffusion::sampler::SampleOptions;
use crate::model::{artifact, row_seed, DiffgapModel, ModelError};

/// Seed of the bank's bridging noise: the one `diffgap eval --seed 0` uses.
pub const BANK_SEED: u64 = 0xBA4C;

pub struct RankState {
    pub baselines: Baselines,
    /// Keyed "query->candidate": the query modality's bank bridged into the candidates'
    /// modality with the card's ranking defaults, [bank, dim], L2-normalised.
    pub bridged_banks: BTreeMap<String, Tensor>,
}

/// The model's baselines and bridged banks, `None` for a model trained without baselines.
pub fn load(dir: &Path, model: &DiffgapModel) -> Result<Option<RankState>, ModelError> {
    let Some(baselines) = artifact::load_baselines(dir, &model.card, model.device())? else {
        return Ok(None);
    };
    let d = &model.card.defaults;
    let opts = SampleOptions {
        steps: d.rank_steps,
        guidance: d.guidance,
        samples: d.rank_samples,
    };
    let started = std::time::Instant::now();
    let mut bridged_banks = BTreeMap::new();
    for key in model.card.hub_fusion.keys() {
        let (qm, cm) = key.split_once("->").ok_or_else(|| ModelError::Artifact {
            dir: dir.to_owned(),
            detail: format!("hub_fusion: '{key}' is not a direction \"query->candidate\""),
        })?;
        let bank = baselines.bank(qm).map_err(|detail| ModelError::Artifact {
            dir: dir.to_owned(),
            detail,
        })?;
        let seeds: Vec<u64> = (0..bank.size()[0] as usize)
            .map(|i| row_seed(BANK_SEED, i))
            .collect();
        let bridged = model.bridge(bank, qm, cm, &seeds, opts)?;
        bridged_banks.insert(key.clone(), l2_normalize(&bridged));
    }
    tracing::info!(
        directions = bridged_banks.len(),
        seconds = started.elapsed().as_secs_f64(),
        "query banks bridged for the hubness-corrected fusion"
    );
    Ok(Some(RankState {
        baselines,
        bridged_banks,
    }))
}
