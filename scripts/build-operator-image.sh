#!/usr/bin/env bash
# Builds the operator image without registry access during the build:
#   1. makes sure a container engine answers (scripts/docker-engine.sh);
#   2. builds the local base image when BASE_IMAGE is a ferry-base tag that is missing;
#   3. fills a wheelhouse with the project wheel and the `operator` extra's dependencies
#      (Kopf, aiohttp, pydantic — no torch);
#   4. docker build --network none -f operator/Dockerfile from that wheelhouse.
#
#   scripts/build-operator-image.sh [TAG]                (default TAG: ferry-operator:dev)
#
# Environment:
#   BASE_IMAGE   (default: ferry-base:bookworm-py311, made by scripts/build-base-image.sh;
#                 python:3.11-slim-bookworm works too when it can be pulled)
#   PYTHON       interpreter whose pip fills the wheelhouse (default: .venv/bin/python)
#   DOCKER       engine CLI (default: docker)
# The wheelhouse must match the base image's Python (3.11) and architecture; it is kept in
# .image-build/operator-wheels and only refreshed when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-engine.sh
source scripts/docker-engine.sh

TAG=${1:-ferry-operator:dev}
BASE_IMAGE=${BASE_IMAGE:-ferry-base:bookworm-py311}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
BUILD_DIR=.image-build
WHEELS="$BUILD_DIR/operator-wheels"
CONTEXT="$BUILD_DIR/operator-context"

started=$SECONDS
ferry_ensure_engine

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  case "$BASE_IMAGE" in
    ferry-base:*) bash scripts/build-base-image.sh "$BASE_IMAGE" ;;
    *) ferry_log "base image $BASE_IMAGE is not present locally; pull or build it first"; exit 1 ;;
  esac
fi

# Build from a clean copy of the sources: an in-tree build would leave build/ and *.egg-info.
# Only the operator package goes in; the project's package discovery finds nothing else.
src=$(mktemp -d "${TMPDIR:-/tmp}/ferry-operator-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
tar -C . --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md \
  operator/ferry_operator | tar -C "$src" -xf -
mkdir -p "$src/runtime-image"

mkdir -p "$WHEELS"
stamp="$WHEELS/.deps-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  ferry_log "filling the wheelhouse (operator extra)"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELS" "${src}[operator]"
  touch "$stamp"
else
  ferry_log "wheelhouse is current; rebuilding only the ferry wheel"
fi
rm -f "$WHEELS"/ferry-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "$src"
for wheel in "$WHEELS"/torch-* "$WHEELS"/nvidia_*; do
  if [ -e "$wheel" ]; then
    ferry_log "the operator wheelhouse must not hold torch or CUDA wheels: $wheel"
    exit 1
  fi
done

rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
cp -al "$WHEELS" "$CONTEXT/wheels" 2>/dev/null || cp -a "$WHEELS" "$CONTEXT/wheels"
rm -f "$CONTEXT"/wheels/.deps-*
ferry_log "building $TAG from $BASE_IMAGE with --network none"
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "$DOCKER" build --network none --pull=false \
  --build-arg BASE_IMAGE="$BASE_IMAGE" -f operator/Dockerfile -t "$TAG" "$CONTEXT"
rm -rf "$CONTEXT"
size=$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")
ferry_log "built $TAG ($((size / 1024 / 1024)) MiB) in $((SECONDS - started))s"
