//! The cheap-baseline ladder of one query direction: each baseline's score matrix, its cost per
//! query, and its mapped query set (for the generation measures), from the fitted object stored
//! with the model. The rungs, cheapest first: raw cosine (the report's `contrastive`),
//! mean-centring, inverted softmax over the training query bank, ridge and Procrustes maps, the
//! contrastive adapter.

use std::time::Instant;

use tch::Tensor;

use crate::baselines::hubness::inverted_softmax;
use crate::baselines::Baselines;
use crate::model::card::direction_key;

pub const BASELINE_MODES: [&str; 5] = [
    "centred",
    "inverted_softmax",
    "ridge",
    "procrustes",
    "adapter",
];

/// A fitted map applied to query rows.
type MapFn<'a> = &'a dyn Fn(&Tensor) -> Tensor;

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
    let maps = b.maps(&key)?;
    let beta = b.fit(&key)?.inverted_softmax_beta;
    let n = q.size()[0];
    let c_t = c.tr();
    let mut out = Vec::new();
    let centred_c = b.centred(c, cm)?.tr();
    let (scores, us) = timed(n, || b.centred(q, qm).map(|x| x.matmul(&centred_c)));
    out.push(Rung {
        mode: "centred",
        scores: scores?,
        us_per_query: us,
        mapped: None,
    });
    let bank_scores = b.bank(qm)?.to_device(q.device()).matmul(&c_t);
    let (scores, us) = timed(n, || inverted_softmax(&q.matmul(&c_t), &bank_scores, beta));
    out.push(Rung {
        mode: "inverted_softmax",
        scores,
        us_per_query: us,
        mapped: None,
    });
    let maps: [(&'static str, MapFn<'_>); 3] = [
        ("ridge", &|x| maps.ridge.apply(x)),
        ("procrustes", &|x| maps.procrustes.apply(x)),
        ("adapter", &|x| maps.adapter.apply(x)),
    ];
    for (mode, map) in maps {
        let ((scores, mapped), us) = timed(n, || {
            let m = map(q);
            (m.matmul(&c_t), m)
        });
        out.push(Rung {
            mode,
            scores,
            us_per_query: us,
            mapped: Some(mapped),
        });
    }
    Ok(out)
}
