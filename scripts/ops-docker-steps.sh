#!/usr/bin/env bash
# The Dockerfile's build steps, runnable without a Docker engine.
#
#   scripts/ops-docker-steps.sh build PREFIX   what the Dockerfile's builder stage runs:
#                                              cargo build --release --locked, the default
#                                              model, then `stage PREFIX`
#   scripts/ops-docker-steps.sh stage PREFIX   lays out the runtime image's file tree under
#                                              PREFIX (copied into / of the runtime stage)
#   scripts/ops-docker-steps.sh ci             CI (scripts/ops-check.sh): `build` into
#                                              .cache/docker-stage (libraries hard-linked, not
#                                              copied), then checks the staged tree: every
#                                              libtorch library resolves inside it, the image's
#                                              configuration loads, and the staged binary,
#                                              started as uid 10001 with an empty environment
#                                              like the container, gets SERVING from its own
#                                              HEALTHCHECK command; prints the prefix.
#
# The staged tree:
#   PREFIX/opt/diffgap/bin/diffgap                  rpath $ORIGIN/../<site-packages>/torch/lib
#   PREFIX/opt/diffgap/.venv/lib/pythonX.Y/site-packages/{torch/lib,nvidia}  shared libraries
#   PREFIX/opt/diffgap/models/default               the default model
#   PREFIX/etc/diffgap/diffgap.toml                 deploy/docker/diffgap.toml
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"

say() { echo "ops-docker-steps: $*" >&2; }

stage() {
  local prefix="$1" link="${2:-copy}"
  local app="$prefix/opt/diffgap"
  local patchelf="${PATCHELF:-$(command -v patchelf || true)}"
  [ -x "$patchelf" ] || { say "patchelf is needed (PATCHELF=...)"; exit 1; }
  local site rel
  site="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
  rel="${site#"$DIFFGAP_ROOT"/}"
  [ "$rel" != "$site" ] || { say "torch is not inside the project's .venv ($site)"; exit 1; }
  local cp_flags=(-a)
  [ "$link" = link ] && cp_flags=(-al)
  rm -rf "$prefix" && mkdir -p "$app/bin" "$app/$rel/torch" "$app/models" "$prefix/etc/diffgap"
  # Only the wheel's shared libraries: torch/lib, and the CUDA libraries its RPATH names
  # ($ORIGIN/../../nvidia/...) when the wheel is the CUDA one.
  # Hard links need one filesystem; copy otherwise.
  cp "${cp_flags[@]}" "$site/torch/lib" "$app/$rel/torch/lib" 2>/dev/null \
    || { rm -rf "$app/$rel/torch/lib"; cp_flags=(-a); cp -a "$site/torch/lib" "$app/$rel/torch/lib"; }
  if [ -d "$site/nvidia" ]; then
    cp "${cp_flags[@]}" "$site/nvidia" "$app/$rel/nvidia"
  fi
  install -m 0755 target/release/diffgap "$app/bin/diffgap"
  # The build's rpath is the builder's absolute .venv path; make it relative to the binary.
  "$patchelf" --set-rpath "\$ORIGIN/../$rel/torch/lib" "$app/bin/diffgap"
  cp -a models/default "$app/models/default"
  install -m 0644 deploy/docker/diffgap.toml "$prefix/etc/diffgap/diffgap.toml"
  chmod -R a+rX "$app/models" "$prefix/etc/diffgap"
  say "staged the image tree in $prefix ($(du -sh --apparent-size "$prefix" | cut -f1) apparent)"
}

build() {
  local prefix="$1" link="${2:-copy}"
  cargo build --release --locked
  bash scripts/build-default-model.sh
  stage "$prefix" "$link"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ci() {
  # shellcheck source=/dev/null
  source scripts/ops-tools.sh
  local prefix="$DIFFGAP_ROOT/.cache/docker-stage"
  # stdout carries only the prefix, at the end.
  PATCHELF="$OPS_PATCHELF" build "$prefix" link >&2
  local app="$prefix/opt/diffgap" bin="$prefix/opt/diffgap/bin/diffgap"

  # Every libtorch library the binary needs resolves inside the staged tree, with no
  # LD_LIBRARY_PATH (the runtime image has no other copy).
  local deps
  deps="$(env -i /usr/bin/ldd "$bin")"
  if grep -q 'not found' <<<"$deps"; then
    say "unresolved libraries:"; grep 'not found' <<<"$deps" >&2; exit 1
  fi
  local outside
  outside="$(grep -E 'lib(torch|c10)' <<<"$deps" | grep -v "=> $app/" || true)"
  if [ -n "$outside" ]; then
    say "libtorch resolved outside the staged tree:"; echo "$outside" >&2; exit 1
  fi
  if [ -d "$app/.venv" ] && find "$app/.venv" -path '*nvidia*' -name 'libcudart*' | grep -q .; then
    grep -q "libtorch_cuda.so => $app/" <<<"$deps" || { say "libtorch_cuda.so does not resolve in the stage"; exit 1; }
  fi

  # The image's configuration loads (DIFFGAP_CONFIG, as the image sets it).
  env -i DIFFGAP_CONFIG="$prefix/etc/diffgap/diffgap.toml" "$bin" config print >/dev/null

  # The entrypoint as the container runs it: an empty environment but the image's, an
  # unprivileged uid, the staged model. Ports are free ones on loopback instead of the
  # image's 0.0.0.0:50051 / 0.0.0.0:9090 (flags override the file).
  local port mport log="$DIFFGAP_ROOT/.cache/docker-stage.log"
  port="$(free_port)"; mport="$(free_port)"
  local run=() who
  who="uid $(id -u)"
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    run=(setpriv --reuid 10001 --regid 10001 --clear-groups)
    who="uid 10001 (the image's user)"
  fi
  # In the image's WORKDIR, so that nothing resolves against the checkout.
  (cd "$app" && exec env -i PATH="$app/bin:/usr/bin:/bin" DIFFGAP_CONFIG="$prefix/etc/diffgap/diffgap.toml" RUST_LOG=info \
    "${run[@]}" "$bin" serve --model "$app/models/default" --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$mport" --device cpu) >"$log" 2>&1 &
  local pid=$!
  local ok=
  for _ in $(seq 1 300); do
    if env -i "$bin" health --addr "127.0.0.1:$port" --timeout-secs 2 >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if [ -z "$ok" ]; then
    say "the staged server did not report SERVING; its log:"; cat "$log" >&2
    kill "$pid" 2>/dev/null || true; exit 1
  fi
  say "staged server SERVING on 127.0.0.1:$port as $who (HEALTHCHECK command passed)"
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || { say "the staged server exited $rc on SIGTERM; its log:"; cat "$log" >&2; exit 1; }
  say "the staged server drained and exited 0 on SIGTERM"
  echo "$prefix"
}

case "${1:-}" in
  build) build "${2:?PREFIX}" ;;
  stage) stage "${2:?PREFIX}" ;;
  ci) ci ;;
  *) echo "usage: $0 build PREFIX | stage PREFIX | ci" >&2; exit 2 ;;
esac
