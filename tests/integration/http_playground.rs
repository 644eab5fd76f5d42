//! The playground on the default model (real encoders), over HTTP/1.1: the page and its files
//! (embedded in the binary) served without a token with their media types; the audio route
//! serving the files a catalog built from an audio folder lists, with the token only, and
//! nothing else (unknown catalogs and ids, path tricks, files the catalog does not list, a
//! catalog of vectors); the gap picture's frame, in which the entries sit where their
//! embeddings project. The page in a browser is checked by tests/browser/playground.mjs
//! (scripts/ops-check.sh).

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diffgap::device::DeviceChoice;
use diffgap::service::request::catalog::{self, BuildArgs};
use serde_json::json;
use support::http::{floats, get, post, Reply};
use support::{default_model, serve_config, with_token, Addrs};

const TOKEN: &str = "playground-test-token";
const AUTH: (&str, &str) = ("authorization", "Bearer playground-test-token");
/// The audio catalog's files: (id, frequency in Hz).
const CLIPS: [(&str, f32); 3] = [
    ("deep/low.wav", 110.0),
    ("high.wav", 1760.0),
    ("mid.wav", 440.0),
];

struct Fixture {
    addrs: Addrs,
    /// The audio folder the catalog `clips` was built from.
    folder: PathBuf,
}

/// One second of a sine at `hz`, 16-bit mono 44.1 kHz.
fn write_tone(path: &Path, hz: f32) {
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create a WAV");
    for i in 0..44_100 {
        let t = i as f32 / 44_100.0;
        let s = 0.5 * (2.0 * std::f32::consts::PI * hz * t).sin();
        w.write_sample((s * i16::MAX as f32) as i16)
            .expect("a sample");
    }
    w.finalize().expect("finish the WAV");
}

fn build(args: BuildArgs) {
    catalog::build(&args).unwrap_or_else(|e| panic!("building {}: {e:#}", args.out.display()));
}

/// The default model with a token, its catalogs `clips` (an audio folder) and `vectors` (a
/// file of embeddings), and the HTTP listener, for the whole binary.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let folder = dir.join("clips");
        for (id, hz) in CLIPS {
            write_tone(&folder.join(id), hz);
        }
        let catalogs = dir.join("catalogs");
        let base = BuildArgs {
            model: default_model(),
            pairs: None,
            audio_dir: Some(folder.clone()),
            modality: "audio".into(),
            out: catalogs.join("clips"),
            ids: None,
            seed: 0,
            device: DeviceChoice::Cpu,
        };
        build(base.clone());
        let pairs = support::synth_file(&dir, "vectors.safetensors", 4, 512, 3);
        build(BuildArgs {
            pairs: Some(pairs),
            audio_dir: None,
            out: catalogs.join("vectors"),
            ..base
        });
        // In the folder, but not in the catalog: never served.
        write_tone(&folder.join("unlisted.wav"), 880.0);
        let mut cfg = with_token(serve_config(&default_model()), TOKEN);
        cfg.http_listen = "127.0.0.1:0".into();
        cfg.catalogs = catalogs;
        Fixture {
            addrs: support::serve_forever_on(cfg),
            folder,
        }
    })
}

async fn http() -> SocketAddr {
    support::http::listener(fixture().addrs).await
}

fn audio_path(catalog: &str, id: &str) -> String {
    format!("/v1/catalogs/{catalog}/entries/{id}/audio")
}

fn assert_not_found(r: &Reply, what: &str) {
    assert_eq!(r.status, 404, "{what}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    assert_eq!(r.code(), "not_found", "{what}");
}

#[tokio::test]
async fn the_page_and_its_files_are_served_without_a_token() {
    let addr = http().await;
    let root = get(addr, "/", &[]).await;
    assert!((300..400).contains(&root.status), "{}", root.status);
    assert_eq!(root.header("location"), Some("/playground"));

    let page = get(addr, "/playground", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert!(page.body.contains("<title>diffgap playground</title>"));
    // Every file the page names is served, with its media type, and nothing from elsewhere.
    for (file, media) in [
        ("/playground/app.js", "text/javascript; charset=utf-8"),
        ("/playground/gap.js", "text/javascript; charset=utf-8"),
        ("/playground/style.css", "text/css; charset=utf-8"),
    ] {
        assert!(page.body.contains(&format!("\"{file}\"")), "{file}");
        let r = get(addr, file, &[]).await;
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-type"), Some(media), "{file}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{file}"
        );
        assert!(r.body.len() > 500, "{file}: {}", r.body);
        assert!(fetches_nothing_outside(&r.body), "{file}");
    }
    assert!(fetches_nothing_outside(&page.body));
    assert_not_found(
        &get(addr, "/playground/secret.rs", &[]).await,
        "an unknown file",
    );
    assert_not_found(
        &get(addr, "/playground/..%2Fmod.rs", &[]).await,
        "a path trick",
    );
}

#[tokio::test]
async fn a_listed_file_is_served_with_its_media_type() {
    let addr = http().await;
    for (id, _) in CLIPS {
        let r = get(addr, &audio_path("clips", &id.replace('/', "%2F")), &[AUTH]).await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("audio/wav"), "{id}");
        let file = std::fs::read(fixture().folder.join(id)).expect("the file");
        assert_eq!(
            r.header("content-length"),
            Some(file.len().to_string().as_str())
        );
        assert!(r.bytes == file, "{id}: the bytes differ from the file's");
        assert!(r.header("x-request-id").is_some(), "{id}");
    }
}

