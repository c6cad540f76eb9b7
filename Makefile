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
GRPC_METRICS_PORT ?= 3001
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
# IMAGE can be overridden (make image e2e IMAGE=churn-service:dev): tests/e2e runs $(CHURN_IMAGE).
IMAGE        ?= churn-service:$(VERSION)
export CHURN_IMAGE := $(IMAGE)
BENTO        := churn_service:$(VERSION)
# Bentos are built in their own BentoML home, apart from the models in $(MLOPS_HOME).
BUILD_HOME   := $(CURDIR)/build/bentoml
CHECKOV_VENV := .venv-checkov
# shap in a venv of its own (numba, NumPy 2): the reasons' cross-check only. 0.51.0 is the last for Python 3.11.
SHAP_VENV    := .venv-shap
# Locked packages left out of the image: alibi-detect requires opencv-python and scikit-image, but
# imports them only in alibi_detect.utils.perturbation (image perturbations); its documented
# imports (`from alibi_detect.cd import TabularDrift`, alibi_detect.od, .ad, .saving) never load
# them, nor the packages only scikit-image needs. Everything those imports load stays (numba,
# llvmlite, transformers, tokenizers, huggingface-hub, regex; tests/e2e/test_image.py imports and
# uses alibi-detect in a pod, and checks that every other package has all it requires). About 235 MB.
IMAGE_EXCLUDE := opencv-python scikit-image networkx imageio tifffile lazy-loader
MLSERVER_VENV := .venv-mlserver

.PHONY: help install lock run train registry drift performance retrain demo test test-unit test-integration test-k8s soak bench e2e lint format \
	bento image docker render checkov checkov-install prometheus-install clean cluster-build cluster-up cluster-down test-cluster release-check \
	bench-batch shap-install score

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on our machines) nothing caches bytecode,
# and every process compiled its imports again: 9 of the drift job's 22 s, half a server's start.
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python python3.11
	touch $@

install: $(VENV)/.installed ## create .venv from the lock file (uv.lock), dev tools included

lock: $(UV) ## re-resolve pyproject.toml into uv.lock
	$(UV) lock

run: install ## main job: train if no current model, then serve HTTP :3000 and gRPC :50051 (Ctrl-C stops both)
	HTTP_PORT=$(HTTP_PORT) GRPC_PORT=$(GRPC_PORT) GRPC_METRICS_PORT=$(GRPC_METRICS_PORT) scripts/run.sh

train: install ## train a model and register it; current only if there is none (churn/promotion.py)
	$(PY) -m training.train

registry: install ## show the registry's versions
	$(PY) -m training.registry list

drift: install ## drift check of the prediction log against the current model's training data
	$(PY) -m monitoring.drift

performance: install ## performance report: realized (outcomes) and estimated (CBPE) metrics per version
	$(PY) -m monitoring.performance

SCORE_INPUT ?= data/telco_churn.csv
SCORE_OUTPUT ?= $(MLOPS_HOME)/scores/telco_churn.csv
score: install ## batch scoring with reasons: SCORE_INPUT (the data set) -> SCORE_OUTPUT (+ .rejects.csv beside it)
	$(PY) -m scoring.batch --input $(SCORE_INPUT) --output $(SCORE_OUTPUT) --reasons 3

retrain: install ## retrain on the data set plus the outcomes; promote only if the gate says better
	$(PY) -m training.retrain

demo: install ## the model lifecycle on real data, end to end, in a few minutes (state in .mlops-demo/)
	$(PY) scripts/demo.py

test: install checkov-install shap-install prometheus-install image cluster-build ## the whole test suite: unit, integration, k8s, cluster, e2e (builds the image and, once per machine, the control plane)
	$(PY) -m pytest tests --durations=25

test-unit: install prometheus-install shap-install ## fast unit tests only (the alert rules' tests need promtool, the reasons' cross-check shap)
	$(PY) -m pytest tests/unit

test-integration: install prometheus-install ## tests against real servers (and a real Prometheus)
	$(PY) -m pytest tests/integration

$(MLSERVER_VENV)/.installed: uv.lock
	python3 -m venv $(MLSERVER_VENV)
	# same scikit-learn/pandas/numpy as uv.lock, so that the joblib pickle loads unchanged
	$(MLSERVER_VENV)/bin/pip install --quiet mlserver==1.7.1 mlserver-sklearn==1.7.1 "uvloop<0.21" \
		scikit-learn==$$(sed -n '/^name = "scikit-learn"/{n;s/version = "\(.*\)"/\1/p}' uv.lock) \
		pandas==$$(sed -n '/^name = "pandas"/{n;s/version = "\(.*\)"/\1/p}' uv.lock) \
		numpy==$$(sed -n '/^name = "numpy"/{n;s/version = "\(.*\)"/\1/p}' uv.lock)
	touch $@

