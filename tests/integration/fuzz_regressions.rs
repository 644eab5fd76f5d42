//! The fuzz targets' smoke run (the long runs are `scripts/fuzz.sh`, on nightly): every seed of
//! `fuzz/corpus/TARGET/` must still be accepted, every input a fuzzer ever crashed on
//! (`fuzz/regressions/TARGET/`) must come back with an answer instead of a panic, and so must a
//! fixed set of mutations of the seeds (bit flips, truncations, overwritten length fields).

use crate::support;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;

use diffgap::fuzzing::{Target, TARGETS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MUTATIONS_PER_SEED: usize = 400;

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Runs a target and fails if it panicked anywhere, even where the panic was caught (audio
/// decoding catches symphonia's panics, as a last resort; libFuzzer counts them as crashes and
/// so does this test).
fn run(name: &str, target: Target, bytes: &[u8]) -> bool {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    let before = PANICS.with(Cell::get);
    let accepted = target(bytes);
    assert_eq!(
        PANICS.with(Cell::get),
        before,
        "{name} panicked on {} bytes: {:02x?}",
        bytes.len(),
        &bytes[..bytes.len().min(64)]
    );
    accepted
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && !n.starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    support::root().join("fuzz").join(kind).join(target)
}

/// One mutation of the kinds libFuzzer starts with: flipped bits, a cut, bytes set to 0x00 or
/// 0xFF (length and count fields at their extremes), or a run of bytes repeated.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    if v.is_empty() {
        return v;
    }
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => v.truncate(rng.random_range(0..v.len())),
        2 => {
            let i = rng.random_range(0..v.len());
            let end = (i + rng.random_range(1..9)).min(v.len());
            let fill = if rng.random_bool(0.5) { 0x00 } else { 0xFF };
            v[i..end].fill(fill);
        }
        _ => {
            let i = rng.random_range(0..v.len());
            let end = (i + rng.random_range(1..64)).min(v.len());
            let run = v[i..end].to_vec();
            v.splice(i..i, run);
        }
    }
    v
}

#[test]
fn every_target_has_seeds_and_they_are_accepted() {
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir("corpus", name), "seed-");
        assert!(!seeds.is_empty(), "{name}: no seeds in fuzz/corpus/{name}");
        for seed in seeds {
            let bytes = std::fs::read(&seed).expect("seed");
            assert!(
                run(name, *target, &bytes),
                "{name}: seed {} refused",
                seed.display()
            );
        }
    }
}

#[test]
fn empty_input_is_refused_by_every_target() {
    for (name, target) in TARGETS {
        assert!(!run(name, *target, &[]), "{name} accepted no bytes");
    }
}

#[test]
fn past_crashes_stay_fixed() {
    for (name, target) in TARGETS {
        for input in files(&fuzz_dir("regressions", name), "") {
            let bytes = std::fs::read(&input).expect("regression input");
            // `run` asserts that the input, which used to panic, no longer does.
            let accepted = run(name, *target, &bytes);
            eprintln!("{name}: {} -> accepted {accepted}", input.display());
        }
    }
}

#[test]
fn mutated_seeds_get_answers() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for (name, target) in TARGETS {
        let (mut accepted, mut refused) = (0, 0);
        for seed in files(&fuzz_dir("corpus", name), "seed-") {
            let bytes = std::fs::read(&seed).expect("seed");
            for _ in 0..MUTATIONS_PER_SEED {
                if run(name, *target, &mutate(&bytes, &mut rng)) {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Mutations that all pass (or all fail) would mean the target ignores its input.
        assert!(refused > 0, "{name}: no mutation refused");
        eprintln!("{name}: {accepted} mutations accepted, {refused} refused");
    }
}
