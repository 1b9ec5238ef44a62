# Every target creates (or reuses) its own virtualenv in .venv: `make demo` and
# `make test` are the only commands a fresh machine needs (plus Python >= 3.11 and make).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARCH      ?= arm64
PYTHON312 ?= python3.12
LOCK_VENV := build/lock-venv
# uv installs the dev virtualenv from the committed uv.lock (every dev and test dependency
# pinned, hashes included); uv itself is pinned and bootstrapped from PyPI with pip.
UV_VERSION := 0.13.9
UV_VENV    := build/uv-venv
UV         := $(UV_VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# checkov pins boto3 (==1.35.x) below what the runtime needs, so it gets a venv of its own.
CHECKOV_VENV := build/checkov-venv
CHECKOV      := $(CHECKOV_VENV)/bin/checkov

.PHONY: demo test lint typecheck unit faults bench smoke lambda-zip synth lock relock checkov tmux browser-check clean

# --locked: fails (saying so) when pyproject.toml changed and uv.lock was not regenerated
# with `make relock`.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --extra dev --python $(PYTHON) --quiet
	touch $(STAMP)

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

# After changing dependencies in pyproject.toml: re-resolve uv.lock (keeping every other
# pin), sync the venv to it, and regenerate requirements.lock from the same versions.
relock: $(UV)
	$(UV) lock
	$(MAKE) lock

demo: $(STAMP)
	$(BIN)/python -m sandbox.demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(CHECKOV) tmux
	CHECKOV=$(CURDIR)/$(CHECKOV) $(BIN)/pytest -q

# tmux for tests/test_watch.py (it drives `producer watch` as a person would); installed
# with apt-get when we are root on Debian, else that test skips saying why.
tmux:
	@command -v tmux >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq tmux || { apt-get update -qq && apt-get install -y -qq tmux; }; } \
	  >/dev/null 2>&1; } || echo "tmux is not installed: tests/test_watch.py skips its terminal test"

# The report as a browser renders it: Debian's chromium, headless, offline (installs it).
browser-check: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/pytest -q tests/test_report_browser.py

# checkov for tests/test_infra.py (it lints the synthesized templates and the Dockerfile).
checkov: $(CHECKOV)
$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==3.3.30'

# The DSQL readiness check: against DSQL_ENDPOINT (AWS credentials allowed
# dsql:DbConnectAdmin), else DATABASE_URL, else an embedded PostgreSQL. It works in a
# throwaway schema and drops it; `make test` runs it on the embedded PostgreSQL.
smoke: $(STAMP)
	$(BIN)/python -m producer smoke

# The full fault suite (a short run is part of `make test`): worker processes killed,
# paused and drained, PostgreSQL restarted, connections terminated, while a seeded
# workload runs; then every invariant is checked. Replay a run with SEED=N.
faults: $(STAMP)
	$(BIN)/python -m faults $(if $(SEED),--seed $(SEED))

# The benchmark harness, not part of `make test`: about 13 minutes on 2 cores; prints the
# table and writes bench/results.json. `make bench BENCH_ARGS=--quick` takes about 4.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The python3.12 Lambda deployment zip, from manylinux wheels, no Docker (arm64 by default, the
# function's default architecture; ARCH=x86_64 too).
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
	$(BIN)/python -m sandbox.lock_hashes

clean:
	rm -rf $(VENV) build infra/cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
