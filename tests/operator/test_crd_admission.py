"""Objects against the generated CRD, as the API server would judge them, and against spec.py.

Every example in examples/ and every fixture in tests/testdata/crd/good is admitted by both;
every fixture in tests/testdata/crd/bad is refused by both, for the reason its header names
(``# rejected-by: cel|schema`` and ``# expect: TEXT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_apiserver import Schema, admit, apply_defaults, cel_errors, schema_errors, walk_schema
from ferry_operator import constants
from ferry_operator.crd import build_crd
from ferry_operator.spec import SpecError, parse_model_deployment

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "testdata" / "crd"


def _model_deployments(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return [doc for doc in docs if doc.get("kind") == constants.KIND]


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
GOOD = sorted((FIXTURES / "good").glob("*.yaml"))
BAD = sorted((FIXTURES / "bad").glob("*.yaml"))
ADMITTED = [
    pytest.param(obj, id=f"{path.parent.name}/{path.name}#{index}")
    for path in [*EXAMPLES, *GOOD]
    for index, obj in enumerate(_model_deployments(path))
]


@pytest.fixture(scope="module")
def root() -> Schema:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _header(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        fields[key] = value
    return fields


def _spec_problems(obj: dict[str, Any]) -> list[str]:
    try:
        parse_model_deployment(obj)
    except SpecError as error:
        return error.problems
    return []


def test_there_are_examples_and_fixtures() -> None:
    assert len(EXAMPLES) >= 6, "examples/ should hold the CPU, GPU, MIG, HPA, pvc and s3 examples"
    assert all(_model_deployments(path) for path in EXAMPLES)
    assert len(GOOD) >= 4
    assert len(BAD) >= 20


@pytest.mark.parametrize("obj", ADMITTED)
def test_admitted_by_the_crd_and_the_models(obj: dict[str, Any], root: Schema) -> None:
    assert admit(obj, root) == []
    assert _spec_problems(obj) == []


@pytest.mark.parametrize("obj", ADMITTED)
def test_crd_defaults_equal_the_models_defaults(obj: dict[str, Any], root: Schema) -> None:
    """What the API server stores after defaulting is what the operator's model parses to."""
    stored = apply_defaults(obj, root)["spec"]
    parsed = parse_model_deployment(obj).spec
    assert stored == parsed.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_minimal_object_is_fully_defaulted(root: Schema) -> None:
    (minimal,) = _model_deployments(FIXTURES / "good" / "minimal.yaml")
    stored = apply_defaults(minimal, root)["spec"]
    assert stored["runtime"]["protocols"] == {"httpPort": 8080, "grpcPort": 8081}
    assert stored["batching"]["maxBatchSize"] == 32
    assert stored["service"]["type"] == "ClusterIP"
    assert stored["rollout"] == {
        "strategy": "RollingUpdate",
        "maxSurge": "25%",
        "maxUnavailable": 0,
        "steps": [],
        "analysis": {"maxErrorRatePercent": 1.0, "minRequests": 20},
        "autoRollback": True,
        "allowSignatureChange": False,
    }
    assert "autoscaling" not in stored
    assert "gpu" not in stored["resources"]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_refused_by_the_crd_and_the_models(path: Path, root: Schema) -> None:
    header = _header(path)
    layer, expect = header["rejected-by"], header["expect"]
    (obj,) = _model_deployments(path)
    defaulted = apply_defaults(obj, root)
    if layer == "cel":
        # The OpenAPI schema alone lets it through: the CEL rule is what refuses it.
        assert schema_errors(defaulted, root) == []
        problems = cel_errors(defaulted, root)
        assert [p for p in problems if p.endswith(f": {expect}")], problems
        assert expect in _spec_problems(obj)
    else:
        assert layer == "schema", path
        problems = admit(obj, root)
        assert [p for p in problems if expect in p], problems
        spec_problems = _spec_problems(obj)
        assert [p for p in spec_problems if expect in p], spec_problems


# --- unknown fields --------------------------------------------------------------------------


