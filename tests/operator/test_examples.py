"""The examples users copy: each parses, fits the generated CRD schema and shows its feature."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ferry_operator import constants
from ferry_operator.crd import build_crd
from ferry_operator.render import RenderOptions, render_children, render_warnings
from ferry_operator.spec import ModelDeployment, parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
EXPECTED = {
    "modeldeployment.yaml",
    "modeldeployment-gpu.yaml",
    "modeldeployment-mig.yaml",
    "modeldeployment-autoscaling.yaml",
    "modeldeployment-pvc.yaml",
    "modeldeployment-s3.yaml",
}


def load(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / name).read_text(encoding="utf-8"))
    return obj


def md_of(name: str) -> ModelDeployment:
    return parse_model_deployment(load(name))


def children_of(name: str) -> dict[str, dict[str, Any]]:
    obj = load(name)
    obj["metadata"]["uid"] = str(uuid.uuid4())
    return {
        child["kind"]: child
        for child in render_children(parse_model_deployment(obj), RenderOptions())
    }


def pod_of(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = children_of(name)["Deployment"]["spec"]["template"]["spec"]
    return pod


def test_all_examples_are_present() -> None:
    assert {path.name for path in EXAMPLES} >= EXPECTED


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_is_one_model_deployment_that_parses_and_renders_cleanly(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert len(documents) == 1, "one object per example file (kubectl apply -f examples/)"
    md = parse_model_deployment(documents[0])
    assert md.kind == constants.KIND
    assert render_warnings(md) == []
    assert render_children(md, RenderOptions(require_owner=False))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_fits_the_generated_crd_schema(path: Path) -> None:
    crd = build_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == constants.VERSION]
    schema = version["schema"]["openAPIV3Schema"]
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(obj, schema)


def test_default_example_is_a_small_cpu_model_fetched_by_the_runtime() -> None:
    md = md_of("modeldeployment.yaml")
    assert md.spec.resources.gpu is None
    assert md.spec.runtime.device == "cpu"
    assert md.spec.model.uri.startswith(("http://", "https://"))
    assert md.spec.autoscaling is None
    assert pod_of("modeldeployment.yaml")["initContainers"][0]["name"] == "fetch-model"


def test_gpu_example_has_the_gpu_limit_and_toleration() -> None:
    children = children_of("modeldeployment-gpu.yaml")
    pod = children["Deployment"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert md_of("modeldeployment-gpu.yaml").spec.runtime.device == "cuda"
    assert "PodDisruptionBudget" in children


def test_mig_example_asks_for_a_mig_profile() -> None:
    pod = pod_of("modeldeployment-mig.yaml")
    limits = pod["containers"][0]["resources"]["limits"]
    (gpu_resource,) = [key for key in limits if key.startswith("nvidia.com/")]
    assert re.fullmatch(r"nvidia\.com/mig-\d+g\.\d+gb", gpu_resource)
    assert "nvidia.com/gpu" not in limits
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_autoscaling_example_leaves_replicas_to_the_hpa() -> None:
    children = children_of("modeldeployment-autoscaling.yaml")
    assert "replicas" not in children["Deployment"]["spec"]
    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] < hpa["maxReplicas"]
    assert "cpu" in md_of("modeldeployment-autoscaling.yaml").spec.resources.requests
    assert "PodDisruptionBudget" in children


def test_pvc_example_mounts_the_claim_read_only_without_fetching() -> None:
    pod = pod_of("modeldeployment-pvc.yaml")
    assert "initContainers" not in pod
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == constants.MODEL_MOUNT_PATH
    assert mount["subPath"]


def test_s3_example_fetches_with_credentials_from_its_secret() -> None:
    md = md_of("modeldeployment-s3.yaml")
    assert md.spec.model.uri.startswith("s3://")
    (fetch,) = pod_of("modeldeployment-s3.yaml")["initContainers"]
    assert fetch["envFrom"] == [{"secretRef": {"name": md.spec.model.credentials_secret}}]


def test_s3_example_documents_a_valid_secret_with_the_keys_the_fetcher_reads() -> None:
    text = (EXAMPLES_DIR / "modeldeployment-s3.yaml").read_text(encoding="utf-8")
    block = []
    started = False
    for line in text.splitlines():
        if line.startswith("#   apiVersion: v1"):
            started = True
        if started:
            if not line.startswith("#  "):
                break
            block.append(line[4:])
    secret = yaml.safe_load("\n".join(block))
    assert secret["kind"] == "Secret"
    assert (
        secret["metadata"]["name"] == md_of("modeldeployment-s3.yaml").spec.model.credentials_secret
    )
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
