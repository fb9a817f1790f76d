# Ferry: the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test lint typecheck unit crd bench bench-quick kind-up kind-down image e2e clean

venv: ## create .venv with torch==2.13.0 first, then the project with all extras, then helm
	bash scripts/bootstrap.sh

demo: venv ## Ferry's main job locally: render the example, serve the example model, infer
	$(BIN)/python scripts/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/python -m pytest -q

test: venv ## the whole default suite: lint, types, layering, then pytest (no cluster, Docker or GPU)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit

crd: venv ## regenerate crds/ and the chart's copy from the spec models
	mkdir -p crds charts/ferry/crds
	$(BIN)/ferry-operator crd > crds/serving.ferry.dev_modeldeployments.yaml
	cp crds/serving.ferry.dev_modeldeployments.yaml charts/ferry/crds/

bench: venv ## full runtime benchmark (Ferry vs raw torch, MLServer, TorchServe)
	$(BIN)/python bench/runtime/run.py

bench-quick: venv ## short runtime benchmark (< 3 minutes)
	$(BIN)/python bench/runtime/run.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
