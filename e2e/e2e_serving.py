"""Checks shared by the tests: inference through a Service, children of a ModelDeployment."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from e2e_kube import FIELD_MANAGER, Kube, wait_for
from e2e_models import INPUT_NAME, OUTPUT_NAME, ModelVersion, sample_batch
from e2e_reach import Reach

APPLIED_HASH_ANNOTATION = "serving.ferry.dev/applied-hash"
TEMPLATE_ANNOTATION = "serving.ferry.dev/template"
"""On Deployments: the revision's template (docs/rollouts.md)."""
"""The one annotation Ferry writes on its children: the digest of the manifest it applied, which
lets a resync skip unchanged children without a request."""


def _ready(client: Any, model: str) -> bool:
    try:
        return bool(client.is_model_ready(model))
    except Exception:  # connection refused while the forward settles
        return False


def infer_through_service(
    kube: Kube,
    reach: Reach,
    namespace: str,
    *,
    service: str,
    ports: tuple[int, int],
    served_name: str,
    model: ModelVersion,
) -> None:
    """One REST (binary tensors) and one gRPC inference with tritonclient through the Service
    (port-forward, or one of its ready endpoints); outputs must equal the same model run
    locally."""
    batch = sample_batch()
    expected = model.predict(batch)
    http_port, grpc_port = ports
    with reach.service(kube, namespace, service, http_port) as authority:
        rest = httpclient.InferenceServerClient(url=authority)
        wait_for(lambda: _ready(rest, served_name), timeout=60, what=f"{served_name} over REST")
        request = httpclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch, binary_data=True)
        result = rest.infer(
            served_name, [request], outputs=[httpclient.InferRequestedOutput(OUTPUT_NAME)]
        )
        np.testing.assert_allclose(result.as_numpy(OUTPUT_NAME), expected, rtol=1e-4, atol=1e-5)
        rest.close()
    with reach.service(kube, namespace, service, grpc_port) as authority:
        grpc = grpcclient.InferenceServerClient(url=authority)
        wait_for(lambda: _ready(grpc, served_name), timeout=60, what=f"{served_name} over gRPC")
        grpc_request = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        grpc_request.set_data_from_numpy(batch)
        grpc_result = grpc.infer(served_name, [grpc_request])
        np.testing.assert_allclose(
            grpc_result.as_numpy(OUTPUT_NAME), expected, rtol=1e-4, atol=1e-5
        )
        grpc.close()


def live_children(kube: Kube, namespace: str, name: str) -> dict[str, list[Any]]:
    return {kind: items for kind, items in kube.children(namespace, name).items() if items}


def no_children_left(kube: Kube, namespace: str, name: str) -> bool:
    return not live_children(kube, namespace, name)


def check_child(child: Any, md: Mapping[str, Any], kind: str) -> None:
    """Owned by the ModelDeployment (controller reference, so GC collects it), labelled,
    written with server-side apply by Ferry's field manager, carrying Ferry's applied-hash (and,
    on a Deployment, the template of the revision it runs) and no other annotation of Ferry's or
    Kopf's (no bookkeeping of Kopf's, under either prefix)."""
    metadata = child.metadata
    owners = [o for o in metadata.owner_references or () if o.controller]
    assert [(o.kind, o.name, o.uid) for o in owners] == [
        ("ModelDeployment", md["metadata"]["name"], md["metadata"]["uid"])
    ], metadata.name
    labels = metadata.labels or {}
    assert labels.get("app.kubernetes.io/managed-by") == "ferry"
    assert labels.get("serving.ferry.dev/model-deployment") == md["metadata"]["name"]
    managers = {(m.manager, m.operation) for m in metadata.managed_fields or ()}
    assert (FIELD_MANAGER, "Apply") in managers, managers
    annotations = metadata.annotations or {}
    ours = {key for key in annotations if key.startswith("serving.ferry.dev/")}
    expected = {APPLIED_HASH_ANNOTATION}
    if kind == "Deployment":
        expected.add(TEMPLATE_ANNOTATION)
        assert json.loads(annotations[TEMPLATE_ANNOTATION])["model"]["uri"]
    assert ours == expected, (metadata.name, sorted(ours))
    assert len(annotations[APPLIED_HASH_ANNOTATION]) == 32, annotations[APPLIED_HASH_ANNOTATION]
    kopf = [key for key in annotations if key.startswith("kopf.zalando.org/")]
    assert kopf == [], (metadata.name, kopf)


def ferry_manages_replicas(deployment: Any) -> bool:
    """Whether Ferry's applied configuration of the Deployment includes spec.replicas."""
    for entry in deployment.metadata.managed_fields or ():
        if entry.manager == FIELD_MANAGER and entry.operation == "Apply":
            spec = (entry.fields_v1 or {}).get("f:spec", {})
            if "f:replicas" in spec:
                return True
    return False
