//! Retrieval metrics over a score matrix, with several relevant candidates per query allowed
//! (a text query is right on any row of its item's group).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RetrievalMetrics {
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    #[serde(rename = "map10")]
    pub map10: f64,
    /// Median over queries of the 1-based rank of the first relevant candidate.
    pub median_rank: f64,
    pub mean_rank: f64,
    pub queries: usize,
}

impl RetrievalMetrics {
    /// The objective fusion weights are fitted on.
    pub fn objective(&self) -> f64 {
        self.r1 + self.map10
    }
}

/// One query's outcome: the 1-based rank of its first relevant candidate (candidates + 1 when
/// none is relevant) and its average precision over the top 10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryOutcome {
    pub first_rank: usize,
    pub ap10: f64,
}

impl QueryOutcome {
    /// This query's share of [`RetrievalMetrics::objective`].
    pub fn objective(&self) -> f64 {
        (self.first_rank <= 1) as u8 as f64 + self.ap10
    }
}

/// `scores` [Q, C]: higher = better. A candidate is relevant when its group equals the query's.
pub fn per_query(scores: &Tensor, query_groups: &[i64], cand_groups: &[i64]) -> Vec<QueryOutcome> {
    let (q, c) = (scores.size()[0] as usize, scores.size()[1] as usize);
    assert_eq!(q, query_groups.len(), "query groups. This is a bug.");
    assert_eq!(c, cand_groups.len(), "candidate groups. This is a bug.");
    let order = scores
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .argsort(1, true);
    let order = Vec::<i64>::try_from(order.flatten(0, -1)).unwrap_or_default();
    query_groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let relevant_total = cand_groups.iter().filter(|x| *x == g).count();
            let row = &order[i * c..(i + 1) * c];
            let mut first = None;
            let (mut hits, mut ap) = (0usize, 0.0);
            for (rank, &j) in row.iter().enumerate() {
                if cand_groups[j as usize] == *g {
                    first.get_or_insert(rank + 1);
                    if rank < 10 {
                        hits += 1;
                        ap += hits as f64 / (rank + 1) as f64;
                    }
                }
                if rank >= 10 && first.is_some() {
                    break;
                }
            }
            QueryOutcome {
                // A query with no relevant candidate ranks last (a miss, not skipped).
                first_rank: first.unwrap_or(c + 1),
                ap10: if relevant_total > 0 {
                    ap / relevant_total.min(10) as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// `scores` [Q, C]: higher = better. A candidate is relevant when its group equals the query's.
pub fn evaluate(scores: &Tensor, query_groups: &[i64], cand_groups: &[i64]) -> RetrievalMetrics {
    summarise(&per_query(scores, query_groups, cand_groups))
}

pub fn summarise(outcomes: &[QueryOutcome]) -> RetrievalMetrics {
    let n = outcomes.len().max(1) as f64;
    let share = |k: usize| outcomes.iter().filter(|o| o.first_rank <= k).count() as f64 / n;
    let mut ranks: Vec<f64> = outcomes.iter().map(|o| o.first_rank as f64).collect();
    RetrievalMetrics {
        r1: share(1),
        r5: share(5),
        r10: share(10),
        map10: outcomes.iter().map(|o| o.ap10).sum::<f64>() / n,
        mean_rank: ranks.iter().sum::<f64>() / n,
        median_rank: median(&mut ranks),
        queries: outcomes.len(),
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
    }

    #[test]
    fn perfect_and_reversed_rankings() {
        let s = t(&[&[0.9, 0.1, 0.0], &[0.1, 0.9, 0.0], &[0.0, 0.1, 0.9]]);
        let m = evaluate(&s, &[0, 1, 2], &[0, 1, 2]);
        assert_eq!((m.r1, m.r5, m.map10, m.median_rank), (1.0, 1.0, 1.0, 1.0));
        let m = evaluate(&(-s), &[0, 1, 2], &[0, 1, 2]);
        assert_eq!(m.r1, 0.0);
        assert_eq!(m.median_rank, 3.0);
        assert!((m.map10 - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn several_relevant_candidates_per_query() {
        // Query of group 7; candidates ranked: g7, g1, g7 -> AP@10 = (1/1 + 2/3) / 2.
        let s = t(&[&[0.9, 0.8, 0.7]]);
        let m = evaluate(&s, &[7], &[7, 1, 7]);
        assert_eq!(m.r1, 1.0);
        assert!(
            (m.map10 - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12,
            "{}",
            m.map10
        );
        // First relevant at rank 2.
        let m = evaluate(&s, &[1], &[7, 1, 7]);
        assert_eq!((m.r1, m.r5, m.median_rank), (0.0, 1.0, 2.0));
        assert!((m.map10 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
