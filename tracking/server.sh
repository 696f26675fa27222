#!/usr/bin/env bash
# An MLflow tracking server for sweeps: `make tracking-up` / `make tracking-down` call this script.
#
# Usage: tracking/server.sh start|stop|status|run
#   start   start in the background, write the pid file, wait until GET /health answers (exit 1 if it never does)
#   stop    stop the server of the pid file (its process group: mlflow spawns uvicorn under it), nothing else
#   status  say whether it runs and answers
#   run     run in the foreground (Ctrl-C stops it)
#
# Settings (environment):
#   MLFLOW_HOST                   127.0.0.1 (loopback only; change it only behind an authenticating proxy)
#   MLFLOW_PORT                   5000
#   MLFLOW_BACKEND_URI            sqlite:///<repo>/mlflow.db; PostgreSQL: postgresql://user:pass@host:5432/db
#                                 (needs the psycopg driver: pip install "psycopg[binary]")
#   MLFLOW_ARTIFACTS_DESTINATION  <repo>/mlartifacts; or s3://bucket/prefix (needs boto3 and AWS_* credentials,
#                                 MLFLOW_S3_ENDPOINT_URL for a non-AWS S3). Clients upload through the server.
#   MLFLOW_WORKERS                1 (each worker costs ~300 MB and seconds of start-up)
#   MLFLOW_STATE_DIR              <repo>/.cache/tracking: server.pid and server.log
#   MLFLOW_START_TIMEOUT          180 (seconds to wait for /health)
#   MLFLOW_BIN                    <repo>/.venv/bin/mlflow
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
backend="${MLFLOW_BACKEND_URI:-sqlite:///$repo/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$repo/mlartifacts}"
workers="${MLFLOW_WORKERS:-1}"
state="${MLFLOW_STATE_DIR:-$repo/.cache/tracking}"
timeout="${MLFLOW_START_TIMEOUT:-180}"
mlflow_bin="${MLFLOW_BIN:-$repo/.venv/bin/mlflow}"
pid_file="$state/server.pid"
log_file="$state/server.log"
url="http://$host:$port"
# The GenAI job runner starts ~8 extra processes (huey consumers) that sweeps never use.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

healthy() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url/health" 2>/dev/null
}

running_pid() {  # the pid of the file, if that process is alive and is an mlflow server
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(cat "$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow server" && echo "$pid"
}

command=("$mlflow_bin" server --host "$host" --port "$port" --workers "$workers"
  --backend-store-uri "$backend" --artifacts-destination "$artifacts")

start() {
  if pid="$(running_pid)"; then
    echo "MLflow server already running (pid $pid): $url"
    return 0
  fi
  if healthy; then
    echo "error: $url already answers, but not from $pid_file; stop that server or set MLFLOW_PORT" >&2
    return 1
  fi
  mkdir -p "$state"
  [[ "$artifacts" == *://* ]] || mkdir -p "$artifacts"
  # setsid: the server leads its own process group, so `stop` can end it and its workers by this PID alone.
  setsid "${command[@]}" >"$log_file" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pid_file"
  local started=$SECONDS
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the MLflow server exited during start-up; last lines of $log_file:" >&2
      tail -n 30 "$log_file" >&2
      rm -f "$pid_file"
      return 1
    fi
    if ((SECONDS - started >= timeout)); then
      echo "error: no answer from $url/health after ${timeout}s; stopping it (log: $log_file)" >&2
      stop >&2
      return 1
    fi
    sleep 1
  done
  echo "MLflow server up after $((SECONDS - started))s (pid $pid): $url"
  echo "  backend: $backend"
  echo "  artifacts: $artifacts"
  echo "  sweeps log to it with  tracking: {uri: $url}"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "no MLflow server running from $pid_file"
    rm -f "$pid_file"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "MLflow server (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
  rm -f "$pid_file"
  echo "MLflow server stopped (pid $pid)"
}

status() {
  if pid="$(running_pid)"; then
    if healthy; then echo "running (pid $pid): $url"; else echo "starting or stuck (pid $pid): $url"; fi
  else
    echo "not running"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  run) exec "${command[@]}" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
