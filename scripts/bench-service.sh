#!/usr/bin/env bash
# Benchmarks `diffgap serve` under load, once with step-level batching (--batching step) and
# once with request-level batching (--batching request), with `diffgap loadgen` on loopback:
# a closed-loop concurrency sweep on a mixed step-count load, plus each run's in-process
# engine throughput on the same mix for the service/in-process ratio. Trains nothing: it uses
# models/default (built by scripts/build-default-model.sh if missing).
#
# Bounded: at most REQUESTS requests and MAX_SECONDS seconds per concurrency level.
# Knobs (environment): MODEL, STEPS, CONCURRENCY, REQUESTS, MAX_SECONDS, SAMPLES, ITEMS, RATE,
# OPEN_SECONDS, DEVICE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
STEPS=${STEPS:-1,10,50}
CONCURRENCY=${CONCURRENCY:-1,4,16,64}
REQUESTS=${REQUESTS:-300}
MAX_SECONDS=${MAX_SECONDS:-15}
SAMPLES=${SAMPLES:-1}
ITEMS=${ITEMS:-1}
RATE=${RATE:-0}
OPEN_SECONDS=${OPEN_SECONDS:-5}
DEVICE=${DEVICE:-auto}

cargo build --release
BIN=target/release/diffgap
if [[ ! -f "$MODEL/card.json" ]]; then
    scripts/build-default-model.sh
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

for mode in step request; do
    port=$(free_port)
    echo
    echo "=== --batching $mode (127.0.0.1:$port) ==="
    RUST_LOG=warn "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$port" --device "$DEVICE" \
        --batching "$mode" --queue-capacity 256 &
    SERVER_PID=$!
    # loadgen waits (bounded) for the model to load before it starts.
    RUST_LOG=warn timeout 900 "$BIN" loadgen --addr "http://127.0.0.1:$port" --model "$MODEL" \
        --device "$DEVICE" --steps "$STEPS" --concurrency "$CONCURRENCY" \
        --requests "$REQUESTS" --max-seconds "$MAX_SECONDS" --items "$ITEMS" \
        --samples "$SAMPLES" --rate "$RATE" --open-seconds "$OPEN_SECONDS" \
        --label "batching $mode"
    stop_server
done
