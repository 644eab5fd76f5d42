//! How DiffGAP turns an item's samples into its answer: the samples, denormalised into the
//! embedding space, summed in sample order starting from zero, then L2-normalised (Bridge and
//! Refine alike). The in-process model sums [rows, dim] tensors; the server's scheduler sums
//! one row's samples on the host as they finish; both go through [`SampleSum`], so the rule
//! (and its float additions) is written once.

use tch::Tensor;

use super::normalize::{l2_normalize, l2_normalized};

/// Rows of samples that can be summed and L2-normalised row-wise: a [rows, dim] tensor, or one
/// row on the host.
pub trait SampleRows: Sized {
    /// `self += other`, element by element.
    fn add(&mut self, other: &Self);
    /// Row-wise L2 normalisation (all-zero rows stay zero).
    fn l2_normalized(self) -> Self;
}

impl SampleRows for Tensor {
    fn add(&mut self, other: &Self) {
        *self += other;
    }

    fn l2_normalized(self) -> Self {
        l2_normalize(&self)
    }
}

impl SampleRows for Vec<f32> {
    fn add(&mut self, other: &Self) {
        for (a, v) in self.iter_mut().zip(other) {
            *a += v;
        }
    }

    fn l2_normalized(self) -> Self {
        l2_normalized(self)
    }
}

/// An item's samples being combined: add them in sample order, then [`SampleSum::finish`].
pub struct SampleSum<R: SampleRows> {
    acc: R,
}

impl<R: SampleRows> SampleSum<R> {
    /// Starts from `zeros` (the shape of one sample, all zero).
    pub fn new(zeros: R) -> Self {
        Self { acc: zeros }
    }

    /// Adds the next sample (a denormalised one, in the embedding space).
    pub fn add(&mut self, sample: &R) {
        self.acc.add(sample);
    }

    /// The combined answer: the sum, L2-normalised.
    pub fn finish(self) -> R {
        self.acc.l2_normalized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_tensor_sums_agree() {
        let samples = [vec![3.0f32, -4.0, 0.5], vec![1.0, 2.0, -0.25]];
        let mut host = SampleSum::new(vec![0.0; 3]);
        let mut tensor = SampleSum::new(Tensor::zeros([1, 3], tch::kind::FLOAT_CPU));
        for s in &samples {
            host.add(s);
            tensor.add(&Tensor::from_slice(s).view([1, 3]));
        }
        let host = host.finish();
        let tensor = Vec::<f32>::try_from(&tensor.finish().view([-1])).expect("to vec");
        for (a, b) in host.iter().zip(&tensor) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        let norm: f32 = host.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    }
}
