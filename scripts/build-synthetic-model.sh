#!/usr/bin/env bash
# Builds models/synthetic: DiffGAP trained on the synthetic paired set (the README's "synthetic
# results"; a known relation with a known gap, for studying the method). Deterministic by seed;
# skipped when the model is already there (delete it to rebuild).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
if [ -f models/synthetic/card.json ]; then
  exit 0
fi
mkdir -p .cache
bin=${DIFFGAP_BIN:-target/release/diffgap}
[ -x "$bin" ] || cargo build --release
"$bin" synth --out .cache/synthetic-train.safetensors --items 2000 --dim 64 --seed 0
# Trained in a staging folder named like its destination, so the card records the right name.
rm -rf .cache/staging/synthetic && mkdir -p .cache/staging
"$bin" train --pairs .cache/synthetic-train.safetensors --out .cache/staging/synthetic \
  --space synthetic --modalities text,audio --width 256 --depth 3 --epochs 60 --patience 15 \
  --steps 10 --samples 4 --seed 0 --quiet
rm -rf models/synthetic
mv .cache/staging/synthetic models/synthetic
echo "synthetic model written to models/synthetic"
