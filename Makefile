# Every target is listed by `make help`. State lives in $(MLOPS_HOME) (default .mlops/).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION   := 0.13.9
TOOLS        := .tools
UV           := $(TOOLS)/bin/uv
VENV         := .venv
PY           := $(VENV)/bin/python
export MLOPS_HOME ?= $(CURDIR)/.mlops
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
HTTP_PORT    ?= 3000
GRPC_PORT    ?= 50051

.PHONY: help install lock run train serve-http serve-grpc registry test test-unit test-integration lint format clean

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python python3.11
	touch $@

install: $(VENV)/.installed ## create .venv from the lock file (uv.lock), dev tools included

lock: $(UV) ## re-resolve pyproject.toml into uv.lock
	$(UV) lock

run: install ## main job: train if no current model, then serve HTTP :3000 and gRPC :50051 (Ctrl-C stops both)
	HTTP_PORT=$(HTTP_PORT) GRPC_PORT=$(GRPC_PORT) scripts/run.sh

train: install ## train a model and register it (auto promotion)
	$(PY) -m training.train

registry: install ## show the registry's versions
	$(PY) -m training.registry list

test: install ## the whole test suite (unit, integration, k8s, e2e)
	$(PY) -m pytest tests

test-unit: install ## fast unit tests only
	$(PY) -m pytest tests/unit

test-integration: install ## tests against real servers
	$(PY) -m pytest tests/integration

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the venvs and caches (keeps $(MLOPS_HOME))
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