bench: install $(MLSERVER_VENV)/.installed ## side-by-side benchmark (in-process, FastAPI, MLServer, HTTP, gRPC, drift, batch, explain), about 15 minutes; exits 1 naming each target of docs/performance.md missed
	command -v hey >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; }
	$(PY) benchmarks/bench.py

bench-batch: install ## only the batch-scoring and online-reasons figures of make bench (issue #22); about 5 minutes
	command -v hey >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; }
	$(PY) benchmarks/bench.py batch

soak: install ## 10 minutes at 32 clients against a real server: errors and the RSS curve (must plateau)
	CHURN_LOAD_SECONDS=600 $(PY) -m pytest tests/integration/test_reliability.py -k sustained -s

test-k8s: install checkov-install ## rendered manifests: schema, structure, checkov
	$(PY) -m pytest tests/k8s

TOPOLOGY ?= minikube
cluster-build: ## build etcd, kube-apiserver, -controller-manager, -scheduler, kubectl v1.34.0 and kwok from Go modules, once per machine
	tools/cluster/build.sh >/dev/null

cluster-up: install ## a real Kubernetes control plane on loopback, nodes played by kwok: make cluster-up [TOPOLOGY=minikube|production]
	tools/cluster/cluster.sh up $(TOPOLOGY)

cluster-down: ## stop every process cluster-up started and remove its state (.cluster/)
	tools/cluster/cluster.sh down

test-cluster: install cluster-build ## both overlays on a real control plane (one cluster per topology per session, reset before each test; apart from cluster-up's)
	$(PY) -m pytest tests/cluster

e2e: install image ## container end-to-end test: the image run as the rendered manifests declare
	$(PY) -m pytest tests/e2e

docker: ## start a Docker engine if none answers (installs Debian's docker.io if needed)
	scripts/docker-daemon.sh

bento: install ## bentoml build churn_service:$(VERSION), with the locked requirements
	mkdir -p build
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --no-header \
		$(addprefix --no-emit-package ,$(IMAGE_EXCLUDE)) -o build/requirements.txt >/dev/null
	BENTOML_HOME=$(BUILD_HOME) $(VENV)/bin/bentoml delete -y $(BENTO) >/dev/null 2>&1 || true
	BENTOML_HOME=$(BUILD_HOME) $(VENV)/bin/bentoml build --version $(VERSION)

# scripts/base-image.sh prints the runtime base it chose (official python:3.11-slim, or the
# Debian-built stand-in under a name of its own) and the build-only base (plus this machine's CA).
# TMPDIR under the project: containerize re-renders docker/Dockerfile.j2 from a temporary copy of
# the Bento and refuses a template outside the working directory (BentoML 1.4, resolve_user_filepath).
image: bento docker ## bentoml containerize -> churn-service:$(VERSION) (prints the base image it used)
	@set -euo pipefail; read -r base build_base < <(scripts/base-image.sh); \
	echo "building $(IMAGE) FROM $$base (packages installed on $$build_base, not shipped)"; \
	mkdir -p build/tmp; \
	BENTOML_HOME=$(BUILD_HOME) DOCKER_BUILDKIT=0 TMPDIR=$(CURDIR)/build/tmp \
	$(VENV)/bin/bentoml containerize $(BENTO) \
		--opt network=host --opt build-arg=BASE_IMAGE=$$base --opt build-arg=BUILD_BASE_IMAGE=$$build_base \
		-t $(IMAGE); \
	docker image inspect $(IMAGE) --format '$(IMAGE): {{.Size}} bytes, base '"$$base"

OVERLAY ?= minikube
render: install ## print a rendered overlay: make render [OVERLAY=minikube|production] (production: only once release-check passes)
	@if [ "$(OVERLAY)" = production ]; then $(PY) scripts/release_check.py kustomize/overlays/production >&2; fi
	$(VENV)/bin/kubectl kustomize kustomize/overlays/$(OVERLAY)

release-check: install ## refuse the production overlay while it names placeholders (image digest, storage class)
	$(PY) scripts/release_check.py kustomize/overlays/production

$(CHECKOV_VENV)/.installed:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30
	touch $@

checkov-install: $(CHECKOV_VENV)/.installed ## checkov in its own venv (about 460 MB)

$(SHAP_VENV)/.installed:
	python3 -m venv $(SHAP_VENV)
	$(SHAP_VENV)/bin/pip install --quiet shap==0.51.0
	touch $@

shap-install: $(SHAP_VENV)/.installed ## shap in its own venv: the batch reasons' cross-check (tests/unit/test_explain.py)

checkov: install checkov-install ## security scan of every rendered overlay
	$(PY) -m pytest tests/k8s/test_checkov.py

prometheus-install: ## Debian's prometheus and promtool (alert-rule tests and a real server in the tests)
	command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the venvs, build output and caches (keeps $(MLOPS_HOME))
	rm -rf $(VENV) $(TOOLS) $(CHECKOV_VENV) $(SHAP_VENV) $(MLSERVER_VENV) build benchmarks/scratch .pytest_cache .ruff_cache
