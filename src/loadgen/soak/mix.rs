//! The soak's traffic: a fixed cycle of valid calls (Bridges of 10 and 50 steps, a text query
//! ranked over the model's first catalog, text and audio Embeds) and invalid ones (a wrong
//! dimension, a NaN, an unknown model, a corrupt audio file, an unknown catalog, an empty
//! request), each with the answer it must get: a valid call succeeds (or is refused, the server
//! shedding load), an invalid one gets a client-error code. Anything else is unexpected.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use crate::loadgen::audio::noise_wav;
use crate::loadgen::lcg_vector;
use crate::service::proto::diffgap_client::DiffgapClient;
use crate::service::proto::{
    raw_input::Input, BridgeItem, BridgeRequest, EmbedRequest, Embedding, RankMode, RankRequest,
    RawInput,
};

/// One kind of call of the cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bridge10,
    Bridge50,
    RankText,
    EmbedText,
    EmbedAudio,
    WrongDimension,
    NotANumber,
    UnknownModel,
    CorruptAudio,
    UnknownCatalog,
    NoItems,
}

/// 20 calls: 14 valid, 6 invalid.
const CYCLE: [Kind; 20] = {
    use Kind::*;
    [
        Bridge10,
        WrongDimension,
        Bridge10,
        RankText,
        Bridge50,
        EmbedText,
        NotANumber,
        Bridge10,
        RankText,
        EmbedAudio,
        UnknownModel,
        Bridge10,
        RankText,
        CorruptAudio,
        Bridge10,
        EmbedText,
        UnknownCatalog,
        Bridge50,
        Bridge10,
        NoItems,
    ]
};

impl Kind {
    pub fn is_valid(self) -> bool {
        use Kind::*;
        matches!(
            self,
            Bridge10 | Bridge50 | RankText | EmbedText | EmbedAudio
        )
    }
}

/// How a call ended, judged against its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid call answered.
    Answered,
    /// An invalid call refused with a client-error code.
    Rejected,
    /// A call refused with RESOURCE_EXHAUSTED (load shed, not a fault).
    Shed,
    /// Anything else: a valid call failing, an invalid one answered or failing as a server
    /// fault (INTERNAL, UNKNOWN, UNAVAILABLE...).
    Unexpected,
}

/// The verdict on a call of `kind` that ended with `result` (`Ok` or its status code).
pub fn judge(kind: Kind, result: Result<(), Code>) -> Verdict {
    match (kind.is_valid(), result) {
        (true, Ok(())) => Verdict::Answered,
        (_, Err(Code::ResourceExhausted)) => Verdict::Shed,
        (false, Err(Code::InvalidArgument | Code::NotFound | Code::OutOfRange)) => {
            Verdict::Rejected
        }
        _ => Verdict::Unexpected,
    }
}

/// What the traffic needs to know of the served model.
#[derive(Debug, Clone)]
pub struct Mix {
    pub from: String,
    pub to: String,
    pub dim: usize,
    /// The first catalog and its modality, when the model has one and a text encoder.
    pub catalog: Option<(String, String)>,
    pub has_text: bool,
    /// A 5 s noise WAV at the model's audio rate, when it has an audio encoder.
    pub wav: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// A WAV header declaring a sample rate of 0, cut short.
const CORRUPT_WAV: &[u8] =
    b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00";

const QUERIES: [&str; 5] = [
    "a dog barking in the distance",
    "rain on a tin roof",
    "a door slams shut",
    "birds singing at dawn",
    "an engine starting",
];

impl Mix {
    pub fn new(
        m: &crate::service::proto::ModelInfo,
        from: &str,
        to: &str,
        timeout: Duration,
    ) -> Self {
        let has_text = m.raw_modalities.iter().any(|r| r == "text");
        let catalog = m
            .catalogs
            .first()
            .filter(|_| has_text)
            .map(|c| (c.name.clone(), c.modality.clone()));
        let wav = (m.audio_sample_rate > 0)
            .then(|| noise_wav(5.0, m.audio_sample_rate, 5).ok())
            .flatten();
        Self {
            from: from.into(),
            to: to.into(),
            dim: m.dim as usize,
            catalog,
            has_text,
            wav,
            timeout,
        }
    }

    /// The kind of call `i`: the cycle's, with a kind the model cannot serve (no catalog, no
    /// encoder for it) replaced by a 10-step Bridge, or by an unknown model when invalid.
    pub fn kind(&self, i: usize) -> Kind {
        let k = CYCLE[i % CYCLE.len()];
        let servable = match k {
            Kind::RankText | Kind::UnknownCatalog => self.catalog.is_some(),
            Kind::EmbedText => self.has_text,
            Kind::EmbedAudio | Kind::CorruptAudio => self.wav.is_some(),
            _ => true,
        };
        match (servable, k.is_valid()) {
            (true, _) => k,
            (false, true) => Kind::Bridge10,
            (false, false) => Kind::UnknownModel,
        }
    }

    /// Sends call `i` and says how it ended.
    pub async fn call(&self, client: &mut DiffgapClient<Channel>, i: usize) -> (Kind, Verdict) {
        let kind = self.kind(i);
        let result = self.send(client, kind, i).await.map_err(|s| s.code());
        (kind, judge(kind, result))
    }

