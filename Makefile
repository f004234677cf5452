# Two commands on a fresh machine (Python 3.11, Java 17, Node.js):
#   make run    install into .venv, generate the sample scene if data/01_raw has no NAIP and no NLCD, kedro run
#   make test   install into .venv (+ Azurite from npm, + Debian's chromium when missing and root), run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KEDRO := $(BIN)/kedro
export KEDRO_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 2
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: install run test test-spark3 lint format viz notebook benchmark bench chromium clean-data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[local,test]"
	touch $@

.tools/node_modules/.bin/azurite-blob:
	npm install --silent --no-audit --no-fund --prefix .tools azurite@3

# The sample scene is generated only into an empty data/01_raw: never over a user's NAIP or NLCD.
HAS_TIF = find data/01_raw/$(1) -iname '*.tif' 2>/dev/null | grep -q .
run: install
	@if $(call HAS_TIF,naip) && $(call HAS_TIF,nlcd); then \
		echo "Using your rasters in data/01_raw/naip and data/01_raw/nlcd (the sample scene is not generated)"; \
	elif $(call HAS_TIF,naip) || $(call HAS_TIF,nlcd); then \
		if $(call HAS_TIF,naip); then have=naip; missing=nlcd; else have=nlcd; missing=naip; fi; \
		echo "data/01_raw/$$have holds your rasters but data/01_raw/$$missing has none: nothing was run or" \
			"written (the sample scene would replace your files). Put the missing rasters in" \
			"data/01_raw/$$missing (README, Set-up step 2, or kedro run --pipelines acquire), then make run." >&2; \
		exit 1; \
	else \
		echo "data/01_raw holds no NAIP and no NLCD: generating the sample scene there first"; \
		$(KEDRO) run --pipelines sample_scene; \
	fi
	$(KEDRO) run

# The lineage page's render test (tests/test_viz.py) drives a headless Chromium: $CHROMIUM, or the
# first of these names on PATH. When none is there, root with apt-get installs Debian's `chromium`;
# anyone else gets a how-to and a failure, never a skipped test.
CHROMIUM_NAMES := chromium chromium-browser google-chrome google-chrome-stable
chromium:
	@if [ -n "$$CHROMIUM" ]; then \
		[ -x "$$CHROMIUM" ] || { echo "CHROMIUM=$$CHROMIUM is not an executable" >&2; exit 1; }; exit 0; \
	fi; \
	for name in $(CHROMIUM_NAMES); do command -v $$name >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium with apt-get (headless browser for tests/test_viz.py)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
		|| { echo "apt-get could not install chromium; install it by hand (see README, Set-up)" >&2; exit 1; }; \
	else \
		echo "make test needs a headless Chromium for the lineage page test (tests/test_viz.py), and found none" >&2; \
		echo "(looked for \$$CHROMIUM, then $(CHROMIUM_NAMES) on PATH). Install one, then run make test again:" >&2; \
		echo "  Debian:  sudo apt-get install chromium        (make test does this itself when run as root)" >&2; \
		echo "  Ubuntu:  sudo apt-get install chromium-browser, or Google Chrome" >&2; \
		echo "  any OS:  a Chrome/Chromium binary, then: make test CHROMIUM=/path/to/chrome" >&2; \
		exit 1; \
	fi

# Spark 3.x (docs/deployment.md): the scoring tests again on pyspark 3.5, in their own environment
# (.tools/pyspark35: the project in editable mode with the `cluster` extra, and pyspark 3.5 instead of
# 4.x). Its pyspark is also the Spark 3.5 cluster of tests/deployment (the packaged wheel run with
# spark-submit). uv fills it from its cache in .tools/uv-cache: about a minute the first time.
# Left out: the test that needs the whole chain (its training is TensorFlow, not Spark; the packaged
# test runs spark_scoring and development_inference on that chain's tiles on Spark 3.5).
SPARK3 := .tools/pyspark35
SPARK3_TESTS := tests/test_scoring.py tests/pipelines/test_spark_scoring.py \
	--deselect tests/pipelines/test_spark_scoring.py::test_after_training_scoring_agrees_with_the_training_evaluation
export UV_CACHE_DIR := $(abspath .tools/uv-cache)

$(SPARK3)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(SPARK3)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(SPARK3)
	$(BIN)/uv pip install --quiet --python $(SPARK3)/bin/python -e ".[cluster]" "pyspark>=3.5,<3.6" "pytest>=8"
	touch $@

test-spark3: $(SPARK3)/.installed
	$(SPARK3)/bin/python -c 'import pyspark, sys; print("pyspark", pyspark.__version__); sys.exit(not pyspark.__version__.startswith("3.5."))'
	PYSPARK_PYTHON=$(abspath $(SPARK3)/bin/python) PYSPARK_DRIVER_PYTHON=$(abspath $(SPARK3)/bin/python) \
		$(SPARK3)/bin/python -m pytest $(SPARK3_TESTS)

test: install .tools/node_modules/.bin/azurite-blob chromium $(SPARK3)/.installed
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-spark3

LINTED := src tests benchmarks
lint: install  # what tests/test_lint.py enforces
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)

format: install  # rewrite the files so that `make lint` passes (what ruff can fix)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

viz: install
	$(KEDRO) viz build

notebook: install  # re-execute the walkthrough in place on this project's outputs (after make run)
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace walkthrough.ipynb

bench: benchmark  # the README's benchmark figures, reproduced

benchmark: install
	for script in $(filter-out benchmarks/county_input.py benchmarks/_%.py,$(wildcard benchmarks/*.py)); do \
		$(BIN)/python $$script || exit 1; \
	done  # county_input.py is county_scale.py's input builder (its CLI needs a --raw and --out)
