#!/usr/bin/env bash
# Runs the diffgap gRPC service on the default model, from a fresh clone: installs libtorch,
# builds, trains the interim default model when it is missing, then serves. Extra arguments go
# to `diffgap serve` (see `diffgap serve --help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
source scripts/stages.sh
stages_begin run
stage setup bash scripts/setup.sh
stage build cargo build --release
stage default-model bash scripts/build-default-model.sh
stages_end
exec target/release/diffgap serve --model models/default "$@"
