# The two commands of the quick start are `make demo` and `make test`; everything else is a step.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap venv test test-vllm-scale lint unit e2e demo generate lock

# Everything: apt packages, the virtual environment, the local cluster's binaries.
bootstrap:
	bash scripts/bootstrap.sh

# The virtual environment alone (from the lock files): enough for lint, unit and generate.
venv:
	bash scripts/bootstrap.sh venv

lint: venv
	$(VENV)/bin/ruff check operator runtime tests e2e bench scripts
	$(VENV)/bin/ruff format --check operator runtime tests e2e bench scripts
	$(VENV)/bin/mypy
	# The e2e harness, benchmarks and scripts: strict too, with their own import roots.
	MYPYPATH=operator:runtime:e2e:bench $(VENV)/bin/mypy --strict e2e bench scripts
	MYPYPATH=operator:runtime:tests/unit:tests/unit/policy:tests/unit/control $(VENV)/bin/mypy --strict tests
	$(VENV)/bin/lint-imports

unit: venv
	$(PY) -m pytest tests

# The CRDs from the API models, into crds/ and the chart's copy (the unit tier checks both).
generate: venv
	$(PY) -m thrifty.api.crdgen --out crds
	$(PY) -m thrifty.api.crdgen --out charts/thrifty/crds

# The lock files from pyproject.toml (needs PyPI): requirements/operator.txt is what the image
# installs, requirements/dev.txt what the virtual environment and CI install (dev and plot extras).
PIP_COMPILE := $(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
lock: venv
	$(VENV)/bin/python -m pip install -q pip-tools
	PIP_FIND_LINKS= $(PIP_COMPILE) --output-file requirements/build.txt requirements/build.in
	PIP_FIND_LINKS= $(PIP_COMPILE) --output-file requirements/operator.txt pyproject.toml
	PIP_FIND_LINKS= $(PIP_COMPILE) --extra dev --extra plot --output-file requirements/dev.txt pyproject.toml

e2e: bootstrap
	$(PY) -m pytest e2e

test: lint
	$(PY) -m pytest

# The real-vLLM scale scenario alone (part of `make test`): 7-8 min on a busy 2-core machine, most
# of it the second engine's start beside the loaded first one.
test-vllm-scale: bootstrap
	$(PY) -m pytest -m vllm_scale e2e

# A local cluster by hand (docs/local-cluster.md): `eval "$(make -s cluster-up)"`, `make cluster-down`.
# ARGS passes options, e.g. ARGS="--apiserver-port 6443 --prometheus-port 9090" or ARGS="--name x".
.PHONY: cluster-up cluster-down
cluster-up: bootstrap
	@PYTHONPATH=e2e $(PY) -m harness up $(ARGS)

cluster-down:
	@PYTHONPATH=e2e $(PY) -m harness down $(ARGS)

# Every policy on every shared trace, baselines swept; writes bench/results.md (a few minutes).
.PHONY: bench
bench: bootstrap
	$(PY) bench/run.py

# The operator image (Dockerfile; docs/install.md). Needs a container builder, none runs here:
# `make image IMAGE=registry.example.com/thrifty-operator:0.1.0 [CONTAINER_BUILDER=podman]`.
# Releases are built by .github/workflows/release.yml (amd64 and arm64) on a version tag.
IMAGE ?= thrifty-operator:0.1.0
CONTAINER_BUILDER ?= docker
DOCKER_BUILD_ARGS ?=
.PHONY: image
image:
	$(CONTAINER_BUILDER) build $(DOCKER_BUILD_ARGS) -t $(IMAGE) -f Dockerfile .

# The README's main command: local cluster, operator, simulated fleet, a replayed burst of the Azure
# code trace, a live table, out/demo.png; everything is torn down at the end (also on Ctrl-C).
demo: bootstrap
	$(PY) scripts/demo.py $(ARGS)
