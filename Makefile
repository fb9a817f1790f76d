# Ferry: the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test lint typecheck unit fuzz crd bench bench-quick bench-overhead bench-cores bench-operator kind-up kind-down image test-image test-cluster e2e clean

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

fuzz: venv ## opt-in: the property-based fuzz tests with 1500 random examples each (several minutes)
	FERRY_HYPOTHESIS_PROFILE=ferry-fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/runtime/test_fuzz.py

crd: venv ## regenerate crds/ and the chart's copy from the spec models
	mkdir -p crds charts/ferry/crds
	$(BIN)/ferry-operator crd > crds/serving.ferry.dev_modeldeployments.yaml
	cp crds/serving.ferry.dev_modeldeployments.yaml charts/ferry/crds/

bench: venv ## full runtime benchmark (Ferry vs raw torch, MLServer, TorchServe, Triton, KServe)
	$(BIN)/python bench/runtime/run.py

bench-quick: venv ## short runtime benchmark (< 3 minutes)
	$(BIN)/python bench/runtime/run.py --quick

bench-operator: venv ## operator at 100/1,000/3,000 objects + a slow API server (a running cluster: ../shared/k8s/up)
	$(BIN)/python bench/operator_scale.py --count 100 --count 1000 --count 3000 --slow 1000 \
		--timeout 900 --kubeconfig $${FERRY_K8S_KUBECONFIG:-/tmp/ferry-k8s/kubeconfig}

bench-overhead: venv ## per-request overhead: Ferry vs Triton (PyTriton) and KServe, medium MLP, with py-spy profiles
	$(BIN)/python bench/runtime/run.py --plan overhead --profile

bench-cores: venv ## 1 vs 2 server CPUs, one process vs a front-end process (~3 minutes)
	$(BIN)/python -m bench.runtime.cores

image: venv ## build ferry-runtime:dev and ferry-operator:dev with a local Docker engine
	bash scripts/build-runtime-image.sh ferry-runtime:dev
	bash scripts/build-operator-image.sh ferry-operator:dev

test-image: venv ## opt-in (root): build both images from a local debootstrap base and run them as pods would
	command -v dockerd >/dev/null && command -v debootstrap >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap; }
	FERRY_TEST_IMAGE=1 $(BIN)/python -m pytest -q -m image tests/runtime/test_image.py tests/chart/test_operator_image.py

test-cluster: venv ## opt-in (root + ../shared/k8s kit): the whole e2e suite with real pods on a local Kubernetes
	bash scripts/test-cluster.sh

kind-up: venv ## kind cluster kind-ferry: build + load both images, install the chart, serve the example, infer
	bash scripts/kind-up.sh

kind-down: ## delete the kind-ferry cluster
	bash scripts/kind-down.sh

e2e: venv ## end-to-end suite against a real cluster (after make kind-up); E2E_ARGS="--operator-local" etc.
	$(BIN)/python -m pytest e2e $(E2E_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
