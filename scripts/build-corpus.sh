#!/usr/bin/env bash
# Builds the real corpus (src/corpus/mod.rs): fetches the Debian packages pinned in
# models/corpus-sources.toml whose extracted trees are missing or stale, with `apt-get download`
# (no root), into .cache/debs/; `diffgap corpus extract` checks each .deb's sha256, unpacks only
# the files the corpus reads and deletes the .deb; then `diffgap corpus build` runs.
# Idempotent: up-to-date trees are not fetched again, and the build does nothing when its
# output is up to date.
#
#   scripts/build-corpus.sh                      # all sources -> .cache/corpus
#   scripts/build-corpus.sh --fetch-only freedesktop   # only fetch/extract the named sources
#   scripts/build-corpus.sh -- --only wesnoth --out /tmp/c   # extra arguments to the command
#
# Environment: DIFFGAP_DEBS (default .cache/debs), DIFFGAP_BIN (default
# ${CARGO_TARGET_DIR:-target}/release/diffgap, built when missing; it lists the packages too).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SOURCES="models/corpus-sources.toml"
DEBS="${DIFFGAP_DEBS:-.cache/debs}"
FETCH_ONLY=""
WANT=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fetch-only) FETCH_ONLY=1; WANT="${2:-}"; shift 2 ;;
    --) shift; ARGS=("$@"); break ;;
    *) echo "build-corpus.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done

BIN="${DIFFGAP_BIN:-${CARGO_TARGET_DIR:-target}/release/diffgap}"
if ! [ -x "$BIN" ]; then
  source scripts/env.sh
  cargo build --release
fi
# The packages of the sources file (all, or the --fetch-only ones) whose trees are stale:
# "source name version deb sha256" lines, from the same parser as the command's.
packages="$("$BIN" corpus packages --stale --sources "$SOURCES" --debs "$DEBS" ${WANT:+--only "$WANT"})"

mkdir -p "$DEBS"
updated=""
while read -r src name ver deb sha; do
  [ -n "$src" ] || continue
  file="$DEBS/$deb"
  # A .deb already here with its pinned hash is extracted as it is (`corpus extract` checks
  # the hash of every .deb it unpacks).
  if ! { [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; }; then
    rm -f "$file"
    echo "fetching $name=$ver"
    if ! (cd "$DEBS" && apt-get download -q "$name=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed'); then
      if [ -z "$updated" ] && [ "$(id -u)" = 0 ]; then
        echo "apt-get download failed; refreshing the package lists once" >&2
        apt-get update -q >/dev/null
        updated=1
        (cd "$DEBS" && apt-get download -q "$name=$ver")
      fi
    fi
    if ! [ -f "$file" ]; then
      echo "build-corpus.sh: $name=$ver could not be fetched to $file (apt-get download; is bookworm main in the apt sources?)" >&2
      exit 1
    fi
  fi
done <<< "$packages"
"$BIN" corpus extract --sources "$SOURCES" --debs "$DEBS" ${WANT:+--only "$WANT"}

if [ -n "$FETCH_ONLY" ]; then exit 0; fi

exec "$BIN" corpus build --sources "$SOURCES" --debs "$DEBS" "${ARGS[@]}"
