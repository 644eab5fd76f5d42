#!/usr/bin/env bash
# The Python peer benchmark (issue 16, item 6): `diffgap serve` against the server a Python
# engineer would write instead (benches/python_peer/: grpc.aio + PyTorch, the same TorchScript
# denoiser, normalisation, DDIM sampler and seeded noise, dynamic batching with a 2 ms window
# over one single-threaded worker per core), both serving the same model, measured by
# `diffgap loadgen --peer-addr` (the logic is there: the output check, the interleaved rounds,
# the ratios and their medians). Sequence:
#   1. build diffgap, the default model if missing, and the peer's Python (a venv of its own
#      under .cache/peer that sees .venv's torch and numpy, with grpcio and grpcio-tools);
#   2. both servers on free loopback ports;
#   3. the output check (`--peer-check-only`): the same seeded requests to both, every value
#      compared (CHECK_ONLY=1 stops here). It always runs against diffgap in float32 (the
#      peer's number format); with DTYPE=bfloat16 that server is then stopped, one with its
#      denoiser in bfloat16 takes its place, and the load's own check accepts values within
#      DTYPE_TOLERANCE (bfloat16's rounding; its quality is measured on validation, not here);
#   4. per step mix of WORKLOADS, one interleaved run: ROUNDS rounds of the closed loop at
#      CONCURRENCY (diffgap, then the peer, the order alternating by round), then ROUNDS rounds
#      of the open loop at OPEN_FRACTION of diffgap's saturation on both; each prints the
#      ratios diffgap / peer (throughput, p99) per round and their medians;
#   5. both servers stopped.
# Run on demand, not in CI, and alone: two libtorch processes beside another heavy job
# measure the job. The defaults take about 10 minutes on 2 cores. JSON summaries go to OUT.
# Knobs (environment): MODEL, WORKLOADS (space-separated step lists, default "1,10,50 10"),
# CONCURRENCY, ROUNDS, MAX_SECONDS, OPEN_FRACTION, OPEN_SECONDS, CONNECTIONS, MAX_BATCH_ROWS,
# INSTANCES (diffgap's; 0: one per core), PEER_WORKERS (default: one per core), PEER_THREADS,
# PEER_WINDOW_MS, SERVER_CPUS / CLIENT_CPUS (as scripts/bench-service.sh), CHECK_ONLY, OUT,
# DTYPE (diffgap's denoiser: float32 or bfloat16), DTYPE_TOLERANCE, PEER_BF16=1 (the peer's
# module under torch.autocast in bfloat16 from step 4 on: the same lever, the Python way).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
WORKLOADS=${WORKLOADS:-"1,10,50 10"}
CONCURRENCY=${CONCURRENCY:-256}
ROUNDS=${ROUNDS:-5}
MAX_SECONDS=${MAX_SECONDS:-12}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
OPEN_SECONDS=${OPEN_SECONDS:-8}
CONNECTIONS=${CONNECTIONS:-1}
MAX_BATCH_ROWS=${MAX_BATCH_ROWS:-256}
INSTANCES=${INSTANCES:-0}
PEER_WORKERS=${PEER_WORKERS:-}
PEER_THREADS=${PEER_THREADS:-1}
PEER_WINDOW_MS=${PEER_WINDOW_MS:-2}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
CHECK_ONLY=${CHECK_ONLY:-0}
DTYPE=${DTYPE:-float32}
DTYPE_TOLERANCE=${DTYPE_TOLERANCE:-0.05}
PEER_BF16=${PEER_BF16:-0}
OUT=${OUT:-.cache/bench-peer}
GRPC_VERSION=1.85.1 # as scripts/ops-tools.sh pins it

cargo build --release
BIN=${CARGO_TARGET_DIR:-target}/release/diffgap
if [[ ! -f "$MODEL/card.json" ]]; then
    scripts/build-default-model.sh
fi
mkdir -p "$OUT"

