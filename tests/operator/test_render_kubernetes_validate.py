"""Every rendered object passes ``kubernetes-validate --strict`` (unknown fields refused) for
Kubernetes 1.30 (the oldest Ferry supports: the preStop sleep handler) up to the newest schema
the installed kubernetes-validate ships."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.spec import parse_model_deployment
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
OLDEST = Version("1.30")
UID = str(uuid.uuid5(uuid.NAMESPACE_URL, "ferry-validate"))

# Specs that reach the fields the examples leave out.
EXTRA_SPECS: dict[str, dict[str, Any]] = {
    "everything": {
        "model": {
            "uri": "https://models.example.com/m/",
            "sha256": "c" * 64,
            "credentialsSecret": "http-token",
        },
        "runtime": {
            "image": "registry.test/ferry-runtime:dev",
            "imagePullPolicy": "IfNotPresent",
            "device": "cuda",
            "threads": 4,
            "serviceAccountName": "model-reader",
            "automountServiceAccountToken": True,
            "protocols": {"httpPort": 9000, "grpcPort": 9001},
            "env": [
                {"name": "LOG_FORMAT", "value": "json"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {
                    "name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "t", "key": "k", "optional": True}},
                },
            ],
        },
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCpuUtilizationPercentage": 60},
        "resources": {
            "requests": {"cpu": 2, "memory": "2Gi", "ephemeral-storage": "10Gi"},
            "limits": {"memory": "4Gi"},
            "gpu": {"count": 2, "resource": "nvidia.com/gpu"},
        },
        "scheduling": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
                {"key": "spot", "operator": "Exists", "tolerationSeconds": 30},
            ],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"team": "ml"}},
                            },
                        }
                    ]
                }
            },
            "priorityClassName": "serving",
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        },
        "batching": {"maxBatchSize": 8, "preferredBatchSizes": [4, 8], "enabled": True},
        "service": {
            "type": "NodePort",
            "httpPort": 80,
            "grpcPort": 81,
            "annotations": {"example.com/owner": "ml"},
        },
        "rollout": {"maxSurge": "50%", "maxUnavailable": 1},
    },
    "pvc-root-zero-replicas": {"model": {"uri": "pvc://models"}, "replicas": 0},
    "s3-archive": {
        "model": {"uri": "s3://bucket/mlp.tar.gz", "credentialsSecret": "s3"},
        "replicas": 3,
    },
}


def _versions() -> list[str]:
    available = sorted(
        {Version(v).base_version for v in kubernetes_validate.utils.all_versions()}, key=Version
    )
    chosen = [v for v in available if Version(v) >= OLDEST]
    assert chosen, "kubernetes-validate ships no schema for Kubernetes >= 1.30"
    assert chosen[0].startswith("1.30"), chosen
    return chosen


VERSIONS = _versions()


def _cases() -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = {}
    for path in EXAMPLES:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
        cases[path.stem] = obj
    for name, spec in EXTRA_SPECS.items():
        cases[name] = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": name, "namespace": "ml"},
            "spec": spec,
        }
    for obj in cases.values():
        obj["metadata"]["uid"] = UID
    return cases


CASES = _cases()


def test_the_oldest_and_the_newest_versions_are_both_checked() -> None:
    assert Version(VERSIONS[0]) == Version("1.30.0")
    assert VERSIONS[-1] == Version(kubernetes_validate.latest_version()).base_version
    assert len(VERSIONS) >= 2


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_pass_strict_schema_validation(case: str) -> None:
    md = parse_model_deployment(CASES[case])
    children = render_children(md, RenderOptions())
    assert children
    failures = []
    for version in VERSIONS:
        for child in children:
            try:
                kubernetes_validate.validate(child, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                failures.append(f"{version} {child['kind']}: {path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_the_validator_is_strict_about_unknown_fields() -> None:
    """Guard against a vacuous pass: a misspelt field must fail."""
    deployment = render_children(parse_model_deployment(CASES["modeldeployment"]), RenderOptions())[
        0
    ]
    deployment["spec"]["template"]["spec"]["enableServiceLink"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
