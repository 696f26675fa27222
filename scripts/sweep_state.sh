#!/usr/bin/env bash
# Carry a stopped local sweep to another machine (a study run in parts across sessions), without its weights.
#
#   bash scripts/sweep_state.sh save runs/smollm2-study results/smollm2-study/in-progress/state.tar.gz
#   bash scripts/sweep_state.sh restore results/smollm2-study/in-progress/state.tar.gz   # then: make resume ...
#
# The archive holds what `itt-sweep resume` and the analysis read: sweep.resolved.yaml, Tune's experiment state,
# the trial dirs (metrics, samples, logs), the training ledger, the verified references, each cached stage's
# stage_metrics.json, and the local MLflow store (mlflow.db and mlruns/ beside the Makefile). Model weights and
# Ray Train step checkpoints stay behind (GBs per stage): on resume an unfinished trial trains its stages again,
# finished trials are not rerun. Paths are stored absolute, so restore on a checkout at the same path; restore
# never overwrites a file that exists (a fresh checkout has none of them).
set -euo pipefail

usage() { echo "usage: $0 save SWEEP_DIR ARCHIVE | restore ARCHIVE" >&2; exit 2; }

save() {
  local sweep_dir archive root list
  sweep_dir=$(realpath "$1"); archive=$(realpath -m "$2"); root=$(dirname "$sweep_dir")
  test -f "$sweep_dir/sweep.resolved.yaml" || { echo "$sweep_dir: not a sweep dir (no sweep.resolved.yaml)" >&2; exit 1; }
  list=$(mktemp); trap 'rm -f "$list"' RETURN
  {
    for part in sweep.resolved.yaml tune trials logs train/ledger.jsonl; do
      test -e "$sweep_dir/$part" && echo "$sweep_dir/$part"
    done
    test -d "$root/references" && echo "$root/references"
    find "$root/stages" -mindepth 2 -maxdepth 2 -name stage_metrics.json 2>/dev/null || true
    for part in mlflow.db mlruns; do test -e "$PWD/$part" && echo "$PWD/$part"; done
  } > "$list"
  mkdir -p "$(dirname "$archive")"
  tar --create --gzip --absolute-names --exclude '*.lock' --file "$archive" --files-from "$list"
  echo "saved $(wc -l < "$list") paths of $sweep_dir to $archive ($(du -h "$archive" | cut -f1))"
}

restore() {
  local archive=$1
  test -f "$archive" || { echo "$archive: no such archive" >&2; exit 1; }
  tar --extract --gzip --absolute-names --keep-old-files --file "$archive"
  echo "restored $(tar --list --gzip --absolute-names --file "$archive" | wc -l) entries from $archive"
}

case "${1:-}" in
  save) [ $# -eq 3 ] || usage; save "$2" "$3" ;;
  restore) [ $# -eq 2 ] || usage; restore "$2" ;;
  *) usage ;;
esac
