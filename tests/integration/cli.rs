//! The `diffgap` binary end to end, as a user runs it on a file they bring.

use crate::support;

use std::path::Path;
use std::process::Command;

use support::diffgap_command;

fn diffgap(args: &[&str]) -> (bool, String) {
    let out = diffgap_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running diffgap");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `diffgap train` with `args` and a tiny, fast recipe.
fn train_tiny(args: &[&str]) -> (bool, String) {
    let recipe = [
        "--epochs",
        "2",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "3",
        "--samples",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ];
    diffgap(&[&["train"][..], args, &recipe].concat())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_train_eval_bridge() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.npz");
    let model = tmp.path().join("model");
    let (ok, out) = diffgap(&["synth", "--out", s(&pairs), "--items", "200", "--dim", "16"]);
    assert!(ok, "{out}");
    let (ok, out) = train_tiny(&["--pairs", s(&pairs), "--out", s(&model)]);
    assert!(ok, "{out}");
    assert!(
        out.contains("| contrastive |") && out.contains("| fused |"),
        "{out}"
    );
    let json = tmp.path().join("eval.json");
    let (ok, out) = diffgap(&[
        "eval",
        "--model",
        s(&model),
        "--pairs",
        s(&pairs),
        "--json",
        s(&json),
        "--shortlist",
        "3",
    ]);
    assert!(ok, "{out}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(rep["data_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(rep["directions"].as_array().unwrap().len(), 2);
    for mode in ["contrastive", "bridged", "reverse", "fused", "generative"] {
        let r1 = rep["directions"][0]["modes"][mode]["r1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r1), "{mode}: {r1}");
    }
    // Resuming continues from the saved weights with the card's recipe.
    let resumed = tmp.path().join("resumed");
    let (ok, out) = diffgap(&[
        "train",
        "--pairs",
        s(&pairs),
        "--out",
        s(&resumed),
        "--resume",
        s(&model),
        "--epochs",
        "1",
        "--width",
        "999",
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert!(ok, "{out}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(resumed.join("card.json")).unwrap()).unwrap();
    assert_eq!(
        card["denoiser"]["width"], 32,
        "the resumed card's width wins over the flag"
    );

    let bridged = tmp.path().join("bridged.safetensors");
    let (ok, out) = diffgap(&[
        "bridge",
        "--model",
        s(&model),
        "--input",
        s(&pairs),
        "--from",
        "text",
        "--to",
        "audio",
        "--out",
        s(&bridged),
        "--steps",
        "4",
    ]);
    assert!(ok, "{out}");
    let t = tch::Tensor::read_safetensors(&bridged).unwrap();
    assert_eq!(t[0].0, "audio");
    assert_eq!(t[0].1.size(), vec![400, 16]);
}

#[test]
fn user_errors_exit_non_zero_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.safetensors");
    assert!(diffgap(&["synth", "--out", s(&pairs), "--items", "20", "--dim", "8"]).0);
    let m = tmp.path().join("m");
    let train = |out: &str, extra: &[&str]| {
        diffgap(&[&["train", "--pairs", s(&pairs), "--out", out][..], extra].concat())
    };
    let (ok, out) = train(s(&m), &["--modalities", "text,video"]);
    assert!(!ok && out.contains("no modality 'video'"), "{out}");
    let (ok, out) = train(s(&m), &["--val-fraction", "1.5"]);
    assert!(!ok && out.contains("--val-fraction"), "{out}");
    let (ok, out) = diffgap(&[
        "eval",
        "--model",
        s(&tmp.path().join("none")),
        "--pairs",
        s(&pairs),
    ]);
    assert!(!ok && out.contains("card.json"), "{out}");
    let (ok, out) = train("x", &["--device", "tpu"]);
    assert!(!ok && out.contains("unknown device"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn binary_links_libtorch_cuda_and_finds_it_without_ld_library_path() {
    // Without --no-as-needed the linker drops libtorch (and with it libtorch_cuda), so a GPU is
    // never used; without an rpath the binary only starts with LD_LIBRARY_PATH set.
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_diffgap"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("ldd is needed for this test");
    let libs = String::from_utf8_lossy(&out.stdout);
    let cuda = libs
        .lines()
        .find(|l| l.contains("libtorch_cuda.so"))
        .unwrap_or_else(|| panic!("libtorch_cuda.so is not linked:\n{libs}"));
    assert!(
        cuda.contains("=> /"),
        "libtorch_cuda.so does not resolve: {cuda}"
    );
    assert!(!libs.contains("not found"), "{libs}");
    let o = diffgap_command()
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.starts_with("diffgap "), "{text}");
}

#[test]
fn baselines_fit_compare_and_bridge_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, val) = (
        tmp.path().join("train.safetensors"),
        tmp.path().join("val.safetensors"),
    );
    assert!(
        diffgap(&[
            "synth",
            "--out",
            s(&train),
            "--items",
            "160",
            "--dim",
            "16",
            "--seed",
            "4"
        ])
        .0
    );
    let (ok, out) = diffgap(&[
        "synth",
        "--out",
        s(&val),
        "--items",
        "40",
        "--dim",
        "16",
        "--seed",
        "4",
        "--offset",
        "160",
    ]);
    assert!(ok, "{out}");
    let model = tmp.path().join("model");
    let (ok, out) = train_tiny(&["--pairs", s(&train), "--val", s(&val), "--out", s(&model)]);
    assert!(ok, "{out}");
    // The training table shows the ladder next to DiffGAP's modes.
    for row in [
        "| baseline | inverted_softmax |",
        "| baseline | adapter |",
        "| DiffGAP | fused_hub |",
    ] {
        assert!(out.contains(row), "{row} missing: {out}");
    }

    // A model from before the baselines: `baselines fit` adds them, as training does.
    let card_path = model.join("card.json");
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    let obj = card.as_object_mut().unwrap();
    for key in ["baselines", "hub_fusion", "validated_best"] {
        obj.remove(key);
    }
    obj["files"]
        .as_object_mut()
        .unwrap()
        .remove("baselines.safetensors");
    std::fs::write(&card_path, card.to_string()).unwrap();
    std::fs::remove_file(model.join("baselines.safetensors")).unwrap();
    let eval = |json: &Path| {
        diffgap(&[
            "eval",
            "--model",
            s(&model),
            "--pairs",
            s(&val),
            "--shortlist",
            "0",
            "--json",
            s(json),
        ])
    };
    let before = tmp.path().join("before.json");
    let (ok, out) = eval(&before);
    assert!(ok && out.contains("no fitted baselines"), "{out}");
    let (ok, out) = diffgap(&[
        "baselines",
        "fit",
        "--model",
        s(&model),
        "--pairs",
        s(&train),
        "--val",
        s(&val),
    ]);
    assert!(ok && out.contains("baselines fitted"), "{out}");
    let after = tmp.path().join("after.json");
    let (ok, out) = eval(&after);
    assert!(ok && out.contains("| baseline | ridge |"), "{out}");
    assert!(
        out.contains("On the training run's validation split the best mode was"),
        "{out}"
    );

    let (ok, out) = diffgap(&[
        "compare",
        "--run",
        &format!("old={}", s(&before)),
        "--run",
        &format!("refit={}", s(&after)),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("| old |") && out.contains("| refit |"),
        "{out}"
    );
    let (ok, out) = diffgap(&["compare", "--run", s(&after)]);
    assert!(!ok && out.contains("LABEL=PATH"), "{out}");

    let (ok, out) = diffgap(&["bridge-sweep", "--model", s(&model), "--pairs", s(&val)]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("| bridged |").count(), 30, "{out}");
    assert_eq!(out.matches("| ridge |").count(), 2, "{out}");
}
