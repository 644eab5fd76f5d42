#!/usr/bin/env bash
# The operations checks, without a Docker engine or a cluster (called by scripts/test.sh after
# the cargo tests; idempotent, tools cached under .cache/ops by scripts/ops-tools.sh):
#   - promtool check config / check rules / test rules on deploy/prometheus/
#   - the Kubernetes manifests of deploy/k8s/ against the Kubernetes API schema (strict)
#   - docker-compose.yml against the compose specification's JSON schema
#   - the Grafana provisioning and dashboard (JSON, datasource uid, metric names)
#   - buf lint, and buf breaking against proto/released/diffgap-v1.binpb
#   - the Dockerfile's build steps (scripts/ops-docker-steps.sh ci), then on the staged
#     binary and model, with bearer tokens on: the Kubernetes ConfigMap's configuration
#     loads; the Python client (grpcio-tools stubs), the grpcio-health-checking and
#     grpcio-reflection clients; the official openai client against the HTTP listener's
#     OpenAI-compatible /v1/embeddings; schemathesis on the HTTP API's OpenAPI document
#     (every operation, valid and invalid inputs, no 5xx, answers as documented); a catalog
#     built and exported (diffgap catalog export) into Qdrant through the official
#     qdrant-client (local mode), ranked there as the server's Rank ranks it (examples/qdrant/);
#     the playground in headless Chromium driven by Playwright (tests/browser/playground.mjs:
#     a query typed, candidates with their scores, a catalog sound played, the gap picture; its
#     screenshot saved to $OPS_ARTIFACTS, by default target/artifacts/playground.png); promtool
#     check metrics on a live scrape, which must also
#     hold every metric the alerts and the dashboard use; SIGTERM drains and exits 0.
# Each validator is also shown a broken input that it must refuse, so that no check passes
# by checking nothing. Ends with "N passed, 0 failed".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
# shellcheck source=/dev/null
source scripts/ops-tools.sh

PASSED=0
TMP="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
ok() { PASSED=$((PASSED + 1)); echo "ops-check: ok: $*"; }
fail() { echo "ops-check: FAILED: $*" >&2; echo "$PASSED passed, 1 failed"; exit 1; }
must_fail() { # must_fail WHAT CMD...: the validator must refuse a broken input
  local what="$1"; shift
  if "$@" >"$TMP/neg.log" 2>&1; then fail "$what: a broken input was accepted"; fi
}
PY="$OPS_PY"

# --- Prometheus -------------------------------------------------------------------------
"$OPS_PROMTOOL" check config deploy/prometheus/prometheus.yml >/dev/null || fail "promtool check config"
ok "promtool check config deploy/prometheus/prometheus.yml"
"$OPS_PROMTOOL" check rules deploy/prometheus/alerts.yml >/dev/null || fail "promtool check rules"
ok "promtool check rules deploy/prometheus/alerts.yml"
"$OPS_PROMTOOL" test rules deploy/prometheus/alerts.test.yml >/dev/null || fail "promtool test rules"
ok "promtool test rules deploy/prometheus/alerts.test.yml"
sed 's/expr: up{job="diffgap"} == 0/expr: up{job="diffgap"} === 0/' deploy/prometheus/alerts.yml >"$TMP/bad-alerts.yml"
must_fail "promtool check rules" "$OPS_PROMTOOL" check rules "$TMP/bad-alerts.yml"

# --- Kubernetes -------------------------------------------------------------------------
K8S_VERSION=1.33.0
"$OPS_PY" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" deploy/k8s/*.yaml deploy/k8s/gpu/*.yaml \
  || fail "kubernetes-validate deploy/k8s"
ok "kubernetes-validate --strict -k $K8S_VERSION deploy/k8s/*.yaml deploy/k8s/gpu/*.yaml"
sed 's/failureThreshold: 60/failureTreshold: 60/' deploy/k8s/deployment.yaml >"$TMP/bad-deployment.yaml"
must_fail "kubernetes-validate" "$OPS_PY" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$TMP/bad-deployment.yaml"

