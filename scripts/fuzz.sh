#!/usr/bin/env bash
# Fuzzes the targets of fuzz/ (entry points in src/fuzzing.rs) with cargo-fuzz (libFuzzer, nightly),
# each for a bounded time, and prints libFuzzer's final statistics. A crash leaves its input in
# fuzz/artifacts/TARGET/; copy it to fuzz/regressions/TARGET/ with the fix so that
# tests/integration/fuzz_regressions.rs (the CI smoke run) keeps it fixed.
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default 60 s, every target)
#   FUZZ_RUNS=N scripts/fuzz.sh ...   also stops a target after N executions (the long run:
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 7200 audio_decode)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

seconds="${1:-60}"
runs="${FUZZ_RUNS:--1}"
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The fuzz binaries are not linked by build.rs, so they find libtorch through the loader path.
torch_lib="$(find .venv/lib -maxdepth 4 -type d -path '*/site-packages/torch/lib' | head -n1)"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# No sanitizer: the code is safe Rust over libtorch, and what is sought is panics and aborts.
cargo +nightly fuzz build --sanitizer none
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
  echo "== $t ($seconds s at most, log in fuzz/logs/$t.log)"
  cargo +nightly fuzz run --sanitizer none "$t" -- \
    -max_total_time="$seconds" -runs="$runs" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    >"fuzz/logs/$t.log" 2>&1 || true
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|panicked|deadly signal|SUMMARY' "fuzz/logs/$t.log" || true
  # compgen: `ls a b c` fails when any one is missing, so it missed a lone crash file.
  if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null || compgen -G "fuzz/artifacts/$t/oom-*" >/dev/null \
    || compgen -G "fuzz/artifacts/$t/timeout-*" >/dev/null; then
    echo "$t: FOUND failing inputs in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
