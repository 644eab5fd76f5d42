//! A catalog's modality-gap picture, for the playground: its entries and their reverse-bridged
//! embeddings (each entry bridged into a query modality: what the reverse score compares a
//! query with) in the two principal axes of all of them together, as `diffgap plot-gap` draws
//! its panels ([`crate::eval::plot`]). The frame itself (mean and axes) comes with the points, so
//! that a client projects its own query, and its bridged query, into the same picture.
//!
//! Plain CPU arithmetic on the catalog's copy in memory (no model, no worker): at most
//! [`MAX_POINTS`] entries, evenly spaced, are drawn and define the frame.

use std::collections::BTreeMap;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::eval::{gap, plot};
use crate::service::error::ServiceError;
use crate::service::request::catalog::CatalogData;

/// The most entries drawn (and their reverse-bridged embeddings as many again).
pub const MAX_POINTS: usize = 1000;

/// The picture of one catalog.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GapView {
    pub catalog: String,
    pub model: String,
    /// The entries' modality.
    pub modality: String,
    /// Entries in the catalog; `ids` are those drawn.
    pub entries: usize,
    pub ids: Vec<String>,
    /// Each drawn entry in the frame: (axis 1, axis 2).
    pub points: Vec<[f32; 2]>,
    /// Per query modality: the same entries reverse-bridged into it, in the same frame.
    pub reverse: BTreeMap<String, Vec<[f32; 2]>>,
    /// Per query modality: the distance between the means of the entries and of their
    /// reverse-bridged embeddings, in the full space (the gap vector's length, as
    /// `diffgap eval` measures it).
    pub mean_distance: BTreeMap<String, f32>,
    /// The frame: the mean of every drawn vector, and the two axes (unit vectors).
    pub mean: Vec<f32>,
    pub axes: [Vec<f32>; 2],
    /// Share of the drawn vectors' variance that the two axes show.
    pub explained: f32,
    /// Whether the entries are files that the audio route serves.
    pub files: bool,
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("the gap picture: {e}"))
}

/// Rows `rows` of the row-major [_, dim] `flat`, as a tensor [rows, dim].
fn rows_of(flat: &[f32], rows: &[usize], dim: usize) -> Tensor {
    let mut v = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        v.extend_from_slice(&flat[r * dim..(r + 1) * dim]);
    }
    Tensor::from_slice(&v).view([rows.len() as i64, dim as i64])
}

fn floats(t: &Tensor) -> Result<Vec<f32>, ServiceError> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).map_err(internal)
}

fn pairs(p: Vec<(f64, f64)>) -> Vec<[f32; 2]> {
    p.into_iter().map(|(x, y)| [x as f32, y as f32]).collect()
}

/// `n` rows, or [`MAX_POINTS`] evenly spaced ones.
fn drawn_rows(n: usize) -> Vec<usize> {
    let k = n.min(MAX_POINTS);
    (0..k).map(|i| i * n / k).collect()
}

/// The picture of `c` (a blocking computation: call it off the async threads).
pub fn gap_view(c: &CatalogData) -> Result<GapView, ServiceError> {
    let dim = c.meta.dim;
    let rows = drawn_rows(c.entries());
    if rows.is_empty() || dim == 0 {
        return Err(internal("the catalog is empty"));
    }
    let entries = rows_of(&c.embeddings, &rows, dim);
    let reverse: Vec<(&String, Tensor)> = c
        .reverse
        .iter()
        .map(|(m, flat)| (m, rows_of(flat, &rows, dim)))
        .collect();
    let mut all = vec![entries.shallow_clone()];
    all.extend(reverse.iter().map(|(_, t)| t.shallow_clone()));
    let all = Tensor::cat(&all, 0);
    let (mean, axes) = plot::principal_axes(&all);
    let centred = all.to_kind(Kind::Double) - &mean;
    let total = centred.square().sum(Kind::Double).double_value(&[]);
    let shown = centred
        .matmul(&axes)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let axes_t = axes.tr();
    Ok(GapView {
        catalog: c.meta.name.clone(),
        model: c.meta.model.clone(),
        modality: c.meta.modality.clone(),
        entries: c.entries(),
        ids: rows.iter().map(|&r| c.meta.ids[r].clone()).collect(),
        points: pairs(plot::project(&entries, &mean, &axes)),
        mean_distance: reverse
            .iter()
            .map(|(m, t)| ((*m).clone(), gap::mean_distance(&entries, t) as f32))
            .collect(),
        reverse: reverse
            .iter()
            .map(|(m, t)| ((*m).clone(), pairs(plot::project(t, &mean, &axes))))
            .collect(),
        mean: floats(&mean)?,
        axes: [floats(&axes_t.get(0))?, floats(&axes_t.get(1))?],
        explained: if total > 0.0 {
            (shown / total) as f32
        } else {
            0.0
        },
        files: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::types::CatalogMeta;

    /// Entries near +x, their reverse-bridged embeddings near -x: the first axis separates them.
    #[test]
    fn the_first_axis_shows_the_gap_between_entries_and_reverse_bridged_ones() {
        let n = 6;
        let dim = 4;
        let row = |sign: f32, i: usize| {
            let w = 0.1 * i as f32;
            vec![sign, w, -w, 0.05]
        };
        let embeddings: Vec<f32> = (0..n).flat_map(|i| row(1.0, i)).collect();
        let reversed: Vec<f32> = (0..n).flat_map(|i| row(-1.0, i)).collect();
        let c = CatalogData {
            meta: CatalogMeta {
                format: 1,
                name: "c".into(),
                model: "m".into(),
                model_fingerprint: "sha256:0".into(),
                modality: "audio".into(),
                dim,
                ids: (0..n).map(|i| i.to_string()).collect(),
                seed: 0,
                reverse: BTreeMap::new(),
                source: String::new(),
                source_fingerprint: String::new(),
                tensors_sha256: String::new(),
            },
            embeddings,
            reverse: BTreeMap::from([("text".to_owned(), reversed)]),
        };
        let v = gap_view(&c).expect("a picture");
        assert_eq!(
            (v.ids.len(), v.points.len(), v.reverse["text"].len()),
            (n, n, n)
        );
        // The entries and the reverse ones sit on either side of the first axis, 2 apart.
        for (a, b) in v.points.iter().zip(&v.reverse["text"]) {
            assert!((a[0] - b[0]).abs() > 1.99, "{a:?} {b:?}");
        }
        assert!((v.mean_distance["text"] - 2.0).abs() < 1e-5);
        assert!(
            v.explained > 0.99 && v.explained <= 1.0 + 1e-6,
            "{}",
            v.explained
        );
        // The frame projects a vector as the points were projected.
        let dot = |x: &[f32], a: &[f32]| -> f32 {
            x.iter()
                .zip(&v.mean)
                .zip(a)
                .map(|((x, m), a)| (x - m) * a)
                .sum()
        };
        let first = row(1.0, 0);
        assert!((dot(&first, &v.axes[0]) - v.points[0][0]).abs() < 1e-5);
        assert!((dot(&first, &v.axes[1]) - v.points[0][1]).abs() < 1e-5);
    }

    #[test]
    fn large_catalogs_are_drawn_evenly_spaced() {
        let r = drawn_rows(10 * MAX_POINTS);
        assert_eq!(r.len(), MAX_POINTS);
        assert_eq!(
            (r[0], r[1], r[MAX_POINTS - 1]),
            (0, 10, 10 * MAX_POINTS - 10)
        );
        assert_eq!(drawn_rows(3), vec![0, 1, 2]);
    }
}
