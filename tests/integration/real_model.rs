//! End to end on the real default model (built by scripts/build-default-model.sh: MiniLM +
//! aisfx encoders, the small CLAP's heads, DiffGAP), through the gRPC server on an ephemeral
//! port with a real tonic client: text in, ranked audio out; audio in, a bridged text-side
//! vector out; raw inputs agree with the embeddings Embed returns; bad raw input is refused.

use crate::support;

use diffgap::service::proto::{
    self, raw_input::Input, BridgeItem, BridgeRequest, Candidate, EmbedRequest, RankMode,
    RankRequest, RawInput,
};
use support::{client, cosine, default_model, norm, root, serve_config, serve_forever, tiny_model};
use tonic::Code;

/// (caption, wav bytes) of corpus clips of distinct identities from the training split, whose
/// captions are label-like (e.g. "the sound of a Cello").
fn corpus_clips(n: usize) -> Vec<(String, String, Vec<u8>)> {
    let corpus = root().join(".cache/corpus");
    let manifest = std::fs::read_to_string(corpus.join("manifest.jsonl")).expect("corpus manifest");
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in manifest.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("manifest line");
        let identity = v["identity"].as_str().expect("identity").to_string();
        if v["split"] != "train" || !seen.insert(identity.clone()) {
            continue;
        }
        let bytes = std::fs::read(corpus.join(v["file"].as_str().expect("file"))).expect("clip");
        out.push((
            identity,
            v["caption"].as_str().expect("caption").to_string(),
            bytes,
        ));
        if out.len() == n {
            break;
        }
    }
    out
}

fn text(t: &str) -> RawInput {
    RawInput {
        input: Some(Input::Text(t.into())),
    }
}

