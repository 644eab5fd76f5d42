//! Bidirectional split training: every paired batch (a, b) trains both "denoise b given a" and
//! "denoise a given b", with condition dropout for the null (unconditional) branch, AdamW and EMA
//! weights, validation loss and validation retrieval every epoch, and early stopping.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

pub use super::config::TrainConfig;
use super::ema::Ema;
use super::objectives::{choose_rank_steps, contrastive_term};
use super::probe::ValProbe;
use super::split::split_by_group;
use crate::data::pairs::PairedSet;
use crate::diffusion::denoiser::{parameter_count, Denoiser, DenoiserShape};
use crate::diffusion::normalize::ModalityStats;
use crate::diffusion::prediction::NoiseLevel;
use crate::diffusion::schedule::Schedule;
use crate::eval::report::{self, EvalOptions, Fusion};
use crate::model::card::{
    Direction, ModelCard, SamplingDefaults, Space, TrainingRecord, CARD_FORMAT, TORCH_VERSION,
};
use crate::model::{artifact, DiffgapModel};

#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_bridged_r1: f64,
}

pub struct TrainOutcome {
    pub card: ModelCard,
    pub history: Vec<EpochLog>,
    pub report: report::EvalReport,
}

pub fn train(cfg: &TrainConfig) -> Result<TrainOutcome> {
    let started = Instant::now();
    let previous = match &cfg.resume {
        Some(dir) => Some(
            artifact::read_card(dir).with_context(|| format!("resuming from {}", dir.display()))?,
        ),
        None => None,
    };
    let resolved;
    let cfg = match &previous {
        Some(card) => {
            resolved = resumed_config(cfg, card)?;
            &resolved
        }
        None => cfg,
    };
    let device = cfg.device.resolve().map_err(anyhow::Error::msg)?;
    validate(cfg)?;
    let set = PairedSet::load(&cfg.pairs)?;
    let (ma, mb) = pick_modalities(&set, cfg.modalities.as_deref())?;
    let (train_set, val_set) = match &cfg.val {
        Some(path) => {
            let val = PairedSet::load(path)?;
            for m in [&ma, &mb] {
                val.modality(m)?;
            }
            if val.dim() != set.dim() {
                bail!(
                    "{} has dimension {} but {} has {}",
                    path.display(),
                    val.dim(),
                    cfg.pairs.display(),
                    set.dim()
                );
            }
            let all: Vec<i64> = (0..set.rows() as i64).collect();
            (set.subset(&all), val)
        }
        None => {
            let (train_rows, val_rows) = split_by_group(&set.groups, cfg.val_fraction, cfg.seed);
            if train_rows.is_empty() || val_rows.is_empty() {
                bail!(
                    "{} has too few items to split into training and validation",
                    cfg.pairs.display()
                );
            }
            (set.subset(&train_rows), set.subset(&val_rows))
        }
    };
    tracing::info!(
        rows = set.rows(),
        train_rows = train_set.rows(),
        val_rows = val_set.rows(),
        dim = set.dim(),
        "training {ma} <-> {mb}"
    );

    tch::manual_seed(cfg.seed as i64);
    let dim = set.dim();
    let shape = DenoiserShape {
        dim,
        width: cfg.width,
        depth: cfg.depth,
        directions: 2,
    };
    let mut vs = nn::VarStore::new(device);
    let net = Denoiser::new(&vs.root(), shape);
    let mut ema_vs = nn::VarStore::new(device);
    let ema_net = Rc::new(Denoiser::new(&ema_vs.root(), shape));
    ema_vs.copy(&vs).context("initialising the EMA weights")?;
    // EMA weights are never trained, and tracing refuses constants that require grad.
    ema_vs.freeze();
    let mut ema = Ema::new(cfg.ema_decay);
    let mut opt = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(&vs, cfg.lr)?;

    let stats: BTreeMap<String, ModalityStats> = match &previous {
        // The weights were trained in the old normalised space; keep it.
        Some(card) => card.normalization.clone(),
        None => [&ma, &mb]
            .into_iter()
            .map(|m| Ok((m.clone(), ModalityStats::fit(train_set.modality(m)?))))
            .collect::<Result<_>>()?,
    };
    if let (Some(dir), Some(card)) = (&cfg.resume, &previous) {
        if card.space.dim != dim {
            bail!(
                "{} has dimension {dim} but the resumed model has {}",
                cfg.pairs.display(),
                card.space.dim
            );
        }
        vs.load(dir.join(artifact::WEIGHTS_FILE))
            .context("loading the training weights")?;
        ema_vs
            .load(dir.join(artifact::EMA_FILE))
            .context("loading the EMA weights")?;
    }
    let mut card = ModelCard {
        format: CARD_FORMAT,
        name: cfg
            .out
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into()),
        diffgap_version: env!("CARGO_PKG_VERSION").into(),
        torch_version: TORCH_VERSION.into(),
        space: Space {
            name: cfg.space.clone(),
            dim,
            modalities: vec![ma.clone(), mb.clone()],
        },
        // Direction 0 denoises b given a, direction 1 a given b.
        directions: vec![
            Direction {
                condition: ma.clone(),
                target: mb.clone(),
            },
            Direction {
                condition: mb.clone(),
                target: ma.clone(),
            },
        ],
        normalization: stats.clone(),
        schedule: cfg.schedule,
        train_timesteps: cfg.timesteps,
        prediction: cfg.prediction,
        denoiser: shape,
        parameters: parameter_count(&vs),
        defaults: SamplingDefaults {
            steps: cfg.steps,
            guidance: 1.0,
            samples: cfg.samples,
            refine_strength: 0.5,
            rank_steps: cfg.steps,
            rank_samples: cfg.samples,
        },
        fusion: BTreeMap::new(),
        hub_fusion: BTreeMap::new(),
        validated_best: BTreeMap::new(),
        baselines: None,
        training: None,
        evaluation: None,
        files: BTreeMap::new(),
    };

    let schedule = Schedule::new(cfg.schedule, cfg.timesteps);
    let za = stats[&ma].normalize(&train_set.modality(&ma)?.to_device(device));
    let zb = stats[&mb].normalize(&train_set.modality(&mb)?.to_device(device));
    let alpha_bars = Tensor::from_slice(
        &(0..cfg.timesteps)
            .map(|t| schedule.alpha_bar(t) as f32)
            .collect::<Vec<_>>(),
    )
    .to_device(device);
    let val_probe = ValProbe::new(&val_set, &ma, &mb, &stats, &schedule, cfg, device)?;
    let probe_set = val_set.subset(&super::split::probe_rows(
        val_set.rows(),
        cfg.val_probe_rows,
        cfg.seed,
    ));
    let eval_opts = EvalOptions {
        steps: cfg.steps,
        samples: cfg.samples,
        guidance: 1.0,
        seed: cfg.seed,
        shortlist: 0,
        gap_steps: cfg.steps,
    };

    let n = za.size()[0];
    let groups = Tensor::from_slice(&train_set.groups).to_device(device);
    let bar = progress(cfg);
    let mut history = Vec::new();
    let (mut best_r1, mut best_loss, mut best_epoch, mut since_best) = (-1.0, f64::INFINITY, 0, 0);
    let mut best_weights = nn::VarStore::new(device);
    // Creating a network on it gives the store the same variable names, so copy() can fill it.
    let _best_layout = Denoiser::new(&best_weights.root(), shape);
    best_weights.freeze();
    for epoch in 1..=cfg.epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let (mut sum, mut batches) = (0.0, 0);
        for start in (0..n).step_by(cfg.batch_size) {
            let idx = perm.narrow(0, start, (cfg.batch_size as i64).min(n - start));
            let (a, b) = (za.index_select(0, &idx), zb.index_select(0, &idx));
            let rows = idx.size()[0];
            // Both directions in one batch, balanced: targets [b; a], conditions [a; b].
            let x0 = Tensor::cat(&[&b, &a], 0);
            let cond = Tensor::cat(&[&a, &b], 0);
            let direction = Tensor::cat(
                &[
                    Tensor::zeros([rows], (Kind::Int64, device)),
                    Tensor::ones([rows], (Kind::Int64, device)),
                ],
                0,
            );
            let t = Tensor::randint(cfg.timesteps as i64, [2 * rows], (Kind::Int64, device));
            let eps = x0.randn_like();
            let mask = Tensor::rand([2 * rows], (Kind::Float, device))
                .ge(cfg.cond_dropout)
                .to_kind(Kind::Float);
            let a_t = alpha_bars.index_select(0, &t).unsqueeze(-1);
            let level = NoiseLevel {
                signal: a_t.sqrt(),
                noise: (-&a_t + 1.0).sqrt(),
            };
            let x_t = &level.signal * &x0 + &level.noise * &eps;
            let out = net.forward(&x_t, &t.to_kind(Kind::Float), &cond, &direction, &mask);
            let mut loss = out.mse_loss(
                &cfg.prediction.target(&x0, &eps, &level),
                tch::Reduction::Mean,
            );
            if cfg.contrastive_weight > 0.0 {
                let g = groups.index_select(0, &idx).repeat([2]);
                let term = contrastive_term(cfg.prediction, (&out, &x_t, &level), &x0, &mask, &g);
                loss += term * cfg.contrastive_weight;
            }
            opt.backward_step_clip_norm(&loss, 1.0);
            ema.update(&ema_vs, &vs);
            sum += loss.double_value(&[]);
            batches += 1;
        }
        let train_loss = sum / batches.max(1) as f64;
        let val_loss = val_probe.loss(ema_net.as_ref())?;
        let model = DiffgapModel::new(card.clone(), Box::new(ema_net.clone()), device);
        // Only what early stopping watches: the rest of the protocol runs once, at the end.
        let r1 = report::bridged_r1_only(&model, &probe_set, (&ma, &mb), eval_opts)?;
        history.push(EpochLog {
            epoch,
            train_loss,
            val_loss,
            val_bridged_r1: r1,
        });
        if r1 > best_r1 + 1e-9 || (r1 >= best_r1 - 1e-9 && val_loss < best_loss) {
            (best_r1, best_loss, best_epoch, since_best) = (r1, val_loss, epoch, 0);
            best_weights.copy(&ema_vs)?;
        } else {
            since_best += 1;
        }
        let msg = format!("epoch {epoch}: train {train_loss:.4} val {val_loss:.4} val R@1 {r1:.3} (best {best_r1:.3} @ {best_epoch})");
        bar.set_message(msg.clone());
        bar.inc(1);
        // Without a terminal (CI, a Kubernetes job) the bar is hidden: one log line per epoch.
        if bar.is_hidden() {
            tracing::info!("{msg}");
        } else {
            tracing::debug!("{msg}");
        }
        if since_best >= cfg.patience {
            break;
        }
    }
    bar.finish();
    ema_vs.copy(&best_weights)?;

    // Retrieval is measured, not assumed, to want the same trajectory as generation: the step
    // count of the bridged ranking scores is chosen on the validation split.
    let model = DiffgapModel::new(card.clone(), Box::new(ema_net.clone()), device);
    let (rank_steps, sweep) = choose_rank_steps(&model, &val_set, (&ma, &mb), cfg, eval_opts)?;
    card.defaults.rank_steps = rank_steps;

    // The cheap baselines on the same training rows, stored with the model.
    let baselines = super::baselines::fit(&train_set, &val_set, (&ma, &mb), cfg.seed, device)
        .context("fitting the baselines")?;

    // The card's evaluation and fusion weights: the best EMA weights on the validation split at
    // the chosen step count, with the generative re-ranking and the baseline ladder included.
    let final_opts = EvalOptions {
        steps: rank_steps,
        shortlist: 10,
        ..eval_opts
    };
    let rep = report::evaluate_with_baselines(
        &model,
        &val_set,
        (&ma, &mb),
        Fusion::FitOnThisSet,
        final_opts,
        Some(&baselines),
    )?;
    card.fusion = report::fusion_weights(&rep);
    card.hub_fusion = report::hub_fusions(&rep);
    card.validated_best = report::validated_best(&rep);
    card.evaluation = Some(serde_json::json!({
        "validation": rep,
        "rank_steps_sweep": sweep
            .iter()
            .map(|(steps, objective)| serde_json::json!({"steps": steps, "fused_r1_plus_map10": objective}))
            .collect::<Vec<_>>(),
    }));
    let items = |s: &PairedSet| {
        let mut g = s.groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    card.training = Some(TrainingRecord {
        data_fingerprint: set.fingerprint.clone(),
        data_file: cfg
            .pairs
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into()),
        rows: set.rows(),
        train_items: items(&train_set),
        val_items: items(&val_set),
        epochs_run: history.len(),
        best_epoch,
        seed: cfg.seed,
        batch_size: cfg.batch_size,
        learning_rate: cfg.lr,
        condition_dropout: cfg.cond_dropout,
        ema_decay: cfg.ema_decay,
        contrastive_weight: cfg.contrastive_weight,
        val_probe_rows: probe_set.rows(),
        seconds: started.elapsed().as_secs_f64(),
    });
    artifact::save(
        &cfg.out,
        &mut card,
        &ema_net,
        (&ema_vs, &vs),
        Some(&baselines),
    )
    .with_context(|| format!("writing the model to {}", cfg.out.display()))?;
    std::fs::write(
        cfg.out.join("history.json"),
        serde_json::to_string_pretty(&history)? + "\n",
    )?;
    Ok(TrainOutcome {
        card,
        history,
        report: rep,
    })
}

