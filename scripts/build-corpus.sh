#!/usr/bin/env bash
# Builds the real corpus (src/corpus/mod.rs): fetches the Debian packages pinned in
# models/corpus-sources.toml with `apt-get download` (no root needed), checks each .deb's sha256,
# extracts it with `dpkg-deb -x` under .cache/debs/, then runs `diffgap corpus build`.
# Idempotent: cached .debs with the right hash are not fetched again, extracted trees are
# reused, and the command does nothing when its output is up to date.
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
# The packages of the sources file (all, or the --fetch-only ones): "source name version deb
# sha256" lines, from the same parser as the command's.
packages="$("$BIN" corpus packages --sources "$SOURCES" ${WANT:+--only "$WANT"})"

mkdir -p "$DEBS"
updated=""
while read -r src name ver deb sha; do
  [ -n "$src" ] || continue
  file="$DEBS/$deb"
  if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; then
    :
  else
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
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      echo "build-corpus.sh: $file has sha256 $got, but $SOURCES pins $sha" >&2
      exit 1
    fi
  fi
  stamp="$DEBS/$name.extracted"
  if [ -d "$DEBS/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha" ]; then
    continue
  fi
  echo "extracting $deb"
  rm -rf "$DEBS/$name" "$stamp"
  mkdir -p "$DEBS/$name"
  dpkg-deb -x "$file" "$DEBS/$name"
  echo "$sha" > "$stamp"
done <<< "$packages"

if [ -n "$FETCH_ONLY" ]; then exit 0; fi

exec "$BIN" corpus build --sources "$SOURCES" --debs "$DEBS" "${ARGS[@]}"
