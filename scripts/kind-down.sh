#!/usr/bin/env bash
# Deletes the quickstart's kind cluster (make kind-down), with everything in it. The images stay
# in the local Docker engine (docker image rm ferry-runtime:dev ferry-operator:dev removes them).
#   KIND_CLUSTER   kind cluster name (default: ferry → context kind-ferry)
set -euo pipefail
CLUSTER=${KIND_CLUSTER:-ferry}
command -v kind >/dev/null 2>&1 || { echo "kind-down: kind is not installed" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "kind-down: no kind cluster named $CLUSTER" >&2
fi
