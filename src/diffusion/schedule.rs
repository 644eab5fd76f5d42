//! Noise schedules of the forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
//!
//! Kept in plain f64 so the closed forms can be unit-tested without libtorch; the sampler and
//! the trainer turn the few values they need into tensors.

use serde::{Deserialize, Serialize};

/// How beta_t grows with t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Nichol & Dhariwal (2021): abar follows cos^2, so the signal is destroyed evenly over t.
    Cosine,
    /// Ho et al. (2020): betas linear from 1e-4 to 0.02 (scaled for T != 1000).
    Linear,
}

/// A discrete schedule with `T` steps, indexed t = 0..T-1 (t = 0 is the least noisy).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: ScheduleKind,
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
}

/// Offset s of the cosine schedule; keeps beta_0 from being vanishingly small.
const COSINE_OFFSET: f64 = 0.008;
/// Upper clip of beta, as in the improved-DDPM paper, to avoid a singular last step.
const MAX_BETA: f64 = 0.999;

impl Schedule {
    pub fn new(kind: ScheduleKind, steps: usize) -> Self {
        assert!(
            steps >= 1,
            "a schedule needs at least one step. This is a bug."
        );
        let betas: Vec<f64> = match kind {
            ScheduleKind::Cosine => (0..steps)
                .map(|t| {
                    let a0 = cosine_alpha_bar(t as f64 / steps as f64);
                    let a1 = cosine_alpha_bar((t + 1) as f64 / steps as f64);
                    (1.0 - a1 / a0).min(MAX_BETA)
                })
                .collect(),
            ScheduleKind::Linear => {
                let scale = 1000.0 / steps as f64;
                let (lo, hi) = (scale * 1e-4, scale * 0.02);
                (0..steps)
                    .map(|t| {
                        if steps == 1 {
                            hi
                        } else {
                            lo + (hi - lo) * t as f64 / (steps - 1) as f64
                        }
                    })
                    .collect()
            }
        };
        let mut alpha_bars = Vec::with_capacity(steps);
        let mut prod = 1.0;
        for b in &betas {
            prod *= 1.0 - b;
            alpha_bars.push(prod);
        }
        Self {
            kind,
            betas,
            alpha_bars,
        }
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// abar_t = prod_{s <= t} (1 - beta_s).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bars[t]
    }

    /// abar before step t; 1 for t = 0 (the clean data).
    pub fn alpha_bar_prev(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alpha_bars[t - 1]
        }
    }

    /// Signal-to-noise ratio abar / (1 - abar).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alpha_bar(t);
        a / (1.0 - a)
    }

    /// The DDIM timesteps for `sampling_steps` steps ending at `t_start`, from high to low:
    /// evenly spaced, always including `t_start` and ending at 0 when enough steps are asked.
    pub fn ddim_timesteps(&self, sampling_steps: usize, t_start: usize) -> Vec<usize> {
        let n = sampling_steps.clamp(1, t_start + 1);
        let span = (t_start + 1) as f64;
        let mut ts: Vec<usize> = (0..n)
            .map(|i| ((span * (n - i) as f64 / n as f64).round() as usize).saturating_sub(1))
            .collect();
        ts.dedup();
        ts
    }

    /// Bridge's trajectory: `steps` DDIM timesteps over the whole schedule, from pure noise.
    pub fn sample_timesteps(&self, steps: usize) -> Vec<usize> {
        self.ddim_timesteps(steps, self.steps() - 1)
    }

    /// Refine's trajectory (SDEdit): the start is noised to `t_start`, `strength` of the way
    /// up the schedule, and denoised from there in the full trajectory's share of `steps`,
    /// round(steps x strength), at least one. `strength` is in (0, 1].
    pub fn refine_trajectory(&self, strength: f64, steps: usize) -> RefineTrajectory {
        let t_max = self.steps() - 1;
        let t_start = ((strength * t_max as f64).round() as usize).min(t_max);
        let n = ((steps as f64 * strength).round() as usize).max(1);
        RefineTrajectory {
            t_start,
            timesteps: self.ddim_timesteps(n, t_start),
        }
    }
}

