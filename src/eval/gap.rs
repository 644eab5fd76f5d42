//! Modality-gap measures between two sets of embeddings.

use tch::{Kind, Tensor};

fn f64_cpu(x: &Tensor) -> Tensor {
    x.to_kind(Kind::Double).to_device(tch::Device::Cpu)
}

/// Euclidean distance between the two sets' means (Liang et al.'s gap vector length).
pub fn mean_distance(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (f64_cpu(a), f64_cpu(b));
    let d = a.mean_dim(0, false, Kind::Double) - b.mean_dim(0, false, Kind::Double);
    d.norm().double_value(&[])
}

/// Mean cosine of row i of `a` with row i of `b` (each vector with its true partner).
pub fn mean_paired_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (f64_cpu(a), f64_cpu(b));
    let num = (&a * &b).sum_dim_intlist(1, false, Kind::Double);
    let den = a.norm_scalaropt_dim(2.0, [1i64].as_slice(), false)
        * b.norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
    (num / den.clamp_min(1e-12))
        .mean(Kind::Double)
        .double_value(&[])
}

/// Frechet distance between Gaussians fitted to `a` and `b` (the embedding-space analogue of
/// FAD): |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> f64 {
    frechet_with(a, b, sample_covariance)
}

/// The same with Ledoit-Wolf shrinkage covariances: with a few hundred vectors in 512
/// dimensions the sample covariance is rank-deficient and its Frechet distance is dominated by
/// estimation noise; the shrunk estimate is well conditioned and stable across draws.
pub fn frechet_distance_shrunk(a: &Tensor, b: &Tensor) -> f64 {
    frechet_with(a, b, ledoit_wolf)
}

fn frechet_with(a: &Tensor, b: &Tensor, cov: fn(&Tensor) -> Tensor) -> f64 {
    let (a, b) = (f64_cpu(a), f64_cpu(b));
    let (mu_a, mu_b) = (
        a.mean_dim(0, false, Kind::Double),
        b.mean_dim(0, false, Kind::Double),
    );
    let (s_a, s_b) = (cov(&a), cov(&b));
    let mean_term = (&mu_a - &mu_b).square().sum(Kind::Double).double_value(&[]);
    // tr((S_a S_b)^(1/2)) = sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))), a symmetric PSD matrix, so
    // eigh is exact where a general matrix square root would not be.
    let root_a = psd_sqrt(&s_a);
    let m = root_a.matmul(&s_b).matmul(&root_a);
    let m = (&m + m.transpose(0, 1)) / 2.0;
    let (eig, _) = m.linalg_eigh("L");
    let cross = eig
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let tr = s_a.trace().double_value(&[]) + s_b.trace().double_value(&[]);
    (mean_term + tr - 2.0 * cross).max(0.0)
}

fn sample_covariance(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let c = x - x.mean_dim(0, true, Kind::Double);
    c.transpose(0, 1).matmul(&c) / ((n - 1).max(1) as f64)
}

/// Ledoit & Wolf (2004): (1 - d) S + d (tr S / p) I with the shrinkage d that minimises the
/// expected Frobenius error; S is the maximum-likelihood covariance (1/n), as in their paper.
pub fn ledoit_wolf(x: &Tensor) -> Tensor {
    let (n, p) = (x.size()[0] as f64, x.size()[1]);
    let c = x - x.mean_dim(0, true, Kind::Double);
    let s = c.transpose(0, 1).matmul(&c) / n.max(1.0);
    let mu = s.trace().double_value(&[]) / p as f64;
    let eye = Tensor::eye(p, (Kind::Double, x.device()));
    let d2 = (&s - &eye * mu)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    // sum_k |x_k x_k^T - S|_F^2 = sum_k |x_k|^4 - |C C^T|_F^2 / n.
    let gram = c.matmul(&c.transpose(0, 1));
    let norms4 = gram
        .diagonal(0, 0, 1)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let b2_bar = (norms4 - gram.square().sum(Kind::Double).double_value(&[]) / n) / (n * n);
    let shrink = if d2 > 0.0 {
        (b2_bar.min(d2) / d2).clamp(0.0, 1.0)
    } else {
        1.0
    };
    s * (1.0 - shrink) + eye * (shrink * mu)
}

fn psd_sqrt(s: &Tensor) -> Tensor {
    let (eig, vecs) = s.linalg_eigh("L");
    let root = eig.clamp_min(0.0).sqrt();
    (&vecs * root.unsqueeze(0)).matmul(&vecs.transpose(0, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn frechet_of_gaussians_matches_closed_form() {
        tch::manual_seed(11);
        // Two diagonal Gaussians: FD = |mu|^2 + sum (sa - sb)^2 for std devs sa, sb.
        let n = 200_000;
        let a = Tensor::randn([n, 3], (Kind::Double, Device::Cpu))
            * Tensor::from_slice(&[1.0f64, 2.0, 0.5]);
        let b = Tensor::randn([n, 3], (Kind::Double, Device::Cpu))
            * Tensor::from_slice(&[1.0f64, 1.0, 1.0])
            + Tensor::from_slice(&[1.0f64, 0.0, 0.0]);
        let expected = 1.0 + 0.0 + 1.0 + 0.25;
        let fd = frechet_distance(&a, &b);
        assert!((fd - expected).abs() < 0.05, "{fd} vs {expected}");
        assert!(frechet_distance(&a, &a) < 1e-6);
    }

    #[test]
    fn shrinkage_is_stable_where_the_sample_covariance_is_not() {
        // Two draws of 100 from the same isotropic Gaussian in 256 dimensions: the true
        // distance is 0.
        let draw = |seed| {
            tch::manual_seed(seed);
            Tensor::randn([100, 256], (Kind::Double, Device::Cpu))
        };
        let (a, b) = (draw(1), draw(2));
        let plain = frechet_distance(&a, &b);
        let shrunk = frechet_distance_shrunk(&a, &b);
        // The sample estimate is biased far above 0 by the rank-deficient covariances.
        assert!(plain > 50.0, "plain {plain}");
        assert!(shrunk < plain / 4.0, "shrunk {shrunk} vs plain {plain}");
    }

    #[test]
    fn mean_distance_and_cosine() {
        let a = Tensor::from_slice(&[1f32, 0.0, 1.0, 0.0]).view([2, 2]);
        let b = Tensor::from_slice(&[0f32, 1.0, 0.0, 1.0]).view([2, 2]);
        assert!((mean_distance(&a, &b) - 2f64.sqrt()).abs() < 1e-9);
        assert!(mean_paired_cosine(&a, &b).abs() < 1e-9);
        assert!((mean_paired_cosine(&a, &a) - 1.0).abs() < 1e-9);
    }
}
