//! Encoding raw inputs: the model's encoders ([`crate::encoders::EncoderSet`]: TorchScript
//! modules and projection heads) live on the instance's encoder thread
//! ([`super::encoder_thread`]; their tensors never leave it), which takes every Embed request
//! waiting and runs all their texts through the text encoder as padded batches, their video
//! clips as one batch, and their audio clips one by one (the audio front-end blocks each clip
//! by its own length). Requests past their deadline or whose client went away are dropped
//! first. Audio bytes are decoded before they get here, on the blocking pool: decoding needs
//! no tensors.

use std::path::Path;
use std::time::Instant;

use tch::Device;
use tokio::sync::oneshot;
use tracing::Span;

use crate::encoders::{self, EncoderError, EncoderSet, ENCODERS_DIR};
use crate::service::error::ServiceError;
use crate::service::types::{Embedded, EmbedderInfo, RawInput};

/// An Embed request as the model worker receives it.
pub struct EmbedJob {
    pub(crate) inputs: Vec<RawInput>,
    pub(crate) reply: oneshot::Sender<Result<Embedded, ServiceError>>,
    pub(crate) span: Span,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Option<Instant>,
}

impl EmbedJob {
    pub fn new(
        inputs: Vec<RawInput>,
        deadline: Option<Instant>,
    ) -> (Self, oneshot::Receiver<Result<Embedded, ServiceError>>) {
        let (reply, rx) = oneshot::channel();
        let job = Self {
            inputs,
            reply,
            span: Span::current(),
            enqueued: Instant::now(),
            deadline,
        };
        (job, rx)
    }
}

/// Loads `<model_dir>/encoders` (on the encoder thread) and runs each encoder once, so that no
/// request pays for libtorch's first call; `Ok(None)` when the model has none.
pub fn load(model_dir: &Path, device: Device) -> Result<Option<EncoderSet>, EncoderError> {
    let dir = model_dir.join(ENCODERS_DIR);
    if !dir.join(encoders::MANIFEST_FILE).is_file() {
        return Ok(None);
    }
    let set = EncoderSet::load(&dir, device)?;
    let _no_grad = tch::no_grad_guard();
    if set.text.is_some() {
        let _ = set.embed_text(&["warm-up"])?;
    }
    if let Some(a) = &set.audio {
        let _ = set.embed_audio(&[&vec![0.0f32; a.sample_rate as usize]])?;
    }
    Ok(Some(set))
}

pub fn info_of(set: &EncoderSet) -> EmbedderInfo {
    let m = &set.manifest;
    EmbedderInfo {
        text: m.text.as_ref().map(|t| t.modality.clone()),
        audio: m.audio.as_ref().map(|a| a.modality.clone()),
        video: m.video.as_ref().map(|v| v.modality.clone()),
        sample_rate: m.audio.as_ref().map_or(0, |a| a.sample_rate),
        max_audio_seconds: m.audio.as_ref().map_or(0.0, |a| a.max_seconds),
        video_shape: m.video.as_ref().map(|v| (v.frames, v.height, v.width)),
        dim: m.dim,
        tokenizer: set
            .text
            .as_ref()
            .map(|t| std::sync::Arc::new(t.tokenizer().clone())),
    }
}