/// A Refine strength, checked: the share of the trajectory the start is noised to, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strength(f64);

impl Strength {
    /// `strength` if it is in (0, 1]; else why not (without the field's name).
    pub fn new(strength: f64) -> Result<Self, String> {
        if strength > 0.0 && strength <= 1.0 {
            Ok(Self(strength))
        } else {
            Err(format!("must be in (0, 1], got {strength}"))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// Where a Refine trajectory starts and the DDIM timesteps it visits (high to low).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefineTrajectory {
    /// The timestep the start is noised to.
    pub t_start: usize,
    pub timesteps: Vec<usize>,
}

fn cosine_alpha_bar(u: f64) -> f64 {
    let x = (u + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * std::f64::consts::FRAC_PI_2;
    x.cos().powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_alpha_bar_matches_closed_form() {
        let s = Schedule::new(ScheduleKind::Cosine, 1000);
        for t in [0usize, 1, 10, 250, 500, 750, 900] {
            let expected = cosine_alpha_bar((t + 1) as f64 / 1000.0) / cosine_alpha_bar(0.0);
            assert!(
                (s.alpha_bar(t) - expected).abs() < 1e-9,
                "t={t}: {} vs {expected}",
                s.alpha_bar(t)
            );
        }
    }

    #[test]
    fn alpha_bar_is_the_product_of_one_minus_beta() {
        for kind in [ScheduleKind::Cosine, ScheduleKind::Linear] {
            let s = Schedule::new(kind, 1000);
            let mut prod = 1.0;
            for t in 0..1000 {
                prod *= 1.0 - s.beta(t);
                assert!((s.alpha_bar(t) - prod).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn schedules_go_from_signal_to_noise_monotonically() {
        for kind in [ScheduleKind::Cosine, ScheduleKind::Linear] {
            let s = Schedule::new(kind, 1000);
            assert!(s.alpha_bar(0) > 0.999, "{kind:?} starts noisy");
            assert!(s.alpha_bar(999) < 1e-4, "{kind:?} ends with signal left");
            for t in 1..1000 {
                assert!(s.alpha_bar(t) < s.alpha_bar(t - 1));
                assert!(s.snr(t) < s.snr(t - 1));
            }
            assert!(s.betas.iter().all(|b| *b > 0.0 && *b <= MAX_BETA));
        }
    }

    #[test]
    fn linear_betas_are_the_ddpm_ones() {
        let s = Schedule::new(ScheduleKind::Linear, 1000);
        assert!((s.beta(0) - 1e-4).abs() < 1e-15);
        assert!((s.beta(999) - 0.02).abs() < 1e-15);
        // Ho et al. report abar_T of about 4e-5 for this schedule.
        assert!(
            (s.alpha_bar(999) - 4.04e-5).abs() < 1e-6,
            "{}",
            s.alpha_bar(999)
        );
    }

    #[test]
    fn forward_process_keeps_unit_variance() {
        // Var(x_t) = abar Var(x0) + (1 - abar) Var(eps) = 1 for unit-variance data.
        let s = Schedule::new(ScheduleKind::Cosine, 1000);
        for t in [0, 300, 999] {
            let a = s.alpha_bar(t);
            assert!((a + (1.0 - a) - 1.0).abs() < 1e-15);
        }
    }

    #[test]
    fn ddim_timesteps_cover_the_range() {
        let s = Schedule::new(ScheduleKind::Cosine, 1000);
        assert_eq!(s.ddim_timesteps(1, 999), vec![999]);
        let ts = s.ddim_timesteps(10, 999);
        assert_eq!(ts.len(), 10);
        assert_eq!(ts[0], 999);
        assert_eq!(*ts.last().unwrap(), 99);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        let all = s.ddim_timesteps(1000, 999);
        assert_eq!(all.len(), 1000);
        assert_eq!(*all.last().unwrap(), 0);
        // Partial trajectories (Refine) start where asked.
        let part = s.ddim_timesteps(5, 499);
        assert_eq!(part[0], 499);
        assert_eq!(part.len(), 5);
        // More steps than timesteps is clamped, not an error.
        assert_eq!(s.ddim_timesteps(50, 9).len(), 10);
    }
}
