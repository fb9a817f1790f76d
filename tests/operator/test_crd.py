"""The generated CustomResourceDefinition: shape, structural rules, docs, defaults and drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_apiserver import Schema, schema_at, walk_schema
from ferry_operator import constants, spec
from ferry_operator.crd import (
    PRESERVE_UNKNOWN_PATHS,
    CrdSchemaError,
    build_crd,
    crd_yaml,
    model_schema,
)
from kubernetes_validate.utils import all_versions, major_minor
from pydantic import BaseModel, Field

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "serving.ferry.dev_modeldeployments.yaml"
CHART_CRD_FILE = REPO / "charts" / "ferry" / "crds" / "serving.ferry.dev_modeldeployments.yaml"

# What a structural schema may not contain (apiextensions.k8s.io/v1 "structural schema" rules
# and things pydantic emits that have no place in a CRD).
FORBIDDEN_KEYS = {"$ref", "$defs", "definitions", "allOf", "oneOf", "not", "title", "const"}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return only  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> Schema:
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- names, version, subresources, columns ---------------------------------------------------


def test_names_group_and_scope(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "modeldeployments.serving.ferry.dev"
    assert crd["spec"]["group"] == "serving.ferry.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "ModelDeployment",
        "listKind": "ModelDeploymentList",
        "plural": "modeldeployments",
        "singular": "modeldeployment",
        "shortNames": ["md", "mdep"],
        "categories": ["ferry"],
    }


def test_one_served_storage_version(version: dict[str, Any]) -> None:
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True


def test_status_and_scale_subresources(version: dict[str, Any], root: Schema) -> None:
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    # The scale subresource needs an integer at both replica paths and a string selector.
    assert schema_at(root, "spec.replicas")["type"] == "integer"
    assert schema_at(root, "status.replicas")["type"] == "integer"
    assert schema_at(root, "status.selector")["type"] == "string"


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Ready",
        "Reason",
        "Model",
        "Desired",
        "Ready-Replicas",
        "Serving",
        "Rollout",
        "Trying",
        "Weight",
        "URL",
        "Age",
    ]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Model"]["jsonPath"] == ".status.model.name"
    assert columns["Desired"] == {
        "name": "Desired",
        "type": "integer",
        "jsonPath": ".spec.replicas",
        "description": "Desired pods when autoscaling is off.",
    }
    assert columns["Ready-Replicas"]["jsonPath"] == ".status.readyReplicas"
    assert columns["URL"]["jsonPath"] == ".status.url.rest"
    assert columns["URL"]["priority"] == 1
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    # Which revision serves and how its rollout stands; the one being tried with -o wide.
    assert columns["Serving"]["jsonPath"] == ".status.rollout.stableRevision"
    assert columns["Rollout"]["jsonPath"] == ".status.rollout.phase"
    assert columns["Trying"]["jsonPath"] == ".status.rollout.currentRevision"
    assert columns["Weight"]["jsonPath"] == ".status.rollout.weight"
    wide = {"URL", "Trying", "Weight"}
    assert all(columns[n]["priority"] == 1 for n in wide)
    assert all("priority" not in c for n, c in columns.items() if n not in wide)


def test_printer_columns_point_at_schema_fields(version: dict[str, Any], root: Schema) -> None:
    expected_type = {"integer": "integer", "string": "string"}
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].removeprefix(".")
        if path.startswith("metadata."):
            continue
        path = path.replace('[?(@.type=="Ready")]', "[]")
        node = schema_at(root, path)
        assert node["type"] == expected_type[column["type"]], column


# --- structural schema -----------------------------------------------------------------------


def _structural_problems(root: Schema) -> list[str]:
    problems: list[str] = []
    for node, path in walk_schema(root):
        where = path or "<root>"
        for key in FORBIDDEN_KEYS & node.keys():
            problems.append(f"{where}: {key}")
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if int_or_string:
            if "type" in node:
                problems.append(f"{where}: int-or-string node has a type")
            if node.get("anyOf", [{"type": "integer"}, {"type": "string"}]) != [
                {"type": "integer"},
                {"type": "string"},
            ]:
                problems.append(f"{where}: int-or-string anyOf is not [integer, string]")
        elif "anyOf" in node:
            problems.append(f"{where}: anyOf")
        elif node.get("type") not in {"object", "array", "string", "integer", "number", "boolean"}:
            problems.append(f"{where}: no valid type ({node.get('type')!r})")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: array without one items schema")
        extra = node.get("additionalProperties")
        if extra is not None and (not isinstance(extra, dict) or "properties" in node):
            problems.append(f"{where}: additionalProperties {extra!r} with properties")
        if node.get("x-kubernetes-preserve-unknown-fields") is not None:
            if node.get("x-kubernetes-preserve-unknown-fields") is not True:
                problems.append(f"{where}: preserve-unknown-fields must be true when set")
            if node.get("type") != "object":
                problems.append(f"{where}: preserve-unknown-fields on a non-object")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{where}: required {name!r} is not a property")
        if "default" in node and (path.startswith("metadata") or ".*" in path):
            problems.append(f"{where}: default where defaults are forbidden")
        if "nullable" in node:
            problems.append(f"{where}: nullable (the models never accept null)")
    return problems


def test_schema_is_structural(root: Schema) -> None:
    assert _structural_problems(root) == []


def test_structural_check_catches_violations() -> None:
    """The walker above fails on what pydantic emits before the CRD generator cleans it up."""
    raw = spec.Batching.model_json_schema(by_alias=True)
    problems = _structural_problems(raw)
    assert any("title" in problem for problem in problems)
    optional = spec.ModelSource.model_json_schema(by_alias=True)["properties"]["sha256"]
    assert "<root>: anyOf" in _structural_problems(optional)


def test_root_shape(root: Schema) -> None:
    assert root["type"] == "object"
    assert root["required"] == ["spec"]
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    # Only type is allowed on the root metadata (name/generateName restrictions aside).
    assert root["properties"]["metadata"] == {"type": "object"}


def test_preserve_unknown_fields_only_on_embedded_kubernetes_types(root: Schema) -> None:
    preserving = {
        path for node, path in walk_schema(root) if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert preserving == {
        "spec.runtime.env[].valueFrom",
        "spec.scheduling.affinity",
        "spec.scheduling.topologySpreadConstraints[]",
    }
    assert preserving == PRESERVE_UNKNOWN_PATHS
    for path in ("", "spec", "status"):
        assert "x-kubernetes-preserve-unknown-fields" not in schema_at(root, path)


def test_list_types_for_server_side_apply(root: Schema) -> None:
    list_types = {
        path: (node["x-kubernetes-list-type"], node.get("x-kubernetes-list-map-keys"))
        for node, path in walk_schema(root)
        if node.get("type") == "array"
    }
    assert list_types == {
        "spec.runtime.env": ("map", ["name"]),
        "spec.scheduling.tolerations": ("atomic", None),
        "spec.scheduling.topologySpreadConstraints": ("atomic", None),
        "spec.batching.preferredBatchSizes": ("set", None),
        "spec.rollout.steps": ("atomic", None),
        "status.conditions": ("map", ["type"]),
        "status.revisions": ("atomic", None),
    }
    # A list-map key must be required (or defaulted) in the item schema, or the API server
    # refuses the CRD.
    for path, (kind, keys) in list_types.items():
        if kind == "map":
            item = schema_at(root, f"{path}[]")
            for key in keys or []:
                assert key in item["required"] or "default" in item["properties"][key], path


def test_status_schema(root: Schema) -> None:
    status = schema_at(root, "status")
    assert set(status["properties"]) == {
        "observedGeneration",
        "conditions",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "selector",
        "url",
        "model",
        "revisions",
        "rollout",
    }
    condition = schema_at(root, "status.conditions[]")
    assert condition["required"] == ["type", "status", "reason"]
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert schema_at(root, "status.url")["properties"].keys() == {"rest", "grpc"}


# --- docs (kubectl explain), defaults, bounds ------------------------------------------------


def test_every_field_is_documented(root: Schema) -> None:
    undocumented = [
        path
        for node, path in walk_schema(root)
        if path not in {"", "metadata"}
        and not path.endswith(("[]", ".*"))
        and not node.get("description", "").strip()
    ]
    assert undocumented == []
    assert root["description"].startswith("ModelDeployment serves a PyTorch model")


def test_descriptions_are_unwrapped_docstrings(root: Schema) -> None:
    for node, path in walk_schema(root):
        text = node.get("description", "")
        assert "  " not in text, path
        assert "\n" not in text.replace("\n\n", ""), path
    assert schema_at(root, "spec.batching.maxQueueDelayMs")["description"] == (
        "Longest time, in milliseconds, a request waits for its batch to fill."
    )


def test_kubectl_explain_batching_documents_every_field(root: Schema) -> None:
    batching = schema_at(root, "spec.batching")
    assert batching["description"] == "Dynamic batching."
    assert set(batching["properties"]) == {
        "enabled",
        "maxBatchSize",
        "maxQueueDelayMs",
        "preferredBatchSizes",
        "maxQueueSize",
    }
    docs = {name: field.description for name, field in spec.Batching.model_fields.items()}
    for name, field in batching["properties"].items():
        python_name = {
            "maxBatchSize": "max_batch_size",
            "maxQueueDelayMs": "max_queue_delay_ms",
            "preferredBatchSizes": "preferred_batch_sizes",
            "maxQueueSize": "max_queue_size",
        }.get(name, name)
        assert field["description"] == " ".join((docs[python_name] or "").split())


def test_leaf_defaults_come_from_the_models(root: Schema) -> None:
    assert schema_at(root, "spec.replicas")["default"] == 1
    assert schema_at(root, "spec.model.format")["default"] == "auto"
    assert schema_at(root, "spec.model.version")["default"] == "1"
    assert schema_at(root, "spec.runtime.device")["default"] == "auto"
    assert schema_at(root, "spec.runtime.protocols.httpPort")["default"] == 8080
    assert schema_at(root, "spec.batching.maxBatchSize")["default"] == 32
    assert schema_at(root, "spec.batching.preferredBatchSizes")["default"] == []
    assert schema_at(root, "spec.resources.gpu.resource")["default"] == "nvidia.com/gpu"
    assert schema_at(root, "spec.rollout.maxSurge")["default"] == "25%"
    assert schema_at(root, "spec.rollout.maxUnavailable")["default"] == 0
    # Optional fields with no value have no default (a null default would not validate).
    for path in (
        "spec.model.sha256",
        "spec.runtime.image",
        "spec.autoscaling",
        "spec.resources.gpu",
    ):
        assert "default" not in schema_at(root, path), path


def test_nested_objects_default_to_the_models_defaults(root: Schema) -> None:
    """Each nested object defaults to its model's fully defaulted value (see crd.py)."""
    expected = {
        "spec.runtime": spec.Runtime(),
        "spec.runtime.protocols": spec.Protocols(),
        "spec.resources": spec.Resources(),
        "spec.scheduling": spec.Scheduling(),
        "spec.batching": spec.Batching(),
        "spec.service": spec.ServiceSpec(),
        "spec.rollout": spec.Rollout(),
    }
    for path, model in expected.items():
        assert schema_at(root, path)["default"] == _dump(model), path
    assert schema_at(root, "spec.runtime")["default"]["protocols"] == {
        "httpPort": 8080,
        "grpcPort": 8081,
    }