/// The configuration a resumed run actually trains with: the card's recipe, the new run's data
/// and schedule of epochs.
fn resumed_config(cfg: &TrainConfig, card: &ModelCard) -> Result<TrainConfig> {
    let [first] = card.directions.get(..1).unwrap_or_default() else {
        bail!("the resumed model's card lists no direction");
    };
    Ok(TrainConfig {
        modalities: Some(vec![first.condition.clone(), first.target.clone()]),
        space: card.space.name.clone(),
        width: card.denoiser.width,
        depth: card.denoiser.depth,
        prediction: card.prediction,
        schedule: card.schedule,
        timesteps: card.train_timesteps,
        ..cfg.clone()
    })
}

fn validate(cfg: &TrainConfig) -> Result<()> {
    if !(0.0..1.0).contains(&cfg.val_fraction) || cfg.val_fraction == 0.0 {
        bail!("--val-fraction must be in (0, 1), got {}", cfg.val_fraction);
    }
    if cfg.batch_size == 0
        || cfg.epochs == 0
        || cfg.width < 2
        || cfg.depth < 1
        || cfg.timesteps == 0
    {
        bail!("--batch-size, --epochs, --depth and --timesteps must be positive and --width at least 2");
    }
    if cfg.width % 2 != 0 {
        bail!(
            "--width must be even (sinusoidal timestep embedding), got {}",
            cfg.width
        );
    }
    if !(cfg.contrastive_weight.is_finite() && cfg.contrastive_weight >= 0.0) {
        bail!(
            "--contrastive-weight must be a finite number >= 0, got {}",
            cfg.contrastive_weight
        );
    }
    if !(0.0..1.0).contains(&cfg.cond_dropout) || !(0.0..1.0).contains(&cfg.ema_decay) {
        bail!("--cond-dropout and --ema-decay must be in [0, 1)");
    }
    if cfg.steps == 0 || cfg.steps > cfg.timesteps || cfg.samples == 0 {
        bail!("--steps must be in 1..=timesteps and --samples at least 1");
    }
    Ok(())
}

fn pick_modalities(set: &PairedSet, asked: Option<&[String]>) -> Result<(String, String)> {
    let names = set.names();
    let pair = match asked {
        Some([a, b]) => (a.clone(), b.clone()),
        Some(other) => bail!("--modalities takes exactly two names, got {other:?}"),
        None if names.len() == 2 => (names[0].clone(), names[1].clone()),
        None => bail!(
            "{} has modalities {names:?}; choose two with --modalities a,b",
            set.path.display()
        ),
    };
    if pair.0 == pair.1 {
        bail!("--modalities names '{}' twice", pair.0);
    }
    set.modality(&pair.0)?;
    set.modality(&pair.1)?;
    Ok(pair)
}

fn progress(cfg: &TrainConfig) -> ProgressBar {
    if cfg.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
