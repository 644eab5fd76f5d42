//! The model directory: TorchScript round trip, and loads that must fail with a clear message.

use crate::support;

use std::path::Path;

use diffgap::device::Dtype;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::model::{artifact, row_seed, ModelError};
use support::copy_dir;
use tch::Device;

/// 32 rows of the tiny model's dimension, their seeds, and guided multi-sample options: what
/// the two ways of loading a denoiser are compared on.
fn bridge_inputs() -> (tch::Tensor, Vec<u64>, SampleOptions) {
    let x = support::randn(32, 16);
    let seeds: Vec<u64> = (0..32).map(|i| row_seed(5, i)).collect();
    let opts = SampleOptions {
        steps: 10,
        guidance: 1.5,
        samples: 2,
    };
    (x, seeds, opts)
}

#[test]
fn torchscript_and_rust_weights_give_the_same_outputs() {
    let dir = support::tiny_model();
    let scripted = artifact::load(&dir, Device::Cpu).expect("torchscript load");
    let eager = artifact::load_eager(&dir, Device::Cpu).expect("eager load");
    let (x, seeds, opts) = bridge_inputs();
    for (from, to) in [("text", "audio"), ("audio", "text")] {
        let a = scripted.bridge(&x, from, to, &seeds, opts).unwrap();
        let b = eager.bridge(&x, from, to, &seeds, opts).unwrap();
        let err = (a - b).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{from}->{to}: {err}");
    }
    let a = scripted
        .generative_score(&x, "text", &x, "audio", &seeds)
        .unwrap();
    let b = eager
        .generative_score(&x, "text", &x, "audio", &seeds)
        .unwrap();
    assert!((a - b).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn card_records_what_serving_needs() {
    let card = artifact::read_card(&support::tiny_model()).unwrap();
    assert_eq!(card.space.dim, 16);
    assert_eq!(card.directions.len(), 2);
    assert!(card.fusion.contains_key("text->audio") && card.fusion.contains_key("audio->text"));
    let training = card.training.as_ref().expect("training record");
    assert!(training.data_fingerprint.starts_with("sha256:"));
    assert!(card.evaluation.is_some());
    // The TorchScript module, both weight files and the fitted baselines, each with its hash.
    let files: Vec<&str> = card.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            artifact::BASELINES_FILE,
            artifact::SCRIPT_FILE,
            artifact::EMA_FILE,
            artifact::WEIGHTS_FILE
        ]
    );
    assert!(card.parameters > 0);
}

fn load_err(dir: &Path) -> String {
    match artifact::load(dir, Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tampered_or_broken_artifacts_fail_with_a_reason() {
    let src = support::tiny_model();
    let tmp = tempfile::tempdir().unwrap();

    let d = tmp.path().join("hash");
    copy_dir(&src, &d);
    let mut bytes = std::fs::read(d.join("denoiser.pt")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(d.join("denoiser.pt"), bytes).unwrap();
    assert!(matches!(
        artifact::load(&d, Device::Cpu),
        Err(ModelError::HashMismatch { .. })
    ));

    let d = tmp.path().join("card");
    copy_dir(&src, &d);
    std::fs::write(d.join("card.json"), "{ not json").unwrap();
    assert!(load_err(&d).contains("not a valid model card"));

    let d = tmp.path().join("missing");
    copy_dir(&src, &d);
    std::fs::remove_file(d.join("denoiser.pt")).unwrap();
    assert!(load_err(&d).contains("denoiser.pt"));

    let d = tmp.path().join("future");
    copy_dir(&src, &d);
    let card = std::fs::read_to_string(d.join("card.json")).unwrap();
    std::fs::write(
        d.join("card.json"),
        card.replace(
            "\"torch_version\": \"2.13.0\"",
            "\"torch_version\": \"9.0.0\"",
        ),
    )
    .unwrap();
    assert!(load_err(&d).contains("not forward compatible"));

    let d = tmp.path().join("dims");
    copy_dir(&src, &d);
    let card = std::fs::read_to_string(d.join("card.json")).unwrap();
    std::fs::write(
        d.join("card.json"),
        card.replacen("\"dim\": 16", "\"dim\": 17", 1),
    )
    .unwrap();
    assert!(load_err(&d).contains("17"));

    assert!(load_err(&tmp.path().join("nowhere")).contains("card.json"));
}

#[test]
fn a_module_with_the_wrong_contract_is_refused_at_load() {
    let src = support::tiny_model();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("contract");
    copy_dir(&src, &d);
    // A real TorchScript module that takes one input instead of five.
    let x = support::randn(2, 16);
    let module =
        tch::CModule::create_by_tracing("Wrong", "forward", &[x], &mut |v| vec![&v[0] * 2.0])
            .unwrap();
    module.save(d.join("denoiser.pt")).unwrap();
    let hash = artifact::sha256_file(&d.join("denoiser.pt")).unwrap();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("card.json")).unwrap()).unwrap();
    card["files"]["denoiser.pt"] = serde_json::Value::String(hash);
    std::fs::write(d.join("card.json"), card.to_string()).unwrap();
    let err = load_err(&d);
    assert!(err.contains("does not take"), "{err}");

    // Not a TorchScript archive at all.
    std::fs::write(d.join("denoiser.pt"), b"PK\x03\x04 garbage").unwrap();
    card["files"]["denoiser.pt"] =
        serde_json::Value::String(artifact::sha256_file(&d.join("denoiser.pt")).unwrap());
    std::fs::write(d.join("card.json"), card.to_string()).unwrap();
    assert!(load_err(&d).contains("not a loadable TorchScript module"));
}

#[test]
fn a_loaded_model_is_named_by_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("renamed-model");
    copy_dir(&support::tiny_model(), &d);
    let model = artifact::load(&d, Device::Cpu).unwrap();
    assert_eq!(model.card.name, "renamed-model");
}

#[test]
fn a_bfloat16_denoiser_stays_close_to_float32_and_is_really_bfloat16() {
    let dir = support::tiny_model();
    let f32_model = artifact::load(&dir, Device::Cpu).expect("float32 load");
    let bf16_model = artifact::load_as(&dir, Device::Cpu, Dtype::Bfloat16).expect("bfloat16 load");
    let (x, seeds, opts) = bridge_inputs();
    for (from, to) in [("text", "audio"), ("audio", "text")] {
        let a = f32_model.bridge(&x, from, to, &seeds, opts).unwrap();
        let b = bf16_model.bridge(&x, from, to, &seeds, opts).unwrap();
        assert_eq!(b.kind(), tch::Kind::Float, "the sampler hands float32 back");
        let err = (&a - &b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]);
        // bfloat16 keeps 8 significant bits: differences of a few parts in a hundred of the
        // largest value, and never none at all (then the network did not run in bfloat16).
        assert!(
            err > 0.0 && err < 0.05 * scale,
            "{from}->{to}: {err} of {scale}"
        );
        let cos = tch::Tensor::cosine_similarity(&a, &b, 1, 1e-8)
            .min()
            .double_value(&[]);
        assert!(cos > 0.99, "{from}->{to}: row cosine {cos}");
    }
}
