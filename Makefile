# Two commands do all the set-up:  make demo  (train + evaluate the reference MNIST experiment)
#                                  make test  (the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch this project is developed and tested with.
TORCH ?= torch==2.13.0
DEMO_ARGS ?= --data mnist --normal-class 1 --epochs 15 --seed 0

.PHONY: demo test lint env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,export,serve]"
	touch $@

demo: env
	$(PY) -m ganomaly train $(DEMO_ARGS) --out runs/demo --overwrite

test: env
	$(PY) -m pytest

lint: env
	$(VENV)/bin/ruff check ganomaly tests benchmarks
	$(VENV)/bin/ruff format --check ganomaly tests benchmarks
	$(VENV)/bin/mypy ganomaly

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
