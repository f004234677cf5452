# Two commands on a fresh machine (Python 3.11, Java 17, Node.js):
#   make run    install into .venv, generate the sample scene if data/01_raw/naip is empty, kedro run
#   make test   install into .venv (+ Azurite from npm), run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KEDRO := $(BIN)/kedro
export KEDRO_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 2
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: install run test viz benchmark clean-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[local,test]"
	touch $@

.tools/node_modules/.bin/azurite-blob:
	npm install --silent --no-audit --no-fund --prefix .tools azurite@3

run: install
	@if ls data/01_raw/naip/*.tif >/dev/null 2>&1; then \
		echo "Using the rasters already in data/01_raw/naip (the sample scene is not generated)"; \
	else \
		$(KEDRO) run --pipelines sample_scene; \
	fi
	$(KEDRO) run

test: install .tools/node_modules/.bin/azurite-blob
	$(BIN)/python -m pytest

viz: install
	$(KEDRO) viz build

benchmark: install
	for script in $(filter-out benchmarks/county_input.py,$(wildcard benchmarks/*.py)); do \
		$(BIN)/python $$script || exit 1; \
	done  # county_input.py is county_scale.py's input builder (its CLI needs a --raw and --out)
