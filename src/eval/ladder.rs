//! The cheap-baseline ladder of one query direction: each baseline's score matrix, its cost per
//! query, and its mapped query set (for the generation measures), from the fitted object stored
//! with the model. The rungs, cheapest first: raw cosine (the report's `contrastive`),
//! mean-centring, inverted softmax over the training query bank, ridge and Procrustes maps, the
//! contrastive adapter.

use std::time::Instant;

use tch::Tensor;

use crate::baselines::hubness::inverted_softmax;
use crate::baselines::modes::BaselineMode;
use crate::baselines::Baselines;
use crate::model::card::direction_key;

/// The baselines' mode names, cheapest first (raw cosine is the report's `contrastive`).
pub const BASELINE_MODES: [&str; 5] = [
    BaselineMode::Centred.name(),
    BaselineMode::InvertedSoftmax.name(),
    BaselineMode::Ridge.name(),
    BaselineMode::Procrustes.name(),
    BaselineMode::Adapter.name(),
];

/// One rung: its scores [Q, C] and what a query costs on this machine.
pub struct Rung {
    pub mode: &'static str,
    pub scores: Tensor,
    pub us_per_query: f64,
    /// The queries mapped into the candidate space, for the maps.
    pub mapped: Option<Tensor>,
}

/// Microseconds per query of `f`, which scores `queries` queries.
pub fn timed<T>(queries: i64, f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    let us = started.elapsed().as_secs_f64() * 1e6 / queries.max(1) as f64;
    (out, us)
}

/// Every baseline rung for queries `q` (modality `qm`) against candidates `c` (modality `cm`).
/// The inverted softmax's bank term depends on the candidates only, so it is computed once per
/// candidate set (as a catalog would) and left out of the per-query cost.
pub fn rungs(
    b: &Baselines,
    (q, qm): (&Tensor, &str),
    (c, cm): (&Tensor, &str),
) -> Result<Vec<Rung>, String> {
    let _g = tch::no_grad_guard();
    let key = direction_key(qm, cm);
    let beta = b.fit(&key)?.inverted_softmax_beta;
    let n = q.size()[0];
    let c_t = c.tr();
    let mut out = Vec::new();
    // The candidates are centred once per candidate set, as a catalog would.
    let centred_c = b.centred(c, cm)?.tr();
    let (scores, us) = timed(n, || b.centred(q, qm).map(|x| x.matmul(&centred_c)));
    out.push(Rung {
        mode: "centred",
        scores: scores?,
        us_per_query: us,
        mapped: None,
    });
    let bank_scores = b.bank_scores(qm, c)?;
    let (scores, us) = timed(n, || inverted_softmax(&q.matmul(&c_t), &bank_scores, beta));
    out.push(Rung {
        mode: "inverted_softmax",
        scores,
        us_per_query: us,
        mapped: None,
    });
    for mode in [
        BaselineMode::Ridge,
        BaselineMode::Procrustes,
        BaselineMode::Adapter,
    ] {
        let (mapped, us) = timed(n, || -> Result<(Tensor, Tensor), String> {
            let m = b
                .mapped(mode, q, (qm, cm))?
                .ok_or_else(|| format!("{} is not a map", mode.name()))?;
            Ok((m.matmul(&c_t), m))
        });
        let (scores, mapped) = mapped?;
        out.push(Rung {
            mode: mode.name(),
            scores,
            us_per_query: us,
            mapped: Some(mapped),
        });
    }
    Ok(out)
}
