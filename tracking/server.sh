#!/usr/bin/env bash
# Start an MLflow tracking server on loopback. Usage: tracking/server.sh [port]
# MLFLOW_BACKEND_URI (default sqlite:///mlflow.db) and MLFLOW_ARTIFACTS (default ./mlartifacts) choose the stores.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-5000}"
exec .venv/bin/mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "${MLFLOW_BACKEND_URI:-sqlite:///mlflow.db}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:-./mlartifacts}"
