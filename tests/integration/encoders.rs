//! The exported real encoders against their Python references (written by
//! `models/export_encoders.py` on real inputs), through the whole Rust path: the `tokenizers`
//! crate for text, symphonia + resampling for audio, libtorch for both. Also the loader's
//! contract checks, on a third-party TorchScript file (silero-vad) and on modules made here.
//!
//! Needs the encoders built by `scripts/build-encoders.sh` (the test command runs it).

use crate::support;

use std::path::{Path, PathBuf};

use diffgap::audio::decode::{decode, DecodeOptions};
use diffgap::encoders::module::{load_encoder, load_torchscript, Contract};
use diffgap::encoders::{AudioEncoder, EncoderError, TextEncoder, VideoEncoder};
use support::{cosine, root};
use tch::{Device, Kind, Tensor};

fn encoders_dir() -> PathBuf {
    let dir = root().join(".cache/encoders");
    assert!(
        dir.join("reference.json").is_file(),
        "{} is missing: run scripts/build-encoders.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(encoders_dir().join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference.json")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    Vec::<Vec<f32>>::try_from(t.to_kind(Kind::Float)).expect("rows")
}

#[test]
fn text_encoder_matches_sentence_transformers_through_the_rust_tokenizer() {
    let dir = encoders_dir();
    let enc = TextEncoder::load(
        &dir.join("text.pt"),
        &dir.join("tokenizer.json"),
        256,
        Some(384),
        Device::Cpu,
    )
    .expect("loading the text encoder");
    let refs = reference()["text"]["reference"]
        .as_array()
        .expect("refs")
        .clone();
    assert!(refs.len() >= 5);
    let texts: Vec<String> = refs
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect();
    let strs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    // As one padded batch and one by one: both must match the reference.
    let batch = rows(&enc.encode(&strs).expect("encode"));
    for (i, r) in refs.iter().enumerate() {
        let want = floats(&r["embedding"]);
        let single = rows(&enc.encode(&[strs[i]]).expect("encode one"));
        let (cb, cs) = (cosine(&batch[i], &want), cosine(&single[0], &want));
        assert!(
            cb >= 0.999 && cs >= 0.999,
            "'{}': cosine {cb} (batch), {cs} (single)",
            strs[i]
        );
    }
}

#[test]
fn text_encoder_rejects_empty_and_oversized_text() {
    let dir = encoders_dir();
    let enc = TextEncoder::load(
        &dir.join("text.pt"),
        &dir.join("tokenizer.json"),
        256,
        None,
        Device::Cpu,
    )
    .expect("loading");
    assert!(matches!(enc.encode(&[]), Err(EncoderError::Input(_))));
    assert!(matches!(enc.encode(&["  "]), Err(EncoderError::Input(m)) if m.contains("empty")));
    let long = "word ".repeat(10_000);
    assert!(
        matches!(enc.encode(&[long.as_str()]), Err(EncoderError::Input(m)) if m.contains("limit"))
    );
}

#[test]
fn audio_encoder_matches_aisfx_on_real_clips_through_the_rust_decoder() {
    let dir = encoders_dir();
    let enc = AudioEncoder::load(&dir.join("audio.pt"), 44_100, 30.0, Some(512), Device::Cpu)
        .expect("loading the audio encoder");
    let refs = reference()["audio"]["reference"]
        .as_array()
        .expect("refs")
        .clone();
    assert!(refs.len() >= 3, "the export checked too few clips");
    for r in &refs {
        let name = r["file"].as_str().expect("file");
        let bytes = std::fs::read(dir.join("reference-clips").join(name)).expect("clip");
        let wave = decode(&bytes, &DecodeOptions::new(44_100, 30.0))
            .expect("decoding")
            .samples;
        let got = rows(&enc.encode(&[&wave]).expect("encode"));
        let c = cosine(&got[0], &floats(&r["embedding"]));
        assert!(
            c >= 0.999,
            "{name}: cosine {c} against the Python reference"
        );
    }
}

#[test]
fn audio_encoder_rejects_empty_over_long_and_non_finite_waves() {
    let dir = encoders_dir();
    let enc =
        AudioEncoder::load(&dir.join("audio.pt"), 44_100, 2.0, None, Device::Cpu).expect("loading");
    assert!(matches!(enc.encode(&[&[]]), Err(EncoderError::Input(_))));
    let long = vec![0.1f32; 44_100 * 3];
    assert!(matches!(enc.encode(&[&long]), Err(EncoderError::Input(m)) if m.contains("limit")));
    let mut nan = vec![0.1f32; 4410];
    nan[7] = f32::NAN;
    assert!(matches!(enc.encode(&[&nan]), Err(EncoderError::Input(m)) if m.contains("sample 7")));
}

