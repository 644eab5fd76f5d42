//! Generation-side measures of a mapped set against the real target embeddings: can they tell a
//! sampler from a regression? A regression to the conditional mean puts every vector near the
//! centre of its partners (high precision, collapsed spread: low recall and coverage); a sampler
//! that follows the target distribution should cover it. k-NN precision, recall, density and
//! coverage after Naeem et al. (2020), "Reliable Fidelity and Diversity Metrics".

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::gap;

/// Neighbours that set each point's radius (Naeem et al. use 5).
pub const K: i64 = 5;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// Distance from each row of `x` to its k-th nearest other row of `x`.
fn knn_radius(x: &Tensor, k: i64) -> Tensor {
    let d = Tensor::cdist(x, x, 2.0, None::<i64>);
    // The row itself is at distance 0 and comes first.
    let k = (k + 1).min(x.size()[0]);
    d.kthvalue(k, 1, false).0
}

/// `real` [n, d], `fake` [m, d].
pub fn prdc(real: &Tensor, fake: &Tensor) -> Prdc {
    let (real, fake) = (
        real.to_kind(Kind::Double).to_device(tch::Device::Cpu),
        fake.to_kind(Kind::Double).to_device(tch::Device::Cpu),
    );
    let (r_real, r_fake) = (knn_radius(&real, K), knn_radius(&fake, K));
    // d[i, j]: real i to fake j.
    let d = Tensor::cdist(&real, &fake, 2.0, None::<i64>);
    let inside_real = d.le_tensor(&r_real.unsqueeze(1)).to_kind(Kind::Double);
    let mean = |t: Tensor| t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
    Prdc {
        precision: mean(inside_real.amax([0i64].as_slice(), false)),
        recall: mean(
            d.le_tensor(&r_fake.unsqueeze(0))
                .to_kind(Kind::Double)
                .amax([1i64].as_slice(), false),
        ),
        density: mean(inside_real.sum_dim_intlist([0i64].as_slice(), false, Kind::Double))
            / K as f64,
        coverage: mean(d.amin([1i64].as_slice(), false).le_tensor(&r_real)),
    }
}

/// One mapped set of query-modality rows, measured against the real targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationReport {
    pub source: String,
    pub target: String,
    /// "raw" (no mapping), "ridge", "procrustes", "adapter", "bridged", ...
    pub method: String,
    pub mean_distance: f64,
    pub frechet: f64,
    pub frechet_shrunk: f64,
    /// Mean cosine of each mapped vector with its true partner.
    pub paired_cosine: f64,
    pub prdc: Prdc,
}

/// `mapped` [m, d] (one row per query), `targets` [n, d] the real targets, `mapped_rows` and
/// `partner_rows` row-aligned pairs for the partner cosine.
pub fn measure(
    (source, target, method): (&str, &str, &str),
    mapped: &Tensor,
    targets: &Tensor,
    mapped_rows: &Tensor,
    partner_rows: &Tensor,
) -> GenerationReport {
    GenerationReport {
        source: source.into(),
        target: target.into(),
        method: method.into(),
        mean_distance: gap::mean_distance(mapped, targets),
        frechet: gap::frechet_distance(mapped, targets),
        frechet_shrunk: gap::frechet_distance_shrunk(mapped, targets),
        paired_cosine: gap::mean_paired_cosine(mapped_rows, partner_rows),
        prdc: prdc(targets, mapped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn gaussian(n: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, 8], (Kind::Double, Device::Cpu))
    }

    #[test]
    fn a_matching_sample_scores_high_everywhere() {
        let m = prdc(&gaussian(600, 1), &gaussian(600, 2));
        for (name, v) in [
            ("precision", m.precision),
            ("recall", m.recall),
            ("coverage", m.coverage),
        ] {
            assert!(v > 0.8, "{name} {v}");
        }
        assert!((m.density - 1.0).abs() < 0.25, "density {}", m.density);
    }

    #[test]
    fn a_collapsed_set_has_precision_but_no_recall_or_coverage() {
        // Every fake point at a tenth of the spread: the conditional-mean picture.
        let collapsed = gaussian(600, 3) * 0.1;
        let m = prdc(&gaussian(600, 4), &collapsed);
        assert!(m.precision > 0.9, "precision {}", m.precision);
        assert!(m.recall < 0.1, "recall {}", m.recall);
        assert!(m.coverage < 0.3, "coverage {}", m.coverage);
    }
}
