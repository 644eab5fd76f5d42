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
t0=$(date +%s%N)
"$bin" eval --model models/default --pairs "$R/projection/pairs-test.safetensors" \
  --json "$OUT/test-eval.json" > "$OUT/test-eval.md"
t1=$(date +%s%N)
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
"$bin" results report --out "$OUT" --real "$R" --corpus .cache/corpus --model models/default \
  --eval-ms $(( (t1 - t0) / 1000000 ))
echo "results written to $OUT/README.md and $OUT/gap.png"
