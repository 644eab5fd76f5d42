//! Linear maps from one modality's region to another's, fitted on paired training rows: ridge
//! regression (the conditional mean under a linear model, lambda by k-fold cross-validation over
//! items) and orthogonal Procrustes (a rotation, which keeps the spread of the source). Both act
//! on centred embeddings and add the target mean back, so a mapped vector lives where real
//! targets live and can be compared with them as a generated set.

use tch::{Kind, Tensor};

use crate::diffusion::normalize::l2_normalize;

/// `x -> l2norm((x - mean_in) W + mean_out)`.
pub struct LinearMap {
    pub w: Tensor,
    pub mean_in: Tensor,
    pub mean_out: Tensor,
}

impl LinearMap {
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let x = x.to_kind(Kind::Float).to_device(self.w.device());
        l2_normalize(&((x - &self.mean_in).matmul(&self.w) + &self.mean_out))
    }

    /// The tensors to store, under `prefix`.
    pub fn named(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{prefix}.w"), self.w.shallow_clone()),
            (format!("{prefix}.mean_in"), self.mean_in.shallow_clone()),
            (format!("{prefix}.mean_out"), self.mean_out.shallow_clone()),
        ]
    }
}

/// The ridge fit with its chosen penalty and the cross-validated error that chose it.
pub struct RidgeFit {
    pub map: LinearMap,
    pub lambda: f64,
    pub cv_mse: f64,
}

/// Penalties tried, relative to the mean eigenvalue of the centred Gram matrix (so the grid
/// does not depend on the number of rows or the embeddings' scale).
const LAMBDA_GRID: [f64; 9] = [1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0];

fn centred(x: &Tensor) -> (Tensor, Tensor) {
    let x = x.to_kind(Kind::Double);
    let mean = x.mean_dim(0, true, Kind::Double);
    (&x - &mean, mean)
}

/// Ridge solution for every lambda from one eigendecomposition: W = V (E + l)^-1 V^T X^T Y.
fn ridge_solutions(x: &Tensor, y: &Tensor, lambdas: &[f64]) -> Vec<Tensor> {
    let (e, v) = x.tr().matmul(x).linalg_eigh("L");
    let xty = v.tr().matmul(&x.tr().matmul(y));
    lambdas
        .iter()
        .map(|&l| v.matmul(&(&xty / (&e + l).unsqueeze(1))))
        .collect()
}

/// Fits `source -> target` by ridge regression; lambda minimises the held-out squared error of
/// `folds`-fold cross-validation over items (`groups`), so no item is on both sides of a fold.
pub fn fit_ridge(source: &Tensor, target: &Tensor, groups: &[i64], folds: usize) -> RidgeFit {
    let (x, mean_in) = centred(source);
    let (y, mean_out) = centred(target);
    let scale = x.square().sum(Kind::Double).double_value(&[]) / x.size()[1].max(1) as f64;
    let lambdas: Vec<f64> = LAMBDA_GRID.iter().map(|l| l * scale.max(1e-12)).collect();
    let fold_of = fold_assignment(groups, folds);
    let mut errors = vec![0.0; lambdas.len()];
    for f in 0..folds {
        let (fit_rows, held_rows) = rows_of_fold(&fold_of, f, x.device());
        if fit_rows.size()[0] == 0 || held_rows.size()[0] == 0 {
            continue;
        }
        let (xf, yf) = (x.index_select(0, &fit_rows), y.index_select(0, &fit_rows));
        let (xh, yh) = (x.index_select(0, &held_rows), y.index_select(0, &held_rows));
        // The fold's own centring, as the final fit centres on all of its rows.
        let (mx, my) = (
            xf.mean_dim(0, true, Kind::Double),
            yf.mean_dim(0, true, Kind::Double),
        );
        let ws = ridge_solutions(&(&xf - &mx), &(&yf - &my), &lambdas);
        for (err, w) in errors.iter_mut().zip(&ws) {
            let pred = (&xh - &mx).matmul(w) + &my;
            *err += (pred - &yh).square().sum(Kind::Double).double_value(&[]);
        }
    }
    let best = (0..lambdas.len())
        .min_by(|&a, &b| errors[a].total_cmp(&errors[b]))
        .unwrap_or(0);
    let w = ridge_solutions(&x, &y, &lambdas[best..=best])
        .pop()
        .expect("one lambda gives one solution. This is a bug.");
    RidgeFit {
        map: LinearMap {
            w: w.to_kind(Kind::Float),
            mean_in: mean_in.to_kind(Kind::Float),
            mean_out: mean_out.to_kind(Kind::Float),
        },
        lambda: lambdas[best],
        cv_mse: errors[best] / x.size()[0].max(1) as f64,
    }
}

