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
RATE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["open_rate"])' "$OUT/step.json")
bench request --rate "$RATE"

python3 - "$OUT/step.json" "$OUT/request.json" <<'PY'
import json, sys
step, req = (json.load(open(p)) for p in sys.argv[1:3])
def table(s):
    rows = s["closed"] + ([s["open"]] if s["open"] else [])
    return {r["load"]: r for r in rows}
ts, tr = table(step), table(req)
print("\n| load | step-level req/s | p50 / p95 / p99 ms | request-level req/s | p50 / p95 / p99 ms |")
print("|---|---|---|---|---|")
for load in ts:
    a = ts[load]
    b = tr.get(load)
    fmt = lambda r: f"{r['requests_per_s']:.1f} | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f}"
    name = load if not load.endswith("rps") else f"open loop {load}"
    print(f"| {name} | {fmt(a)} | {fmt(b) if b else '-'} |")
ip = step["in_process"]
print()
for p in ip["per_steps"]:
    one = p["one_item_seconds"]
    print(f"in-process, {p['steps']} steps: {p['items_per_s']:.0f} items/s at batch {p['batch']} per instance "
          f"({p['batch_seconds']*1e3:.1f} ms per batch" + (f", {one*1e3:.1f} ms for one item)" if one else ")"))
for l in ip["layouts"]:
    print(f"in-process mix, {l['instances']} instance(s) x {l['threads']} thread(s): {l['mix_items_per_s']:.0f} items/s")
pinned = f", on CPUs {ip['cpus']}" if ip.get("cpus") else ""
print(f"in-process best: {ip['mix_items_per_s']:.0f} items/s ({ip['device']}{pinned}, {ip['instances']} instance(s) x {ip['threads']} thread(s))")
for name, s in (("step", step), ("request", req)):
    rounds = ", ".join(f"{r['service_items_per_s']:.0f}/{r['in_process_items_per_s']:.0f} = {r['ratio']:.3f}" for r in s["ratio_rounds"])
    print(f"throughput rounds, {name}-level (service/in-process items/s): {rounds}")
    client = sorted(r["client_cores"] for r in s["ratio_rounds"] if r.get("client_cores") is not None)
    if client:
        print(f"  the load generator's own CPU during the service rounds: median {client[len(client) // 2]:.3f} cores")
print()
print(f"goal 1, saturation / in-process (>= 0.9): step {step['throughput_ratio']:.3f}, request {req['throughput_ratio']:.3f}")
print(f"goal 2, p99 at half saturation / (2 x single-batch compute) (< 1): step {step['p99_over_twice_batch']:.3f}, request {req['p99_over_twice_batch']:.3f}")
o_s, o_r = step["open"], req["open"]
print(f"goal 3, step vs request p99 at {o_s['load']} (step < request): {o_s['p99_ms']:.0f} ms vs {o_r['p99_ms']:.0f} ms, ratio {o_s['p99_ms']/o_r['p99_ms']:.3f}")
PY