/// Runs the Embed requests that were waiting, as one batch per input kind; drops the expired
/// and the abandoned ones first.
pub fn process(set: Option<&EncoderSet>, mut jobs: Vec<EmbedJob>) {
    let Some(set) = set else {
        for j in jobs {
            let _ = j.reply.send(Err(ServiceError::FailedPrecondition(
                "this model has no encoders; send embeddings".into(),
            )));
        }
        return;
    };
    let now = Instant::now();
    jobs.retain_mut(|j| {
        if j.reply.is_closed() {
            metrics::counter!("diffgap_embed_dropped_total", "reason" => "cancelled").increment(1);
            return false;
        }
        if j.deadline.is_some_and(|d| d <= now) {
            metrics::counter!("diffgap_embed_dropped_total", "reason" => "deadline").increment(1);
            let (tx, _) = oneshot::channel();
            let reply = std::mem::replace(&mut j.reply, tx);
            let _ = reply.send(Err(ServiceError::DeadlineExceeded));
            return false;
        }
        true
    });
    if jobs.is_empty() {
        return;
    }
    let n: usize = jobs.iter().map(|j| j.inputs.len()).sum();
    let started = Instant::now();
    let result = embed_all(set, &jobs);
    let compute = started.elapsed();
    metrics::histogram!(crate::service::ops::metrics::EMBED_BATCH_INPUTS).record(n as f64);
    match result {
        Ok(per_job) => {
            for (job, (rows, modalities)) in jobs.into_iter().zip(per_job) {
                let _enter = job.span.enter();
                let _ = job.reply.send(Ok(Embedded {
                    rows,
                    modalities,
                    queue: started.saturating_duration_since(job.enqueued),
                    compute,
                }));
            }
        }
        // A shared batch failed: run each request alone so one bad input fails only its own
        // request.
        Err(_) if jobs.len() > 1 => {
            for job in jobs {
                let t0 = Instant::now();
                let out = embed_all(set, std::slice::from_ref(&job));
                let compute = t0.elapsed();
                let _ = job.reply.send(match out {
                    Ok(mut v) => {
                        let (rows, modalities) = v.pop().unwrap_or_default();
                        Ok(Embedded {
                            rows,
                            modalities,
                            queue: t0.saturating_duration_since(job.enqueued),
                            compute,
                        })
                    }
                    Err(e) => Err(map_error(e)),
                });
            }
        }
        Err(e) => {
            if let Some(job) = jobs.pop() {
                let _ = job.reply.send(Err(map_error(e)));
            }
        }
    }
}

type JobRows = (Vec<Vec<f32>>, Vec<String>);

/// Runs every input of `jobs` through its encoder, grouped by kind, and scatters the rows back.
fn embed_all(set: &EncoderSet, jobs: &[EmbedJob]) -> Result<Vec<JobRows>, EncoderError> {
    let mut texts: Vec<&str> = Vec::new();
    let mut audio: Vec<&[f32]> = Vec::new();
    let mut video: Vec<&[f32]> = Vec::new();
    // (kind, index within its kind) per input, per job.
    let mut slots: Vec<Vec<(u8, usize)>> = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut s = Vec::with_capacity(j.inputs.len());
        for input in &j.inputs {
            match input {
                RawInput::Text(t) => {
                    s.push((0, texts.len()));
                    texts.push(t);
                }
                RawInput::Audio(a) => {
                    s.push((1, audio.len()));
                    audio.push(a);
                }
                RawInput::Video(v) => {
                    s.push((2, video.len()));
                    video.push(v);
                }
            }
        }
        slots.push(s);
    }
    let mut text_rows = Vec::new();
    for chunk in texts.chunks(TEXT_BATCH) {
        text_rows.extend(encoders::rows(&set.embed_text(chunk)?)?);
    }
    let audio_rows = if audio.is_empty() {
        Vec::new()
    } else {
        encoders::rows(&set.embed_audio(&audio)?)?
    };
    let video_rows = if video.is_empty() {
        Vec::new()
    } else {
        encoders::rows(&set.embed_video(&video)?)?
    };
    let m = &set.manifest;
    let names = [
        m.text
            .as_ref()
            .map(|t| t.modality.clone())
            .unwrap_or_default(),
        m.audio
            .as_ref()
            .map(|a| a.modality.clone())
            .unwrap_or_default(),
        m.video
            .as_ref()
            .map(|v| v.modality.clone())
            .unwrap_or_default(),
    ];
    Ok(slots
        .into_iter()
        .map(|s| {
            let rows = s
                .iter()
                .map(|&(kind, i)| match kind {
                    0 => text_rows[i].clone(),
                    1 => audio_rows[i].clone(),
                    _ => video_rows[i].clone(),
                })
                .collect();
            let modalities = s
                .iter()
                .map(|&(kind, _)| names[kind as usize].clone())
                .collect();
            (rows, modalities)
        })
        .collect())
}

/// Texts per forward pass of the text encoder.
const TEXT_BATCH: usize = 64;

/// Encoder errors as the service's: bad input is the client's, the rest is ours.
pub fn map_error(e: EncoderError) -> ServiceError {
    match e {
        EncoderError::Input(msg) => ServiceError::invalid("inputs", msg),
        EncoderError::NotConfigured(kind) => {
            ServiceError::FailedPrecondition(format!("this model has no {kind} encoder"))
        }
        other => ServiceError::Internal(other.to_string()),
    }
}
