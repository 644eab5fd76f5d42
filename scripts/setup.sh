#!/usr/bin/env bash
# Installs what building diffgap needs: the pinned libtorch (PyPI wheel torch==2.13.0, which tch
# 0.26 requires) into a project-local virtual environment. Idempotent: does nothing when present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"

TORCH_VERSION=2.13.0
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION into .venv (about 4.7 GB, once)"
  .venv/bin/python -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION"
fi
