#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (scripts/setup.sh), checks
# formatting and lints, builds the default model from real encoders and real sounds
# (scripts/build-default-model.sh: the end-to-end tests run on it), then runs every unit and
# integration test, then the operations checks (scripts/ops-check.sh). Idempotent; cached.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo build --release
bash scripts/build-default-model.sh
cargo test --release
# Operations: Prometheus, Kubernetes, compose, Grafana, buf, the Dockerfile's steps and the real
# Python, health and reflection clients against the staged server (no Docker engine needed).
bash scripts/ops-check.sh
