# Every target creates (or reuses) its own virtualenv in .venv: `make demo` and
# `make test` are the only commands a fresh machine needs (plus Python >= 3.11 and make).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARCH      ?= x86_64
PYTHON312 ?= python3.12
LOCK_VENV := build/lock-venv

.PHONY: demo test lint typecheck unit faults bench smoke lambda-zip synth lock clean

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

# The DSQL readiness check: against DSQL_ENDPOINT (AWS credentials allowed
# dsql:DbConnectAdmin), else DATABASE_URL, else an embedded PostgreSQL. It works in a
# throwaway schema and drops it; `make test` runs it on the embedded PostgreSQL.
smoke: $(STAMP)
	$(BIN)/python -m worker smoke

# The full fault suite (a short run is part of `make test`): worker processes killed,
# paused and drained, PostgreSQL restarted, connections terminated, while a seeded
# workload runs; then every invariant is checked. Replay a run with SEED=N.
faults: $(STAMP)
	$(BIN)/python -m faults $(if $(SEED),--seed $(SEED))

# The benchmark harness, not part of `make test`: about 13 minutes on 2 cores; prints the
# table and writes bench/results.json. `make bench BENCH_ARGS=--quick` takes about 4.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The python3.12 Lambda deployment zip, from manylinux wheels, no Docker (ARCH=arm64 too).
lambda-zip: $(STAMP)
	$(BIN)/python -m sandbox.lambda_zip --arch $(ARCH) --output build/lambda.zip

# CloudFormation for the stack in infra/cdk.out: no AWS account, no Docker (the image's
# build context is only hashed; `cdk deploy` builds it). Pass context like `cdk -c`:
#   make synth CONTEXT="compute=fargate maxTasks=20"
synth: $(STAMP)
	@test -f build/lambda.zip || $(MAKE) lambda-zip
	rm -rf infra/cdk.out
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(BIN)/python infra/app.py $(foreach c,$(CONTEXT),-c $(c))

# Regenerate requirements.lock (the container's and the Lambda zip's pinned runtime
# dependencies) on Python 3.12 from the versions the dev venv tests.
lock: $(STAMP)
	mkdir -p build
	$(BIN)/pip freeze --exclude-editable > build/venv-freeze.txt
	rm -rf $(LOCK_VENV)
	$(PYTHON312) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --constraint build/venv-freeze.txt .
	{ sed -n '/^#/p' requirements.lock; $(LOCK_VENV)/bin/pip freeze --exclude dsql-transfers; } > build/requirements.lock
	mv build/requirements.lock requirements.lock

clean:
	rm -rf $(VENV) build infra/cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
