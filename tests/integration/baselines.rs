//! The cheap-baseline ladder end to end: fitted at training time on training rows only, stored
//! in the model directory with its hash, applied by `diffgap eval`, and the hubness-corrected
//! fusion chosen on validation never below the inverted-softmax baseline there.

use crate::support;

use diffgap::data::pairs::PairedSet;
use diffgap::eval::ladder::BASELINE_MODES;
use diffgap::eval::report::{evaluate_with_baselines, EvalOptions, Fusion};
use diffgap::model::artifact;
use tch::Device;

fn options() -> EvalOptions {
    EvalOptions {
        steps: 5,
        samples: 2,
        guidance: 1.0,
        seed: 0,
        shortlist: 0,
        gap_steps: 5,
    }
}

#[test]
fn training_fits_and_stores_the_ladder_and_eval_applies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = support::synth_file(tmp.path(), "train.safetensors", 400, 24, 7);
    let mut cfg = support::train_config(&pairs, &tmp.path().join("model"));
    cfg.epochs = 4;
    let outcome = diffgap::train::train(&cfg).expect("training");

    // Stored: the card describes it, the file is hashed like every other file of the model.
    let card = artifact::read_card(&cfg.out).unwrap();
    let fit = card
        .baselines
        .as_ref()
        .expect("the card records the baselines");
    assert!(card.files.contains_key(artifact::BASELINES_FILE));
    assert_eq!(fit.directions.len(), 2);
    assert!(
        fit.train_rows < PairedSet::load(&pairs).unwrap().rows(),
        "fitted on training rows only"
    );
    assert_eq!(card.hub_fusion.len(), 2);
    let model = artifact::load(&cfg.out, Device::Cpu).unwrap();
    let baselines = artifact::load_baselines(&cfg.out, &model.card, Device::Cpu)
        .unwrap()
        .expect("baselines present");

    // On validation (the training report), fused_hub is chosen among weights that include the
    // contrastive-only ones with the same bank, so it is never below the inverted softmax.
    for d in &outcome.report.directions {
        let hub = d.modes["fused_hub"].objective();
        let is = d.modes["inverted_softmax"].objective();
        assert!(
            hub >= is - 1e-9,
            "{} -> {}: fused_hub {hub} < inverted softmax {is}",
            d.query,
            d.candidate
        );
    }

    // Held-out items: every rung and DiffGAP mode, with a cost, and every mapped set measured.
    // Same seed, so the same space, but items the training file does not hold.
    let test = support::synth_held_out(tmp.path(), "test.safetensors", (120, 400), 24, 7);
    let set = PairedSet::load(&test).unwrap();
    let rep = evaluate_with_baselines(
        &model,
        &set,
        ("text", "audio"),
        Fusion::Card(&model.card.fusion),
        options(),
        Some(&baselines),
    )
    .unwrap();
    for d in &rep.directions {
        for mode in BASELINE_MODES.iter().chain(&[
            "contrastive",
            "bridged",
            "reverse",
            "fused",
            "fused_hub",
        ]) {
            let m = d
                .modes
                .get(*mode)
                .unwrap_or_else(|| panic!("{mode} missing"));
            assert!((0.0..=1.0).contains(&m.r1), "{mode}: {m:?}");
            assert!(d.cost_us[*mode] > 0.0, "{mode} has no cost");
        }
    }
    let methods: Vec<(&str, &str)> = rep
        .generation
        .iter()
        .map(|g| (g.source.as_str(), g.method.as_str()))
        .collect();
    for source in ["text", "audio"] {
        for method in ["raw", "bridged", "ridge", "procrustes", "adapter"] {
            assert!(
                methods.contains(&(source, method)),
                "{source} {method} missing: {methods:?}"
            );
        }
    }
    for g in &rep.generation {
        let p = &g.prdc;
        for v in [p.precision, p.recall, p.coverage, g.paired_cosine] {
            assert!(v.is_finite() && v <= 1.0 + 1e-9, "{g:?}");
        }
        assert!(
            g.frechet_shrunk.is_finite() && g.frechet_shrunk >= 0.0,
            "{g:?}"
        );
    }
    // Mapping closes the gap of means where raw embeddings leave it open.
    let mean_distance = |source: &str, method: &str| {
        rep.generation
            .iter()
            .find(|g| g.source == source && g.method == method)
            .map(|g| g.mean_distance)
            .unwrap()
    };
    let (ridge, raw) = (mean_distance("text", "ridge"), mean_distance("text", "raw"));
    assert!(ridge < 0.5 * raw, "ridge {ridge} vs raw {raw}");
}

#[test]
fn a_tampered_baselines_file_is_refused_and_old_models_load_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = support::train_tiny(tmp.path(), 200, 16);
    let card = artifact::read_card(&dir).unwrap();
    let file = dir.join(artifact::BASELINES_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let err = match artifact::load_baselines(&dir, &card, Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a tampered file loaded"),
    };
    assert!(err.contains(artifact::BASELINES_FILE), "{err}");

    // A card from before the baselines: no section, no file, and the model still loads.
    let mut old = card.clone();
    old.baselines = None;
    old.hub_fusion.clear();
    old.files.remove(artifact::BASELINES_FILE);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(
        dir.join(artifact::CARD_FILE),
        serde_json::to_string(&old).unwrap(),
    )
    .unwrap();
    assert!(artifact::load(&dir, Device::Cpu).is_ok());
    assert!(artifact::load_baselines(&dir, &old, Device::Cpu)
        .unwrap()
        .is_none());
}
