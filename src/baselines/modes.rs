//! The baselines as ranking modes: one score matrix per mode, so that `diffgap eval`'s ladder and
//! the service's Rank score a query the same way with the same fitted object.

use tch::Tensor;

use super::hubness::inverted_softmax;
use super::Baselines;
use crate::model::card::direction_key;

/// A baseline ranking mode, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineMode {
    Centred,
    InvertedSoftmax,
    Ridge,
    Procrustes,
    Adapter,
}

impl BaselineMode {
    pub const ALL: [Self; 5] = [
        Self::Centred,
        Self::InvertedSoftmax,
        Self::Ridge,
        Self::Procrustes,
        Self::Adapter,
    ];

    /// The mode's name in reports, cards and Info.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Centred => "centred",
            Self::InvertedSoftmax => "inverted_softmax",
            Self::Ridge => "ridge",
            Self::Procrustes => "procrustes",
            Self::Adapter => "adapter",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl Baselines {
    /// Queries `q` [Q, d] of modality `qm` mapped into modality `cm`, for the map modes (ridge,
    /// Procrustes, adapter); `None` for the others.
    pub fn mapped(
        &self,
        mode: BaselineMode,
        q: &Tensor,
        (qm, cm): (&str, &str),
    ) -> Result<Option<Tensor>, String> {
        let maps = || self.maps(&direction_key(qm, cm));
        Ok(match mode {
            BaselineMode::Ridge => Some(maps()?.ridge.apply(q)),
            BaselineMode::Procrustes => Some(maps()?.procrustes.apply(q)),
            BaselineMode::Adapter => Some(maps()?.adapter.apply(q)),
            BaselineMode::Centred | BaselineMode::InvertedSoftmax => None,
        })
    }

    /// The inverted softmax's candidate term: the bank of `qm` queries scored against `c`
    /// [C, d], [bank, C]. It depends on the candidates only (once per candidate set).
    pub fn bank_scores(&self, qm: &str, c: &Tensor) -> Result<Tensor, String> {
        Ok(self.bank(qm)?.to_device(c.device()).matmul(&c.tr()))
    }

    /// The scores [Q, C] of `mode` for L2-normalised queries `q` of modality `qm` against
    /// L2-normalised candidates `c` of modality `cm`.
    pub fn scores(
        &self,
        mode: BaselineMode,
        (q, qm): (&Tensor, &str),
        (c, cm): (&Tensor, &str),
    ) -> Result<Tensor, String> {
        let _g = tch::no_grad_guard();
        match mode {
            BaselineMode::Centred => Ok(self.centred(q, qm)?.matmul(&self.centred(c, cm)?.tr())),
            BaselineMode::InvertedSoftmax => {
                let beta = self.fit(&direction_key(qm, cm))?.inverted_softmax_beta;
                let bank = self.bank_scores(qm, c)?;
                Ok(inverted_softmax(&q.matmul(&c.tr()), &bank, beta))
            }
            map => {
                let mapped = self
                    .mapped(map, q, (qm, cm))?
                    .ok_or_else(|| format!("{} is not a map", map.name()))?;
                Ok(mapped.matmul(&c.tr()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in BaselineMode::ALL {
            assert_eq!(BaselineMode::parse(m.name()), Some(m));
        }
        assert_eq!(BaselineMode::parse("fused"), None);
    }
}