#[tokio::test]
async fn the_audio_and_gap_routes_need_the_token() {
    let addr = http().await;
    for path in [
        audio_path("clips", "mid.wav"),
        "/v1/catalogs/clips/gap".into(),
    ] {
        for headers in [vec![], vec![("authorization", "Bearer wrong")]] {
            let r = get(addr, &path, &headers).await;
            assert_eq!(r.status, 401, "{path}: {}", r.body);
            assert_eq!(r.code(), "unauthenticated", "{path}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        }
    }
}

#[tokio::test]
async fn nothing_but_a_listed_entry_is_served() {
    let addr = http().await;
    let refused = [
        ("an unknown catalog", audio_path("nothing", "mid.wav")),
        ("an unknown id", audio_path("clips", "other.wav")),
        (
            "a file the catalog does not list",
            audio_path("clips", "unlisted.wav"),
        ),
        (
            "a parent path",
            audio_path("clips", "..%2F..%2Fetc%2Fpasswd"),
        ),
        ("an absolute path", audio_path("clips", "%2Fetc%2Fpasswd")),
        ("a dotted id", audio_path("clips", "deep%2F..%2Fmid.wav")),
        ("a catalog's path", audio_path("..%2Fclips", "mid.wav")),
        (
            "a raw parent path",
            "/v1/catalogs/clips/entries/../../../etc/passwd/audio".into(),
        ),
        ("a catalog of vectors", audio_path("vectors", "0")),
    ];
    for (what, path) in refused {
        assert_not_found(&get(addr, &path, &[AUTH]).await, what);
    }
    let vectors = get(addr, &audio_path("vectors", "0"), &[AUTH]).await;
    assert!(vectors.body.contains("not files"), "{}", vectors.body);
}

#[tokio::test]
async fn the_gap_picture_frames_the_catalog() {
    let addr = http().await;
    let r = get(addr, "/v1/catalogs/clips/gap", &[AUTH]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let g = r.json();
    let ids: Vec<&str> = CLIPS.iter().map(|(id, _)| *id).collect();
    assert_eq!(g["ids"], json!(ids));
    assert_eq!(
        (g["entries"].as_u64(), g["files"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(g["reverse"]["text"].as_array().map(Vec::len), Some(3));
    let explained = g["explained"].as_f64().expect("explained");
    assert!(explained > 0.0 && explained <= 1.0 + 1e-6, "{explained}");
    assert!(g["mean_distance"]["text"].as_f64().expect("a distance") > 0.0);
    // A clip's embedding (the same encoders as the catalog's) projects onto its point.
    let (mean, a0, a1) = (
        floats(&g["mean"]),
        floats(&g["axes"][0]),
        floats(&g["axes"][1]),
    );
    assert_eq!((mean.len(), a0.len(), a1.len()), (512, 512, 512));
    let wav = std::fs::read(fixture().folder.join(CLIPS[2].0)).expect("the file");
    let body = json!({"inputs": [{"audio": base64_of(&wav)}]});
    let e = post(addr, "/v1/embed", &[AUTH], &body).await;
    assert_eq!(e.status, 200, "{}", e.body);
    let x = floats(&e.json()["embeddings"][0]["embedding"]);
    let along = |axis: &[f32]| -> f32 {
        x.iter()
            .zip(&mean)
            .zip(axis)
            .map(|((x, m), a)| (x - m) * a)
            .sum()
    };
    let point = floats(&g["points"][2]);
    assert!(
        (along(&a0) - point[0]).abs() < 1e-3,
        "{} {point:?}",
        along(&a0)
    );
    assert!(
        (along(&a1) - point[1]).abs() < 1e-3,
        "{} {point:?}",
        along(&a1)
    );

    let v = get(addr, "/v1/catalogs/vectors/gap", &[AUTH]).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.json()["files"], json!(false));
    assert_not_found(
        &get(addr, "/v1/catalogs/nothing/gap", &[AUTH]).await,
        "no catalog",
    );
}

/// No URL of another site (the SVG namespace is a name, not a fetch).
fn fetches_nothing_outside(text: &str) -> bool {
    let text = text.replace("http://www.w3.org/2000/svg", "");
    !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn")
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