# --- Compose ----------------------------------------------------------------------------
cat >"$TMP/compose_check.py" <<'EOF'
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
errors = list(jsonschema.Draft201909Validator(schema).iter_errors(doc))
for e in errors:
    print(f"{sys.argv[2]}: {'/'.join(map(str, e.path))}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
"$PY" "$TMP/compose_check.py" "$OPS_COMPOSE_SPEC" docker-compose.yml || fail "docker-compose.yml against the compose specification"
ok "docker-compose.yml valid against the compose specification schema"
sed 's/^    stop_grace_period: 40s/    stop_grace_periods: 40s/' docker-compose.yml >"$TMP/bad-compose.yml"
must_fail "compose schema" "$PY" "$TMP/compose_check.py" "$OPS_COMPOSE_SPEC" "$TMP/bad-compose.yml"
# Every file the compose stack mounts exists.
for p in deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml \
  deploy/grafana/provisioning/datasources/prometheus.yml deploy/grafana/provisioning/dashboards/diffgap.yml \
  deploy/grafana/dashboards/diffgap.json; do
  [ -f "$p" ] || fail "compose mounts $p, which is missing"
done
ok "the files the compose stack mounts exist"

# --- Grafana ----------------------------------------------------------------------------
cat >"$TMP/metric_names.py" <<'EOF'
# Prints the diffgap_* metric names the alert rules and the dashboard query.
import json, re, sys, yaml
names = set()
rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
for g in rules["groups"]:
    for r in g["rules"]:
        names |= set(re.findall(r"\bdiffgap_[a-z_]+", r["expr"]))
dash = json.load(open("deploy/grafana/dashboards/diffgap.json"))
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
uids = {d["uid"] for d in ds["datasources"]}
exprs = [dash["templating"]["list"][0]["definition"]]
for p in dash["panels"]:
    assert p["datasource"]["uid"] in uids, f"panel {p['title']!r} uses an unprovisioned datasource"
    for t in p["targets"]:
        assert t["datasource"]["uid"] in uids
        exprs.append(t["expr"])
for e in exprs:
    names |= set(re.findall(r"\bdiffgap_[a-z_]+", e))
titles = " | ".join(p["title"] for p in dash["panels"])
for want in ("Request rate", "latency percentiles", "Queue depth", "Rows per batch", "steps", "Errors by status"):
    assert want.lower() in titles.lower(), f"no panel for {want!r}: {titles}"
print("\n".join(sorted(names)))
EOF
"$PY" "$TMP/metric_names.py" >"$TMP/used-metrics.txt" || fail "the Grafana dashboard and its provisioning"
ok "Grafana dashboard: valid JSON on the provisioned datasource, panels for rate, latency, queue, rows per batch, steps/s, errors ($(wc -l <"$TMP/used-metrics.txt") metric names used by dashboard and alerts)"

# --- Protocol ---------------------------------------------------------------------------
"$OPS_BUF" lint || fail "buf lint"
ok "buf lint (buf.yaml)"
"$OPS_BUF" breaking --against proto/released/diffgap-v1.binpb || fail "buf breaking against proto/released/diffgap-v1.binpb"
ok "buf breaking --against proto/released/diffgap-v1.binpb"
mkdir -p "$TMP/proto-broken" && cp -r buf.yaml proto "$TMP/proto-broken/"
sed -i 's/^\(  *\)uint32 top_k = 7;/\1uint64 top_k = 7;/' "$TMP/proto-broken/proto/diffgap/v1/diffgap.proto"
must_fail "buf breaking" bash -c "cd '$TMP/proto-broken' && '$OPS_BUF' breaking --against '$DIFFGAP_ROOT/proto/released/diffgap-v1.binpb'"

# --- The image's build steps, and the staged binary live ---------------------------------
STAGE="$(bash scripts/ops-docker-steps.sh ci)" || fail "scripts/ops-docker-steps.sh ci"
ok "Dockerfile build steps (scripts/ops-docker-steps.sh ci): staged tree, libtorch inside it, HEALTHCHECK SERVING as uid 10001, SIGTERM exit 0"
BIN="$STAGE/opt/diffgap/bin/diffgap"

# The Kubernetes ConfigMap's diffgap.toml is a valid configuration for this binary.
"$PY" -c 'import sys, yaml; print(yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["diffgap.toml"])' >"$TMP/configmap.toml"
env -i "$BIN" config print --config "$TMP/configmap.toml" >/dev/null || fail "the ConfigMap's diffgap.toml"
ok "deploy/k8s/configmap.yaml's diffgap.toml loads (diffgap config print)"

# A catalog of the real corpus's held-out test sounds (built by scripts/build-default-model.sh)
# for the staged model, served below and exported for the Qdrant example.
MODEL="$STAGE/opt/diffgap/models/default"
env -i "$BIN" catalog build --model "$MODEL" --pairs .cache/real/projection/pairs-test.safetensors \
  --modality audio --out "$TMP/catalogs/sounds" --device cpu >"$TMP/catalog.log" 2>&1 \
  || { cat "$TMP/catalog.log" >&2; fail "diffgap catalog build"; }
env -i "$BIN" catalog export --model "$MODEL" --catalog "$TMP/catalogs/sounds" --out "$TMP/export" >>"$TMP/catalog.log" 2>&1 \
  || { cat "$TMP/catalog.log" >&2; fail "diffgap catalog export"; }
ok "diffgap catalog build and export: $(tail -n 1 "$TMP/catalog.log")"
# The same held-out sounds as files (all of Tux Paint is the test split), for the playground.
mkdir -p "$TMP/clips" && ln -s "$DIFFGAP_ROOT"/.cache/corpus/clips/tuxpaint-*.wav "$TMP/clips/"
env -i "$BIN" catalog build --model "$MODEL" --audio-dir "$TMP/clips" --modality audio --out "$TMP/catalogs/clips" \
  --device cpu >"$TMP/clips.log" 2>&1 || { cat "$TMP/clips.log" >&2; fail "diffgap catalog build --audio-dir"; }
ok "diffgap catalog build --audio-dir: $(tail -n 1 "$TMP/clips.log")"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"; MPORT="$(free_port)"; HPORT="$(free_port)"
TOKEN="ops-check-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
(cd "$STAGE/opt/diffgap" && exec env -i PATH="/usr/bin:/bin" DIFFGAP_CONFIG="$STAGE/etc/diffgap/diffgap.toml" \
  DIFFGAP_AUTH_TOKENS="$TOKEN" RUST_LOG=info "$BIN" serve --model "$STAGE/opt/diffgap/models/default" \
  --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" --http-listen "127.0.0.1:$HPORT" \
  --catalogs "$TMP/catalogs" --device cpu --log-format text) >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  "$BIN" health --addr "127.0.0.1:$PORT" --timeout-secs 2 >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; fail "the staged server exited"; }
  sleep 1
done
"$BIN" health --addr "127.0.0.1:$PORT" >/dev/null || { cat "$TMP/server.log" >&2; fail "the staged server is not SERVING"; }
ok "staged server with bearer tokens SERVING on 127.0.0.1:$PORT (diffgap health, no token)"
if grep -q "$TOKEN" "$TMP/server.log"; then fail "the server logged its bearer token"; fi

"$PY" examples/python/diffgap_client.py --addr "127.0.0.1:$PORT" --token "$TOKEN" --stubs "$DIFFGAP_ROOT/.cache/pystubs" >"$TMP/client.log" 2>&1 \
  || { cat "$TMP/client.log" >&2; fail "examples/python/diffgap_client.py"; }
ok "Python client (grpcio-tools stubs from proto/): Info, Bridge, Rank checked ($(grep -c '^ok:' "$TMP/client.log") checks)"
if "$PY" examples/python/diffgap_client.py --addr "127.0.0.1:$PORT" --stubs "$DIFFGAP_ROOT/.cache/pystubs" >"$TMP/client-notoken.log" 2>&1; then
  fail "the Python client got answers without a token"
fi
grep -q "UNAUTHENTICATED" "$TMP/client-notoken.log" || { cat "$TMP/client-notoken.log" >&2; fail "no UNAUTHENTICATED without a token"; }
ok "Python client without a token: UNAUTHENTICATED"
"$PY" examples/python/health_and_reflection.py --addr "127.0.0.1:$PORT" --token "$TOKEN" >"$TMP/hr.log" 2>&1 \
  || { cat "$TMP/hr.log" >&2; fail "examples/python/health_and_reflection.py"; }
ok "grpcio-health-checking (Check, Watch, no token) and grpcio-reflection (token) clients ($(grep -c '^ok:' "$TMP/hr.log") checks)"

"$PY" examples/python/openai_client.py --base-url "http://127.0.0.1:$HPORT/v1" --token "$TOKEN" >"$TMP/openai.log" 2>&1 \
  || { cat "$TMP/openai.log" >&2; fail "examples/python/openai_client.py"; }
ok "openai client (PyPI) on the HTTP listener's /v1/embeddings: default, float, base64, extra_body bridge_to, errors ($(grep -c '^ok:' "$TMP/openai.log") checks)"

# The HTTP API against its own OpenAPI document (GET /openapi.json, no token needed):
# schemathesis sends every operation inputs valid and invalid by the document (settings in
# scripts/schemathesis.toml); no answer may be a 5xx, and each must be documented (status,
# content type, headers, body schema). A document that misdescribes an answer must be caught.
ST_RUN=("$OPS_SCHEMATHESIS" --config-file scripts/schemathesis.toml run -H "Authorization: Bearer $TOKEN")
"${ST_RUN[@]}" "http://127.0.0.1:$HPORT/openapi.json" >"$TMP/schemathesis.log" 2>&1 \
  || { tail -n 200 "$TMP/schemathesis.log" >&2; fail "schemathesis on the HTTP API"; }
st_ops="$(grep -oE 'Tested: [0-9]+' "$TMP/schemathesis.log" | grep -oE '[0-9]+')"
st_cases="$(grep -oE '[0-9]+ generated' "$TMP/schemathesis.log" | grep -oE '[0-9]+')"
ok "schemathesis (PyPI) on GET /openapi.json: $st_ops operations, $st_cases generated cases (valid and invalid), no 5xx, every answer as documented"
"$PY" -c "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$HPORT/openapi.json', timeout=10).read().decode())" \
  | sed 's/"device":{"type":"string"/"device":{"type":"integer"/' >"$TMP/bad-openapi.json"
must_fail "schemathesis" "${ST_RUN[@]}" "$TMP/bad-openapi.json" --url "http://127.0.0.1:$HPORT" \
  --include-path /v1/info --phases examples,fuzzing -n 5
grep -q "Response violates schema" "$TMP/neg.log" || { cat "$TMP/neg.log" >&2; fail "schemathesis did not catch a misdescribed answer"; }

"$PY" examples/qdrant/qdrant_rank.py --export "$TMP/export" --base-url "http://127.0.0.1:$HPORT" --token "$TOKEN" >"$TMP/qdrant.log" 2>&1 \
  || { cat "$TMP/qdrant.log" >&2; fail "examples/qdrant/qdrant_rank.py"; }
ok "qdrant-client (PyPI, local mode): the exported catalog, two named vectors a point, ranks as diffgap's Rank (contrastive, bridged, reverse, fused; $(grep -c '^ok:' "$TMP/qdrant.log") checks)"
# A query bridged otherwise than Rank bridges it (1 step, not the export's) must be caught.
mkdir -p "$TMP/export-bad" && cp "$TMP/export/entries.jsonl" "$TMP/export-bad/"
sed 's/"steps": [0-9]*/"steps": 1/' "$TMP/export/export.json" >"$TMP/export-bad/export.json"
must_fail "examples/qdrant/qdrant_rank.py" "$PY" examples/qdrant/qdrant_rank.py --export "$TMP/export-bad" \
  --base-url "http://127.0.0.1:$HPORT" --token "$TOKEN" --query "a dog barking"
grep -q "FAILED: bridged" "$TMP/neg.log" || { cat "$TMP/neg.log" >&2; fail "the Qdrant example did not catch a wrongly bridged query"; }

ARTIFACTS="${OPS_ARTIFACTS:-$DIFFGAP_ROOT/target/artifacts}"
node tests/browser/playground.mjs --url "http://127.0.0.1:$HPORT" --token "$TOKEN" --chromium "$OPS_CHROMIUM" \
  --catalog clips --query thunder --screenshot "$ARTIFACTS/playground.png" >"$TMP/browser.log" 2>&1 \
  || { cat "$TMP/browser.log" >&2; fail "tests/browser/playground.mjs"; }
ok "the playground in headless Chromium (playwright-core): query typed, candidates with their scores, a catalog sound played, gap picture ($(grep -c '^ok:' "$TMP/browser.log") checks); screenshot $ARTIFACTS/playground.png"
must_fail "tests/browser/playground.mjs" node tests/browser/playground.mjs --url "http://127.0.0.1:$HPORT" \
  --token "not-$TOKEN" --chromium "$OPS_CHROMIUM" --screenshot "$TMP/refused.png"
grep -q "FAILED: connecting: 401" "$TMP/neg.log" || { cat "$TMP/neg.log" >&2; fail "the browser check did not see the wrong token refused"; }

"$PY" -c "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$MPORT/metrics', timeout=10).read().decode())" >"$TMP/metrics.txt" \
  || fail "scraping /metrics"
"$OPS_PROMTOOL" check metrics <"$TMP/metrics.txt" || fail "promtool check metrics on the live scrape"
ok "promtool check metrics on a live scrape ($(grep -c '^diffgap_' "$TMP/metrics.txt") diffgap samples)"
missing=""
while read -r name; do
  grep -qE "^${name}(\{| )" "$TMP/metrics.txt" || missing="$missing $name"
done <"$TMP/used-metrics.txt"
[ -z "$missing" ] || fail "the alerts or the dashboard use metrics the service does not export:$missing"
ok "every metric the alerts and the dashboard use is in the live scrape"
grep -qE '^diffgap_unauthenticated_requests_total\{reason="missing"\} [1-9]' "$TMP/metrics.txt" \
  || fail "the refused calls were not counted"
ok "refused calls counted in diffgap_unauthenticated_requests_total"

kill -TERM "$SERVER_PID"
rc=0; wait "$SERVER_PID" || rc=$?
SERVER_PID=
[ "$rc" = 0 ] || { cat "$TMP/server.log" >&2; fail "the server exited $rc on SIGTERM"; }
ok "SIGTERM: drained and exited 0"

echo "ops-check: $PASSED passed, 0 failed"
