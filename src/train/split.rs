//! Train/validation split by item identity: every row of an item (all captions of a clip) lands
//! on the same side, so validation never sees a clip the model trained on.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The rows early stopping watches: all of them when `max_rows` is 0 or covers them, else
/// `max_rows` rows drawn by `seed` (sorted). Rows, not whole items: every kind of sound keeps
/// its share, and a query still competes with the other rows of its own item.
pub fn probe_rows(rows: usize, max_rows: usize, seed: u64) -> Vec<i64> {
    let mut all: Vec<i64> = (0..rows as i64).collect();
    if max_rows == 0 || max_rows >= rows {
        return all;
    }
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9));
    let mut picked = all[..max_rows].to_vec();
    picked.sort_unstable();
    picked
}

/// Row indices (train, validation). At least one item goes to validation when `fraction > 0`
/// and there are two or more items.
pub fn split_by_group(groups: &[i64], fraction: f64, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut items: Vec<i64> = groups.to_vec();
    items.sort_unstable();
    items.dedup();
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut n_val = (items.len() as f64 * fraction).round() as usize;
    if fraction > 0.0 && items.len() >= 2 {
        n_val = n_val.clamp(1, items.len() - 1);
    }
    let val: std::collections::HashSet<i64> = items[..n_val].iter().copied().collect();
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (row, g) in groups.iter().enumerate() {
        if val.contains(g) {
            valid.push(row as i64);
        } else {
            train.push(row as i64);
        }
    }
    (train, valid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_rows_are_all_or_a_sorted_seeded_draw() {
        assert_eq!(probe_rows(5, 0, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(probe_rows(5, 9, 1), vec![0, 1, 2, 3, 4]);
        let a = probe_rows(1000, 100, 7);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        assert_eq!(a, probe_rows(1000, 100, 7));
        assert_ne!(a, probe_rows(1000, 100, 8));
        // Spread over the rows, not a prefix.
        assert!(a[99] > 500, "{a:?}");
    }

    use super::*;

    #[test]
    fn groups_never_straddle_the_split() {
        let groups: Vec<i64> = (0..300).map(|r| r / 3).collect();
        let (train, val) = split_by_group(&groups, 0.2, 5);
        assert_eq!(train.len() + val.len(), 300);
        assert_eq!(val.len(), 60);
        let val_groups: std::collections::HashSet<i64> =
            val.iter().map(|&r| groups[r as usize]).collect();
        assert!(train
            .iter()
            .all(|&r| !val_groups.contains(&groups[r as usize])));
        assert_eq!(
            split_by_group(&groups, 0.2, 5),
            (train, val),
            "deterministic by seed"
        );
    }

    #[test]
    fn tiny_sets_keep_both_sides() {
        let (train, val) = split_by_group(&[0, 1], 0.01, 0);
        assert_eq!((train.len(), val.len()), (1, 1));
    }
}
