//! Raw inputs (text, audio bytes or samples, video frames) of a request, validated, decoded and
//! run through the model's encoders ([`crate::service::worker::embedder`]) before the request goes on as
//! embeddings. Audio is decoded on the blocking pool, never on the async workers; the encoders
//! run on the model worker ([`WorkerHandle::embed`]).

use std::time::{Duration, Instant};

use crate::audio::decode::{decode, DecodeError, DecodeOptions};
use crate::audio::limits::{MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use crate::audio::resample::resample;
use crate::encoders::text::MAX_TEXT_BYTES;
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto::{self, raw_input::Input};
use crate::service::request::repository::Served;
use crate::service::request::validate::Field;
use crate::service::types::{EmbedderInfo, RawInput};
use crate::service::worker::WorkerHandle;

/// A raw input to resolve: the request field it came from, the modality the request says it
/// is (empty: any), and the input.
pub struct Slot {
    pub field: String,
    pub modality: String,
    pub raw: proto::RawInput,
}

/// The embeddings of `slots`, in order, each checked to be of its slot's modality.
pub async fn resolve(
    worker: &WorkerHandle,
    encoders: Option<&EmbedderInfo>,
    model: &str,
    slots: Vec<Slot>,
    deadline: Option<Instant>,
) -> Result<Embedded, ServiceError> {
    let info = encoders.ok_or_else(|| {
        ServiceError::FailedPrecondition(format!(
            "model '{model}' has no encoders; send embeddings instead of raw inputs"
        ))
    })?;
    let mut inputs = Vec::with_capacity(slots.len());
    let mut fields = Vec::with_capacity(slots.len());
    for s in slots {
        inputs.push(prepare(info, &s.field, s.raw).await?);
        fields.push((s.field, s.modality));
    }
    let out = worker.embed(inputs, deadline).await?;
    for ((field, want), got) in fields.iter().zip(&out.modalities) {
        if !want.is_empty() && want != got {
            return Err(ServiceError::invalid(
                field.as_str(),
                format!(
                    "is a raw {got} input, but the request says its modality is '{}'",
                    echo(want)
                ),
            ));
        }
    }
    Ok(Embedded {
        rows: out.rows,
        modalities: out.modalities,
        queue: out.queue,
        compute: out.compute,
    })
}

pub use crate::service::types::Embedded;

/// Resolves every field given raw through the model's encoders in one call; returns the
/// encoder worker's (queue, compute). A field with both `embedding` and `raw` is refused.
pub async fn resolve_all(
    s: &Served,
    fields: &mut [Field],
    deadline: Option<Instant>,
) -> Result<(Duration, Duration), ServiceError> {
    let mut slots = Vec::new();
    let mut at = Vec::new();
    for (i, f) in fields.iter_mut().enumerate() {
        if let Some(raw) = f.raw.take() {
            if f.embedding.is_some() {
                return Err(ServiceError::invalid(
                    f.raw_name.as_str(),
                    format!("is set together with {}; send one of them", f.name),
                ));
            }
            slots.push(Slot {
                field: f.raw_name.clone(),
                modality: f.modality.clone(),
                raw,
            });
            at.push(i);
        }
    }
    if slots.is_empty() {
        return Ok((Duration::ZERO, Duration::ZERO));
    }
    let out = resolve(
        &s.worker,
        s.info.encoders.as_ref(),
        &s.info.name,
        slots,
        deadline,
    )
    .await?;
    for (i, values) in at.into_iter().zip(out.rows) {
        fields[i].resolved = Some(values);
    }
    Ok((out.queue, out.compute))
}

/// Checks one raw input against the encoders and turns it into what the encoder worker takes.
async fn prepare(
    info: &EmbedderInfo,
    field: &str,
    raw: proto::RawInput,
) -> Result<RawInput, ServiceError> {
    let missing = |kind: &str| {
        ServiceError::FailedPrecondition(format!(
            "{field}: the model has no {kind} encoder; it takes raw {:?}",
            [&info.text, &info.audio, &info.video]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        ))
    };
    match raw.input {
        None => Err(ServiceError::invalid(
            field,
            "sets none of text, audio, samples or video",
        )),
        Some(Input::Text(t)) => {
            if info.text.is_none() {
                return Err(missing("text"));
            }
            if t.trim().is_empty() {
                return Err(ServiceError::invalid(format!("{field}.text"), "is empty"));
            }
            if t.len() > MAX_TEXT_BYTES {
                return Err(ServiceError::invalid(
                    format!("{field}.text"),
                    format!("has {} bytes, the limit is {MAX_TEXT_BYTES}", t.len()),
                ));
            }
            Ok(RawInput::Text(t))
        }
        Some(Input::Audio(bytes)) => {
            if info.audio.is_none() {
                return Err(missing("audio"));
            }
            let opts = DecodeOptions::new(info.sample_rate, info.max_audio_seconds);
            let decoded = tokio::task::spawn_blocking(move || decode(&bytes, &opts))
                .await
                .map_err(|e| ServiceError::Internal(format!("audio decoding task: {e}")))?;
            match decoded {
                Ok(d) => Ok(RawInput::Audio(d.samples)),
                Err(DecodeError::InvalidOptions(m)) => Err(ServiceError::Internal(m)),
                Err(e) => Err(ServiceError::invalid(
                    format!("{field}.audio"),
                    e.to_string(),
                )),
            }
        }
        Some(Input::Samples(s)) => {
            if info.audio.is_none() {
                return Err(missing("audio"));
            }
            let f = format!("{field}.samples");
            // Raw samples are held to the same limits as a decoded stream's header.
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&s.sample_rate) {
                return Err(ServiceError::invalid(
                    format!("{f}.sample_rate"),
                    format!(
                        "must be in {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE}, got {}",
                        s.sample_rate
                    ),
                ));
            }
            if s.channels > MAX_CHANNELS {
                return Err(ServiceError::invalid(
                    format!("{f}.channels"),
                    format!(
                        "must be in 0..={MAX_CHANNELS} (0: mono), got {}",
                        s.channels
                    ),
                ));
            }
            let channels = s.channels.max(1) as usize;
            if s.values.is_empty() || s.values.len() % channels != 0 {
                return Err(ServiceError::invalid(
                    format!("{f}.values"),
                    format!(
                        "has {} values, not a positive multiple of {channels} channels",
                        s.values.len()
                    ),
                ));
            }
            if let Some(i) = s.values.iter().position(|v| !v.is_finite()) {
                return Err(ServiceError::invalid(
                    format!("{f}.values[{i}]"),
                    "is not finite",
                ));
            }
            let seconds = (s.values.len() / channels) as f64 / f64::from(s.sample_rate);
            if seconds > info.max_audio_seconds {
                return Err(ServiceError::invalid(
                    format!("{f}.values"),
                    format!(
                        "last {seconds:.1} s, the limit is {} s",
                        info.max_audio_seconds
                    ),
                ));
            }
            let (rate, target) = (s.sample_rate, info.sample_rate);
            let mono: Vec<f32> = s
                .values
                .chunks_exact(channels)
                .map(|c| c.iter().sum::<f32>() / channels as f32)
                .collect();
            let wave = tokio::task::spawn_blocking(move || resample(&mono, rate, target))
                .await
                .map_err(|e| ServiceError::Internal(format!("resampling task: {e}")))?
                .map_err(|e| ServiceError::invalid(format!("{f}.values"), e.to_string()))?;
            Ok(RawInput::Audio(wave))
        }
        Some(Input::Video(v)) => {
            let Some((t, h, w)) = info.video_shape.filter(|_| info.video.is_some()) else {
                return Err(missing("video"));
            };
            let f = format!("{field}.video");
            if (i64::from(v.frames), i64::from(v.height), i64::from(v.width)) != (t, h, w) {
                return Err(ServiceError::invalid(
                    f,
                    format!(
                        "is {} x 3 x {} x {}, the encoder takes {t} x 3 x {h} x {w}",
                        v.frames, v.height, v.width
                    ),
                ));
            }
            let want = (t * 3 * h * w) as usize;
            if v.values.len() != want {
                return Err(ServiceError::invalid(
                    format!("{f}.values"),
                    format!("has {} values, expected {want}", v.values.len()),
                ));
            }
            if let Some(i) = v.values.iter().position(|x| !x.is_finite()) {
                return Err(ServiceError::invalid(
                    format!("{f}.values[{i}]"),
                    "is not finite",
                ));
            }
            Ok(RawInput::Video(v.values))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav_header::tests::wav_bytes;

    fn info() -> EmbedderInfo {
        EmbedderInfo {
            text: None,
            audio: Some("audio".into()),
            video: None,
            sample_rate: 44_100,
            max_audio_seconds: 10.0,
            video_shape: None,
            dim: 8,
            tokenizer: None,
        }
    }

    fn audio(bytes: Vec<u8>) -> proto::RawInput {
        proto::RawInput {
            input: Some(Input::Audio(bytes)),
        }
    }

    fn samples(sample_rate: u32, channels: u32) -> proto::RawInput {
        proto::RawInput {
            input: Some(Input::Samples(proto::AudioSamples {
                values: vec![0.1; 64],
                sample_rate,
                channels,
            })),
        }
    }

    /// The gRPC status a client would get for `raw`.
    async fn refusal(raw: proto::RawInput) -> tonic::Status {
        tonic::Status::from(
            prepare(&info(), "inputs[0]", raw)
                .await
                .expect_err("refused"),
        )
    }

    #[tokio::test]
    async fn hostile_audio_is_invalid_argument_naming_field_and_limit() {
        let data = vec![0u8; 2_304];
        let ten_hours = 10 * 3_600 * 44_100 * 2;
        let cases = [
            (
                audio(wav_bytes(1, 0, 1, 16, 2_304, &data)),
                "inputs[0].audio: unsupported audio: sample rate 0 Hz is outside 1000..=384000 Hz",
            ),
            (
                audio(wav_bytes(1, 44_100, 200, 16, 2_304, &data)),
                "inputs[0].audio: unsupported audio: channel count 200 is outside 1..=32",
            ),
            (
                audio(wav_bytes(1, 44_100, 1, 16, ten_hours, &data)),
                "inputs[0].audio: audio too long: more than 10 s (at least 36000.00 s)",
            ),
            (
                samples(1, 1),
                "inputs[0].samples.sample_rate: must be in 1000..=384000, got 1",
            ),
            (
                samples(44_100, 200),
                "inputs[0].samples.channels: must be in 0..=32 (0: mono), got 200",
            ),
        ];
        for (raw, want) in cases {
            let s = refusal(raw).await;
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
            assert_eq!(s.message(), want);
        }
    }
}
