# The two commands of the README (`make train`, `make test`) set everything up themselves:
# a .venv with the pinned torch, the package in editable mode, and the data set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/cnn.yaml

.PHONY: train test test-slow browser setup data lint format bench tensorboard clean

train: setup data  ## Train the default model (the CNN), then test the best checkpoint
	$(PY) -m fashion_lightning fit --config $(CONFIG)

test: setup data  ## The fast test suite (about 2 minutes of pytest on 2 cores of an AMD EPYC Zen 5)
	$(PY) -m pytest -q

test-slow: setup data browser  ## Real-data runs, 2-process DDP, real processes stopped by signals, tune's worker processes, the WRN's training, a live server, a browser
	$(PY) -m pytest -q -m slow

browser:  ## Debian's Chromium and chromedriver, for the browser test of `serve` (needs root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update && apt-get install -y chromium chromium-driver; }

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,export,tune]'  # the tests export and tune
	touch $(STAMP)

data: setup
	PY=$(PY) bash scripts/get_data.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup data  ## Speed benchmarks, each printing times and ratios against its baseline
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,export,bench]'  # scikit-learn, for bench_reference
	for script in scripts/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir lightning_logs

clean:
	rm -rf lightning_logs .pytest_cache .ruff_cache
