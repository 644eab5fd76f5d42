#!/usr/bin/env bash
# Overload benchmark (issue 17, item 1): `diffgap serve` on the default model, a closed loop at
# the saturating concurrency, then at FACTOR times it, with `diffgap loadgen` spreading its
# clients over CONNECTIONS connections; then the goal table (`diffgap loadgen-summary
# overload`): accepted throughput >= 0.8 of saturation, accepted p99 <= 2x, refusals
# RESOURCE_EXHAUSTED within 10 ms at p99 and no other failure, server RSS <= 1.2x.
#
# The server runs on SERVER_CPUS and the client on CLIENT_CPUS (default 0 and 1: a client on
# its own core, as a remote client would be); empty values share every core.
# Two cases: clients honouring the `grpc-retry-pushback-ms` of refusals, and clients that retry at
# once.
# Knobs (environment): MODEL, STEPS, SATURATING, FACTOR, CONNECTIONS, MAX_SECONDS,
# SERVER_CPUS, CLIENT_CPUS, SERVE_ARGS (extra `diffgap serve` flags), OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
STEPS=${STEPS:-10}
SATURATING=${SATURATING:-256}
FACTOR=${FACTOR:-10}
CONNECTIONS=${CONNECTIONS:-64}
MAX_SECONDS=${MAX_SECONDS:-15}
SERVER_CPUS=${SERVER_CPUS-0}
CLIENT_CPUS=${CLIENT_CPUS-1}
SERVE_ARGS=${SERVE_ARGS:-}
OUT=${OUT:-.cache/bench}

cargo build --release
BIN=${CARGO_TARGET_DIR:-target}/release/diffgap
if [[ ! -f "$MODEL/card.json" ]]; then
    scripts/build-default-model.sh
fi
mkdir -p "$OUT"
SERVER_ON=()
CLIENT_ON=()
[[ -n "$SERVER_CPUS" ]] && SERVER_ON=(taskset -c "$SERVER_CPUS")
[[ -n "$CLIENT_CPUS" ]] && CLIENT_ON=(taskset -c "$CLIENT_CPUS")

# case NAME LOADGEN_FLAGS...: a fresh server, the two levels, the goal table.
case_() {
    local name=$1
    shift
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo
    echo "=== $name ==="
    # shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
    RUST_LOG=warn "${SERVER_ON[@]}" "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$port" \
        --metrics-listen off $SERVE_ARGS &
    SERVER_PID=$!
    # loadgen waits (bounded) for the model to load before it starts.
    RUST_LOG=warn "${CLIENT_ON[@]}" "$BIN" loadgen --addr "http://127.0.0.1:$port" --no-in-process \
        --steps "$STEPS" --concurrency "$SATURATING,$OVERLOADED" --requests 100000000 \
        --max-seconds "$MAX_SECONDS" --ratio-rounds 0 --connections "$CONNECTIONS" \
        --server-pid "$SERVER_PID" --timeout 30 --summary-json "$OUT/overload-$name.json" "$@"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    "$BIN" loadgen-summary overload "$OUT/overload-$name.json" --saturating "$SATURATING" \
        --overloaded "$OVERLOADED"
}

SERVER_PID=""
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; true' EXIT
OVERLOADED=$((SATURATING * FACTOR))
# Clients that wait out the server's retry pushback (a gRPC retry policy), then clients that
# send again at once: each refused call is answered as fast as the server can, so in a closed
# loop the refused clients keep the server's network thread busy (see docs/operations.md).
case_ pushback --honor-pushback
case_ immediate