def _object(spec: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": "m"},
        "spec": {"model": {"uri": "s3://bucket/m/"}, **spec},
        **top,
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"replica": 2}, "replica"),
        ({"model": {"uri": "s3://bucket/m/", "digest": "x"}}, "digest"),
        ({"runtime": {"protocols": {"restPort": 8000}}}, "restPort"),
        ({"runtime": {"env": [{"name": "A", "valu": "x"}]}}, "valu"),
        ({"scheduling": {"tolerations": [{"key": "k", "effects": "NoSchedule"}]}}, "effects"),
        ({"resources": {"gpu": {"count": 1, "type": "a100"}}}, "type"),
    ],
)
def test_unknown_fields_are_refused(spec: dict[str, Any], field: str, root: Schema) -> None:
    problems = admit(_object(spec), root)
    assert [p for p in problems if f"'{field}' was unexpected" in p], problems
    assert [p for p in _spec_problems(_object(spec)) if field in p]


def test_unknown_top_level_field_is_refused(root: Schema) -> None:
    problems = admit(_object({}, specs={"replicas": 2}), root)
    assert problems == ["<root>: Additional properties are not allowed ('specs' was unexpected)"]


def test_embedded_kubernetes_types_keep_their_fields(root: Schema) -> None:
    obj = _object(
        {
            "runtime": {
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                ]
            },
            "scheduling": {
                "affinity": {
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
                },
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}],
            },
        }
    )
    assert admit(obj, root) == []
    stored = apply_defaults(obj, root)["spec"]
    assert stored["runtime"]["env"][0]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_duplicate_env_names_are_refused_by_the_list_map(root: Schema) -> None:
    obj = _object({"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}})
    assert admit(obj, root) == ["spec.runtime.env[1]: Duplicate value: {'name': 'A'}"]


# --- the schema's bounds, enums and patterns agree with the models ---------------------------


def _with_field(path: str, value: Any) -> dict[str, Any]:
    """A valid object with one spec field (``spec.a.b``) set to ``value``."""
    obj = _object({"autoscaling": {"maxReplicas": 1000}} if ".autoscaling." in path else {})
    node = obj
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return obj


def _scalar_cases() -> list[Any]:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cases: list[Any] = []
    for node, path in walk_schema(root):
        if not path.startswith("spec.") or "[]" in path or ".*" in path:
            continue
        if node.get("type") == "integer":
            low, high = node.get("minimum"), node.get("maximum")
            for value in [v for v in (low, high) if v is not None]:
                cases.append(pytest.param(path, value, id=f"{path}={value}"))
            if low is not None:
                cases.append(pytest.param(path, low - 1, id=f"{path}={low - 1}"))
            if high is not None:
                cases.append(pytest.param(path, high + 1, id=f"{path}={high + 1}"))
        for value in [*node.get("enum", []), "Bogus"] if "enum" in node else []:
            cases.append(pytest.param(path, value, id=f"{path}={value}"))
    curated = {
        "spec.model.sha256": ["a" * 64, "a" * 63, "a" * 65, "g" * 64],
        "spec.model.name": ["resnet_50.v2", "-resnet", "a" * 128, "a" * 129, ""],
        "spec.model.version": ["1.0-rc_1", "", "1/2", "v" * 65],
        "spec.model.credentialsSecret": ["s3.creds-1", "S3", "a" * 254],
        "spec.runtime.image": ["", "ghcr.io/x/y:1", "x" * 513],
        "spec.runtime.serviceAccountName": ["reader", "Reader", "a_b"],
        "spec.resources.gpu.resource": ["nvidia.com/mig-1g.10gb", "nvidia.com/", "gpu", "a/b"],
        "spec.resources.requests": [
            {"cpu": "500m"},
            {"cpu": 2},
            {"memory": "1.5Gi"},
            {"memory": "1e3"},
            {"cpu": "1 core"},
            {"memory": "1GB"},
            {"cpu": True},
            {f"r{i}": 1 for i in range(17)},
        ],
        "spec.rollout.maxSurge": ["0%", "100%", 3, "3", "25 %", -1],
        "spec.batching.preferredBatchSizes": [[1, 4096], [0], [4097], [2.5], ["8"]],
        "spec.scheduling.priorityClassName": ["high", "High"],
        "spec.scheduling.nodeSelector": [{"a": "b"}, {"a": 1}],
        "spec.service.annotations": [{"a": "b"}, {"a": None}],
    }
    for path, values in curated.items():
        for index, value in enumerate(values):
            cases.append(pytest.param(path, value, id=f"{path}#{index}"))
    return cases


@pytest.mark.parametrize(("path", "value"), _scalar_cases())
def test_schema_and_models_agree_on_field_values(path: str, value: Any, root: Schema) -> None:
    obj = _with_field(path, value)
    server, model = admit(obj, root), _spec_problems(obj)
    assert (server == []) == (model == []), (server, model)