def test_bounds_enums_and_sizes(root: Schema) -> None:
    replicas = schema_at(root, "spec.replicas")
    assert (replicas["minimum"], replicas["maximum"]) == (0, 1000)
    sizes = schema_at(root, "spec.batching.preferredBatchSizes")
    assert sizes["maxItems"] == 16
    assert (sizes["items"]["minimum"], sizes["items"]["maximum"]) == (1, 4096)
    assert schema_at(root, "spec.runtime.env")["maxItems"] == 64
    assert schema_at(root, "spec.runtime.env[].name")["maxLength"] == 256
    assert schema_at(root, "spec.model.uri")["maxLength"] == 2048
    assert schema_at(root, "spec.model.sha256")["pattern"] == "^[0-9a-f]{64}$"
    assert schema_at(root, "spec.resources.limits")["maxProperties"] == 16
    assert schema_at(root, "spec.resources.limits.*")["pattern"] == spec.QUANTITY
    assert schema_at(root, "spec.runtime.device")["enum"] == ["auto", "cpu", "cuda"]
    assert schema_at(root, "spec.service.type")["enum"] == ["ClusterIP", "NodePort", "LoadBalancer"]
    assert schema_at(root, "spec.model.format")["enum"] == [
        "auto",
        "torchscript",
        "exported-program",
        "aot-inductor",
    ]
    assert schema_at(root, "spec.runtime.protocols.httpPort")["minimum"] == 1024
    frontend = schema_at(root, "spec.runtime.frontendProcesses")
    assert (frontend["minimum"], frontend["maximum"], frontend["default"]) == (0, 64, 0)


