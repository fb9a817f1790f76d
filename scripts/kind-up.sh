#!/usr/bin/env bash
# Ferry's quickstart (make kind-up): from a clone to a served prediction on a local kind cluster.
#   1. a kind cluster named "ferry" (kubectl context kind-ferry), reused when it exists;
#   2. both images built with Docker (ferry-runtime:dev, ferry-operator:dev) and loaded into kind;
#   3. the CRD applied and the Helm chart installed (release ferry, namespace ferry-system);
#   4. an in-cluster model store (Deployment + Service "model-store" in namespace default)
#      serving the example model, which this script makes with examples/make_example_model.py:
#      the model pods download nothing from the internet;
#   5. examples/modeldeployment.yaml applied, then `kubectl wait --for=condition=Ready`;
#   6. one inference through the model's Service (kubectl port-forward + tritonclient), checked
#      against the same model run locally with torch.
# Re-running is safe: every step converges. scripts/kind-down.sh (make kind-down) removes it all.
#
# Needs: Linux with a running Docker engine, kind, kubectl; helm and the Python venv come from
# `make venv`. The images are built from a wheelhouse that the host's pip fills, so the host
# must match the image's platform (Linux, Python 3.11, same CPU architecture).
#
# Environment:
#   KIND_CLUSTER     kind cluster name            (default: ferry → context kind-ferry)
#   RUNTIME_IMAGE    runtime image tag            (default: ferry-runtime:dev)
#   OPERATOR_IMAGE   operator image tag           (default: ferry-operator:dev)
#   BASE_IMAGE       base of both images          (default: ferry-base:bookworm-py311 when it
#                    exists or can be made here (root + debootstrap), else python:3.11-slim-bookworm)
#   TORCH_INDEX_URL  where the runtime image's torch comes from (default: PyTorch's CPU index,
#                    https://download.pytorch.org/whl/cpu; set it empty for pip's configuration)
#   SKIP_BUILD=1     use images already built (skip step 2's builds, still load them)
#   LOCAL_PORT       local port of the port-forward (default: 18080)
#   TIMEOUT          how long to wait for each rollout (default: 300s)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-ferry}
CONTEXT="kind-$CLUSTER"
RUNTIME_IMAGE=${RUNTIME_IMAGE:-ferry-runtime:dev}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ferry-operator:dev}
RELEASE=ferry
RELEASE_NAMESPACE=ferry-system
MODEL_NAMESPACE=default
LOCAL_PORT=${LOCAL_PORT:-18080}
TIMEOUT=${TIMEOUT:-300s}
PYTHON=${PYTHON:-.venv/bin/python}
export TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

# ---- tools ---------------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || die "the image builds need a Linux host (the wheelhouse is the host's)"
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "Docker does not answer: kind needs a running Docker engine"
if command -v helm >/dev/null 2>&1; then HELM=helm
elif [ -x .venv/bin/helm ]; then HELM=.venv/bin/helm
else die "helm not found: run 'make venv'"; fi
[ -x "$PYTHON" ] || die "$PYTHON not found: run 'make venv'"
KUBECTL=(kubectl --context "$CONTEXT")

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-kind-up.XXXXXX")
port_forward=""
cleanup() {
  if [ -n "$port_forward" ]; then kill "$port_forward" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

diagnose() {
  log "diagnostics"
  "${KUBECTL[@]}" -n "$MODEL_NAMESPACE" describe modeldeployment/mlp || true
  "${KUBECTL[@]}" -n "$MODEL_NAMESPACE" get pods -o wide || true
  "${KUBECTL[@]}" -n "$RELEASE_NAMESPACE" logs deployment/"$RELEASE" --tail=50 || true
}

# ---- 1. cluster ----------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "kind cluster $CLUSTER exists (context $CONTEXT)"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
fi

# ---- 2. images -----------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect ferry-base:bookworm-py311 >/dev/null 2>&1 \
    || { [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null 2>&1; }; then
    BASE_IMAGE=ferry-base:bookworm-py311
  else
    BASE_IMAGE=python:3.11-slim-bookworm
  fi
fi
export BASE_IMAGE
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  case "$BASE_IMAGE" in
    ferry-base:*) ;;  # the build scripts make it
    *) docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull "$BASE_IMAGE" ;;
  esac
  log "building $RUNTIME_IMAGE and $OPERATOR_IMAGE from $BASE_IMAGE"
  bash scripts/build-runtime-image.sh "$RUNTIME_IMAGE"
  bash scripts/build-operator-image.sh "$OPERATOR_IMAGE"
fi
log "loading the images into kind"
kind load docker-image --name "$CLUSTER" "$RUNTIME_IMAGE" "$OPERATOR_IMAGE"

# ---- 3. CRD and chart ----------------------------------------------------------------------
# Helm installs crds/ only on the first install; applying it here also upgrades it.
log "applying the ModelDeployment CRD and installing the chart"
"${KUBECTL[@]}" apply --server-side --force-conflicts -f crds/
"${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
  customresourcedefinition/modeldeployments.serving.ferry.dev