/// Orthogonal Procrustes on centred rows: the rotation R maximising tr(R^T X^T Y), the polar
/// factor of M = X^T Y, computed as M (M^T M)^(-1/2) through a symmetric eigendecomposition.
pub fn fit_procrustes(source: &Tensor, target: &Tensor) -> LinearMap {
    let (x, mean_in) = centred(source);
    let (y, mean_out) = centred(target);
    let m = x.tr().matmul(&y);
    let (e, v) = m.tr().matmul(&m).linalg_eigh("L");
    let floor = e.max().double_value(&[]).max(1e-30) * 1e-12;
    let inv_root = (&v * e.clamp_min(floor).rsqrt().unsqueeze(0)).matmul(&v.tr());
    LinearMap {
        w: m.matmul(&inv_root).to_kind(Kind::Float),
        mean_in: mean_in.to_kind(Kind::Float),
        mean_out: mean_out.to_kind(Kind::Float),
    }
}

/// Fold of every row: items are dealt round-robin in order of first appearance.
pub fn fold_assignment(groups: &[i64], folds: usize) -> Vec<usize> {
    let mut fold_of_item = std::collections::HashMap::new();
    groups
        .iter()
        .map(|g| {
            let next = fold_of_item.len() % folds.max(1);
            *fold_of_item.entry(*g).or_insert(next)
        })
        .collect()
}

fn rows_of_fold(fold_of: &[usize], f: usize, device: tch::Device) -> (Tensor, Tensor) {
    let (mut fit, mut held) = (Vec::new(), Vec::new());
    for (r, &k) in fold_of.iter().enumerate() {
        let side = if k == f { &mut held } else { &mut fit };
        side.push(r as i64);
    }
    (
        Tensor::from_slice(&fit).to_device(device),
        Tensor::from_slice(&held).to_device(device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn random(rows: i64, cols: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([rows, cols], (Kind::Double, Device::Cpu))
    }

    #[test]
    fn ridge_recovers_a_linear_relation_and_prefers_a_small_penalty_without_noise() {
        let x = random(400, 6, 1);
        let w = random(6, 6, 2);
        let y = x.matmul(&w) + 3.0;
        let groups: Vec<i64> = (0..400).collect();
        let fit = fit_ridge(&x, &y, &groups, 5);
        assert!(fit.lambda <= 1e-2 * 400.0, "lambda {}", fit.lambda);
        let pred =
            (x.to_kind(Kind::Float) - &fit.map.mean_in).matmul(&fit.map.w) + &fit.map.mean_out;
        let err = (pred.to_kind(Kind::Double) - &y)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-2, "max error {err}");
    }

    #[test]
    fn ridge_shrinks_when_the_target_is_noise() {
        let x = random(300, 8, 3);
        let y = random(300, 8, 4);
        let groups: Vec<i64> = (0..300).collect();
        let fit = fit_ridge(&x, &y, &groups, 5);
        let big = fit.map.w.abs().max().double_value(&[]);
        // Unrelated data: the largest penalty wins and the map is close to zero.
        assert!(big < 0.1, "largest coefficient {big}");
    }

    #[test]
    fn procrustes_recovers_a_rotation() {
        let x = random(500, 5, 5);
        let (q, _) = Tensor::linalg_qr(&random(5, 5, 6), "reduced");
        let y = x.matmul(&q) + 1.0;
        let map = fit_procrustes(&x, &y);
        let err = (map.w.to_kind(Kind::Double) - &q)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-4, "rotation error {err}");
        let eye = map.w.tr().matmul(&map.w);
        let ortho = (eye - Tensor::eye(5, (Kind::Float, Device::Cpu)))
            .abs()
            .max()
            .double_value(&[]);
        assert!(ortho < 1e-4, "not orthogonal: {ortho}");
    }

    #[test]
    fn folds_keep_items_whole() {
        let groups = [7, 7, 3, 9, 3, 1];
        let f = fold_assignment(&groups, 2);
        assert_eq!(f[0], f[1]);
        assert_eq!(f[2], f[4]);
        assert_eq!(f, vec![0, 0, 1, 0, 1, 1]);
    }
}
