//! What a soak measured, and its goals: the server's resident memory flat after the warm-up
//! of the mixed traffic (no sample above 1.05x the first one after it), the memory after each
//! reload within 1.1x of that after the first, and no unexpected answer.

use serde::{Deserialize, Serialize};

/// Calls that ended each way.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub answered: u64,
    pub rejected: u64,
    pub shed: u64,
    pub unexpected: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.answered + self.rejected + self.shed + self.unexpected
    }
}

/// The server's memory at a moment of the traffic, and the calls of the interval before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub seconds: f64,
    pub rss_mib: f64,
    pub calls: Counts,
}

/// The memory after a reload and the calls sent after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadSample {
    pub reload: usize,
    /// Whether every model and catalog reloaded.
    pub reloaded: bool,
    pub rss_mib: f64,
    pub calls: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub clients: usize,
    pub warmup_seconds: f64,
    pub samples: Vec<Sample>,
    pub reloads: Vec<ReloadSample>,
}

/// Memory growth allowed after the warm-up, and over the reloads (after the first).
pub const FLAT_RATIO: f64 = 1.05;
pub const RELOAD_RATIO: f64 = 1.1;

impl SoakReport {
    /// The samples taken after the warm-up.
    fn steady(&self) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.seconds >= self.warmup_seconds)
    }

    /// The highest steady memory over the first steady sample.
    pub fn steady_ratio(&self) -> Option<f64> {
        let first = self.steady().next()?.rss_mib;
        let max = self.steady().map(|s| s.rss_mib).fold(f64::MIN, f64::max);
        Some(max / first)
    }

    /// The least-squares slope of the steady memory, in MiB a minute.
    pub fn steady_slope_mib_per_min(&self) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .steady()
            .map(|s| (s.seconds / 60.0, s.rss_mib))
            .collect();
        slope(&points)
    }

    /// The highest memory after a reload over that after the first.
    pub fn reload_ratio(&self) -> Option<f64> {
        let first = self.reloads.first()?.rss_mib;
        let max = self
            .reloads
            .iter()
            .map(|r| r.rss_mib)
            .fold(f64::MIN, f64::max);
        Some(max / first)
    }

    pub fn calls(&self) -> Counts {
        let mut c = Counts::default();
        let all = self.samples.iter().map(|s| s.calls);
        for x in all.chain(self.reloads.iter().map(|r| r.calls)) {
            c.answered += x.answered;
            c.rejected += x.rejected;
            c.shed += x.shed;
            c.unexpected += x.unexpected;
        }
        c
    }

    /// The goals not met, in words (empty: all met).
    pub fn failed_goals(&self) -> Vec<String> {
        let mut failed = Vec::new();
        match self.steady_ratio() {
            Some(r) if r <= FLAT_RATIO => {}
            Some(r) => failed.push(format!(
                "memory after the warm-up grew {r:.3}x > {FLAT_RATIO}x"
            )),
            None => failed.push("no memory sample after the warm-up".into()),
        }
        if !self.reloads.is_empty() {
            match self.reload_ratio() {
                Some(r) if r <= RELOAD_RATIO => {}
                Some(r) => failed.push(format!(
                    "memory over the reloads grew {r:.3}x > {RELOAD_RATIO}x"
                )),
                None => {}
            }
            let failed_reloads = self.reloads.iter().filter(|r| !r.reloaded).count();
            if failed_reloads > 0 {
                failed.push(format!(
                    "{failed_reloads} reload(s) did not reload everything"
                ));
            }
        }
        let unexpected = self.calls().unexpected;
        if unexpected > 0 {
            failed.push(format!("{unexpected} unexpected answer(s)"));
        }
        failed
    }

    /// The markdown tables: memory over the traffic (one row a minute or so), over the
    /// reloads, and the goals.
    pub fn table(&self) -> String {
        let mut out = String::from("| s | RSS MiB | answered | rejected (invalid) | shed | unexpected |\n|---|---|---|---|---|---|\n");
        let every = (self.samples.len() / 12).max(1);
        for (i, s) in self.samples.iter().enumerate() {
            if i % every == 0 || i + 1 == self.samples.len() {
                let c = s.calls;
                out += &format!(
                    "| {:.0} | {:.1} | {} | {} | {} | {} |\n",
                    s.seconds, s.rss_mib, c.answered, c.rejected, c.shed, c.unexpected
                );
            }
        }
        if !self.reloads.is_empty() {
            out += "\n| reload | reloaded | RSS MiB | calls after it |\n|---|---|---|---|\n";
            for r in &self.reloads {
                out += &format!(
                    "| {} | {} | {:.1} | {} |\n",
                    r.reload,
                    r.reloaded,
                    r.rss_mib,
                    r.calls.total()
                );
            }
        }
        let c = self.calls();
        let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}x"));
        out += &format!(
            "\n{} clients; calls: {} answered, {} invalid rejected, {} shed, {} unexpected\n\
             memory after the warm-up ({:.0} s): max/first {} (goal <= {FLAT_RATIO}x), slope {} MiB/min\n\
             memory over {} reloads: max/first {} (goal <= {RELOAD_RATIO}x)\n",
            self.clients,
            c.answered,
            c.rejected,
            c.shed,
            c.unexpected,
            self.warmup_seconds,
            fmt(self.steady_ratio()),
            self.steady_slope_mib_per_min().map_or("-".into(), |s| format!("{s:+.2}")),
            self.reloads.len(),
            fmt(self.reload_ratio()),
        );
        out
    }
}

/// The least-squares slope of `points` (x, y); None with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f64, rss_mib: f64) -> Sample {
        Sample {
            seconds,
            rss_mib,
            calls: Counts {
                answered: 10,
                ..Counts::default()
            },
        }
    }

    fn report(rss: &[f64], reloads: &[f64]) -> SoakReport {
        SoakReport {
            clients: 4,
            warmup_seconds: 20.0,
            samples: rss
                .iter()
                .enumerate()
                .map(|(i, &r)| sample(10.0 * (i + 1) as f64, r))
                .collect(),
            reloads: reloads
                .iter()
                .enumerate()
                .map(|(i, &r)| ReloadSample {
                    reload: i + 1,
                    reloaded: true,
                    rss_mib: r,
                    calls: Counts::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn growth_during_the_warm_up_does_not_count_and_flat_memory_passes() {
        let r = report(
            &[300.0, 600.0, 640.0, 650.0, 645.0, 648.0],
            &[700.0, 720.0, 710.0],
        );
        assert!((r.steady_ratio().unwrap() - 650.0 / 600.0).abs() < 1e-9);
        assert!(r
            .failed_goals()
            .iter()
            .any(|g| g.contains("after the warm-up")));
        let flat = report(&[300.0, 600.0, 610.0, 605.0, 612.0], &[700.0, 720.0, 710.0]);
        assert_eq!(flat.failed_goals(), Vec::<String>::new());
        assert!((flat.reload_ratio().unwrap() - 720.0 / 700.0).abs() < 1e-9);
    }

    #[test]
    fn a_leak_over_reloads_and_unexpected_answers_fail() {
        let mut r = report(&[600.0, 600.0, 600.0], &[700.0, 750.0, 800.0]);
        r.samples[2].calls.unexpected = 3;
        let goals = r.failed_goals();
        assert!(
            goals.iter().any(|g| g.contains("reloads grew 1.143x")),
            "{goals:?}"
        );
        assert!(
            goals.iter().any(|g| g.contains("3 unexpected")),
            "{goals:?}"
        );
    }

    #[test]
    fn slope_is_the_least_squares_fit() {
        let s = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((s - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }
}
