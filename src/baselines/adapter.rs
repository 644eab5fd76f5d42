//! A small contrastive adapter: a residual MLP on the query side, x -> l2norm(x + MLP(x)),
//! trained with symmetric multi-positive InfoNCE against the raw partner embeddings. It uses the
//! same pairs as DiffGAP and maps into the partner's space, so it is the strongest cheap bar for
//! ranking and a second mapped set for the generation measures.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::diffusion::normalize::l2_normalize;

/// Fixed InfoNCE temperature, near what the small CLAP learns (0.064).
const TEMPERATURE: f64 = 0.05;
const BATCH: i64 = 256;
/// Budgets in optimiser steps, so that small and large sets get the same chance to learn; the
/// caller's selection score is taken every [`SELECT_EVERY`] steps.
const MAX_STEPS: usize = 3000;
const PATIENCE_STEPS: usize = 300;
const SELECT_EVERY: usize = 10;
const LEARNING_RATE: f64 = 2e-3;

/// The trained adapter as plain tensors (nn::Linear layout: weights [out, in]).
pub struct Adapter {
    pub w1: Tensor,
    pub b1: Tensor,
    pub w2: Tensor,
    pub b2: Tensor,
}

impl Adapter {
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let x = l2_normalize(&x.to_kind(Kind::Float).to_device(self.w1.device()));
        let h = (x.matmul(&self.w1.tr()) + &self.b1).relu();
        l2_normalize(&(&x + h.matmul(&self.w2.tr()) + &self.b2))
    }

    pub fn named(&self, prefix: &str) -> Vec<(String, Tensor)> {
        [
            ("w1", &self.w1),
            ("b1", &self.b1),
            ("w2", &self.w2),
            ("b2", &self.b2),
        ]
        .into_iter()
        .map(|(k, t)| (format!("{prefix}.{k}"), t.shallow_clone()))
        .collect()
    }

    pub fn hidden(&self) -> i64 {
        self.w1.size()[0]
    }
}

pub struct AdapterFit {
    pub adapter: Adapter,
    pub steps_run: usize,
    pub best_step: usize,
    /// The selection score of the kept weights (the caller's, e.g. validation R@1 + mAP@10).
    pub best_score: f64,
}

struct Net {
    l1: nn::Linear,
    l2: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, dim: i64, hidden: i64) -> Self {
        // The second layer starts at zero: the adapter starts as the identity (raw cosine).
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        Self {
            l1: nn::linear(p / "l1", dim, hidden, Default::default()),
            l2: nn::linear(p / "l2", hidden, dim, zero),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        l2_normalize(&(x + self.l2.forward(&self.l1.forward(x).relu())))
    }

    fn snapshot(&self) -> Adapter {
        let c = |t: &Tensor| t.detach().copy();
        Adapter {
            w1: c(&self.l1.ws),
            b1: self
                .l1
                .bs
                .as_ref()
                .map_or_else(|| self.l1.ws.zeros_like(), c),
            w2: c(&self.l2.ws),
            b2: self
                .l2
                .bs
                .as_ref()
                .map_or_else(|| self.l2.ws.zeros_like(), c),
        }
    }
}

/// Symmetric InfoNCE where every row of the same item counts as a positive; `q` and `t` are
/// L2-normalised rows, `groups` their items.
pub fn multi_positive_infonce(q: &Tensor, t: &Tensor, groups: &Tensor, temperature: f64) -> Tensor {
    let logits = q.matmul(&t.tr()) / temperature;
    let same = groups.unsqueeze(1).eq_tensor(&groups.unsqueeze(0));
    let masked = logits.masked_fill(&same.logical_not(), -1e9);
    let one_side = |l: &Tensor, m: &Tensor| {
        (l.logsumexp([1i64].as_slice(), false) - m.logsumexp([1i64].as_slice(), false))
            .mean(Kind::Float)
    };
    (one_side(&logits, &masked) + one_side(&logits.tr(), &masked.tr())) / 2.0
}

/// Trains the adapter `source -> target` on training pairs; the weights with the best `select`
/// score (computed by the caller on validation rows) is kept, with early stopping.
pub fn train_adapter(
    source: &Tensor,
    target: &Tensor,
    groups: &[i64],
    seed: u64,
    select: &mut dyn FnMut(&Adapter) -> f64,
) -> Result<AdapterFit, tch::TchError> {
    let device = source.device();
    let (x, y) = (
        l2_normalize(&source.to_kind(Kind::Float)),
        l2_normalize(&target.to_kind(Kind::Float)),
    );
    let g = Tensor::from_slice(groups).to_device(device);
    let dim = x.size()[1];
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), dim, dim);
    let mut opt = nn::AdamW::default().build(&vs, LEARNING_RATE)?;
    let n = x.size()[0];
    let mut best = (select(&net.snapshot()), 0, net.snapshot());
    let (mut perm, mut cursor, mut steps) = (Tensor::randperm(n, (Kind::Int64, device)), 0, 0);
    while steps < MAX_STEPS && steps - best.1 < PATIENCE_STEPS {
        for _ in 0..SELECT_EVERY {
            if cursor >= n {
                (perm, cursor) = (Tensor::randperm(n, (Kind::Int64, device)), 0);
            }
            let idx = perm.narrow(0, cursor, BATCH.min(n - cursor));
            cursor += BATCH;
            let q = net.forward(&x.index_select(0, &idx));
            let loss = multi_positive_infonce(
                &q,
                &y.index_select(0, &idx),
                &g.index_select(0, &idx),
                TEMPERATURE,
            );
            opt.backward_step(&loss);
            steps += 1;
        }
        let snapshot = net.snapshot();
        let score = select(&snapshot);
        if score > best.0 + 1e-9 {
            best = (score, steps, snapshot);
        }
    }
    let (best_score, best_step, adapter) = best;
    Ok(AdapterFit {
        adapter,
        steps_run: steps,
        best_step,
        best_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn an_untrained_adapter_is_the_identity_and_training_aligns_pairs() {
        tch::manual_seed(0);
        let n = 512;
        let x = l2_normalize(&Tensor::randn([n, 16], (Kind::Float, Device::Cpu)));
        // Partners: a fixed rotation of x, bent a little, so that raw cosine is near chance and
        // the residual MLP can learn the map.
        let (r, _) = Tensor::linalg_qr(
            &Tensor::randn([16, 16], (Kind::Float, Device::Cpu)),
            "reduced",
        );
        let y = l2_normalize(&(x.matmul(&r) * 3.0).tanh());
        let groups: Vec<i64> = (0..n).collect();
        let accuracy = |a: &Adapter| {
            let pred = a.apply(&x).matmul(&y.tr()).argmax(1, false);
            let right = pred.eq_tensor(&Tensor::arange(n, (Kind::Int64, Device::Cpu)));
            right
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let mut scores = Vec::new();
        let fit = train_adapter(&x, &y, &groups, 1, &mut |a| {
            let s = accuracy(a);
            scores.push(s);
            s
        })
        .unwrap();
        // Epoch 0 is the identity: its score is raw cosine's.
        let raw = x
            .matmul(&y.tr())
            .argmax(1, false)
            .eq_tensor(&Tensor::arange(n, (Kind::Int64, Device::Cpu)));
        let raw = raw.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((scores[0] - raw).abs() < 1e-9);
        assert!(
            fit.best_score > raw + 0.2,
            "{} vs raw {raw}",
            fit.best_score
        );
        assert!((accuracy(&fit.adapter) - fit.best_score).abs() < 1e-9);
    }
}
