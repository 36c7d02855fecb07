# Sundial developer commands. Everything installs from nothing into .tools/ (uv) and .venv/ (the project).
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.8
SAM_CLI_VERSION := 1.170.0
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: help dev test lint typecheck unit e2e browser soak migrate bench build openapi token invoke clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --quiet
	$(BIN)/python scripts/module_path.py
	@touch $@

dev: $(VENV)/.synced ## Run the whole system locally (emulated AWS, API, dispatcher, runner, demo agent)
	PORT=$(PORT) $(BIN)/python -m sundial_local

test: lint typecheck unit e2e ## Lint, type-check and run every test

lint: $(VENV)/.synced ## ruff lint and format check, and the package's layering rules (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.synced ## mypy
	MYPYPATH="$$($(BIN)/python scripts/module_path.py --print)" $(BIN)/mypy

unit: $(VENV)/.synced ## Every test but the end-to-end ones, in parallel (a file's tests stay on one worker)
	$(BIN)/pytest -n 2 --dist loadfile -q -m "not e2e"

e2e: $(VENV)/.synced browser ## Only the end-to-end tests: the local stack as a subprocess, over HTTP and in Chromium
	# Two at a time: each test's stack has its own ports and state folder (the shared one is per worker);
	# the console's scenarios share one stack, so they stay together on one worker.
	$(BIN)/pytest -m e2e -q -n 2 --dist loadgroup

browser: ## Chromium for the console tests: Debian's package, installed when running as root (as CI does)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the console tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "no Chromium and not root: the console tests will be skipped (install Debian's chromium)"; \
	fi

soak: $(VENV)/.synced ## The exactly-once model test at length: make soak EXAMPLES=20000 (prints how many ran)
	# The model's injected faults log errors by the thousand; a soak reports the failing example instead.
	POWERTOOLS_LOG_LEVEL=CRITICAL SUNDIAL_MODEL_EXAMPLES=$(or $(EXAMPLES),20000) $(BIN)/pytest tests/model -q -s -p no:cacheprovider

migrate: $(VENV)/.synced ## Import EventBridge schedules or an export (dry run unless --apply): make migrate ARGS="--help"
	$(BIN)/python -m sundial_migrate $(ARGS)

bench: $(VENV)/.synced ## Benchmarks; figures printed and written under bench/results/
	$(BIN)/python -m bench

openapi: $(VENV)/.synced ## Regenerate the committed OpenAPI document
	$(BIN)/python -m scripts.export_openapi

token: $(VENV)/.synced ## Print a local JWT: make token TENANT=acme SUB=alice ROLES=editor
	@$(BIN)/python -m sundial_local.token --tenant "$(or $(TENANT),acme)" --sub "$(or $(SUB),alice)" --roles "$(or $(ROLES),editor)"

invoke: $(VENV)/.synced ## Run a function on a sample event without Docker: make invoke FN=dispatch EVENT=events/dispatch_tick.json
	$(BIN)/python -m sundial_local.invoke "$(FN)" "$(EVENT)"

.sam-cli/bin/sam:
	$(PYTHON) -m venv .sam-cli
	.sam-cli/bin/pip install --quiet "aws-sam-cli==$(SAM_CLI_VERSION)"

build: .sam-cli/bin/sam ## sam build, then byte-compile what it built (aws-sam-cli lives in its own tool environment)
	.sam-cli/bin/sam build --template-file template.yaml
	# Lambda's code and layer folders are read-only: without .pyc files in the zip every cold start
	# compiles every module it imports (bench/results/cold_start.json, import_ms_without_bytecode).
	# Unchecked hashes, because a zip keeps modification times to two seconds and the .pyc to one.
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build

clean: ## Remove installed environments and build output
	rm -rf .tools .venv .sam-cli .aws-sam .pytest_cache .mypy_cache .ruff_cache
