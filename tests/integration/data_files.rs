//! Every way a paired file can be wrong gets an error that names the problem.

use crate::support;

use std::path::{Path, PathBuf};

use diffgap::data::pairs::{write_named, PairedSet};
use support::randn;
use tch::{Device, Kind, Tensor};

fn write(dir: &Path, name: &str, tensors: Vec<(&str, Tensor)>) -> PathBuf {
    let path = dir.join(name);
    let named: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    write_named(&path, &named).unwrap();
    path
}

/// A file's tensors, the name of the case and the message expected.
type Case = (&'static str, Vec<(&'static str, Tensor)>, &'static str);

fn err(path: &Path) -> String {
    match PairedSet::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_files_load_in_both_formats() {
    let tmp = tempfile::tempdir().unwrap();
    for ext in ["safetensors", "npz"] {
        let group = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let p = write(
            tmp.path(),
            &format!("ok.{ext}"),
            vec![
                ("text", randn(4, 8)),
                ("audio", randn(4, 8).to_kind(Kind::Double)),
                ("group", group),
            ],
        );
        let set = PairedSet::load(&p).unwrap();
        assert_eq!((set.rows(), set.dim()), (4, 8));
        assert_eq!(set.groups, vec![0, 0, 1, 1]);
        assert_eq!(set.names(), vec!["audio".to_string(), "text".to_string()]);
        assert!(set.fingerprint.starts_with("sha256:"));
        let norms =
            set.modality("audio")
                .unwrap()
                .norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
        assert!(
            (norms - 1.0).abs().max().double_value(&[]) < 1e-5,
            "rows are L2-normalised"
        );
    }
}

#[test]
fn malformed_tensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: Vec<Case> = vec![
        (
            "rows",
            vec![("text", randn(4, 8)), ("audio", randn(5, 8))],
            "rows must pair up",
        ),
        (
            "dims",
            vec![("text", randn(4, 8)), ("audio", randn(4, 9))],
            "a space has one dimension",
        ),
        (
            "dtype",
            vec![
                ("text", randn(4, 8)),
                ("audio", Tensor::ones([4, 8], (Kind::Int64, Device::Cpu))),
            ],
            "must be a float tensor",
        ),
        (
            "rank",
            vec![
                ("text", randn(4, 8)),
                ("audio", Tensor::ones([4], (Kind::Float, Device::Cpu))),
            ],
            "must be 2-D",
        ),
        ("empty", vec![("text", randn(0, 8))], "is empty"),
        (
            "group",
            vec![
                ("text", randn(4, 8)),
                ("group", Tensor::from_slice(&[0i64, 1])),
            ],
            "has 2 entries for 4 rows",
        ),
        (
            "groupkind",
            vec![
                ("text", randn(4, 8)),
                ("group", Tensor::from_slice(&[0f32, 1.0, 2.0, 3.0])),
            ],
            "1-D int64",
        ),
        (
            "nothing",
            vec![("group", Tensor::from_slice(&[0i64]))],
            "holds no modality",
        ),
    ];
    for (name, tensors, expected) in cases {
        let e = err(&write(d, &format!("{name}.safetensors"), tensors));
        assert!(e.contains(expected), "{name}: {e}");
    }
}

#[test]
fn bad_values_name_the_row() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, value, expected) in [
        ("nan", f32::NAN, "not finite"),
        ("inf", f32::INFINITY, "not finite"),
    ] {
        let x = randn(6, 4);
        let _ = x.get(3).get(1).fill_(value as f64);
        let e = err(&write(
            tmp.path(),
            &format!("{name}.npz"),
            vec![("text", randn(6, 4)), ("audio", x)],
        ));
        assert!(e.contains("row 3") && e.contains(expected), "{e}");
    }
    let x = randn(6, 4);
    let _ = x.get(2).zero_();
    let e = err(&write(tmp.path(), "zero.safetensors", vec![("audio", x)]));
    assert!(e.contains("row 2") && e.contains("all zeros"), "{e}");
}

#[test]
fn corrupt_and_unknown_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("junk.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}",
    )
    .unwrap();
    assert!(err(&d.join("junk.safetensors")).contains("not a valid safetensors file"));
    std::fs::write(d.join("junk.npz"), b"this is no zip archive").unwrap();
    assert!(err(&d.join("junk.npz")).contains("not a valid npz file"));
    std::fs::write(d.join("data.csv"), b"1,2,3").unwrap();
    assert!(err(&d.join("data.csv")).contains("unsupported extension"));
    assert!(err(&d.join("absent.safetensors")).contains("cannot read"));
    let p = write(d, "ok.safetensors", vec![("text", randn(3, 4))]);
    let set = PairedSet::load(&p).unwrap();
    let e = set.modality("video").unwrap_err().to_string();
    assert!(
        e.contains("no modality 'video'") && e.contains("text"),
        "{e}"
    );
}
