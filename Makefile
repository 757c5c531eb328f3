# Tailor: two commands on a fresh clone — `make demo` and `make test`. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tailor-setup
UV_VERSION := 0.13.9
PYTEST_ARGS ?=
# Some sandboxes set PYTHONDONTWRITEBYTECODE=1: every subprocess (crawler, Airflow task,
# Bento worker) would then recompile torch & co. from source (20-35 s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup test test-slow test-cluster test-all lint typecheck-baseline demo up down status lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with the pinned environment (idempotent; seconds when done)

# Re-runs only when the lock or the project metadata changed.
$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python -r requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	$(BIN)/tailor init
	@touch $@

test: setup  ## run the default test suite (slow and cluster suites deselected)
	$(BIN)/python -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

test-slow: setup  ## only the slow suites: DAG runs end to end, deploy, demo-profile training
	$(BIN)/python -m pytest -m "slow and not cluster" $(PYTEST_ARGS)

test-cluster: setup  ## the cluster profile for real: Postgres, Redis, S3, Celery (needs redis-server)
	$(BIN)/python -m pytest -m cluster -s $(PYTEST_ARGS) tests/cluster

test-all: setup  ## every suite, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup  ## ruff (format and checks, including Airflow's AIR rules) and mypy against its baseline
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy --no-color-output | $(BIN)/mypy-baseline filter --no-colors --hide-stats

typecheck-baseline: setup  ## after fixing type errors: shrink mypy-baseline.txt to what is left
	$(BIN)/mypy --no-color-output | $(BIN)/mypy-baseline sync

demo: setup  ## the main job on the embedded default
	$(BIN)/tailor demo

up: setup  ## start Airflow and MLflow on 127.0.0.1
	$(BIN)/tailor up

down:  ## stop everything Tailor started
	@if [ -x $(BIN)/tailor ]; then $(BIN)/tailor down; else echo "nothing to stop"; fi

status: setup  ## what runs, where
	$(BIN)/tailor status

lock: setup  ## re-resolve requirements/requirements.in into requirements/lock.txt
	$(BIN)/uv pip compile requirements/requirements.in -o requirements/lock.txt --python-version 3.11 --no-header

clean:  ## remove runtime state (var/), keeps data/ and .venv
	rm -rf var
