//! The in-process timing that `diffgap bench`, `diffgap loadgen`'s in-process comparison and
//! `benches/model_worker.rs` share: one bridge call of a batch, timed as the median of
//! repeated calls after a warm-up.

use std::time::Instant;

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::diffusion::sampler::SampleOptions;
use crate::eval::retrieval::median;
use crate::model::DiffgapModel;

/// Median seconds of `reps` timed calls of `f` (at least one), with no warm-up.
pub fn median_seconds<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut times))
}

/// One untimed call of `f` (the warm-up: allocator and JIT caches), then [`median_seconds`].
pub fn time_median<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    median_seconds(reps, f)
}

/// One bridge call of a batch: its inputs, seeds and options, ready to run again and again.
pub struct BridgeCall<'a> {
    pub model: &'a DiffgapModel,
    /// The conditions, [batch, dim].
    pub x: Tensor,
    pub from: &'a str,
    pub to: &'a str,
    pub seeds: Vec<u64>,
    pub opts: SampleOptions,
}

impl BridgeCall<'_> {
    /// Bridges the batch and reads a number back from the result, so that the call has
    /// finished on an asynchronous device too when this returns.
    pub fn run(&self) -> Result<()> {
        let y = self
            .model
            .bridge(&self.x, self.from, self.to, &self.seeds, self.opts)?;
        let _ = y.sum(Kind::Float).double_value(&[]);
        Ok(())
    }
}

/// Waits for the work queued on `device` (a no-op on the CPU).
pub fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_is_not_timed_and_errors_stop_the_timing() {
        let mut calls = 0;
        let secs = time_median(3, || {
            calls += 1;
            Ok(())
        })
        .expect("timed");
        assert_eq!(calls, 4);
        assert!(secs >= 0.0);
        let mut calls = 0;
        let failed = median_seconds(5, || {
            calls += 1;
            anyhow::ensure!(calls < 2, "second call fails");
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(calls, 2);
        // At least one timed call, whatever `reps` says.
        let mut calls = 0;
        median_seconds(0, || {
            calls += 1;
            Ok(())
        })
        .expect("timed");
        assert_eq!(calls, 1);
    }
}