def test_required_fields(root: Schema) -> None:
    assert schema_at(root, "spec")["required"] == ["model"]
    assert schema_at(root, "spec.model")["required"] == ["uri"]
    assert schema_at(root, "spec.autoscaling")["required"] == ["maxReplicas"]
    assert schema_at(root, "spec.runtime.env[]")["required"] == ["name"]
    assert "required" not in schema_at(root, "spec.batching")


# --- generator guard rails -------------------------------------------------------------------


class _Union(BaseModel):
    value: int | list[int]
    """A union the structural schema cannot express."""


class _Loose(BaseModel):
    extra: dict[str, Any] = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """Free-form where no embedded Kubernetes type lives."""


def test_generator_refuses_what_a_structural_schema_cannot_hold() -> None:
    with pytest.raises(CrdSchemaError, match="no structural form"):
        model_schema(_Union, "spec")
    with pytest.raises(CrdSchemaError, match=r"spec\.extra: x-kubernetes-preserve-unknown"):
        model_schema(_Loose, "spec")


# --- the CRD object and its YAML ---------------------------------------------------------------

SUPPORTED_KUBERNETES = sorted(
    {major_minor(v) for v in all_versions() if major_minor(v) >= major_minor("1.30.0")}
)


@pytest.mark.parametrize("kubernetes", SUPPORTED_KUBERNETES)
def test_crd_object_is_valid_apiextensions_v1(crd: dict[str, Any], kubernetes: str) -> None:
    assert kubernetes_validate.validate(crd, kubernetes, strict=True) == kubernetes