    async fn send(
        &self,
        client: &mut DiffgapClient<Channel>,
        kind: Kind,
        i: usize,
    ) -> Result<(), tonic::Status> {
        match kind {
            Kind::Bridge10 => self.bridge(client, self.bridge_item(i, 10), "").await,
            Kind::Bridge50 => self.bridge(client, self.bridge_item(i, 50), "").await,
            Kind::WrongDimension => {
                let mut item = self.bridge_item(i, 10);
                item.embedding = Some(Embedding {
                    values: lcg_vector(i as u64 | 1, self.dim + 1),
                });
                self.bridge(client, item, "").await
            }
            Kind::NotANumber => {
                let mut values = lcg_vector(i as u64 | 1, self.dim);
                values[i % self.dim.max(1)] = f32::NAN;
                let mut item = self.bridge_item(i, 10);
                item.embedding = Some(Embedding { values });
                self.bridge(client, item, "").await
            }
            Kind::UnknownModel => {
                self.bridge(client, self.bridge_item(i, 10), "no-such-model")
                    .await
            }
            Kind::NoItems => {
                let req = BridgeRequest::new(Vec::new());
                client.bridge(self.timed(req)).await.map(|_| ())
            }
            Kind::RankText => self.rank(client, i, None).await,
            Kind::UnknownCatalog => self.rank(client, i, Some("no-such-catalog")).await,
            Kind::EmbedText => self.embed(client, Input::Text(QUERIES[i % 5].into())).await,
            Kind::EmbedAudio => {
                let wav = self.wav.clone().unwrap_or_default();
                self.embed(client, Input::Audio(wav)).await
            }
            Kind::CorruptAudio => self.embed(client, Input::Audio(CORRUPT_WAV.to_vec())).await,
        }
    }

    fn bridge_item(&self, i: usize, steps: u32) -> BridgeItem {
        let values = lcg_vector(i as u64 | 1, self.dim);
        BridgeItem {
            steps: Some(steps),
            ..BridgeItem::new(&self.from, &self.to, values, Some(i as u64))
        }
    }

    fn timed<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.timeout);
        req
    }

    async fn bridge(
        &self,
        client: &mut DiffgapClient<Channel>,
        item: BridgeItem,
        model: &str,
    ) -> Result<(), tonic::Status> {
        let req = BridgeRequest {
            model: model.into(),
            ..BridgeRequest::new(vec![item])
        };
        client.bridge(self.timed(req)).await.map(|_| ())
    }

    async fn rank(
        &self,
        client: &mut DiffgapClient<Channel>,
        i: usize,
        catalog: Option<&str>,
    ) -> Result<(), tonic::Status> {
        let (name, modality) = self.catalog.clone().unwrap_or_default();
        let req = RankRequest {
            raw_query: Some(RawInput {
                input: Some(Input::Text(QUERIES[i % 5].into())),
            }),
            query_modality: "text".into(),
            candidate_modality: modality,
            catalog: catalog.map_or(name, str::to_owned),
            mode: RankMode::Fused as i32,
            top_k: 10,
            seed: Some(i as u64),
            ..RankRequest::default()
        };
        client.rank(self.timed(req)).await.map(|_| ())
    }

    async fn embed(
        &self,
        client: &mut DiffgapClient<Channel>,
        input: Input,
    ) -> Result<(), tonic::Status> {
        let req = EmbedRequest {
            model: String::new(),
            inputs: vec![RawInput { input: Some(input) }],
        };
        client.embed(self.timed(req)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_calls_must_be_answered_and_invalid_ones_refused_as_client_errors() {
        assert_eq!(judge(Kind::Bridge10, Ok(())), Verdict::Answered);
        assert_eq!(
            judge(Kind::Bridge10, Err(Code::Internal)),
            Verdict::Unexpected
        );
        assert_eq!(
            judge(Kind::Bridge10, Err(Code::ResourceExhausted)),
            Verdict::Shed
        );
        assert_eq!(
            judge(Kind::NotANumber, Err(Code::InvalidArgument)),
            Verdict::Rejected
        );
        assert_eq!(
            judge(Kind::UnknownModel, Err(Code::NotFound)),
            Verdict::Rejected
        );
        assert_eq!(judge(Kind::CorruptAudio, Ok(())), Verdict::Unexpected);
        assert_eq!(
            judge(Kind::CorruptAudio, Err(Code::Unknown)),
            Verdict::Unexpected
        );
        assert_eq!(
            judge(Kind::NoItems, Err(Code::Unavailable)),
            Verdict::Unexpected
        );
    }

    #[test]
    fn the_cycle_mixes_valid_and_invalid_calls_and_every_kind_appears() {
        let valid = CYCLE.iter().filter(|k| k.is_valid()).count();
        assert_eq!((valid, CYCLE.len() - valid), (14, 6));
        use Kind::*;
        for k in [
            Bridge10,
            Bridge50,
            RankText,
            EmbedText,
            EmbedAudio,
            WrongDimension,
            NotANumber,
            UnknownModel,
            CorruptAudio,
            UnknownCatalog,
            NoItems,
        ] {
            assert!(CYCLE.contains(&k), "{k:?}");
        }
    }
}
