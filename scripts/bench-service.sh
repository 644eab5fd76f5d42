#!/usr/bin/env bash
# Benchmarks `diffgap serve` under load, once with step-level batching (--batching step) and
# once with request-level batching (--batching request), with `diffgap loadgen` on loopback
# (same machine: client and server share the cores), on a mixed step-count load:
#   - a closed-loop concurrency sweep: the highest rate is the service's saturation;
#   - an open loop at OPEN_FRACTION (0.5) of the step-level saturation rate, the same absolute
#     rate for both modes, so that their p99 compare at one load;
#   - in the same run, the in-process engine's best batched throughput on the same mix and its
#     single-batch compute time (one call at its best batch size, longest step count), best
#     over batch sizes and over layouts (one instance on every core, and one single-threaded
#     instance per core side by side);
#   - RATIO_ROUNDS (9) rounds of (service at the saturating concurrency, then the in-process
#     mix), one after the other: the throughput ratio is the median of the rounds' ratios.
# Prints the three goal ratios at the end; JSON summaries go to OUT (default .cache/bench).
# Trains nothing: it uses models/default (built by scripts/build-default-model.sh if missing).
#
# SERVER_CPUS / CLIENT_CPUS (comma-separated CPU numbers, e.g. 0 and 1) split the machine:
# the server runs under `taskset -c SERVER_CPUS` (its model instances, threads and network
# work all there), loadgen's client under `taskset -c CLIENT_CPUS`, and the in-process engine
# is pinned to SERVER_CPUS too, so that both sides of the comparison get the same cores and
# the client's own work takes nothing from either (as a client on another machine would).
# Unset (the default), everything shares every core.
#
# Bounded: at most REQUESTS requests and MAX_SECONDS seconds per concurrency level (the
# default leaves the time to decide, so that the requests in flight at the end are few).
# The server runs INSTANCES model instances (default 0: one per core on the CPU, one on a
# GPU), the throughput setting.
# Knobs (environment): MODEL, STEPS, CONCURRENCY, REQUESTS, MAX_SECONDS, SAMPLES, ITEMS,
# OPEN_FRACTION, OPEN_SECONDS, RATIO_ROUNDS, MAX_BATCH_ROWS, INSTANCES, DEVICE,
# SERVER_CPUS, CLIENT_CPUS, OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
STEPS=${STEPS:-1,10,50}
CONCURRENCY=${CONCURRENCY:-1,16,64,256,512}
REQUESTS=${REQUESTS:-1000000}
MAX_SECONDS=${MAX_SECONDS:-15}
SAMPLES=${SAMPLES:-1}
ITEMS=${ITEMS:-1}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
OPEN_SECONDS=${OPEN_SECONDS:-10}
RATIO_ROUNDS=${RATIO_ROUNDS:-9}
MAX_BATCH_ROWS=${MAX_BATCH_ROWS:-256}
INSTANCES=${INSTANCES:-0}
DEVICE=${DEVICE:-auto}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
OUT=${OUT:-.cache/bench}

cargo build --release
BIN=target/release/diffgap
if [[ ! -f "$MODEL/card.json" ]]; then
    scripts/build-default-model.sh
fi
mkdir -p "$OUT"

SERVER_ON=()
CLIENT_ON=()
PIN_ENGINE=()
if [[ -n "$SERVER_CPUS" ]]; then
    SERVER_ON=(taskset -c "$SERVER_CPUS")
    PIN_ENGINE=(--in-process-cpus "$SERVER_CPUS")
fi
if [[ -n "$CLIENT_CPUS" ]]; then
    CLIENT_ON=(taskset -c "$CLIENT_CPUS")
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

# bench MODE OPEN_ARGS...: one server, one loadgen run, summary in $OUT/MODE.json.
bench() {
    local mode=$1
    shift
    local port
    port=$(free_port)
    echo
    echo "=== --batching $mode (127.0.0.1:$port) ==="
    RUST_LOG=warn "${SERVER_ON[@]}" "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$port" --device "$DEVICE" \
        --batching "$mode" --max-batch-rows "$MAX_BATCH_ROWS" --instances "$INSTANCES" \
        --queue-capacity 1024 &
    SERVER_PID=$!
    # loadgen waits (bounded) for the model to load before it starts.
    RUST_LOG=warn timeout 1800 "${CLIENT_ON[@]}" "$BIN" loadgen --addr "http://127.0.0.1:$port" --model "$MODEL" \
        --device "$DEVICE" --steps "$STEPS" --concurrency "$CONCURRENCY" \
        --requests "$REQUESTS" --max-seconds "$MAX_SECONDS" --items "$ITEMS" \
        --samples "$SAMPLES" --open-seconds "$OPEN_SECONDS" --ratio-rounds "$RATIO_ROUNDS" \
        --in-process-batches "1,16,64,$MAX_BATCH_ROWS" \
        --label "batching $mode" --summary-json "$OUT/$mode.json" "${PIN_ENGINE[@]}" "$@"
    stop_server
}

bench step --open-fraction "$OPEN_FRACTION"
# The same absolute open-loop rate for request-level batching.
RATE=$("$BIN" loadgen-summary open-rate "$OUT/step.json")
bench request --rate "$RATE"

# The two runs side by side, and the three goal ratios.
"$BIN" loadgen-summary goals --step "$OUT/step.json" --request "$OUT/request.json"
