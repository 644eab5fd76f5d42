//! Which rows of a paired set stand for distinct items. Within each group, a row equal to an
//! earlier row of the same group (the audio of an AudioCaps clip repeated for its five captions;
//! one caption shared by every rendering of a sound) is the same query or candidate again, so it
//! is kept once; rows that differ (the captions, the renderings) are all kept.

use std::collections::HashMap;

use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct View {
    /// Rows of the paired set that this view keeps.
    pub rows: Vec<i64>,
    /// Group of each kept row.
    pub groups: Vec<i64>,
    /// For every row of the set, the index of its stand-in in `rows`.
    pub of_row: Vec<i64>,
}

/// `x` [rows, dim] on the CPU; `groups` one per row.
pub fn view(x: &Tensor, groups: &[i64]) -> View {
    let dim = x.size().get(1).copied().unwrap_or(0).max(0) as usize;
    let Ok(flat) = Vec::<f32>::try_from(x.to_kind(Kind::Float).contiguous().view([-1])) else {
        // Not readable as floats: every row stands for itself.
        let all: Vec<i64> = (0..groups.len() as i64).collect();
        return View {
            of_row: all.clone(),
            rows: all,
            groups: groups.to_vec(),
        };
    };
    let mut kept: HashMap<(i64, Vec<u32>), i64> = HashMap::new();
    let (mut rows, mut kept_groups, mut of_row) = (Vec::new(), Vec::new(), Vec::new());
    for (r, &g) in groups.iter().enumerate() {
        let bits: Vec<u32> = flat
            .get(r * dim..(r + 1) * dim)
            .unwrap_or_default()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let at = *kept.entry((g, bits)).or_insert_with(|| {
            rows.push(r as i64);
            kept_groups.push(g);
            rows.len() as i64 - 1
        });
        of_row.push(at);
    }
    View {
        rows,
        groups: kept_groups,
        of_row,
    }
}

impl View {
    pub fn select(&self, x: &Tensor) -> Tensor {
        x.index_select(0, &Tensor::from_slice(&self.rows).to_device(x.device()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = values.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([values.len() as i64, 2])
    }

    #[test]
    fn repeated_rows_of_a_group_are_kept_once() {
        // Group 0: one row three times; group 1: two different rows, one of them twice; group 2
        // repeats group 0's row, which is another item and is kept.
        let x = rows(&[
            [1., 0.],
            [1., 0.],
            [0., 1.],
            [0., 1.],
            [1., 0.],
            [0.6, 0.8],
            [1., 0.],
        ]);
        let v = view(&x, &[0, 0, 1, 1, 0, 1, 2]);
        assert_eq!(v.rows, [0, 2, 5, 6]);
        assert_eq!(v.groups, [0, 1, 1, 2]);
        assert_eq!(v.of_row, [0, 0, 1, 1, 0, 2, 3]);
    }

    #[test]
    fn distinct_rows_are_all_kept() {
        let x = rows(&[[1., 0.], [0., 1.], [0.6, 0.8]]);
        let v = view(&x, &[0, 0, 0]);
        assert_eq!(v.rows, [0, 1, 2]);
        assert_eq!(v.of_row, [0, 1, 2]);
    }
}
