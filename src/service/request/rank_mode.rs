//! A Rank's mode, resolved against the model: the weights of the fused family, the
//! hubness-corrected fusion, or a baseline, and the generative short list. The "validated best"
//! mode becomes the one the card chose on validation for the direction.

use crate::baselines::modes::BaselineMode;
use crate::model::card::{direction_key, FusionWeights, HubFusion};
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto::RankMode;
use crate::service::request::validate::{DEFAULT_SHORTLIST, MAX_SHORTLIST};
use crate::service::types::ModelInfo;

/// How a Rank scores its candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scoring {
    /// A weighted sum of cos(q, a), cos(B(q), a) and cos(q, B(a)).
    Weighted(FusionWeights),
    /// The weighted sum under the inverted softmax over the model's query bank.
    FusedHub(HubFusion),
    Baseline(BaselineMode),
}

impl Scoring {
    /// The DiffGAP terms' weights (zero for a baseline): which bridgings the Rank needs.
    pub fn weights(&self) -> FusionWeights {
        match self {
            Self::Weighted(w) => *w,
            Self::FusedHub(h) => h.weights,
            Self::Baseline(_) => weights(0.0, 0.0, 0.0),
        }
    }
}

/// A resolved mode: its scoring and the generative short list (0: no re-rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeChoice {
    pub scoring: Scoring,
    pub shortlist: usize,
}

/// Resolves `mode` (the request's raw enum value) for the direction `q` -> `c` of `m`.
pub fn resolve(
    m: &ModelInfo,
    mode: i32,
    shortlist: Option<u32>,
    (q, c): (&str, &str),
) -> Result<ModeChoice, ServiceError> {
    let key = direction_key(q, c);
    let mode = match RankMode::try_from(mode) {
        Ok(RankMode::Unspecified) => RankMode::Fused,
        Ok(RankMode::ValidatedBest) => validated_best(m, &key)?,
        Ok(mode) => mode,
        Err(_) => return Err(ServiceError::invalid("mode", unknown_mode(mode))),
    };
    let fused = || {
        m.fusion.get(&key).copied().ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "the model has no fusion weights for {key}; use another mode"
            ))
        })
    };
    let baseline = |b: BaselineMode| {
        if m.has_baselines {
            Ok(Scoring::Baseline(b))
        } else {
            Err(no_baselines(b.name()))
        }
    };
    let scoring = match mode {
        RankMode::Contrastive => Scoring::Weighted(weights(1.0, 0.0, 0.0)),
        RankMode::Bridged => Scoring::Weighted(weights(0.0, 1.0, 0.0)),
        RankMode::Reverse => Scoring::Weighted(weights(0.0, 0.0, 1.0)),
        RankMode::Fused | RankMode::Unspecified | RankMode::ValidatedBest => {
            Scoring::Weighted(fused()?)
        }
        RankMode::Generative => {
            let k = shortlist.map_or(DEFAULT_SHORTLIST, |k| k as usize);
            if k == 0 || k > MAX_SHORTLIST {
                return Err(ServiceError::invalid(
                    "shortlist",
                    format!("must be in 1..={MAX_SHORTLIST}, got {k}"),
                ));
            }
            return Ok(ModeChoice {
                scoring: Scoring::Weighted(fused()?),
                shortlist: k,
            });
        }
        RankMode::FusedHub => match (m.has_baselines, m.hub_fusion.get(&key)) {
            (true, Some(h)) => Scoring::FusedHub(*h),
            _ => return Err(no_baselines("fused_hub")),
        },
        RankMode::Centred => baseline(BaselineMode::Centred)?,
        RankMode::InvertedSoftmax => baseline(BaselineMode::InvertedSoftmax)?,
        RankMode::Ridge => baseline(BaselineMode::Ridge)?,
        RankMode::Procrustes => baseline(BaselineMode::Procrustes)?,
        RankMode::Adapter => baseline(BaselineMode::Adapter)?,
    };
    Ok(ModeChoice {
        scoring,
        shortlist: 0,
    })
}

/// The mode the card chose on validation for `key`.
fn validated_best(m: &ModelInfo, key: &str) -> Result<RankMode, ServiceError> {
    let best = m.validated_best.get(key).ok_or_else(|| {
        ServiceError::FailedPrecondition(format!(
            "the model's card records no validated best mode for {key} (trained without baselines); use another mode"
        ))
    })?;
    mode_named(best).ok_or_else(|| {
        ServiceError::FailedPrecondition(format!(
            "the model's card names '{}' as the validated best mode for {key}, which this server does not know; use another mode",
            echo(best)
        ))
    })
}

/// The Rank mode of a ladder row's name ("fused_hub" -> RANK_MODE_FUSED_HUB).
pub fn mode_named(name: &str) -> Option<RankMode> {
    let mode = RankMode::from_str_name(&format!("RANK_MODE_{}", name.to_ascii_uppercase()))?;
    (mode != RankMode::Unspecified && mode != RankMode::ValidatedBest).then_some(mode)
}

fn unknown_mode(value: i32) -> String {
    let known: Vec<String> = (1..)
        .map_while(|v| RankMode::try_from(v).ok().map(|m| (v, m)))
        .map(|(v, m)| format!("{} ({v})", m.as_str_name()))
        .collect();
    format!("unknown value {value}; use one of {}", known.join(", "))
}

fn no_baselines(mode: &str) -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "the model has no fitted baselines for mode {mode} (trained without them); use another mode"
    ))
}

fn weights(contrastive: f64, bridged: f64, reverse: f64) -> FusionWeights {
    FusionWeights {
        contrastive,
        bridged,
        reverse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ladder::BASELINE_MODES;
    use crate::eval::report::MODES;

    #[test]
    fn every_mode_a_card_can_name_is_a_rank_mode() {
        for name in MODES.iter().chain(BASELINE_MODES.iter()) {
            let mode = mode_named(name).unwrap_or_else(|| panic!("{name} is no Rank mode"));
            assert_eq!(
                mode.as_str_name(),
                format!("RANK_MODE_{}", name.to_uppercase())
            );
        }
        assert_eq!(mode_named("validated_best"), None);
        assert_eq!(mode_named("unspecified"), None);
    }

    #[test]
    fn an_unknown_value_lists_every_mode() {
        let message = unknown_mode(99);
        assert!(message.starts_with("unknown value 99;"), "{message}");
        assert!(message.contains("RANK_MODE_CONTRASTIVE (1)"), "{message}");
        assert!(message.contains("RANK_MODE_ADAPTER (12)"), "{message}");
    }
}
