#!/usr/bin/env bash
# The real-cluster tier (`make test-cluster`): the whole e2e suite with real pods on a real
# Kubernetes API server and kubelet.
#
#   1. starts the local cluster kit (../shared/k8s/up: etcd, kube-apiserver, controller manager,
#      scheduler, one kubelet node on containerd; root needed), or uses FERRY_K8S_KUBECONFIG;
#   2. builds ferry-runtime:dev and ferry-operator:dev (make image; Docker's layer cache makes
#      this quick after `make test-image`) and imports both into the node's containerd with ctr;
#   3. runs e2e/ with --operator-beside (the chart is installed; its operator container runs here
#      with the chart's arguments, environment and ServiceAccount token, since pods cannot reach
#      the API server without kube-proxy) and --reach endpoints (pods by their ready
#      EndpointSlice addresses; no port-forward, no DNS);
#   4. stops the cluster it started (trap), whatever happened.
#
# Environment:
#   FERRY_K8S_KUBECONFIG   use this cluster instead of starting the kit (not stopped; images must
#                          already be on its nodes unless it is the kit's own node)
#   FERRY_K8S_KIT          the cluster kit directory (default: ../shared/k8s beside the repo)
#   FERRY_K8S_RUN          the kit's state directory (default: /tmp/ferry-k8s)
#   FERRY_SKIP_IMAGE_BUILD=1  import the existing :dev images without rebuilding them
#   E2E_ARGS               extra pytest arguments (e.g. -k lifecycle)
# Locks (shared machine): /tmp/ferry-cluster.lock for the whole run, /tmp/ferry-docker.lock while
# building and exporting images.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${VENV:-.venv}/bin
KIT=${FERRY_K8S_KIT:-$ROOT/../shared/k8s}
RUN=${FERRY_K8S_RUN:-/tmp/ferry-k8s}
RUNTIME_IMAGE=ferry-runtime:dev
OPERATOR_IMAGE=ferry-operator:dev
started=$SECONDS
log() { printf '[test-cluster %(%H:%M:%S)T +%ds] %s\n' -1 "$((SECONDS - started))" "$*" >&2; }

if [ "${FERRY_CLUSTER_LOCKED:-0}" != 1 ]; then
  log "waiting for /tmp/ferry-cluster.lock"
  exec env FERRY_CLUSTER_LOCKED=1 flock /tmp/ferry-cluster.lock "$0" "$@"
fi

# 1. the cluster
if [ -n "${FERRY_K8S_KUBECONFIG:-}" ]; then
  KUBECONFIG_FILE=$FERRY_K8S_KUBECONFIG
  log "using the cluster of $KUBECONFIG_FILE (left running)"
else
  [ "$(id -u)" = 0 ] || { log "the local cluster kit needs root (or give FERRY_K8S_KUBECONFIG)"; exit 2; }
  [ -x "$KIT/up" ] || { log "no cluster kit at $KIT (set FERRY_K8S_KIT)"; exit 2; }
  trap 'log "stopping the cluster"; FERRY_K8S_RUN=$RUN "$KIT/down" >&2 || true; rm -rf "$RUN/hostpath"' EXIT
  log "starting the local cluster ($KIT/up)"
  KUBECONFIG_FILE=$(FERRY_K8S_RUN=$RUN "$KIT/up" | tail -n 1)
fi
CONTEXT=$(kubectl --kubeconfig "$KUBECONFIG_FILE" config current-context)

# 2. images: build (cached layers after make test-image), then import into the kit's node
SOCKET=$RUN/node/containerd.sock
if [ "${FERRY_SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  log "building $RUNTIME_IMAGE and $OPERATOR_IMAGE"
  flock /tmp/ferry-docker.lock bash -c "
    bash scripts/build-runtime-image.sh $RUNTIME_IMAGE &&
    bash scripts/build-operator-image.sh $OPERATOR_IMAGE" >&2
fi
if [ -S "$SOCKET" ]; then
  # shellcheck source=scripts/docker-engine.sh
  source scripts/docker-engine.sh
  ferry_ensure_engine
  for image in "$RUNTIME_IMAGE" "$OPERATOR_IMAGE"; do
    log "importing $image into the node's containerd"
    "$DOCKER" save "$image" \
      | ctr -a "$SOCKET" -n k8s.io images import - >/dev/null
  done
else
  log "no kit node socket at $SOCKET: expecting $RUNTIME_IMAGE and $OPERATOR_IMAGE on the nodes"
fi

# 3. the whole e2e suite with real pods
EXTRA=()
if [ -S "$SOCKET" ]; then  # the kit's one node is this machine: claims can use hostPath volumes
  mkdir -p "$RUN/hostpath"
  EXTRA+=(--hostpath-dir "$RUN/hostpath")
fi
log "running the e2e suite on context $CONTEXT"
# shellcheck disable=SC2086  # E2E_ARGS is a list of words
PATH="$ROOT/$BIN:$PATH" "$BIN/python" -m pytest e2e -p no:cacheprovider -ra \
  --kubeconfig "$KUBECONFIG_FILE" --allow-context "$CONTEXT" \
  --operator-beside --reach endpoints "${EXTRA[@]}" \
  --operator-image "$OPERATOR_IMAGE" --runtime-image "$RUNTIME_IMAGE" \
  ${E2E_ARGS:-}
log "e2e suite passed"
