#!/usr/bin/env bash
# Soak (issue 17, item 9; not run in CI): `diffgap serve` on the default model with an admin
# token, then `diffgap soak`: 16 closed-loop clients of mixed valid and invalid calls for
# DURATION seconds (default 600) with the server's memory sampled every 10 s, then RELOADS
# (default 20) Reload calls each followed by 5 s of the same traffic. Prints the tables and fails when a goal
# is missed (memory after the warm-up within 1.05x, over the reloads within 1.1x, no unexpected
# answer).
# Knobs (environment): MODEL, DURATION, WARMUP, RELOADS, CLIENTS, SERVER_CPUS, CLIENT_CPUS, OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

MODEL=${MODEL:-models/default}
DURATION=${DURATION:-600}
WARMUP=${WARMUP:-120}
RELOADS=${RELOADS:-20}
CLIENTS=${CLIENTS:-16}
SERVER_CPUS=${SERVER_CPUS-0}
CLIENT_CPUS=${CLIENT_CPUS-1}
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

TMP=$(mktemp -d)
SERVER_PID=""
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
# A catalog of the real corpus's held-out sounds (built by scripts/build-default-model.sh), so
# that text queries are ranked over it.
CATALOG_ARGS=()
PAIRS=.cache/real/projection/pairs-test.safetensors
if [[ -f "$PAIRS" ]]; then
    "$BIN" catalog build --model "$MODEL" --pairs "$PAIRS" --modality audio \
        --out "$TMP/catalogs/sounds" --device cpu >/dev/null
    CATALOG_ARGS=(--catalogs "$TMP/catalogs")
fi
head -c 24 /dev/urandom | base64 >"$TMP/admin-token"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "${SERVER_ON[@]}" "$BIN" serve --model "$MODEL" --listen "127.0.0.1:$port" \
    --metrics-listen off --admin-tokens-file "$TMP/admin-token" "${CATALOG_ARGS[@]}" &
SERVER_PID=$!
"${CLIENT_ON[@]}" "$BIN" soak --addr "http://127.0.0.1:$port" --server-pid "$SERVER_PID" \
    --clients "$CLIENTS" --seconds "$DURATION" --warmup-seconds "$WARMUP" --reloads "$RELOADS" \
    --admin-token-file "$TMP/admin-token" --summary-json "$OUT/soak.json" --check
