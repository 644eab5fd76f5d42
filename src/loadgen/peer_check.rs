//! `diffgap loadgen --peer-addr`'s first step: the same seeded Bridge requests to both servers
//! and every output value compared, so that no ratio is printed against a peer that computes
//! something else. A throughput ratio means something only between servers that give the
//! same answers.
//!
//! Twice: each request alone (each server runs it as a batch of its own rows, so both run the
//! same float operations on the same shapes), then all of them at once (each server batches
//! them its own way). On a CPU the second differs by float rounding only: a row's matrix
//! products round differently with the number of rows beside it, in diffgap itself as well.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::load::lcg_vector;
use super::{BridgeItem, BridgeRequest, DiffgapClient};
use crate::service::proto::ModelInfo;

/// What the check found, as printed and written to the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerCheck {
    pub requests: usize,
    /// Output values compared in each of the two passes.
    pub values: usize,
    /// Largest |diffgap - peer| of any output value, each request sent alone.
    pub max_abs_diff_alone: f64,
    /// The same with every request sent at once.
    pub max_abs_diff_batched: f64,
    /// Largest |diffgap batched - diffgap alone|: how far diffgap's own answers move with
    /// what they are batched with, the float rounding the batched pass is judged against.
    pub diffgap_batched_vs_alone: f64,
    pub tolerance: f64,
}

/// An item of `from` -> `to` seeded `seed` (None: the server's default seed), with the
/// load's kind of embedding.
fn item(dim: usize, (from, to): (&str, &str), seed: Option<u64>, vector_seed: u64) -> BridgeItem {
    BridgeItem::new(from, to, lcg_vector(vector_seed | 1, dim), seed)
}

