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

.PHONY: install data toolchains sweep resume status ui test test-fast lint clean

install: .install.stamp
.install.stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # CPU wheel first: a plain `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

data: install $(ITT_DATA_DIR)/.complete
$(ITT_DATA_DIR)/.complete:
	$(BIN)/python -m itt_sweep.data.fetch --dest $(ITT_DATA_DIR) $(if $(ITT_DATA_MIRROR),--mirror $(ITT_DATA_MIRROR))
	touch $@

toolchains: .toolchains.stamp
.toolchains.stamp: scripts/install_toolchains.sh
	bash scripts/install_toolchains.sh
	touch $@

sweep: install data toolchains
	$(BIN)/itt-sweep run $(SWEEP)

resume: install data toolchains
	$(BIN)/itt-sweep resume $(SWEEP)

status: install
	$(BIN)/itt-sweep status runs/$$($(BIN)/python -c "import yaml,sys;print(yaml.safe_load(open('$(SWEEP)'))['name'])")

ui: install
	@echo "MLflow UI on http://127.0.0.1:$(UI_PORT) (store: $(MLFLOW_URI)); Ctrl-C stops it"
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port $(UI_PORT) --workers 1

test: install data toolchains
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install data toolchains
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs mlflow.db .pytest_cache
