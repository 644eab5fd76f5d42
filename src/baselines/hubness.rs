//! Hubness correction by the inverted softmax (Smith et al. 2017; QB-Norm's form, Bogolin et al.
//! 2022): a candidate's score for a query is its softmax over a bank of typical queries, taken
//! across the bank. A "hub" candidate close to many queries is divided by a large sum and loses
//! its unearned lead. The bank is drawn from training rows, so nothing of the test set is used.

use tch::Tensor;

use crate::model::card::{FusionWeights, HubFusion};

/// Temperatures tried on validation (inverse: scores are multiplied by beta).
pub const BETA_GRID: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0];

/// `scores` [Q, C] of the queries, `bank_scores` [N, C] of the bank's queries under the same
/// score: beta s(q, c) - logsumexp_b beta s(b, c). Monotone in s for each candidate, so only
/// the order across candidates changes.
pub fn inverted_softmax(scores: &Tensor, bank_scores: &Tensor, beta: f64) -> Tensor {
    scores * beta - bank_norm(bank_scores, beta)
}

/// The candidates' term of [`inverted_softmax`], [1, C]: logsumexp over the bank of beta s(b, c).
/// It depends on the candidates only, so a fixed candidate set (a catalog) computes it once.
pub fn bank_norm(bank_scores: &Tensor, beta: f64) -> Tensor {
    (bank_scores * beta).logsumexp([0i64].as_slice(), true)
}

/// The three score matrices of one query direction.
pub struct ModeScores {
    pub contrastive: Tensor,
    pub bridged: Tensor,
    pub reverse: Tensor,
}

impl ModeScores {
    pub fn fuse(&self, w: &FusionWeights) -> Tensor {
        &self.contrastive * w.contrastive + &self.bridged * w.bridged + &self.reverse * w.reverse
    }
}

/// The hubness-corrected fused score; `bank` holds the same three scores for the bank queries.
pub fn hub_fused(scores: &ModeScores, bank: &ModeScores, h: &HubFusion) -> Tensor {
    inverted_softmax(&scores.fuse(&h.weights), &bank.fuse(&h.weights), h.beta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_hub_loses_its_lead() {
        // Candidate 0 is close to every bank query (a hub); candidate 1 only to this query.
        let scores = Tensor::from_slice(&[0.80f32, 0.78]).view([1, 2]);
        let bank = Tensor::from_slice(&[0.8f32, 0.1, 0.8, 0.0, 0.7, 0.1]).view([3, 2]);
        let raw_best = scores.argmax(1, false).int64_value(&[0]);
        let corrected = inverted_softmax(&scores, &bank, 20.0);
        assert_eq!(raw_best, 0);
        assert_eq!(corrected.argmax(1, false).int64_value(&[0]), 1);
    }

    #[test]
    fn equal_banks_leave_the_order_alone() {
        let scores = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let bank = Tensor::ones([5, 6], (Kind::Float, Device::Cpu));
        let c = inverted_softmax(&scores, &bank, 10.0);
        assert!(c.argsort(1, true).equal(&scores.argsort(1, true)));
    }
}
