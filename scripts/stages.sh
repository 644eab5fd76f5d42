# Sourced by scripts/test.sh and scripts/run.sh: times each stage of a command, so the README's
# first-run promise is a measured table (issue 16). `stages_begin NAME` starts a table in
# .cache/stages/NAME.tsv; `stage LABEL COMMAND...` runs the command and appends "LABEL<TAB>
# seconds"; `stages_end` adds the default model's own stages (.cache/real/stages.tsv, written by
# scripts/build-default-model.sh when it built the model) and prints the table and the disk the
# project's folders take (a CI machine once ran out of it).
stages_begin() {
  STAGES_FILE="$DIFFGAP_ROOT/.cache/stages/$1.tsv"
  STAGES_T0=$(date +%s%N)
  mkdir -p "$(dirname "$STAGES_FILE")"
  printf 'stage\tseconds\n' > "$STAGES_FILE.new"
}

stage() {
  local label=$1 t0
  shift
  t0=$(date +%s%N)
  "$@"
  printf '%s\t%s\n' "$label" "$(seconds_since "$t0")" >> "$STAGES_FILE.new"
}

seconds_since() {
  local tenths=$(( ($(date +%s%N) - $1 + 50000000) / 100000000 ))
  printf '%d.%d' $((tenths / 10)) $((tenths % 10))
}

stages_end() {
  local model="$DIFFGAP_ROOT/.cache/real/stages.tsv"
  if [ -f "$model" ] && [ "$(stat -c %Y "$model")" -ge $((STAGES_T0 / 1000000000)) ]; then
    while IFS=$'\t' read -r name secs _; do
      printf '  model: %s\t%s\n' "$name" "$secs" >> "$STAGES_FILE.new"
    done < "$model"
  fi
  printf 'total\t%s\n' "$(seconds_since "$STAGES_T0")" >> "$STAGES_FILE.new"
  mv "$STAGES_FILE.new" "$STAGES_FILE"
  echo "stage times (${STAGES_FILE#"$DIFFGAP_ROOT"/}):"
  while IFS=$'\t' read -r name secs; do
    printf '  %-28s %9s\n' "$name" "$secs"
  done < "$STAGES_FILE"
  echo "disk used (du -sh; $(df -h --output=avail "$DIFFGAP_ROOT" | tail -1 | tr -d ' ') left on the device):"
  (cd "$DIFFGAP_ROOT" && du -sh .venv target .cache/* 2>/dev/null | sort -h | tail -8 | sed 's/^/  /')
}