/// The check's requests: one seeded item each for every combination of steps (1, 10, 50),
/// guidance (1, which takes one network pass, and 2.5, which takes two), samples (1 and 3)
/// and direction of the model; then four items in one request with no seed and the model's
/// defaults but for the steps of three of them, so that default seeds and options count too.
pub(super) fn requests(model: &ModelInfo) -> Result<Vec<BridgeRequest>> {
    let dim = model.dim as usize;
    let directions: Vec<(&str, &str)> = model
        .directions
        .iter()
        .map(|d| {
            d.split_once("->")
                .with_context(|| format!("direction '{d}'"))
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for steps in [1u32, 10, 50].map(|s| s.min(model.max_steps.max(1))) {
        for guidance in [1.0f32, 2.5] {
            for samples in [1u32, 3] {
                for &dir in &directions {
                    let seed = 1000 + out.len() as u64;
                    out.push(BridgeRequest::new(vec![BridgeItem {
                        steps: Some(steps),
                        guidance: Some(guidance),
                        samples: Some(samples),
                        ..item(dim, dir, Some(seed), seed)
                    }]));
                }
            }
        }
    }
    if let Some(&dir) = directions.first() {
        let items = [None, Some(1), Some(10), Some(50)]
            .into_iter()
            .enumerate()
            .map(|(i, steps)| BridgeItem {
                steps: steps.map(|s: u32| s.min(model.max_steps.max(1))),
                ..item(dim, dir, None, 77 + i as u64)
            })
            .collect();
        out.push(BridgeRequest::new(items));
    }
    Ok(out)
}

/// One request's output embeddings.
type Answer = Vec<Vec<f32>>;

async fn call(
    mut client: DiffgapClient<Channel>,
    req: BridgeRequest,
    timeout: Duration,
) -> Result<Answer, tonic::Status> {
    let mut req = tonic::Request::new(req);
    req.set_timeout(timeout);
    let r = client.bridge(req).await?.into_inner();
    Ok(r.embeddings.into_iter().map(|e| e.values).collect())
}

/// Every request sent at once to `client`; the answers in request order.
async fn all_at_once(
    client: &DiffgapClient<Channel>,
    reqs: &[BridgeRequest],
    timeout: Duration,
) -> Result<Vec<Answer>> {
    let tasks: Vec<_> = reqs
        .iter()
        .map(|r| tokio::spawn(call(client.clone(), r.clone(), timeout)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        let answer = t.await.context("a check request's task")?;
        out.push(answer.with_context(|| format!("check request {i}"))?);
    }
    Ok(out)
}

/// The largest |a - b| over every value of every answer, and the values compared; an error
/// when the answers do not have the same shape.
fn max_abs_diff(a: &[Answer], b: &[Answer]) -> Result<(f64, usize)> {
    let (mut worst, mut values) = (0f64, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.len() != y.len() {
            bail!(
                "request {i}: diffgap answered {} items, the peer {}",
                x.len(),
                y.len()
            );
        }
        for (j, (u, v)) in x.iter().zip(y).enumerate() {
            if u.len() != v.len() {
                bail!(
                    "request {i} item {j}: {} values against {}",
                    u.len(),
                    v.len()
                );
            }
            for (p, q) in u.iter().zip(v) {
                // NaN compares as the largest difference, so that it fails the check.
                let d = f64::from((p - q).abs());
                worst = if d.is_nan() {
                    f64::INFINITY
                } else {
                    worst.max(d)
                };
            }
            values += u.len();
        }
    }
    Ok((worst, values))
}

/// Runs the check against both servers and prints it; an error if a difference exceeds
/// `tolerance`.
pub(super) async fn check(
    diffgap: &DiffgapClient<Channel>,
    peer: &DiffgapClient<Channel>,
    model: &ModelInfo,
    tolerance: f64,
    timeout: Duration,
) -> Result<PeerCheck> {
    let reqs = requests(model)?;
    let (mut alone_d, mut alone_p) = (Vec::new(), Vec::new());
    for (i, r) in reqs.iter().enumerate() {
        let d = call(diffgap.clone(), r.clone(), timeout).await;
        alone_d.push(d.with_context(|| format!("check request {i} to diffgap"))?);
        let p = call(peer.clone(), r.clone(), timeout).await;
        alone_p.push(p.with_context(|| format!("check request {i} to the peer"))?);
    }
    let (alone, values) = max_abs_diff(&alone_d, &alone_p)?;
    let batched_d = all_at_once(diffgap, &reqs, timeout).await?;
    let batched_p = all_at_once(peer, &reqs, timeout).await?;
    let (batched, _) = max_abs_diff(&batched_d, &batched_p)?;
    let (own, _) = max_abs_diff(&batched_d, &alone_d)?;
    println!(
        "output check: {} requests, {values} values each pass; largest |diffgap - peer| {alone:.3e} each request alone, {batched:.3e} all at once (diffgap's own batched - alone: {own:.3e}; tolerance {tolerance:.1e})",
        reqs.len()
    );
    if !(alone <= tolerance && batched <= tolerance) {
        bail!("the peer's outputs differ from diffgap's by more than {tolerance:e}: {alone:e} alone, {batched:e} batched");
    }
    Ok(PeerCheck {
        requests: reqs.len(),
        values,
        max_abs_diff_alone: alone,
        max_abs_diff_batched: batched,
        diffgap_batched_vs_alone: own,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_and_shapes() {
        let a = vec![vec![vec![0.5f32, -0.25], vec![1.0, 0.0]]];
        let b = vec![vec![vec![0.5f32, -0.25 + 1e-7], vec![1.0, 2e-7]]];
        let (d, n) = max_abs_diff(&a, &b).expect("same shape");
        assert_eq!(n, 4);
        assert!((d - 2e-7).abs() < 1e-9, "{d}");
        let short = vec![vec![vec![0.5f32, -0.25]]];
        assert!(max_abs_diff(&a, &short).is_err());
        let nan = vec![vec![vec![f32::NAN, -0.25], vec![1.0, 0.0]]];
        assert_eq!(max_abs_diff(&a, &nan).expect("same shape").0, f64::INFINITY);
    }

    #[test]
    fn every_combination_and_the_defaults() {
        let model = ModelInfo {
            dim: 8,
            max_steps: 1000,
            directions: vec!["text->audio".into(), "audio->text".into()],
            ..ModelInfo::default()
        };
        let reqs = requests(&model).expect("directions parse");
        assert_eq!(reqs.len(), 3 * 2 * 2 * 2 + 1);
        let last = reqs.last().expect("the default request");
        assert_eq!(last.items.len(), 4);
        assert!(last.items.iter().all(|i| i.seed.is_none()));
        assert_eq!(last.items[0].steps, None);
        assert!(reqs.iter().all(|r| r
            .items
            .iter()
            .all(|i| i.embedding.as_ref().is_some_and(|e| e.values.len() == 8))));
    }
}