# The peer's Python: .venv (scripts/setup.sh) has torch; grpcio goes to a venv of its own, so
# that .venv stays as setup.sh made it, and a .pth file puts .venv's packages behind it.
PEER_VENV=.cache/peer/venv
PEER_PY=$PEER_VENV/bin/python
if ! "$PEER_PY" -c "import grpc, grpc_tools, numpy, torch, sys; sys.exit(grpc.__version__ != '$GRPC_VERSION')" 2>/dev/null; then
    echo "bench-peer: installing grpcio==$GRPC_VERSION and grpcio-tools into $PEER_VENV"
    .venv/bin/python -m venv "$PEER_VENV"
    SITE=$("$PEER_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    .venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$SITE/diffgap-venv.pth"
    "$PEER_PY" -m pip install --disable-pip-version-check -q \
        "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" numpy
fi

SERVER_ON=()
CLIENT_ON=()
[[ -n "$SERVER_CPUS" ]] && SERVER_ON=(taskset -c "$SERVER_CPUS")
[[ -n "$CLIENT_CPUS" ]] && CLIENT_ON=(taskset -c "$CLIENT_CPUS")

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PIDS=()
stop_servers() {
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap stop_servers EXIT

start_diffgap() { # dtype: serves on a new DPORT
    DPORT=$(free_port)
    RUST_LOG=warn "${SERVER_ON[@]}" "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$DPORT" \
        --batching step --max-batch-rows "$MAX_BATCH_ROWS" --instances "$INSTANCES" \
        --queue-capacity 1024 --dtype "$1" &
    DPID=$!
    PIDS+=("$DPID")
}
start_diffgap float32
start_peer() { # extra flags: serves on a new PPORT
    PPORT=$(free_port)
    local args=(--model "$MODEL" --listen "127.0.0.1:$PPORT" --threads "$PEER_THREADS"
        --window-ms "$PEER_WINDOW_MS" --max-rows "$MAX_BATCH_ROWS" "$@")
    [[ -n "$PEER_WORKERS" ]] && args+=(--workers "$PEER_WORKERS")
    "${SERVER_ON[@]}" "$PEER_PY" benches/python_peer/server.py "${args[@]}" &
    PPID_=$!
    PIDS+=("$PPID_")
}
start_peer

# loadgen waits (bounded) for both servers to answer Info before it starts.
loadgen() {
    RUST_LOG=warn timeout 1800 "${CLIENT_ON[@]}" "$BIN" loadgen --addr "http://127.0.0.1:$DPORT" \
        --peer-addr "http://127.0.0.1:$PPORT" --connections "$CONNECTIONS" "$@"
}

echo "=== output check ==="
loadgen --peer-check-only --summary-json "$OUT/check.json"
if [[ "$CHECK_ONLY" == 1 ]]; then
    exit 0
fi
TOLERANCE=()
PEER_NAME=float32
if [[ "$DTYPE" != float32 ]]; then
    kill "$DPID" && wait "$DPID" 2>/dev/null || true
    start_diffgap "$DTYPE"
    TOLERANCE=(--peer-tolerance "$DTYPE_TOLERANCE")
    echo "=== diffgap's denoiser in $DTYPE from here on ==="
fi
if [[ "$PEER_BF16" == 1 ]]; then
    kill "$PPID_" && wait "$PPID_" 2>/dev/null || true
    start_peer --bf16
    PEER_NAME="bfloat16 autocast"
    TOLERANCE=(--peer-tolerance "$DTYPE_TOLERANCE")
    echo "=== the peer's module under bfloat16 autocast from here on ==="
fi

for steps in $WORKLOADS; do
    echo
    echo "=== steps $steps, $CONCURRENCY clients, then the open loop ==="
    loadgen --steps "$steps" --concurrency "$CONCURRENCY" --requests 1000000 \
        --max-seconds "$MAX_SECONDS" --ratio-rounds "$ROUNDS" \
        --open-fraction "$OPEN_FRACTION" --open-seconds "$OPEN_SECONDS" \
        --label "steps $steps, diffgap $DTYPE, peer $PEER_NAME" "${TOLERANCE[@]}" --summary-json "$OUT/steps-${steps//,/-}.json"
done
