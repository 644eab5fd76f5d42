#!/usr/bin/env bash
# Makes the results (docs/results/): builds the default model if needed, evaluates it on the
# held-out test split of the real corpus (both directions, the cheap-baseline ladder and every
# DiffGAP mode with its cost per query, gap and generation measures), sweeps the bridge for
# generation on the validation and test splits, does the same on the synthetic space, draws the
# gap picture, and writes docs/results/README.md with the tables, the small CLAP's own numbers
# and the time and size of each stage. Run it on an idle machine: the cost column is timed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
bash scripts/setup.sh
bin=${DIFFGAP_BIN:-target/release/diffgap}
[ -x "$bin" ] || cargo build --release
bash scripts/build-default-model.sh
OUT=docs/results
R=.cache/real
mkdir -p "$OUT"
t0=$(date +%s.%N)
"$bin" eval --model models/default --pairs "$R/projection/pairs-test.safetensors" \
  --json "$OUT/test-eval.json" > "$OUT/test-eval.md"
t1=$(date +%s.%N)
# The test split by caption kind: label-like captions (the kind trained on) and Tux Paint's
# human-written descriptions.
for kind in labels described; do
  "$bin" eval --model models/default --pairs "$R/projection/pairs-test-$kind.safetensors" \
    --json "$OUT/test-eval-$kind.json" > "$OUT/test-eval-$kind.md"
done
"$bin" plot-gap --model models/default --pairs "$R/projection/pairs-test.safetensors" \
  --out "$OUT/gap.png" > /dev/null
# The bridge for generation on the real splits: validation to choose, test to report.
for split in val test; do
  "$bin" bridge-sweep --model models/default --pairs "$R/projection/pairs-$split.safetensors" \
    --json "$OUT/bridge-sweep-$split.json" > "$OUT/bridge-sweep-$split.md"
done
# The synthetic space (a known relation and gap): the ladder on 500 held-out items.
bash scripts/build-synthetic-model.sh
"$bin" synth --out .cache/synthetic-test.safetensors --items 500 --offset 2000 --dim 64 --seed 0 > /dev/null
"$bin" eval --model models/synthetic --pairs .cache/synthetic-test.safetensors \
  --json "$OUT/synthetic-test-eval.json" > "$OUT/synthetic-test-eval.md"
"$bin" bridge-sweep --model models/synthetic --pairs .cache/synthetic-test.safetensors \
  > "$OUT/bridge-sweep-synthetic-test.md"
python3 - "$OUT" "$R" "$(python3 -c "print(round($t1 - $t0, 1))")" <<'PY'
import json, sys
out, r, eval_s = sys.argv[1], sys.argv[2], sys.argv[3]
clap = json.load(open(f"{r}/projection/clap.json"))
card = json.load(open("models/default/card.json"))
summary = json.load(open(".cache/corpus/summary.json"))
stages = [l.rstrip("\n").split("\t") for l in open(f"{r}/stages.tsv")]
evaluation = open(f"{out}/test-eval.md").read().strip()
# The eval's first line describes the data and options: keep it, as code.
first, _, rest = evaluation.partition("\n")
evaluation = f"`{first}`\n{rest}"
by_kind = {k: json.load(open(f"{out}/test-eval-{k}.json")) for k in ("labels", "described")}
def mb(b): return f"{int(b) / 1e6:.1f} MB"
lines = []
w = lines.append
w("# Results on real sounds (the default model)")
w("")
w("Made by `scripts/results.sh` (it builds the default model first if needed). Everything")
w("below is measured on the **held-out test split** of the real corpus: sound identities never")
w("seen in training or validation. **The captions are label-like** (\"the sound of a Cello\",")
w("\"horse canter\", \"phone incoming call\"), except Tux Paint's one-line descriptions (\"A frog.\"),")
w("which are all in the test split as an out-of-distribution set; they are not AudioCaps-style")
w("sentences, and the space is a small CLAP trained here, not LAION-CLAP.")
w("")
w("## The corpus")
w("")
w("| source | train clips/identities | val | test |")
w("|---|---|---|---|")
for src in sorted(summary["clips"]):
    c, i = summary["clips"][src], summary["identities"][src]
    cell = lambda s: f"{c.get(s, 0)}/{i.get(s, 0)}"
    w(f"| {src} | {cell('train')} | {cell('val')} | {cell('test')} |")
