#!/usr/bin/env bash
# The contrastive term, measured against pure denoising on the real corpus: trains the default
# model's recipe (scripts/build-default-model.sh) once per --contrastive-weight in WEIGHTS, each
# early-stopped on the validation split, and evaluates each on the validation and test splits
# (diffgap eval --json). `diffgap compare` then prints the table. Defaults are chosen on the
# validation rows, never on test. Needs the default model's inputs (scripts/build-default-model.sh).
#   WEIGHTS="0 0.1 0.5" OUT=.cache/ablation-contrastive scripts/ablation-contrastive.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
bin=${DIFFGAP_BIN:-target/release/diffgap}
R=.cache/real/projection
OUT=${OUT:-.cache/ablation-contrastive}
WEIGHTS=${WEIGHTS:-0 0.1 0.5}
mkdir -p "$OUT"
for w in $WEIGHTS; do
  model="$OUT/w$w"
  if [ ! -f "$model/card.json" ]; then
    "$bin" train --pairs "$R/pairs-train.safetensors" --val "$R/pairs-val.safetensors" \
      --out "$model" --space clap-small --modalities text,audio --width 512 --depth 3 \
      --batch-size 128 --epochs 400 --patience 60 --steps 10 --samples 4 --seed 0 --quiet \
      --contrastive-weight "$w" > "$OUT/w$w.train.log"
  fi
  for split in val test; do
    "$bin" eval --model "$model" --pairs "$R/pairs-$split.safetensors" --shortlist 0 \
      --json "$OUT/w$w.$split.json" > /dev/null
  done
done
args=()
for split in val test; do
  args=()
  for w in $WEIGHTS; do args+=(--run "weight$w=$OUT/w$w.$split.json"); done
  echo "## $split split"
  "$bin" compare "${args[@]}"
done
