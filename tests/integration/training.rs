//! Training on a synthetic set with a known non-linear relation and a modality gap: the gap must
//! shrink and DiffGAP must beat the contrastive baseline on held-out items.

use crate::support;

use diffgap::data::pairs::PairedSet;
use diffgap::eval::report::{evaluate_model, EvalOptions, Fusion};
use diffgap::model::artifact;
use tch::Device;

#[test]
fn training_shrinks_the_gap_and_beats_the_contrastive_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let train_file = support::synth_file(tmp.path(), "train.safetensors", 800, 32, 10);
    let mut cfg = support::train_config(&train_file, &tmp.path().join("model"));
    cfg.epochs = 12;
    cfg.width = 128;
    let outcome = diffgap::train::train(&cfg).expect("training");
    assert!(outcome.history.len() >= 2);
    let first = &outcome.history[0];
    let best = outcome
        .history
        .iter()
        .map(|e| e.val_bridged_r1)
        .fold(0.0, f64::max);
    assert!(
        best > first.val_bridged_r1,
        "validation R@1 never improved: {:?}",
        outcome.history
    );

    let model = artifact::load(&cfg.out, Device::Cpu).expect("load");
    // Same seed, so the same space, but 200 items the training file does not hold.
    let held_out = support::synth_held_out(tmp.path(), "test.safetensors", (200, 800), 32, 10);
    let test = PairedSet::load(&held_out).unwrap();
    assert_eq!(
        test.groups[0], 800,
        "held-out items are numbered after the training items"
    );
    let opts = EvalOptions {
        steps: 10,
        samples: 4,
        guidance: 1.0,
        seed: 0,
        shortlist: 5,
        gap_steps: 10,
    };
    let rep = evaluate_model(
        &model,
        &test,
        ("text", "audio"),
        Fusion::Card(&model.card.fusion),
        opts,
    )
    .unwrap();
    for d in &rep.directions {
        let c = d.modes["contrastive"].r1;
        let best = d.modes["bridged"].r1.max(d.modes["fused"].r1);
        assert!(
            best > c + 0.05,
            "{} -> {}: contrastive {c}, best DiffGAP {best}",
            d.query,
            d.candidate
        );
        assert!(
            d.modes["fused"].map10 >= d.modes["contrastive"].map10,
            "{:?}",
            d.modes
        );
        assert!(d.modes.contains_key("generative"));
    }
    for g in &rep.gap {
        assert!(
            g.mean_distance_after < 0.5 * g.mean_distance_before,
            "{g:?}"
        );
        assert!(g.frechet_after < g.frechet_before, "{g:?}");
        assert!(g.paired_cosine_after > g.paired_cosine_before, "{g:?}");
    }
}
