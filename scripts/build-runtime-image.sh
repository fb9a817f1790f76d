#!/usr/bin/env bash
# Builds the runtime image without registry access during the build:
#   1. makes sure a container engine answers (starts a private dockerd if needed, as root);
#   2. builds the local base image when BASE_IMAGE is a ferry-base tag that is missing;
#   3. fills a wheelhouse with the project wheel and every runtime dependency (torch included);
#   4. docker build --network none from that wheelhouse.
#
#   scripts/build-runtime-image.sh [TAG]                 (default TAG: ferry-runtime:dev)
#
# Environment:
#   BASE_IMAGE       (default: ferry-base:bookworm-py311, made by scripts/build-base-image.sh)
#   TORCH_SPEC       torch requirement              (default: torch==2.13.0)
#   TORCH_INDEX_URL  where to get that torch wheel  (default: pip's own configuration; e.g.
#                    https://download.pytorch.org/whl/cpu for the CPU build, .../whl/cu126 for CUDA)
#   PYTHON           interpreter whose pip fills the wheelhouse (default: .venv/bin/python)
#   DOCKER           engine CLI (default: docker)
# The wheelhouse must match the base image's Python (3.11) and architecture; it is kept in
# .image-build/wheels and only refreshed when pyproject.toml or TORCH_SPEC change.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-engine.sh
source scripts/docker-engine.sh

TAG=${1:-ferry-runtime:dev}
BASE_IMAGE=${BASE_IMAGE:-ferry-base:bookworm-py311}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
BUILD_DIR=.image-build
WHEELS="$BUILD_DIR/wheels"
CONTEXT="$BUILD_DIR/runtime-context"

started=$SECONDS
ferry_ensure_engine

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  case "$BASE_IMAGE" in
    ferry-base:*) bash scripts/build-base-image.sh "$BASE_IMAGE" ;;
    *) ferry_log "base image $BASE_IMAGE is not present locally; pull or build it first"; exit 1 ;;
  esac
fi
base_done=$SECONDS

# Build from a clean copy of the sources: an in-tree build would leave build/ and *.egg-info.
src=$(mktemp -d "${TMPDIR:-/tmp}/ferry-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
tar -C . --exclude='__pycache__' --exclude='*.egg-info' -cf - pyproject.toml README.md \
  operator/ferry_operator runtime-image/ferry_runtime | tar -C "$src" -xf -

mkdir -p "$WHEELS"
stamp="$WHEELS/.deps-$( (cat pyproject.toml; echo "$TORCH_SPEC $TORCH_INDEX_URL") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  ferry_log "filling the wheelhouse ($TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}, runtime extra)"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  torch_args=()
  [ -n "$TORCH_INDEX_URL" ] && torch_args=(--index-url "$TORCH_INDEX_URL")
  # torch first, alone, so the range in pyproject.toml is satisfied by exactly this build.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
    "${torch_args[@]}" "$TORCH_SPEC"
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELS" --find-links "$WHEELS" \
    "${src}[runtime]" "$TORCH_SPEC"
  touch "$stamp"
else
  ferry_log "wheelhouse is current; rebuilding only the ferry wheel"
fi
rm -f "$WHEELS"/ferry-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "$src"
wheels_done=$SECONDS

# The context holds only the wheels (hard links, no copy); the Dockerfile comes with -f.
rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
cp -al "$WHEELS" "$CONTEXT/wheels" 2>/dev/null || cp -a "$WHEELS" "$CONTEXT/wheels"
rm -f "$CONTEXT"/wheels/.deps-*
ferry_log "building $TAG from $BASE_IMAGE with --network none"
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} "$DOCKER" build --network none --pull=false \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_SPEC="$TORCH_SPEC" \
  -f runtime-image/Dockerfile -t "$TAG" "$CONTEXT"
rm -rf "$CONTEXT"
"$DOCKER" image prune --force --filter label=dev.ferry.stage=build >/dev/null || true
size=$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")
ferry_log "built $TAG ($((size / 1024 / 1024)) MiB): base $((base_done - started))s," \
  "wheels $((wheels_done - base_done))s, image $((SECONDS - wheels_done))s, total $((SECONDS - started))s"