"$HELM" upgrade --install "$RELEASE" charts/ferry \
  --kube-context "$CONTEXT" --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set runtime.image="$RUNTIME_IMAGE" \
  --wait --timeout "$TIMEOUT"

# ---- 4. model store ------------------------------------------------------------------------
log "making the example model and serving it from an in-cluster model store"
"$PYTHON" examples/make_example_model.py "$work/mlp"
tar -C "$work/mlp" -czf "$work/model.tar.gz" model.pt model.json
"${KUBECTL[@]}" -n "$MODEL_NAMESPACE" create configmap model-store-files \
  --from-file=mlp-model.tar.gz="$work/model.tar.gz" --dry-run=client -o yaml \
  | "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-store
  namespace: $MODEL_NAMESPACE
  labels: {app.kubernetes.io/name: model-store, app.kubernetes.io/part-of: ferry-quickstart}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: model-store}
  template:
    metadata:
      labels: {app.kubernetes.io/name: model-store}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: http
          image: $RUNTIME_IMAGE
          # Plain static files over HTTP from the runtime image's Python: no extra image.
          command: [python3, -m, http.server, "8000", --bind, 0.0.0.0, --directory, /srv]
          ports: [{name: http, containerPort: 8000}]
          readinessProbe:
            httpGet: {path: /mlp/model.tar.gz, port: http}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: files, mountPath: /srv, readOnly: true}]
      volumes:
        - name: files
          configMap:
            name: model-store-files
            items: [{key: mlp-model.tar.gz, path: mlp/model.tar.gz}]
---
apiVersion: v1
kind: Service
metadata:
  name: model-store
  namespace: $MODEL_NAMESPACE
  labels: {app.kubernetes.io/name: model-store, app.kubernetes.io/part-of: ferry-quickstart}
spec:
  selector: {app.kubernetes.io/name: model-store}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
"${KUBECTL[@]}" -n "$MODEL_NAMESPACE" rollout status deployment/model-store --timeout "$TIMEOUT"

# ---- 5. the example ------------------------------------------------------------------------
log "applying examples/modeldeployment.yaml and waiting for Ready"
"${KUBECTL[@]}" apply -f examples/modeldeployment.yaml
if ! "${KUBECTL[@]}" -n "$MODEL_NAMESPACE" wait modeldeployment/mlp \
  --for=condition=Ready --timeout "$TIMEOUT"; then
  diagnose
  die "modeldeployment/mlp did not become Ready"
fi
"${KUBECTL[@]}" -n "$MODEL_NAMESPACE" get modeldeployment/mlp

# ---- 6. inference through the Service ------------------------------------------------------
log "inference through service/mlp (port-forward to 127.0.0.1:$LOCAL_PORT)"
"${KUBECTL[@]}" -n "$MODEL_NAMESPACE" port-forward service/mlp "$LOCAL_PORT:8080" \
  >"$work/port-forward.log" 2>&1 &
port_forward=$!
for _ in $(seq 1 60); do
  grep -q "Forwarding from" "$work/port-forward.log" && break
  kill -0 "$port_forward" 2>/dev/null || { cat "$work/port-forward.log" >&2; die "port-forward failed"; }
  sleep 0.5
done
"$PYTHON" - "$LOCAL_PORT" "$work/mlp" <<'EOF'
"""One OIP v2 inference with tritonclient (binary tensors), checked against local torch."""
import sys
import warnings

import numpy as np
import torch
import tritonclient.http as httpclient

port, model_dir = sys.argv[1], sys.argv[2]
client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
assert client.is_server_ready() and client.is_model_ready("mlp"), "model mlp is not ready"
metadata = client.get_model_metadata("mlp")
batch = np.random.default_rng(0).standard_normal((4, 64), dtype=np.float32)
request = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
request.set_data_from_numpy(batch, binary_data=True)
response = client.infer("mlp", [request], outputs=[httpclient.InferRequestedOutput("OUTPUT__0")])
scores = response.as_numpy("OUTPUT__0")
with warnings.catch_warnings(), torch.inference_mode():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still served
    expected = torch.jit.load(f"{model_dir}/model.pt")(torch.from_numpy(batch)).numpy()
np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
print(f"model {metadata['name']} version {metadata.get('versions')}: inputs "
      f"{[(t['name'], t['datatype'], t['shape']) for t in metadata['inputs']]}")
print(f"predicted classes for 4 rows: {scores.argmax(axis=1).tolist()} (matches local torch)")
EOF

cat >&2 <<EOF

Ferry is serving examples/modeldeployment.yaml on kind cluster "$CLUSTER" (context $CONTEXT).
  kubectl --context $CONTEXT get modeldeployments -A
  kubectl --context $CONTEXT -n $MODEL_NAMESPACE port-forward service/mlp 8080:8080 8081:8081
  curl localhost:8080/v2/models/mlp           # REST; gRPC (tritonclient, perf_analyzer) on :8081
  make e2e                                    # the end-to-end suite against this cluster
  make kind-down                              # delete the cluster
EOF