fn silero() -> PathBuf {
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", "import silero_vad, os; print(os.path.join(os.path.dirname(silero_vad.__file__), 'data', 'silero_vad.jit'))"])
        .output()
        .expect("running the project's python");
    assert!(
        out.status.success(),
        "silero-vad is not installed in .venv (scripts/build-encoders.sh installs it)"
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
}

#[test]
fn a_third_party_torchscript_file_loads_and_is_held_to_the_contract() {
    let path = silero();
    // It is a real TorchScript archive: the loader takes it.
    load_torchscript(&path, Device::Cpu).expect("silero_vad.jit loads through the same loader");
    // But it is a voice-activity detector (forward(x, sr)), not an encoder of our contracts.
    for contract in [
        Contract::Text,
        Contract::Audio {
            sample_rate: 16_000,
        },
    ] {
        match load_encoder(&path, Device::Cpu, contract, None) {
            Err(EncoderError::Contract { detail, .. }) => assert!(!detail.is_empty()),
            Err(e) => panic!("wrong error for {contract:?}: {e}"),
            Ok(m) => panic!(
                "silero_vad passed the {contract:?} contract with dim {}",
                m.dim
            ),
        }
    }
}

#[test]
fn corrupt_and_missing_files_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corrupt = tmp.path().join("corrupt.pt");
    std::fs::write(&corrupt, b"PK\x03\x04 not really a zip archive").expect("write");
    let e = load_torchscript(&corrupt, Device::Cpu).expect_err("corrupt file must fail");
    assert!(matches!(e, EncoderError::NotTorchScript { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("corrupt.pt") && msg.len() < 700, "{msg}");
    let e = load_torchscript(&tmp.path().join("absent.pt"), Device::Cpu).expect_err("absent");
    assert!(e.to_string().contains("no such file"), "{e}");
    // A truncated copy of a real module.
    let real = std::fs::read(encoders_dir().join("audio.pt")).expect("audio.pt");
    let cut = tmp.path().join("truncated.pt");
    std::fs::write(&cut, &real[..real.len() / 2]).expect("write");
    assert!(matches!(
        load_torchscript(&cut, Device::Cpu),
        Err(EncoderError::NotTorchScript { .. })
    ));
    // A bad tokenizer file.
    let tok = tmp.path().join("tokenizer.json");
    std::fs::write(&tok, b"{\"not\": \"a tokenizer\"}").expect("write");
    let e = TextEncoder::load(
        &encoders_dir().join("text.pt"),
        &tok,
        256,
        None,
        Device::Cpu,
    )
    .err()
    .expect("bad tokenizer");
    assert!(matches!(e, EncoderError::Tokenizer { .. }), "{e}");
}

/// Saves a traced module computing `f` on a probe input.
fn traced(dir: &Path, name: &str, probe: Tensor, f: impl Fn(&Tensor) -> Tensor) -> PathBuf {
    let w = support::randn(3, 8);
    let mut closure = |inputs: &[Tensor]| vec![f(&inputs[0]).matmul(&w)];
    let module = tch::CModule::create_by_tracing("Video", "forward", &[probe], &mut closure)
        .expect("tracing");
    let path = dir.join(name);
    module.save(&path).expect("saving");
    path
}

#[test]
fn video_encoder_contract_with_modules_made_here() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (t, h, w) = (4i64, 8i64, 8i64);
    let probe = Tensor::rand([2, t, 3, h, w], (Kind::Float, Device::Cpu));
    // Mean colour over frames and pixels, projected to 8: [B, 8].
    let good = traced(tmp.path(), "good.pt", probe.shallow_clone(), |x| {
        x.mean_dim([1i64, 3, 4].as_slice(), false, Kind::Float)
    });
    let enc = VideoEncoder::load(&good, t, h, w, Some(8), Device::Cpu)
        .expect("a [B,T,3,H,W] -> [B,D] module");
    assert_eq!(enc.dim(), 8);
    let clip: Vec<f32> = (0..enc.clip_len()).map(|i| (i % 7) as f32 / 7.0).collect();
    let out = enc.encode(&[&clip, &clip]).expect("encode");
    assert_eq!(out.size(), [2, 8]);
    assert!(
        matches!(enc.encode(&[&clip[1..]]), Err(EncoderError::Input(m)) if m.contains("expected"))
    );
    // Declared width differs from the module's.
    assert!(matches!(
        VideoEncoder::load(&good, t, h, w, Some(16), Device::Cpu),
        Err(EncoderError::Contract { .. })
    ));
    // A module whose output drops the batch axis: [D] for a batch.
    let bad = traced(tmp.path(), "bad.pt", probe, |x| {
        x.mean_dim([0i64, 1, 3, 4].as_slice(), false, Kind::Float)
    });
    match VideoEncoder::load(&bad, t, h, w, None, Device::Cpu) {
        Err(EncoderError::Contract { detail, .. }) => {
            assert!(detail.contains("output shape"), "{detail}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a [D] output passed the video contract"),
    }
}

#[test]
fn wav_flac_mp3_and_ogg_of_one_real_clip_decode_like_libsndfile_and_embed_alike() {
    // A real clip re-encoded by libsndfile (PyPI soundfile, in .venv) into each container, and
    // libsndfile's own decoding of each file, mixed to mono, as raw little-endian f32.
    let dir = encoders_dir();
    let src = dir.join("reference-clips/phone-incoming-call.oga");
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "import soundfile as sf, numpy as np\nx, r = sf.read({src:?}, dtype='float32')\n\
         for ext, fmt, sub in [('wav', 'WAV', 'PCM_16'), ('flac', 'FLAC', 'PCM_16'), ('mp3', 'MP3', 'MPEG_LAYER_III')]:\n    \
         p = {out:?} + '/clip.' + ext\n    sf.write(p, x, r, format=fmt, subtype=sub)\n    \
         y, _ = sf.read(p, dtype='float32')\n    y.mean(axis=1).astype('<f4').tofile(p + '.f32')\n",
        src = src.display().to_string(),
        out = tmp.path().display().to_string(),
    );
    let status = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", &script])
        .status()
        .expect("running the project's python");
    assert!(status.success(), "writing the test files with soundfile");
    let samples = |path: &Path| {
        let bytes = std::fs::read(path).expect("read");
        let d = decode(&bytes, &DecodeOptions::new(44_100, 30.0)).expect("decode");
        assert_eq!(d.source_channels, 2, "{}", path.display());
        d.samples
    };
    let reference = |path: &Path| -> Vec<f32> {
        let mut p = path.as_os_str().to_owned();
        p.push(".f32");
        std::fs::read(PathBuf::from(p))
            .expect("reference samples")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    // Lossless containers: exactly libsndfile's samples (up to float rounding of the mix).
    for ext in ["wav", "flac"] {
        let path = tmp.path().join(format!("clip.{ext}"));
        let (ours, theirs) = (samples(&path), reference(&path));
        assert_eq!(ours.len(), theirs.len(), "{ext}: length");
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-6, "{ext}: differs from libsndfile by up to {max}");
    }
    let enc = AudioEncoder::load(&dir.join("audio.pt"), 44_100, 30.0, Some(512), Device::Cpu)
        .expect("loading the audio encoder");
    let embed = |wave: &[f32]| rows(&enc.encode(&[wave]).expect("encode")).remove(0);
    let wav = embed(&samples(&tmp.path().join("clip.wav")));
    let flac = embed(&samples(&tmp.path().join("clip.flac")));
    let ogg = embed(&samples(&src));
    let mp3_path = tmp.path().join("clip.mp3");
    let mp3 = samples(&mp3_path);
    assert!(
        mp3.len().abs_diff(reference(&mp3_path).len()) < 4096,
        "MP3 length"
    );
    let mp3 = embed(&mp3);
    // libsndfile rounds floats to 16 bits differently for WAV and FLAC (1 LSB on about half
    // the samples), which the log-mel front-end shows in the quietest bins.
    let (c_flac, c_ogg, c_mp3) = (cosine(&flac, &wav), cosine(&ogg, &wav), cosine(&mp3, &wav));
    assert!(c_flac > 0.999, "FLAC vs WAV: {c_flac}");
    assert!(c_ogg > 0.999, "OGG vs WAV: {c_ogg}");
    assert!(c_mp3 > 0.98, "MP3 vs WAV: {c_mp3}");
}