fn audio(bytes: &[u8]) -> RawInput {
    RawInput {
        input: Some(Input::Audio(bytes.to_vec())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_in_ranked_audio_out_and_audio_in_bridged_text_out() {
    let mut cfg = serve_config(&default_model());
    // Eight float WAV clips in one request.
    cfg.max_message_bytes = Some(64 << 20);
    let (addr, _) = serve_forever(cfg);
    let mut c = client(addr).await;
    let info = c
        .info(proto::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let m = &info.models[0];
    assert!(
        m.raw_modalities.contains(&"text".to_string())
            && m.raw_modalities.contains(&"audio".to_string()),
        "{:?}",
        m.raw_modalities
    );
    let clips = corpus_clips(8);
    assert_eq!(clips.len(), 8);

    // Embed: text and audio bytes in one request, unit vectors of the model's dimension.
    let mut inputs: Vec<RawInput> = clips.iter().map(|(_, cap, _)| text(cap)).collect();
    inputs.extend(clips.iter().map(|(_, _, b)| audio(b)));
    let emb = c
        .embed(EmbedRequest {
            model: String::new(),
            inputs,
        })
        .await
        .expect("embed")
        .into_inner();
    assert_eq!(emb.embeddings.len(), 16);
    for (i, e) in emb.embeddings.iter().enumerate() {
        let v = &e.embedding.as_ref().expect("embedding").values;
        assert_eq!(v.len(), m.dim as usize);
        assert!((norm(v) - 1.0).abs() < 1e-4);
        assert_eq!(e.modality, if i < 8 { "text" } else { "audio" });
    }
    assert!(emb.timings.is_some());

    // Rank: the caption of clip 0 as raw text against the 8 clips as raw audio (fused).
    let rank = |query: RawInput, mode: RankMode| RankRequest {
        query_modality: "text".into(),
        candidate_modality: "audio".into(),
        raw_query: Some(query),
        candidates: clips
            .iter()
            .map(|(id, _, b)| Candidate {
                id: id.clone(),
                embedding: None,
                raw: Some(audio(b)),
            })
            .collect(),
        mode: mode as i32,
        top_k: 8,
        ..Default::default()
    };
    let mut hits = 0;
    for (id, cap, _) in &clips {
        let r = c
            .rank(rank(text(cap), RankMode::Fused))
            .await
            .expect("rank")
            .into_inner();
        assert_eq!(r.results.len(), 8);
        hits += (r.results.iter().take(3).any(|x| &x.id == id)) as usize;
    }
    // Training-split sounds among 8 candidates: the right one should mostly be near the top
    // (chance of top-3 is 3/8).
    assert!(
        hits >= 6,
        "the right clip was in the top 3 for only {hits} of 8 captions"
    );

    // Raw text gives exactly what its Embed vector gives.
    let by_raw = c
        .rank(rank(text(&clips[0].1), RankMode::Contrastive))
        .await
        .expect("rank")
        .into_inner();
    let mut by_vec_req = rank(text(&clips[0].1), RankMode::Contrastive);
    by_vec_req.raw_query = None;
    by_vec_req.query = emb.embeddings[0].embedding.clone();
    let by_vec = c.rank(by_vec_req).await.expect("rank").into_inner();
    for (a, b) in by_raw.results.iter().zip(&by_vec.results) {
        assert_eq!(a.id, b.id);
        assert!((a.score - b.score).abs() < 1e-5);
    }

    // Audio in, a bridged text-side vector out: raw bytes == their Embed vector.
    let item = |raw: Option<RawInput>, e: Option<proto::Embedding>| BridgeItem {
        source_modality: "audio".into(),
        target_modality: "text".into(),
        embedding: e,
        raw,
        seed: Some(7),
        ..Default::default()
    };
    let raw = c
        .bridge(BridgeRequest {
            model: String::new(),
            items: vec![item(Some(audio(&clips[0].2)), None)],
        })
        .await
        .expect("bridge raw audio")
        .into_inner();
    let vec = c
        .bridge(BridgeRequest {
            model: String::new(),
            items: vec![item(None, emb.embeddings[8].embedding.clone())],
        })
        .await
        .expect("bridge embedding")
        .into_inner();
    let (a, b) = (&raw.embeddings[0].values, &vec.embeddings[0].values);
    assert_eq!(a.len(), m.dim as usize);
    assert!(
        cosine(a, b) > 0.99999,
        "raw audio and its embedding bridge differently"
    );
    // The bridged vector lands nearer its own caption's text embedding than the raw audio does.
    let caption = &emb.embeddings[0].embedding.as_ref().expect("text").values;
    let audio_v = &emb.embeddings[8].embedding.as_ref().expect("audio").values;
    assert!(
        cosine(a, caption) > cosine(audio_v, caption),
        "bridging did not move audio towards its caption"
    );
}

/// A 16-bit PCM WAV header declaring `rate` Hz and one channel, then a few zero samples.
fn wav_declaring(rate: u32) -> Vec<u8> {
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(36u32 + 64).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 1, 0]); // PCM, mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&rate.wrapping_mul(2).to_le_bytes());
    b.extend_from_slice(&[2, 0, 16, 0]); // block align, bits
    b.extend_from_slice(b"data");
    b.extend_from_slice(&64u32.to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_raw_input_is_refused_with_invalid_argument() {
    let (addr, _) = serve_forever(serve_config(&default_model()));
    let mut c = client(addr).await;
    let embed = |inputs: Vec<RawInput>| EmbedRequest {
        model: String::new(),
        inputs,
    };
    let cases: Vec<(&str, Vec<RawInput>)> = vec![
        ("empty request", vec![]),
        ("empty text", vec![text("   ")]),
        ("no input set", vec![RawInput { input: None }]),
        (
            "undecodable audio",
            vec![audio(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")],
        ),
        ("empty audio", vec![audio(b"")]),
        ("WAV at 0 Hz", vec![audio(&wav_declaring(0))]),
        ("WAV at 4e9 Hz", vec![audio(&wav_declaring(4_000_000_000))]),
        (
            "samples at 1 Hz",
            vec![RawInput {
                input: Some(Input::Samples(proto::AudioSamples {
                    values: vec![0.1; 10],
                    sample_rate: 1,
                    channels: 1,
                })),
            }],
        ),
        (
            "NaN samples",
            vec![RawInput {
                input: Some(Input::Samples(proto::AudioSamples {
                    values: vec![0.1, f32::NAN],
                    sample_rate: 44_100,
                    channels: 1,
                })),
            }],
        ),
        (
            "zero sample rate",
            vec![RawInput {
                input: Some(Input::Samples(proto::AudioSamples {
                    values: vec![0.1; 100],
                    sample_rate: 0,
                    channels: 1,
                })),
            }],
        ),
        (
            "over-long audio",
            vec![RawInput {
                input: Some(Input::Samples(proto::AudioSamples {
                    values: vec![0.1; 8_000 * 120],
                    sample_rate: 8_000,
                    channels: 1,
                })),
            }],
        ),
    ];
    for (what, inputs) in cases {
        let e = c.embed(embed(inputs)).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().contains("inputs"),
            "{what}: the message names no field: {}",
            e.message()
        );
        assert!(!e.message().contains("panic"), "{what}: {}", e.message());
    }
    // Video: the default model has no video encoder.
    let e = c
        .embed(embed(vec![RawInput {
            input: Some(Input::Video(proto::VideoFrames {
                values: vec![0.0; 12],
                frames: 1,
                height: 2,
                width: 2,
            })),
        }]))
        .await
        .expect_err("video");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // The server is still up.
    let ok = c
        .embed(embed(vec![text("a dog barks")]))
        .await
        .expect("still serving");
    assert_eq!(ok.into_inner().embeddings.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_without_encoders_refuses_raw_input_with_failed_precondition() {
    let (addr, _) = serve_forever(serve_config(&tiny_model()));
    let mut c = client(addr).await;
    let info = c
        .info(proto::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert!(info.models[0].raw_modalities.is_empty());
    let e = c
        .embed(EmbedRequest {
            model: String::new(),
            inputs: vec![text("a dog barks")],
        })
        .await
        .expect_err("no encoders");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let item = BridgeItem {
        source_modality: "text".into(),
        target_modality: "audio".into(),
        raw: Some(text("a dog barks")),
        ..Default::default()
    };
    let e = c
        .bridge(BridgeRequest {
            model: String::new(),
            items: vec![item],
        })
        .await
        .expect_err("no encoders");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_built_from_an_audio_folder_ranks_like_the_same_clips_inline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sounds = tmp.path().join("sounds-in");
    std::fs::create_dir_all(&sounds).expect("dir");
    let clips = corpus_clips(6);
    let mut names = Vec::new();
    for (i, (_, _, bytes)) in clips.iter().enumerate() {
        let name = format!("clip{i}.wav");
        std::fs::write(sounds.join(&name), bytes).expect("write clip");
        names.push(name);
    }
    let catalogs = tmp.path().join("catalogs");
    let meta =
        diffgap::service::request::catalog::build(&diffgap::service::request::catalog::BuildArgs {
            model: default_model(),
            pairs: None,
            audio_dir: Some(sounds.clone()),
            modality: "audio".into(),
            out: catalogs.join("sounds"),
            ids: None,
            seed: 0,
            device: diffgap::device::DeviceChoice::Cpu,
        })
        .expect("catalog build --audio-dir");
    assert_eq!(meta.ids, names, "ids are the file paths, sorted");
    assert!(meta.reverse.contains_key("text"));

    let mut cfg = serve_config(&default_model());
    cfg.catalogs = catalogs;
    cfg.max_message_bytes = Some(64 << 20);
    let (addr, _) = serve_forever(cfg);
    let mut c = client(addr).await;
    let info = c
        .info(proto::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let cat = &info.models[0].catalogs;
    assert_eq!(cat.len(), 1);
    assert_eq!((cat[0].name.as_str(), cat[0].entries), ("sounds", 6));

    // Info shows the card's validation ladder, whose choice VALIDATED_BEST follows.
    let card = diffgap::model::artifact::read_card(&default_model()).expect("card");
    let ladders = &info.models[0].ladders;
    assert_eq!(ladders.len(), 2, "{ladders:?}");
    for l in ladders {
        assert_eq!(l.validated_best, card.validated_best[&l.direction].mode);
        assert!(l.rungs.len() >= 10, "{l:?}");
    }
    for mode in [
        RankMode::Contrastive,
        RankMode::Reverse,
        RankMode::Fused,
        RankMode::FusedHub,
        RankMode::ValidatedBest,
        RankMode::InvertedSoftmax,
    ] {
        let by_catalog = c
            .rank(RankRequest {
                query_modality: "text".into(),
                raw_query: Some(text(&clips[2].1)),
                catalog: "sounds".into(),
                mode: mode as i32,
                ..Default::default()
            })
            .await
            .expect("rank catalog")
            .into_inner();
        let inline = c
            .rank(RankRequest {
                query_modality: "text".into(),
                candidate_modality: "audio".into(),
                raw_query: Some(text(&clips[2].1)),
                candidates: names
                    .iter()
                    .zip(&clips)
                    .map(|(n, (_, _, b))| Candidate {
                        id: n.clone(),
                        embedding: None,
                        raw: Some(audio(b)),
                    })
                    .collect(),
                mode: mode as i32,
                ..Default::default()
            })
            .await
            .expect("rank inline")
            .into_inner();
        assert_eq!(by_catalog.results.len(), 6);
        for (a, b) in by_catalog.results.iter().zip(&inline.results) {
            assert_eq!(a.id, b.id, "{mode:?}");
            assert!(
                (a.score - b.score).abs() < 1e-4 * a.score.abs().max(1.0),
                "{mode:?}: {} vs {}",
                a.score,
                b.score
            );
        }
    }
    // An unknown catalog is NOT_FOUND.
    let e = c
        .rank(RankRequest {
            query_modality: "text".into(),
            raw_query: Some(text("a bell")),
            catalog: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown catalog");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_embeds_and_bridges_share_the_worker_and_embeds_are_batch_invariant() {
    let (addr, _) = serve_forever(serve_config(&default_model()));
    let c = client(addr).await;
    let captions: Vec<String> = corpus_clips(12)
        .into_iter()
        .map(|(_, cap, _)| cap)
        .collect();
    // Alone, one request per caption.
    let mut alone = Vec::new();
    for cap in &captions {
        let r = c
            .clone()
            .embed(EmbedRequest {
                model: String::new(),
                inputs: vec![text(cap)],
            })
            .await
            .expect("embed alone")
            .into_inner();
        alone.push(r.embeddings[0].embedding.clone().expect("embedding").values);
    }
    // All at once, with Bridge requests in the same queue: the worker batches the waiting
    // Embed requests (texts of different lengths padded together) between denoising steps.
    let mut tasks = Vec::new();
    for (i, cap) in captions.iter().enumerate() {
        let mut c1 = c.clone();
        let cap = cap.clone();
        tasks.push(tokio::spawn(async move {
            let r = c1
                .embed(EmbedRequest {
                    model: String::new(),
                    inputs: vec![text(&cap)],
                })
                .await
                .expect("embed under load")
                .into_inner();
            (
                i,
                Some(r.embeddings[0].embedding.clone().expect("embedding").values),
            )
        }));
        let mut c2 = c.clone();
        tasks.push(tokio::spawn(async move {
            let item = BridgeItem {
                source_modality: "text".into(),
                target_modality: "audio".into(),
                raw: Some(text("a bell rings")),
                seed: Some(i as u64),
                ..Default::default()
            };
            let r = c2
                .bridge(BridgeRequest {
                    model: String::new(),
                    items: vec![item],
                })
                .await
                .expect("bridge under load")
                .into_inner();
            assert_eq!(r.embeddings.len(), 1);
            (i, None)
        }));
    }
    for t in tasks {
        if let (i, Some(v)) = t.await.expect("task") {
            let c = cosine(&v, &alone[i]);
            assert!(
                c > 0.99999,
                "caption {i}: batched embedding differs (cosine {c})"
            );
        }
    }
}
