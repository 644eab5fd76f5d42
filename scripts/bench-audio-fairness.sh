#!/usr/bin/env bash
# Bridge latency beside heavy audio: starts `diffgap serve` on the default model (the default
# settings: one instance, step batching), then `diffgap loadgen-audio` measures one-at-a-time
# Bridges alone and beside AUDIO_CLIENTS clients looping AUDIO_SECONDS-second WAV Embeds, and
# prints a markdown table with each level's p99 as a ratio of the first level's (bridges alone).
# Knobs (environment): MODEL, PORT, AUDIO_CLIENTS, BRIDGES, AUDIO_SECONDS, STEPS.
# Run it alone on the machine (two libtorch processes slow each other down).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
PORT=${PORT:-50071}
AUDIO_CLIENTS=${AUDIO_CLIENTS:-0,1,2,4}
BRIDGES=${BRIDGES:-200}
AUDIO_SECONDS=${AUDIO_SECONDS:-29}
STEPS=${STEPS:-10}

cargo build --release
BIN=${CARGO_TARGET_DIR:-target}/release/diffgap
if [[ ! -f "$MODEL/encoders/encoders.json" ]]; then
    scripts/build-default-model.sh
fi

RUST_LOG=warn "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$PORT" --device cpu &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true' EXIT
# loadgen-audio waits (bounded) for the model to load before it starts.
RUST_LOG=warn "$BIN" loadgen-audio --addr "http://127.0.0.1:$PORT" --audio-clients "$AUDIO_CLIENTS" \
    --bridges "$BRIDGES" --audio-seconds "$AUDIO_SECONDS" --steps "$STEPS"
