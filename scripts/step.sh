#!/usr/bin/env bash
# Run one set-up step (`make install`, `data`, `toolchains`, `services`, `models`) with its output in a log, and
# say one line about it:
#
#   scripts/step.sh NAME -- COMMAND [ARGS...]
#
# COMMAND's stdout and stderr are appended to $ITT_LOG_DIR/NAME.log (default ./.cache/logs/NAME.log), each run
# opening with a header line (date and command). On success it prints `NAME ... ok (41 s)`, followed by
# `: TEXT` when the command printed a line `summary: TEXT` (the last one wins). On failure it prints
# `NAME ... FAILED after N s (exit CODE)`, the last $ITT_LOG_TAIL lines (default 30) of this run's output and
# `full log: PATH` (on stderr), and exits with COMMAND's status, so make stops.
# ITT_VERBOSE=1 (`make V=1`) also streams the output to the console as it comes.
# Plain bash on purpose: it runs before the virtualenv exists.
set -uo pipefail

usage() {
  echo "usage: $0 NAME -- COMMAND [ARGS...]" >&2
  exit 2
}
(($# >= 3)) && [[ $2 == -- ]] || usage
name=$1
shift 2

log_dir=${ITT_LOG_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.cache/logs}
mkdir -p "$log_dir" || exit
log=$log_dir/$name.log
tail_lines=${ITT_LOG_TAIL:-30}

# This run's output starts at the log's current end: the tail and the summary come from it alone.
start_byte=$(($(stat -c %s "$log" 2>/dev/null || echo 0) + 1))
printf '==== %s  %s $%s\n' "$(date '+%Y-%m-%d %H:%M:%S %z')" "$PWD" "$(printf ' %q' "$@")" >>"$log"
this_run() { tail -c "+$start_byte" "$log"; }

started=$SECONDS
if [[ ${ITT_VERBOSE:-} == 1 ]]; then
  "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
else
  "$@" >>"$log" 2>&1
  status=$?
fi
elapsed=$((SECONDS - started))

if ((status == 0)); then
  summary=$(this_run | sed -n 's/^summary: //p' | tail -n 1)
  echo "$name ... ok ($elapsed s)${summary:+: $summary}"
else
  {
    echo "$name ... FAILED after $elapsed s (exit $status)"
    if [[ ${ITT_VERBOSE:-} != 1 ]]; then  # verbose: the output has just been shown
      this_run | tail -n "$tail_lines" | sed 's/^/  | /'
    fi
    echo "full log: $log"
  } >&2
fi
exit "$status"
