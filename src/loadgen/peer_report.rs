//! What `diffgap loadgen --peer-addr` measured: each interleaved round's pair of levels
//! (diffgap's and the peer's at the same load), their ratios, and the medians over rounds, as
//! printed and as written to `--summary-json`.

use serde::{Deserialize, Serialize};

use super::peer_check::PeerCheck;
use super::summary::LevelSummary;
use crate::eval::retrieval::median;

/// One round at one load: diffgap's level and the peer's, run one after the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRound {
    /// E.g. "conc 256" or "350 rps".
    pub load: String,
    pub round: usize,
    /// Which server ran first in this round ("diffgap" or "peer"): the order alternates.
    pub first: String,
    pub diffgap: LevelSummary,
    pub peer: LevelSummary,
    /// diffgap's req/s over the peer's; None when the peer answered nothing.
    pub throughput_ratio: Option<f64>,
    /// diffgap's p99 over the peer's; None when either answered nothing.
    pub p99_ratio: Option<f64>,
}

impl PeerRound {
    pub(super) fn new(
        load: &str,
        round: usize,
        diffgap_first: bool,
        diffgap: LevelSummary,
        peer: LevelSummary,
    ) -> Self {
        let ratio = |a: f64, b: f64, answered: bool| (answered && b > 0.0).then(|| a / b);
        let both = diffgap.ok > 0 && peer.ok > 0;
        Self {
            load: load.to_owned(),
            round,
            first: if diffgap_first { "diffgap" } else { "peer" }.to_owned(),
            throughput_ratio: ratio(diffgap.requests_per_s, peer.requests_per_s, peer.ok > 0),
            p99_ratio: ratio(diffgap.p99_ms, peer.p99_ms, both),
            diffgap,
            peer,
        }
    }

    pub(super) fn print(&self) {
        let side = |s: &LevelSummary| {
            let failed = match s.errors {
                0 => String::new(),
                n => format!(", {n} failed"),
            };
            format!(
                "{:.1} req/s, p50 {:.0} / p99 {:.0} ms{failed}",
                s.requests_per_s, s.p50_ms, s.p99_ms
            )
        };
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
        println!(
            "  round {} ({} first): diffgap {} | peer {} | throughput x{}, p99 x{}",
            self.round,
            self.first,
            side(&self.diffgap),
            side(&self.peer),
            ratio(self.throughput_ratio),
            ratio(self.p99_ratio)
        );
    }
}

/// The medians over the rounds of one load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerMedians {
    pub load: String,
    pub rounds: usize,
    pub diffgap_requests_per_s: f64,
    pub peer_requests_per_s: f64,
    pub diffgap_p99_ms: f64,
    pub peer_p99_ms: f64,
    /// The median of the rounds' ratios (not the ratio of the medians); None when no round
    /// had one.
    pub throughput_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

fn median_of(rounds: &[&PeerRound], f: impl Fn(&PeerRound) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = rounds.iter().filter_map(|r| f(r)).collect();
    (!v.is_empty()).then(|| median(&mut v))
}

impl PeerMedians {
    /// The medians of the rounds at `load`; None when there were none.
    pub(super) fn of(rounds: &[PeerRound], load: &str) -> Option<Self> {
        let at: Vec<&PeerRound> = rounds.iter().filter(|r| r.load == load).collect();
        let m = |f: fn(&PeerRound) -> f64| median_of(&at, |r| Some(f(r)));
        Some(Self {
            load: load.to_owned(),
            rounds: at.len(),
            diffgap_requests_per_s: m(|r| r.diffgap.requests_per_s)?,
            peer_requests_per_s: m(|r| r.peer.requests_per_s)?,
            diffgap_p99_ms: m(|r| r.diffgap.p99_ms)?,
            peer_p99_ms: m(|r| r.peer.p99_ms)?,
            throughput_ratio: median_of(&at, |r| r.throughput_ratio),
            p99_ratio: median_of(&at, |r| r.p99_ratio),
        })
    }

    pub(super) fn print(&self) {
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
        println!(
            "  {}, median of {} rounds: diffgap {:.1} req/s p99 {:.0} ms, peer {:.1} req/s p99 {:.0} ms; diffgap/peer throughput {}, p99 {}",
            self.load,
            self.rounds,
            self.diffgap_requests_per_s,
            self.diffgap_p99_ms,
            self.peer_requests_per_s,
            self.peer_p99_ms,
            ratio(self.throughput_ratio),
            ratio(self.p99_ratio)
        );
    }
}

/// Everything a `--peer-addr` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSummary {
    pub label: String,
    pub diffgap_addr: String,
    pub peer_addr: String,
    pub steps: Vec<usize>,
    pub items: usize,
    pub samples: usize,
    pub check: PeerCheck,
    /// Closed-loop rounds, every --concurrency level in each round.
    pub closed: Vec<PeerRound>,
    /// The open loop's rate (req/s): --open-fraction of diffgap's saturation (the highest of
    /// its closed-loop medians), or --rate.
    pub open_rate: Option<f64>,
    pub open: Vec<PeerRound>,
    /// Per load (closed levels, then the open loop): the medians over rounds.
    pub medians: Vec<PeerMedians>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(rps: f64, p99: f64) -> LevelSummary {
        LevelSummary {
            load: "conc 4".into(),
            ok: 10,
            requests_per_s: rps,
            p99_ms: p99,
            ..LevelSummary::default()
        }
    }

    #[test]
    fn ratios_are_diffgap_over_peer_and_medians_are_of_the_ratios() {
        let rounds = vec![
            PeerRound::new("conc 4", 1, true, level(200.0, 100.0), level(100.0, 400.0)),
            PeerRound::new("conc 4", 2, false, level(300.0, 100.0), level(100.0, 100.0)),
            PeerRound::new("conc 4", 3, true, level(100.0, 100.0), level(100.0, 200.0)),
            PeerRound::new("conc 8", 1, true, level(1.0, 1.0), level(1.0, 1.0)),
        ];
        assert_eq!(rounds[0].throughput_ratio, Some(2.0));
        assert_eq!(rounds[0].p99_ratio, Some(0.25));
        assert_eq!(rounds[1].first, "peer");
        let m = PeerMedians::of(&rounds, "conc 4").expect("three rounds");
        assert_eq!(m.rounds, 3);
        assert_eq!(m.throughput_ratio, Some(2.0));
        assert_eq!(m.p99_ratio, Some(0.5));
        assert_eq!(m.peer_p99_ms, 200.0);
        assert!(PeerMedians::of(&rounds, "conc 16").is_none());
    }

    #[test]
    fn no_ratio_without_answers() {
        let mut silent = level(0.0, 0.0);
        silent.ok = 0;
        let r = PeerRound::new("conc 4", 1, true, level(10.0, 5.0), silent);
        assert_eq!((r.throughput_ratio, r.p99_ratio), (None, None));
    }
}