def test_yaml_round_trips_to_the_object(crd: dict[str, Any]) -> None:
    text = crd_yaml()
    assert text.startswith("# Generated by `ferry-operator crd` (make crd)")
    assert yaml.safe_load(text) == crd
    assert text.endswith("\n")


def test_cli_prints_identical_yaml_under_another_hash_seed() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-m", "ferry_operator.cli", "crd"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert result.stdout == crd_yaml()


def test_committed_crd_is_the_generators_output() -> None:
    assert CRD_FILE.is_file(), f"{CRD_FILE} is missing: run `make crd`"
    assert CRD_FILE.read_text(encoding="utf-8") == crd_yaml(), (
        f"{CRD_FILE.relative_to(REPO)} is out of date with ferry_operator/spec.py: run `make crd`"
    )


def test_chart_crd_is_the_committed_crd() -> None:
    assert CHART_CRD_FILE.is_file(), f"{CHART_CRD_FILE} is missing: run `make crd`"
    assert CHART_CRD_FILE.read_text(encoding="utf-8") == crd_yaml(), (
        f"{CHART_CRD_FILE.relative_to(REPO)} differs from the generator: run `make crd`"
    )


def test_constants_and_crd_agree(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == constants.CRD_NAME
    assert f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}" == constants.API_VERSION
