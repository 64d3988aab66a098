# The two commands of the quick start are `make demo` and `make test`; everything else is a step.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap test lint unit e2e demo

bootstrap:
	bash scripts/bootstrap.sh

lint: bootstrap
	$(VENV)/bin/ruff check operator runtime tests e2e bench
	$(VENV)/bin/ruff format --check operator runtime tests e2e bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: bootstrap
	$(PY) -m pytest tests

e2e: bootstrap
	$(PY) -m pytest e2e

test: lint
	$(PY) -m pytest

# Every policy on every shared trace, baselines swept; writes bench/results.md (a few minutes).
.PHONY: bench
bench: bootstrap
	$(PY) bench/run.py
