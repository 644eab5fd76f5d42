//! Fair sharing of a model instance between Embed work and denoising steps, on the real
//! default model through the gRPC server: clients looping long-audio Embeds must not hold up
//! Bridges. Proven by order, not time: with Embeds encoded between denoising steps (on the
//! model thread), every Bridge waited for the audio in the queue before it, so an Embed was
//! answered during every Bridge; with the encoders on their own lower-priority thread, Bridges
//! overtake the long Embeds in progress.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use diffgap::loadgen::audio::noise_wav;
use diffgap::service::proto::{
    raw_input::Input, BridgeItem, BridgeRequest, EmbedRequest, InfoRequest, RawInput,
};
use support::{client, default_model, serve_config, serve_forever, vector};

/// Clients looping Embeds of this many clips of `CLIP_SECONDS` each.
const AUDIO_CLIENTS: usize = 2;
const CLIP_SECONDS: f64 = 29.0;
/// Bridges sent one after the other while the audio clients loop.
const BRIDGES: usize = 12;

#[tokio::test(flavor = "multi_thread")]
async fn bridges_overtake_long_audio_embeds_in_progress() {
    let (addr, _) = serve_forever(serve_config(&default_model()));
    let mut c = client(addr).await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    let m = &info.models[0];
    let wav = Arc::new(noise_wav(CLIP_SECONDS, m.audio_sample_rate, 1).expect("wav"));
    let (from, to) = m.directions[0].split_once("->").expect("direction");
    let item = BridgeItem::new(from, to, vector(5, m.dim as usize), Some(9));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(AUDIO_CLIENTS);
    let mut loops = Vec::new();
    for _ in 0..AUDIO_CLIENTS {
        let (mut c, wav, stop, answered, first) = (
            c.clone(),
            wav.clone(),
            stop.clone(),
            answered.clone(),
            first_tx.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut rows = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = c
                    .embed(EmbedRequest {
                        model: String::new(),
                        inputs: vec![RawInput {
                            input: Some(Input::Audio(wav.to_vec())),
                        }],
                    })
                    .await
                    .expect("a long-audio Embed")
                    .into_inner();
                answered.fetch_add(1, Ordering::SeqCst);
                rows.push(r.embeddings[0].embedding.clone().expect("a row").values);
                let _ = first.try_send(());
            }
            rows
        }));
    }
    drop(first_tx);
    // Steady state: each client has been answered once and has its next clip in flight.
    for _ in 0..AUDIO_CLIENTS {
        first_rx.recv().await.expect("a first answer");
    }
    // For each Bridge: Embeds answered between its send and its answer.
    let mut during = Vec::new();
    for _ in 0..BRIDGES {
        let before = answered.load(Ordering::SeqCst);
        let r = c
            .bridge(BridgeRequest::new(vec![item.clone()]))
            .await
            .expect("a Bridge beside long audio")
            .into_inner();
        assert_eq!(r.embeddings.len(), 1);
        during.push(answered.load(Ordering::SeqCst) - before);
    }
    stop.store(true, Ordering::SeqCst);
    let mut rows = Vec::new();
    for l in loops {
        rows.extend(l.await.expect("audio client"));
    }
    // Queued behind audio, a Bridge sees at least one Embed answered while it waits (the one
    // before it in the queue); overtaking, it sees none (one may end by chance meanwhile).
    let overtook = during.iter().filter(|&&n| n == 0).count();
    assert!(
        overtook * 2 > BRIDGES,
        "Bridges waited for the audio Embeds: Embeds answered during each Bridge {during:?}"
    );
    // The audio went on meanwhile, and the same clip always gives the same row.
    assert!(
        rows.len() >= 2 * AUDIO_CLIENTS,
        "{} Embeds answered",
        rows.len()
    );
    for r in &rows[1..] {
        let diff = r
            .iter()
            .zip(&rows[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "one clip, different rows (max difference {diff})"
        );
    }
}
