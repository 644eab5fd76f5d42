#!/usr/bin/env bash
# Times `diffgap train` on 10,000 synthetic pairs (5,000 items, 2 captions each, 512-d like the
# default model's space) with the default model's network and batch: a benchmark, not a test.
# Run it alone: two libtorch processes on 2 cores slow each other many times over. The epoch
# count is fixed (EPOCHS, default 10; no early stop) so runs compare; the training log gives
# each epoch's time, the card (.cache/bench/train/model/card.json) the total.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
bin=${DIFFGAP_BIN:-target/release/diffgap}
[ -x "$bin" ] || cargo build --release
out=.cache/bench/train
mkdir -p "$out"
"$bin" synth --out "$out/pairs.safetensors" --items 5000 --dim 512 --seed 0 > /dev/null
rm -rf "$out/model"
epochs=${EPOCHS:-10}
t0=$(date +%s%N)
"$bin" train --pairs "$out/pairs.safetensors" --out "$out/model" --space synthetic \
  --modalities text,audio --width 512 --depth 3 --batch-size 128 --epochs "$epochs" \
  --patience "$epochs" --steps 10 --samples 4 --seed 0 --quiet 2> "$out/train.log" > /dev/null
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -o 'epoch [0-9]*: .*' "$out/train.log" | tail -n 3 || true
echo "diffgap train, 10,000 synthetic pairs, $epochs epochs: $((ms / 1000)).$(( (ms % 1000) / 100 )) s wall (log: $out/train.log)"
