//! Which rows of a paired set stand for distinct items. A modality whose rows are identical
//! within each group (the audio of an AudioCaps clip repeated for its five captions) is
//! deduplicated to one row per item; one that varies (the captions) keeps every row.

use std::collections::HashMap;

use tch::Tensor;

#[derive(Debug, Clone)]
pub struct View {
    /// Rows of the paired set that this view keeps.
    pub rows: Vec<i64>,
    /// Group of each kept row.
    pub groups: Vec<i64>,
    /// For every row of the set, the index of its stand-in in `rows`.
    pub of_row: Vec<i64>,
}

pub fn view(x: &Tensor, groups: &[i64]) -> View {
    let mut first: HashMap<i64, i64> = HashMap::new();
    for (r, g) in groups.iter().enumerate() {
        first.entry(*g).or_insert(r as i64);
    }
    let reps: Vec<i64> = groups.iter().map(|g| first[g]).collect();
    let rep_rows = x.index_select(0, &Tensor::from_slice(&reps));
    let item_level = (x - rep_rows).abs().max().double_value(&[]) < 1e-6;
    if !item_level {
        let rows: Vec<i64> = (0..groups.len() as i64).collect();
        return View {
            of_row: rows.clone(),
            rows,
            groups: groups.to_vec(),
        };
    }
    let mut rows = Vec::new();
    let mut position: HashMap<i64, i64> = HashMap::new();
    for (r, g) in groups.iter().enumerate() {
        position.entry(*g).or_insert_with(|| {
            rows.push(r as i64);
            rows.len() as i64 - 1
        });
    }
    View {
        groups: rows.iter().map(|&r| groups[r as usize]).collect(),
        of_row: groups.iter().map(|g| position[g]).collect(),
        rows,
    }
}

impl View {
    pub fn select(&self, x: &Tensor) -> Tensor {
        x.index_select(0, &Tensor::from_slice(&self.rows).to_device(x.device()))
    }
}