w(f"| all | {summary['total_clips']} clips, {summary['total_identities']} identities, {summary['total_seconds']:.0f} s of audio | | |")
w("")
w("## The small CLAP (projection heads on frozen MiniLM and aisfx)")
w("")
w(f"Space dimension {clap['dim']}, learned temperature {clap['temperature']:.4f}, {clap['epochs_run']} epochs (best {clap['best_epoch']}).")
w("")
w("| split, direction | R@1 | R@5 | R@10 | mAP@10 | queries |")
w("|---|---|---|---|---|---|")
for k, name in [("val_text_to_audio", "val, text->audio"), ("val_audio_to_text", "val, audio->text"),
                ("test_text_to_audio", "test, text->audio"), ("test_audio_to_text", "test, audio->text")]:
    m = clap[k]
    w(f"| {name} | {m['r1']:.3f} | {m['r5']:.3f} | {m['r10']:.3f} | {m['map10']:.3f} | {m['queries']} |")
w("")
w("## DiffGAP on the test split")
w("")
w("`diffgap eval --model models/default --pairs .cache/real/projection/pairs-test.safetensors`")
w("(queries are deduplicated per sound identity; a candidate is relevant when it is a clip of")
w("the query's identity):")
w("")
w(evaluation)
w("")
w("### By caption kind")
w("")
w("The same model and protocol on the two parts of the test split: sounds with label-like")
w("captions (Wesnoth, freedesktop, SoundFont presets: the kind of caption trained on) and Tux")
w("Paint's sounds with human-written one-line descriptions (out of distribution). R@1 / mAP@10:")
w("")
hdr = "| mode |"
sep = "|---|"
for k, d in by_kind.items():
    for dct in d["directions"]:
        hdr += f" {k}: {dct['query']}->{dct['candidate']} ({dct['queries']} queries) |"
        sep += "---|"
w(hdr)
w(sep)
for mode in ["contrastive", "bridged", "reverse", "fused", "generative"]:
    row = f"| {mode} |"
    for k, d in by_kind.items():
        for dct in d["directions"]:
            m = dct["modes"].get(mode)
            row += f" {m['r1']:.3f} / {m['map10']:.3f} |" if m else " - |"
    w(row)
w("")
w("| gap measure (test part) | before | after bridging |")
w("|---|---|---|")
for k, d in by_kind.items():
    for g in d["gap"]:
        w(f"| {k}, {g['source']} -> {g['target']}: Frechet distance | {g['frechet_before']:.4f} | {g['frechet_after']:.4f} |")
        w(f"| {k}, {g['source']} -> {g['target']}: cosine to true partner | {g['paired_cosine_before']:.4f} | {g['paired_cosine_after']:.4f} |")
w("")
w("![the modality gap before and after bridging](gap.png)")
w("")
w("`gap.png` (`diffgap plot-gap`): test-split text, audio and text bridged to audio, on the")
w("two principal axes of all of them together.")
w("")
w("## Stages: time and size")
w("")
w("| stage | seconds (2 cores) | output size |")
w("|---|---|---|")
for name, secs, size in stages:
    w(f"| {name} | {secs if secs != '-' else '(cached)'} | {mb(size)} |")
w(f"| eval (test split) | {eval_s} | |")
t = card.get("training") or {}
w("")
w(f"DiffGAP denoiser: {card['parameters']:,} parameters, width {card['denoiser']['width']}, depth {card['denoiser']['depth']}, "
  f"{t.get('epochs_run', '?')} epochs (best {t.get('best_epoch', '?')}), prediction {card['prediction']}, "
  f"ranking steps {card['defaults']['rank_steps']}, generation steps {card['defaults']['steps']}.")
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
PY
echo "results written to $OUT/README.md and $OUT/gap.png"
