# Every target creates (or reuses) its own virtualenv in .venv: `make demo` and
# `make test` are the only commands a fresh machine needs (plus Python >= 3.11 and make).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sandbox.demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

# The full fault suite (a short run is part of `make test`): worker processes killed,
# paused and drained, PostgreSQL restarted, connections terminated, while a seeded
# workload runs; then every invariant is checked. Replay a run with SEED=N.
faults: $(STAMP)
	$(BIN)/python -m faults $(if $(SEED),--seed $(SEED))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
