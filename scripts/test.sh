#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (scripts/setup.sh), checks
# formatting and lints, builds the default model from real encoders and real sounds
# (scripts/build-default-model.sh: the end-to-end tests run on it), then runs every unit and
# integration test, then the operations checks (scripts/ops-check.sh). Idempotent; cached.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
source scripts/stages.sh
stages_begin test
stage setup bash scripts/setup.sh
stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --release --all-targets -- -D warnings
# One cargo run builds the binary and every test target: the unit-test build of the library
# needs only the dependencies, so it compiles beside the library instead of after it (rustc's
# front end uses one core; the second is otherwise idle for much of the library's build).
stage build cargo test --release --no-run
stage default-model bash scripts/build-default-model.sh
stage tests cargo test --release
# Operations: Prometheus, Kubernetes, compose, Grafana, buf, the Dockerfile's steps and the real
# Python, health and reflection clients against the staged server (no Docker engine needed).
stage ops-check bash scripts/ops-check.sh
stages_end
