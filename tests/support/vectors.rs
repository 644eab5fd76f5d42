//! Deterministic vectors and tensors, and how the tests compare them.

use diffgap::service::proto::Embedding;
use tch::{Device, Kind, Tensor};

use super::models::TINY_DIM;

/// The LCG increment of [`vector`]'s stream.
const INCREMENT: u64 = 1442695040888963407;

/// A deterministic pseudo-random vector of `dim` components in [-0.5, 0.5).
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    vector_in_stream(seed, INCREMENT, dim)
}

/// [`vector`] of the tiny model's dimension ([`TINY_DIM`]).
pub fn tiny_vector(seed: u64) -> Vec<f32> {
    vector(seed, TINY_DIM)
}

/// A vector of another LCG stream than [`vector`]'s: it starts from `seed * a + increment`.
pub fn vector_in_stream(seed: u64, increment: u64, dim: usize) -> Vec<f32> {
    let state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(increment);
    diffgap::loadgen::lcg_vector(state, dim)
}

/// `values` as a request's embedding.
pub fn emb(values: Vec<f32>) -> Option<Embedding> {
    Some(Embedding { values })
}

/// A `[rows, dim]` tensor of standard normal floats on the CPU.
pub fn randn(rows: i64, dim: i64) -> Tensor {
    Tensor::randn([rows, dim], (Kind::Float, Device::Cpu))
}

/// `v` as a one-row tensor, `[1, v.len()]`, on the CPU.
pub fn one_row(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).view([1, v.len() as i64])
}

/// The components of `t`, flattened in order.
pub fn flat(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.view([-1])).expect("to vec")
}

/// The Euclidean norm of `v`, summed in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// The cosine of `a` and `b`, summed in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>()
        / (norm(a) * norm(b))
}

/// `a` and `b` have the same length and agree within `tol` in every component.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "component {i}: {x} vs {y}");
    }
}

/// [`assert_close`], its failures naming `what` was compared.
pub fn assert_close_for(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: the dimension changed");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}, component {i}: {x} vs {y}");
    }
}
