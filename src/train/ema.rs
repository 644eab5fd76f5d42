//! Exponential moving average of the weights: the served model, smoother than the last step.

use tch::nn::VarStore;

pub struct Ema {
    decay: f64,
    updates: u64,
}

impl Ema {
    pub fn new(decay: f64) -> Self {
        Self { decay, updates: 0 }
    }

    /// ema <- d ema + (1 - d) params, with d warmed up as (1 + n) / (10 + n) so that short runs
    /// are not dominated by the random initialisation.
    pub fn update(&mut self, ema: &VarStore, params: &VarStore) {
        self.updates += 1;
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        let _g = tch::no_grad_guard();
        let src = params.variables();
        for (name, mut dst) in ema.variables() {
            if let Some(p) = src.get(&name) {
                dst.copy_(&(&dst * d + p * (1.0 - d)));
            }
        }
    }
}
