#!/usr/bin/env bash
# Run an itt-sweep command on a Ray cluster as a Ray Job and stream its logs here: `make sweep`/`make resume`
# call this when CLUSTER names a cluster.yaml or RAY_ADDRESS is a dashboard address (http://HOST:8265).
# A job's driver runs on the head node, so closing this terminal (or Ctrl-C) stops only the log stream, not
# the sweep: `ray job logs -f <id>` picks it up again.
#
# Usage: scripts/submit_job.sh run|resume SWEEP_FILE
#   CLUSTER=cluster.yaml   forward the head's dashboard to 127.0.0.1:$DASHBOARD_PORT over SSH (`ray dashboard`)
#   RAY_ADDRESS=http://..  submit to that dashboard directly
#   BIN                    where `ray` lives (default .venv/bin)
set -euo pipefail

command=${1:?usage: submit_job.sh run|resume SWEEP_FILE}
sweep=${2:?usage: submit_job.sh run|resume SWEEP_FILE}
BIN=${BIN:-.venv/bin}
RAY="$BIN/ray"
PORT=${DASHBOARD_PORT:-8265}
forward=""

stop_forward() { if [[ -n $forward ]]; then kill -- "-$forward" 2>/dev/null || true; fi; }
trap stop_forward EXIT

if [[ -n ${CLUSTER:-} ]]; then
  head_ip=$("$RAY" get-head-ip "$CLUSTER" | tail -n 1)
  echo "head node: $head_ip; forwarding its dashboard to 127.0.0.1:$PORT"
  setsid "$RAY" dashboard --port "$PORT" "$CLUSTER" >/dev/null 2>&1 &   # own process group: stopped at exit
  forward=$!
  for _ in $(seq 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 1
  done
  export RAY_ADDRESS="http://127.0.0.1:$PORT"
fi
if [[ ${RAY_ADDRESS:-} != http*://* ]]; then
  echo "submit_job.sh: set CLUSTER=cluster.yaml or RAY_ADDRESS=http://HOST:8265 (a dashboard address)" >&2
  exit 2
fi

cat <<EOF
Ray dashboard:  $RAY_ADDRESS   (from a laptop: ray dashboard ${CLUSTER:-cluster.yaml})
MLflow UI:      http://127.0.0.1:5000 after one of
                  ray attach ${CLUSTER:-cluster.yaml} --port-forward 5000
                  ssh -i <key.pem> -L 5000:127.0.0.1:5000 ubuntu@${head_ip:-<head ip: ray get-head-ip cluster.yaml>}
Submitting:     itt-sweep $command $sweep  (Ctrl-C stops following the logs; the job keeps running)
EOF

# The job ships this checkout (code and sweep files); the image already holds the dependencies and the
# toolchains, and py_modules puts this checkout's itt_sweep ahead of the image's copy on every node.
# Ray applies `excludes` to py_modules as well, relative to each module: a pattern such as "data" would drop
# the package itt_sweep/data. The checkout's data and run folders are left out by .gitignore (/data/, /runs/:
# anchored at the checkout root), which Ray honours for the working dir. No env_vars here: the driver's
# ray.init sets the trials' (sweep/driver.py, TRIAL_ENV), and Ray refuses a key set in both places.
runtime_env=$(cat <<'EOF'
{"working_dir": ".", "py_modules": ["src/itt_sweep"],
 "excludes": [".git", ".venv", ".cache", "mlruns", "mlartifacts", "mlflow.db", "*.egg-info",
              "__pycache__", ".pytest_cache", ".ruff_cache", ".whl", ".gl"]}
EOF
)
"$RAY" job submit --address "$RAY_ADDRESS" --runtime-env-json "$runtime_env" \
  --submission-id "itt-${command}-$(basename "$sweep" .yaml)-$(date +%Y%m%d-%H%M%S)" \
  -- python -m itt_sweep.cli "$command" "$sweep"
